"""Isolation, limits and metrics of the v1 API end to end (issue 15, items 4 and 5): real
gateways with ownership on, a private ``redis-server``, and the recording fake Azure (which
keeps the stamps the gateway writes in responses' and conversations' metadata).

* another tenant's response, conversation, its items, a response's input items, a v1 file,
  by path: 404 with the kind's code, nothing forwarded;
* body references to another tenant's objects (``conversation`` as an id or ``{id}``,
  ``previous_response_id``, ``input_file`` / ``input_image`` ``file_id``, ``file_search``
  ``vector_store_ids``, conversation and item ``file_id``s): 400 ``reference_not_found`` with
  the path, nothing forwarded;
* a streamed create (and a streamed retrieval) never shows the caller the stamp, while Azure
  keeps it; the new response is recorded before the caller sees its first event; a response
  with ``store: false`` is not recorded;
* Redis flushed, a fresh replica: still isolated (the stamps at Azure);
* a streamed response holds the caller's concurrency slot until its last event, and its time
  to first event is in the metrics.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.fakeazure import ScriptedResponse
from tests.servers import RedisServer, private_redis
from tests.stack import V2, Stack, running_stack
from tests.test_e2e_ownership_kinds import (
    CALLER,
    STAMP_KEY,
    error_of,
    flush,
    forwarded,
    owner_of,
    put_file,
    recorded,
    replica,
)

A, B = "team-a", "team-b"
MODEL = {"model": "gpt-4o"}


@pytest.fixture
def private() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


@contextlib.contextmanager
def owned_stack(tmp: Path, server: RedisServer, **overrides: Any) -> Iterator[Stack]:
    config = {
        "threads": {"ownership": True, "unknown": "deny"},
        "rate_limit": {"enabled": False},
        "redis": {"socket_timeout_s": 0.5, "connect_timeout_s": 0.5},
        **overrides,
    }
    with running_stack(tmp, redis_url=server.url, overrides=config) as stack:
        yield stack


class V1:
    """One tenant's raw HTTP calls to the v1 API through a gateway (no api-version)."""

    def __init__(self, stack: Stack, namespace: str, url: str | None = None) -> None:
        self.stack, self.url = stack, url or stack.url
        self.headers = {**stack.auth(namespace=namespace), **CALLER}

    def call(self, method: str, path: str, body: Any = None, **query: str) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}/openai/v1/{path}",
            params=query,
            json=body,
            headers=self.headers,
            timeout=20,
        )

    def ok(self, method: str, path: str, body: Any = None, **query: str) -> Any:
        response = self.call(method, path, body, **query)
        assert response.status_code == 200, (method, path, response.text)
        assert STAMP_KEY.encode() not in response.content, (method, path)
        return response.json()

    def stream(self, method: str, path: str, body: Any = None, **query: str) -> bytes:
        """A streamed answer's bytes, as the caller receives them."""
        with httpx.stream(
            method,
            f"{self.url}/openai/v1/{path}",
            params=query,
            json=body,
            headers=self.headers,
            timeout=20,
        ) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            return b"".join(response.iter_raw())


def events_of(stream: bytes) -> list[dict[str, Any]]:
    out = []
    for block in stream.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[6:] for line in block.split(b"\n") if line.startswith(b"data: ")]
        if data and data != [b"[DONE]"]:
            out.append(json.loads(b"\n".join(data)))
    return out


def stored_metadata(stack: Stack, path: str) -> Any:
    """An object's metadata as Azure keeps it (read with the key, not through the gateway)."""
    response = httpx.get(
        f"{stack.upstream_url}/openai/v1/{path}", headers={"api-key": stack.api_key}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()["metadata"]


def message(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": list(parts)}


TEXT = {"type": "input_text", "text": "hello"}


class Tenant:
    """One tenant's v1 objects: a conversation (with an item), a response in it, a stored
    response of its own, a file and a vector store."""

    def __init__(self, stack: Stack, namespace: str) -> None:
        self.api = V1(stack, namespace)
        self.file = put_file(stack, f"{namespace}.txt", owner_of(namespace))
        assistants = httpx.post(
            f"{stack.url}/openai/vector_stores",
            params={"api-version": V2},
            json={"name": namespace, "file_ids": [self.file]},
            headers=self.api.headers,
            timeout=10,
        )
        assert assistants.status_code == 200, assistants.text
        self.vector_store: str = assistants.json()["id"]
        conversation = self.api.ok(
            "POST", "conversations", {"metadata": {"topic": namespace}, "items": [message(TEXT)]}
        )
        self.conversation: str = conversation["id"]
        items = self.api.ok("GET", f"conversations/{self.conversation}/items")
        self.item: str = items["data"][0]["id"]
        in_conversation = self.api.ok(
            "POST",
            "responses",
            {**MODEL, "input": "hi", "conversation": self.conversation, "metadata": {"k": "v"}},
        )
        self.response: str = in_conversation["id"]
        assert in_conversation["metadata"] == {"k": "v"}


def by_path(t: Tenant) -> list[tuple[str, str, Any, dict[str, str], str]]:
    """(method, path, body, query, the 404's code) of requests on each of ``t``'s objects."""
    c, r, i, f = t.conversation, t.response, t.item, t.file
    return [
        ("GET", f"responses/{r}", None, {}, "response_not_found"),
        ("GET", f"responses/{r}", None, {"stream": "true"}, "response_not_found"),
        ("POST", f"responses/{r}/cancel", None, {}, "response_not_found"),
        ("GET", f"responses/{r}/input_items", None, {}, "response_not_found"),
        ("DELETE", f"responses/{r}", None, {}, "response_not_found"),
        ("GET", f"conversations/{c}", None, {}, "conversation_not_found"),
        ("POST", f"conversations/{c}", {"metadata": {"x": "y"}}, {}, "conversation_not_found"),
        ("GET", f"conversations/{c}/items", None, {}, "conversation_not_found"),
        (
            "POST",
            f"conversations/{c}/items",
            {"items": [message(TEXT)]},
            {},
            "conversation_not_found",
        ),
        ("GET", f"conversations/{c}/items/{i}", None, {}, "conversation_not_found"),
        ("DELETE", f"conversations/{c}/items/{i}", None, {}, "conversation_not_found"),
        ("DELETE", f"conversations/{c}", None, {}, "conversation_not_found"),
        ("GET", f"files/{f}", None, {}, "file_not_found"),
        ("GET", f"files/{f}/content", None, {}, "file_not_found"),
        ("DELETE", f"files/{f}", None, {}, "file_not_found"),
    ]


def by_reference(mine: Tenant, theirs: Tenant) -> list[tuple[str, str, Any, str]]:
    """(method, path, body, the refused param) of bodies naming ``theirs`` objects."""
    c, r, f, vs = theirs.conversation, theirs.response, theirs.file, theirs.vector_store
    own_file = {"type": "input_file", "file_id": mine.file}
    return [
        ("POST", "responses", {**MODEL, "input": "x", "conversation": c}, "conversation"),
        (
            "POST",
            "responses",
            {**MODEL, "input": "x", "conversation": {"id": c}},
            "conversation.id",
        ),
        (
            "POST",
            "responses",
            {**MODEL, "input": "x", "previous_response_id": r},
            "previous_response_id",
        ),
        (
            "POST",
            "responses",
            {
                **MODEL,
                "input": [message(TEXT, own_file, {"type": "input_file", "file_id": f})],
            },
            "input[0].content[2].file_id",
        ),
        (
            "POST",
            "responses",
            {
                **MODEL,
                "input": [message({"type": "input_image", "file_id": f, "detail": "auto"})],
            },
            "input[0].content[0].file_id",
        ),
        (
            "POST",
            "responses",
            {
                **MODEL,
                "input": "x",
                "tools": [{"type": "file_search", "vector_store_ids": [mine.vector_store, vs]}],
            },
            "tools[0].vector_store_ids[1]",
        ),
        (
            "POST",
            "conversations",
            {"items": [message(TEXT), message({"type": "input_file", "file_id": f})]},
            "items[1].content[0].file_id",
        ),
        (
            "POST",
            f"conversations/{mine.conversation}/items",
            {"items": [message({"type": "input_file", "file_id": f})]},
            "items[0].content[0].file_id",
        ),
    ]


def assert_isolated(stack: Stack, me: Tenant, them: Tenant, api: V1) -> None:
    before = len(stack.fake.requests)
    for method, path, body, query, code in by_path(them):
        response = api.call(method, path, body, **query)
        assert response.status_code == 404, (method, path, query, response.text)
        assert error_of(response)["code"] == code, (method, path, query)
    for method, path, body, param in by_reference(me, them):
        response = api.call(method, path, body)
        assert response.status_code == 400, (method, path, param, response.text)
        error = error_of(response)
        assert (error["code"], error["param"]) == ("reference_not_found", param), (path, body)
    assert forwarded(stack.fake, before) == []


def test_another_tenants_v1_objects_are_out_of_reach(tmp_path: Path, private: RedisServer) -> None:
    with owned_stack(tmp_path, private) as stack:
        a, b = Tenant(stack, A), Tenant(stack, B)
        # Azure keeps each owner's stamp; the owners see their objects without it.
        assert stored_metadata(stack, f"conversations/{a.conversation}") == {
            "topic": A,
            STAMP_KEY: owner_of(A),
        }
        assert stored_metadata(stack, f"responses/{a.response}") == {
            "k": "v",
            STAMP_KEY: owner_of(A),
        }
        for path in (f"conversations/{a.conversation}", f"responses/{a.response}"):
            assert recorded(private, path.split("/")[1]) == owner_of(A).encode()
        assert a.api.ok("GET", f"responses/{a.response}")["metadata"] == {"k": "v"}
        assert a.api.ok("GET", f"conversations/{a.conversation}")["metadata"] == {"topic": A}
        # A metadata-replacing update keeps the stamp at Azure, hidden from the caller.
        updated = a.api.ok("POST", f"conversations/{a.conversation}", {"metadata": {"n": "1"}})
        assert updated["metadata"] == {"n": "1"}
        assert stored_metadata(stack, f"conversations/{a.conversation}")[STAMP_KEY] == owner_of(A)
        # The owner's own references pass (and are forwarded).
        chained = a.api.ok(
            "POST",
            "responses",
            {**MODEL, "input": "again", "previous_response_id": a.response},
        )
        assert chained["previous_response_id"] == a.response
        assert_isolated(stack, a, b, a.api)
        assert_isolated(stack, b, a, b.api)
        # An answer that is the conversation (an item's delete) shows no stamp either.
        after = a.api.ok("DELETE", f"conversations/{a.conversation}/items/{a.item}")
        assert after["id"] == a.conversation and after["metadata"] == {"n": "1"}
        # A queued background response's cancel answers the response, without the stamp.
        stack.fake.response_complete_after_s = 60
        queued = a.api.ok("POST", "responses", {**MODEL, "input": "q", "background": True})
        cancelled = a.api.ok("POST", f"responses/{queued['id']}/cancel")
        assert cancelled["id"] == queued["id"] and cancelled["metadata"] == {}
        assert b.api.call("POST", f"responses/{queued['id']}/cancel").status_code == 404


def test_streamed_responses_never_show_the_stamp(tmp_path: Path, private: RedisServer) -> None:
    with owned_stack(tmp_path, private) as stack:
        a, b = V1(stack, A), V1(stack, B)
        conversation = a.ok("POST", "conversations", {})["id"]
        raw = a.stream(
            "POST",
            "responses",
            {
                **MODEL,
                "input": "tell me",
                "stream": True,
                "conversation": {"id": conversation},
                "metadata": {"k": "v"},
            },
        )
        assert STAMP_KEY.encode() not in raw and owner_of(A).encode() not in raw
        events = events_of(raw)
        kinds = [e["type"] for e in events]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert "response.output_text.delta" in kinds
        carrying = [e for e in events if "response" in e]
        assert len(carrying) >= 3
        assert all(e["response"]["metadata"] == {"k": "v"} for e in carrying)
        response_id = events[0]["response"]["id"]
        assert recorded(private, response_id) == owner_of(A).encode()
        assert stored_metadata(stack, f"responses/{response_id}")[STAMP_KEY] == owner_of(A)
        assert b.call("GET", f"responses/{response_id}").status_code == 404

        # Background and streamed, then streamed again by retrieval: no stamp either way.
        raw = a.stream(
            "POST",
            "responses",
            {**MODEL, "input": "later", "stream": True, "background": True},
        )
        assert STAMP_KEY.encode() not in raw
        background = events_of(raw)[0]["response"]["id"]
        assert recorded(private, background) == owner_of(A).encode()
        replay = a.stream("GET", f"responses/{background}", stream="true")
        assert STAMP_KEY.encode() not in replay and events_of(replay)
        assert all(e["response"]["metadata"] == {} for e in events_of(replay) if "response" in e)
        refused = b.call("GET", f"responses/{background}", stream="true")
        assert refused.status_code == 404
        assert error_of(refused)["code"] == "response_not_found"

        # ``store: false``: answered without the stamp, nothing recorded (Azure keeps nothing).
        for streamed in (False, True):
            body = {**MODEL, "input": "once", "store": False, "stream": streamed}
            if streamed:
                unkept = events_of(a.stream("POST", "responses", body))[0]["response"]["id"]
            else:
                unkept = a.ok("POST", "responses", body)["id"]
            assert recorded(private, unkept) is None
            assert a.call("GET", f"responses/{unkept}").status_code == 404


def test_redis_flushed_still_isolated(tmp_path: Path, private: RedisServer) -> None:
    with owned_stack(tmp_path, private) as stack:
        a, b = Tenant(stack, A), Tenant(stack, B)
        flush(private)
        with replica(stack) as url:
            fresh_a, fresh_b = V1(stack, A, url), V1(stack, B, url)
            assert_isolated(stack, a, b, fresh_a)
            assert_isolated(stack, b, a, fresh_b)
            # The owners still reach their own (read back from the stamps at Azure).
            assert fresh_a.ok("GET", f"responses/{a.response}")["metadata"] == {"k": "v"}
            assert fresh_a.ok("GET", f"conversations/{a.conversation}")["id"] == a.conversation
            assert recorded(private, a.conversation) == owner_of(A).encode()


def held_leases(server: RedisServer) -> int:
    with redis.Redis(host=server.host, port=server.port, socket_timeout=2) as client:
        return sum(int(client.zcard(key)) for key in client.scan_iter("gw:rl:*:cc:*"))


def test_a_streamed_response_holds_the_concurrency_slot(
    tmp_path: Path, private: RedisServer
) -> None:
    overrides = {
        "rate_limit": {"enabled": True},
        "profiles": {"writer": {"operations": ["*"], "rate_limit": {"max_concurrent": 1}}},
    }
    with owned_stack(tmp_path, private, **overrides) as stack:
        stack.fake.response_event_delay_s = 0.25
        a = V1(stack, A)
        body = {**MODEL, "input": "slowly", "stream": True, "background": True}
        with httpx.stream(
            "POST", f"{stack.url}/openai/v1/responses", json=body, headers=a.headers, timeout=30
        ) as response:
            assert response.status_code == 200
            chunks = response.iter_raw()
            first = next(chunks)
            assert b"response.created" in first
            response_id = events_of(first)[0]["response"]["id"]
            # Mid-stream: the slot is held, a second request of the caller is refused.
            assert held_leases(private) == 1
            refused = a.call("GET", f"responses/{response_id}")
            assert refused.status_code == 429, refused.text
            assert error_of(refused)["code"] == "concurrency_limit_exceeded"
            rest = b"".join(chunks)
        assert b"response.completed" in rest
        deadline = time.monotonic() + 2
        while held_leases(private) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert held_leases(private) == 0
        # A streamed retrieval of a response still in progress holds it too.
        stack.fake.response_complete_after_s = 60
        queued = a.ok("POST", "responses", {**MODEL, "input": "later", "background": True})
        with httpx.stream(
            "GET",
            f"{stack.url}/openai/v1/responses/{queued['id']}",
            params={"stream": "true"},
            headers=a.headers,
            timeout=30,
        ) as replay:
            assert replay.status_code == 200
            chunks = replay.iter_raw()
            assert STAMP_KEY.encode() not in next(chunks)
            assert held_leases(private) == 1
            refused = a.call("GET", f"responses/{response_id}")
            assert refused.status_code == 429, refused.text
            rest = b"".join(chunks)
        assert b"response.completed" in rest and STAMP_KEY.encode() not in rest
        # The time to first event of both streamed operations is in the metrics.
        metrics = stack.gateway.metrics
        assert metrics is not None
        name = "gateway_time_to_first_event_seconds"
        for operation in ("responses.create", "responses.retrieve"):
            # Observed once the request is over, just after its last byte.
            deadline = time.monotonic() + 2
            while not metrics.registry.get_sample_value(f"{name}_count", {"operation": operation}):
                assert time.monotonic() < deadline, operation
                time.sleep(0.01)
        # Azure slow to its first event: the histogram shows it (the whole stream is longer).
        labels = {"operation": "responses.create"}
        before = metrics.registry.get_sample_value(f"{name}_sum", labels) or 0.0
        count_before = metrics.registry.get_sample_value(f"{name}_count", labels) or 0.0
        stack.fake.response_first_event_delay_s = 0.4
        stack.fake.response_event_delay_s = 0.01
        a.stream("POST", "responses", {**MODEL, "input": "x", "stream": True})
        deadline = time.monotonic() + 2
        while (metrics.registry.get_sample_value(f"{name}_count", labels) or 0) <= count_before:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert metrics.registry.get_sample_value(f"{name}_count", labels) == count_before + 1
        waited = (metrics.registry.get_sample_value(f"{name}_sum", labels) or 0.0) - before
        assert 0.4 <= waited < 5


def test_a_stream_opening_with_comments_is_still_recorded_and_unstamped(
    tmp_path: Path, private: RedisServer
) -> None:
    """Azure's bytes as they may come: keep-alive comments before ``response.created``, CRLF
    line ends, events split mid-line across chunks, an escaped stamp key, the stamp in an
    event named ``error``. The caller sees none of the stamp; the id is recorded."""
    with owned_stack(tmp_path, private) as stack:
        owner = owner_of(A).encode()
        rid = "resp_" + "ab12" * 12
        created = (
            b'event: response.created\r\ndata: {"type":"response.created","response":{"id":"'
            + rid.encode()
            + b'","metadata":{"k":"v","gateway_owner":"'
            + owner
            + b'"}}}\r\n\r\n'
        )
        escaped = (
            b'data: {"type":"response.in_progress","response":{"id":"'
            + rid.encode()
            + b'","metadata":{"gateway\\u005fowner":"'
            + owner
            + b'"}}}\r\n\r\n'
        )
        hidden = (
            b'event: error\r\ndata: {"type":"response.completed","response":{"metadata":'
            b'{"gateway_owner":"' + owner + b'"}}}\r\n\r\n'
        )
        stream = b": keep-alive\r\n\r\n" + created + escaped + hidden
        cut = len(b": keep-alive\r\n\r\n") + 30
        stack.fake.script(
            ScriptedResponse(
                headers=(("content-type", "text/event-stream"),),
                chunks=(stream[:7], stream[7:cut], stream[cut:-9], stream[-9:]),
                chunk_delay_s=0.05,
            ),
            path_prefix="/openai/v1/responses",
        )
        raw = V1(stack, A).stream("POST", "responses", {**MODEL, "input": "x", "stream": True})
        assert owner not in raw and b"gateway_owner" not in raw
        events = events_of(raw)
        assert [e["type"] for e in events] == [
            "response.created",
            "response.in_progress",
            "response.completed",
        ]
        assert events[0]["response"]["metadata"] == {"k": "v"}
        assert recorded(private, rid) == owner


def test_a_large_response_is_read_whole_not_refused(tmp_path: Path, private: RedisServer) -> None:
    """A response holds its whole output: its JSON (taken off its stamp) and its owner lookup
    at Azure may be far larger than a request body (1 MiB) or an assistant (2 MiB)."""
    with owned_stack(tmp_path, private) as stack:
        stack.fake.answer = lambda _question: "x" * 2_500_000
        a, b = V1(stack, A), V1(stack, B)
        created = a.ok("POST", "responses", {**MODEL, "input": "a lot", "metadata": {"k": "v"}})
        assert created["metadata"] == {"k": "v"}
        assert len(json.dumps(created)) > 2_500_000
        flush(private)
        with replica(stack) as url:
            again = V1(stack, A, url).ok("GET", f"responses/{created['id']}")
            assert again["metadata"] == {"k": "v"}
            assert V1(stack, B, url).call("GET", f"responses/{created['id']}").status_code == 404
        raw = a.stream("POST", "responses", {**MODEL, "input": "more", "stream": True})
        assert STAMP_KEY.encode() not in raw and len(raw) > 5_000_000
        assert b.call("GET", f"responses/{events_of(raw)[0]['response']['id']}").status_code == 404
