"""Ownership of every kind end to end (issue 14, item 2): real gateways with ownership on, a
private ``redis-server``, and the recording fake Azure (which keeps what the gateway stamps:
assistants' and vector stores' metadata, files' filenames).

* another tenant's assistant, vector store or file by path: 404 with the kind's code, nothing
  forwarded;
* by reference in a body (or a list cursor): 400 ``reference_not_found`` naming the path,
  nothing forwarded;
* lists show only the caller's objects, ``has_more`` / ``first_id`` / ``last_id`` right across
  upstream pages while tenants' objects interleave;
* Redis flushed, a fresh replica: owners still hold (read from the stamps at Azure);
* objects made outside the gateway follow ``unknown`` (``deny`` / ``allow``).

Files are put at the fake Azure the way the gateway's upload path sends them (the filename
stamped ``gwo-<owner digest>-``), or unstamped (made outside the gateway).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.app import build
from gateway.auth.tokens import default_domain
from gateway.ownership.filenames import stamp_filename
from gateway.ownership.rules import owner_key, tenant_digest
from gateway.upstream.credentials import ApiKeySource
from tests.fakeazure import FakeAzure, ScriptedResponse
from tests.servers import RedisServer, ThreadedUvicorn, private_redis
from tests.stack import ISSUER, V2, Stack, running_stack

#: The stock SDK marks every Assistants method deprecated (its own warning text).
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

STAMP_KEY = "gateway_owner"  # the README's contract
A, B = "team-a", "team-b"
Q = {"api-version": V2}
#: Marks the callers' own requests: the gateway forwards this header, its lookups never send it.
CALLER = {"x-stainless-lang": "ownership-test", "Accept-Encoding": "identity"}


def owner_of(namespace: str) -> str:
    return tenant_digest(f"{default_domain(ISSUER)}:{namespace}")


@contextlib.contextmanager
def owned_stack(
    tmp: Path, server: RedisServer, unknown: str = "deny", scan_pages: int = 3
) -> Iterator[Stack]:
    overrides = {
        # tests/stack.py writes the deprecated [threads] section; its keys stay the alias.
        "threads": {"ownership": True, "unknown": unknown},
        "ownership": {"list_scan_pages": scan_pages},
        "rate_limit": {"enabled": False},
        "redis": {"socket_timeout_s": 0.5, "connect_timeout_s": 0.5},
    }
    with running_stack(tmp, redis_url=server.url, overrides=overrides) as stack:
        yield stack


@contextlib.contextmanager
def replica(stack: Stack, **ownership: Any) -> Iterator[str]:
    """Another gateway on the same fake Azure and Redis (an empty in-process cache)."""
    config = stack.config
    if ownership:
        section = dataclasses.replace(config.ownership_section, **ownership)
        config = dataclasses.replace(config, ownership_section=section)
    gateway = build(
        config,
        api_key=ApiKeySource(
            stack.api_key,
            path=config.upstream.api_key_file,
            reload_s=config.upstream.api_key_reload_s,
        ),
    )
    with ThreadedUvicorn(gateway, http="httptools", server_header=False) as server:
        yield server.url


@pytest.fixture
def private() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


class Caller:
    """One tenant's raw HTTP calls through a gateway."""

    def __init__(self, stack: Stack, namespace: str, url: str | None = None) -> None:
        self.stack, self.url = stack, url or stack.url
        self.headers = {**stack.auth(namespace=namespace), **CALLER}

    def call(self, method: str, path: str, body: Any = None, **query: str) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}/openai/{path}",
            params={**Q, **query},
            json=body,
            headers=self.headers,
            timeout=10,
        )

    def ok(self, method: str, path: str, body: Any = None, **query: str) -> Any:
        response = self.call(method, path, body, **query)
        assert response.status_code == 200, response.text
        return response.json()


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def forwarded(fake: FakeAzure, since: int) -> list[str]:
    """The callers' requests that reached Azure since ``since`` (not the gateway's lookups)."""
    return [
        f"{r.method} {r.path}"
        for r in fake.requests[since:]
        if r.header("x-stainless-lang") == "ownership-test"
    ]


def lookups(fake: FakeAzure, since: int) -> list[str]:
    """The gateway's own owner lookups since ``since`` (the tests' direct calls are POSTs)."""
    return [
        f"{r.method} {r.path}"
        for r in fake.requests[since:]
        if r.header("x-stainless-lang") is None and r.method == "GET"
    ]


def put_file(stack: Stack, filename: str, owner: str | None, content: bytes = b"data") -> str:
    """A file at Azure: as the gateway's upload path stores it (``owner``'s stamp), or made
    outside the gateway (``owner`` None)."""
    stored = stamp_filename(owner, filename) if owner else filename
    response = httpx.post(
        f"{stack.upstream_url}/openai/files",
        params=Q,
        headers={"api-key": stack.api_key},
        data={"purpose": "assistants"},
        files={"file": (stored, content, "text/plain")},
    )
    assert response.status_code == 200, response.text
    file_id: str = response.json()["id"]
    return file_id


def outside(stack: Stack, path: str, body: dict[str, Any]) -> str:
    """An object made at Azure without the gateway (no stamp, no record)."""
    response = httpx.post(
        f"{stack.upstream_url}/openai/{path}",
        params=Q,
        headers={"api-key": stack.api_key},
        json=body,
    )
    assert response.status_code == 200, response.text
    object_id: str = response.json()["id"]
    return object_id


def recorded(server: RedisServer, object_id: str) -> bytes | None:
    with redis.Redis(host=server.host, port=server.port, socket_timeout=2) as client:
        value: bytes | None = client.get(owner_key(object_id))
        return value


def flush(server: RedisServer) -> None:
    with redis.Redis(host=server.host, port=server.port, socket_timeout=2) as client:
        client.flushall()


@dataclasses.dataclass
class Objects:
    assistant: str
    vector_store: str
    file: str
    thread: str


def make_objects(stack: Stack, caller: Caller, namespace: str) -> Objects:
    file_id = put_file(stack, f"{namespace}.txt", owner_of(namespace))
    assistant = caller.ok("POST", "assistants", {"model": "gpt-4o", "metadata": {"k": "v"}})
    vector_store = caller.ok("POST", "vector_stores", {"name": namespace, "file_ids": [file_id]})
    thread = caller.ok("POST", "threads", {})
    return Objects(assistant["id"], vector_store["id"], file_id, thread["id"])


def by_path(objects: Objects) -> list[tuple[str, str, Any, str]]:
    """(method, path, body, the 404's code) of requests on each owned object."""
    a, vs, f = objects.assistant, objects.vector_store, objects.file
    return [
        ("GET", f"assistants/{a}", None, "assistant_not_found"),
        ("POST", f"assistants/{a}", {"metadata": {"x": "y"}}, "assistant_not_found"),
        ("DELETE", f"assistants/{a}", None, "assistant_not_found"),
        ("GET", f"vector_stores/{vs}", None, "vector_store_not_found"),
        ("POST", f"vector_stores/{vs}", {"name": "mine now"}, "vector_store_not_found"),
        ("GET", f"vector_stores/{vs}/files", None, "vector_store_not_found"),
        ("POST", f"vector_stores/{vs}/files", {"file_id": f}, "vector_store_not_found"),
        ("POST", f"vector_stores/{vs}/file_batches", {"file_ids": [f]}, "vector_store_not_found"),
        ("DELETE", f"vector_stores/{vs}", None, "vector_store_not_found"),
        ("GET", f"files/{f}", None, "file_not_found"),
        ("GET", f"files/{f}/content", None, "file_not_found"),
        ("DELETE", f"files/{f}", None, "file_not_found"),
    ]


def assert_foreign_by_path(stack: Stack, other: Caller, objects: Objects) -> None:
    before = len(stack.fake.requests)
    for method, path, body, code in by_path(objects):
        response = other.call(method, path, body)
        assert response.status_code == 404, (method, path, response.text)
        assert error_of(response)["code"] == code, (method, path)
    assert forwarded(stack.fake, before) == []


def by_reference(mine: Objects, theirs: Objects) -> list[tuple[str, str, dict[str, Any], str]]:
    """(method, path, body, the refused param) of bodies naming ``theirs`` objects."""
    f, a, vs = theirs.file, theirs.assistant, theirs.vector_store
    t = mine.thread
    return [
        (
            "POST",
            f"threads/{t}/messages",
            {
                "role": "user",
                "content": "x",
                "attachments": [
                    {"file_id": mine.file, "tools": [{"type": "code_interpreter"}]},
                    {"file_id": f, "tools": [{"type": "file_search"}]},
                ],
            },
            "attachments[1].file_id",
        ),
        (
            "POST",
            "threads",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": "x",
                        "attachments": [{"file_id": f, "tools": [{"type": "file_search"}]}],
                    }
                ]
            },
            "messages[0].attachments[0].file_id",
        ),
        (
            "POST",
            "threads",
            {"tool_resources": {"code_interpreter": {"file_ids": [mine.file, f]}}},
            "tool_resources.code_interpreter.file_ids[1]",
        ),
        (
            "POST",
            "threads",
            {"tool_resources": {"file_search": {"vector_store_ids": [vs]}}},
            "tool_resources.file_search.vector_store_ids[0]",
        ),
        (
            "POST",
            "threads",
            {"tool_resources": {"file_search": {"vector_stores": [{"file_ids": [f]}]}}},
            "tool_resources.file_search.vector_stores[0].file_ids[0]",
        ),
        ("POST", f"threads/{t}/runs", {"assistant_id": a}, "assistant_id"),
        (
            "POST",
            f"threads/{t}/runs",
            {
                "assistant_id": mine.assistant,
                "additional_messages": [
                    {
                        "role": "user",
                        "content": "x",
                        "attachments": [{"file_id": f, "tools": [{"type": "file_search"}]}],
                    }
                ],
            },
            "additional_messages[0].attachments[0].file_id",
        ),
        ("POST", "threads/runs", {"assistant_id": a}, "assistant_id"),
        (
            "POST",
            "threads/runs",
            {
                "assistant_id": mine.assistant,
                "thread": {"tool_resources": {"file_search": {"vector_store_ids": [vs]}}},
            },
            "thread.tool_resources.file_search.vector_store_ids[0]",
        ),
        (
            "POST",
            "assistants",
            {"model": "gpt-4o", "tool_resources": {"code_interpreter": {"file_ids": [f]}}},
            "tool_resources.code_interpreter.file_ids[0]",
        ),
        (
            "POST",
            f"assistants/{mine.assistant}",
            {"tool_resources": {"file_search": {"vector_store_ids": [vs]}}},
            "tool_resources.file_search.vector_store_ids[0]",
        ),
        ("POST", "vector_stores", {"file_ids": [mine.file, f]}, "file_ids[1]"),
        ("POST", f"vector_stores/{mine.vector_store}/files", {"file_id": f}, "file_id"),
        (
            "POST",
            f"vector_stores/{mine.vector_store}/file_batches",
            {"file_ids": [f]},
            "file_ids[0]",
        ),
    ]


def assert_foreign_by_reference(
    stack: Stack, caller: Caller, mine: Objects, theirs: Objects
) -> None:
    before = len(stack.fake.requests)
    for method, path, body, param in by_reference(mine, theirs):
        response = caller.call(method, path, body)
        assert response.status_code == 400, (path, param, response.text)
        error = error_of(response)
        assert (error["code"], error["param"], error["type"]) == (
            "reference_not_found",
            param,
            "invalid_request_error",
        ), path
    assert forwarded(stack.fake, before) == []


# ----------------------------------------------------------------------------- by path


def test_another_tenants_objects_by_path_are_404_and_never_forwarded(
    tmp_path: Path, private: RedisServer
) -> None:
    with owned_stack(tmp_path, private) as stack:
        a = Caller(stack, A)
        objects = make_objects(stack, a, A)
        # Recorded at creation (assistants, vector stores; files when uploaded through the
        # gateway: here put at Azure directly, so read from the filename stamp on first use).
        assert recorded(private, objects.assistant) == owner_of(A).encode()
        assert recorded(private, objects.vector_store) == owner_of(A).encode()
        assert_foreign_by_path(stack, Caller(stack, B), objects)
        assert lookups(stack.fake, 0) == [f"GET /openai/files/{objects.file}"]
        assert recorded(private, objects.file) == owner_of(A).encode()  # written back
        # The owner reaches them all, and never sees a stamp.
        assistant = a.ok("GET", f"assistants/{objects.assistant}")
        assert assistant["metadata"] == {"k": "v"}
        modified = a.ok("POST", f"assistants/{objects.assistant}", {"metadata": {"k": "w"}})
        assert modified["metadata"] == {"k": "w"}
        with stack.fake.store.lock:
            stored = stack.fake.store.assistants.get(objects.assistant).metadata
        assert stored == {"k": "w", STAMP_KEY: owner_of(A)}  # restamped on modify
        assert STAMP_KEY not in a.ok("GET", f"vector_stores/{objects.vector_store}")["metadata"]
        assert a.ok("GET", f"files/{objects.file}")["filename"] == f"{A}.txt"
        content = a.call("GET", f"files/{objects.file}/content")
        assert (content.status_code, content.content) == (200, b"data")
        assert a.ok("GET", f"vector_stores/{objects.vector_store}/files")["data"][0]["id"] == (
            objects.file
        )
        # Deleting forgets the record.
        assert a.ok("DELETE", f"assistants/{objects.assistant}")["deleted"] is True
        assert recorded(private, objects.assistant) is None


def test_stock_sdk_sees_no_stamp_and_another_tenant_gets_not_found(
    tmp_path: Path, private: RedisServer
) -> None:
    with owned_stack(tmp_path, private) as stack:
        client = openai.AzureOpenAI(
            azure_endpoint=stack.url, api_version=V2, max_retries=0, azure_ad_token=stack.token()
        )
        other = openai.AzureOpenAI(
            azure_endpoint=stack.url,
            api_version=V2,
            max_retries=0,
            azure_ad_token=stack.token(namespace=B),
        )
        with client, other:
            assistant = client.beta.assistants.create(model="gpt-4o", metadata={"a": "1"})
            assert assistant.metadata == {"a": "1"}
            store = client.vector_stores.create(name="docs")
            assert store.metadata in ({}, None)
            assert [x.id for x in client.beta.assistants.list()] == [assistant.id]
            assert list(other.beta.assistants.list()) == []
            with pytest.raises(openai.NotFoundError) as err:
                other.beta.assistants.retrieve(assistant.id)
            assert err.value.code == "assistant_not_found"
            with pytest.raises(openai.NotFoundError) as err:
                other.vector_stores.retrieve(store.id)
            assert err.value.code == "vector_store_not_found"
            with pytest.raises(openai.BadRequestError) as bad:
                other.beta.threads.create_and_run(assistant_id=assistant.id)
            assert (bad.value.code, bad.value.param) == ("reference_not_found", "assistant_id")


# ----------------------------------------------------------------------------- by reference


def test_bodies_naming_another_tenants_objects_are_400_and_never_forwarded(
    tmp_path: Path, private: RedisServer
) -> None:
    with owned_stack(tmp_path, private) as stack:
        a, b = Caller(stack, A), Caller(stack, B)
        theirs, mine = make_objects(stack, a, A), make_objects(stack, b, B)
        assert_foreign_by_reference(stack, b, mine, theirs)
        # The same bodies naming the caller's own objects pass (are forwarded).
        before = len(stack.fake.requests)
        own = by_reference(mine, mine)
        for method, path, body, _param in [own[i] for i in (1, 3, 4, 5, 9, 12)]:
            response = b.call(method, path, body)
            assert response.status_code == 200, (path, response.text)
        assert len(forwarded(stack.fake, before)) == 6
        # A cursor naming another tenant's object is refused too.
        response = b.call("GET", "assistants", after=theirs.assistant)
        assert (response.status_code, error_of(response)["param"]) == (400, "after")
        response = b.call("GET", "vector_stores", before=theirs.vector_store)
        assert (response.status_code, error_of(response)["code"]) == (400, "reference_not_found")
        # An id Azure does not have is no one's: refused the same way.
        response = b.call("POST", "threads/runs", {"assistant_id": "asst_doesnotexist"})
        assert (response.status_code, error_of(response)["param"]) == (400, "assistant_id")


def test_a_body_naming_one_file_many_times_costs_one_lookup(
    tmp_path: Path, private: RedisServer
) -> None:
    with owned_stack(tmp_path, private) as stack:
        file_id = put_file(stack, "shared.txt", owner_of(A))  # no record yet: read at Azure
        a = Caller(stack, A)
        attached = {"file_id": file_id, "tools": [{"type": "code_interpreter"}]}
        body = {
            "messages": [
                {"role": "user", "content": f"m{n}", "attachments": [attached]} for n in range(8)
            ],
            "tool_resources": {"code_interpreter": {"file_ids": [file_id]}},
        }
        before = len(stack.fake.requests)
        response = a.call("POST", "threads", body)
        assert response.status_code == 200, response.text
        assert lookups(stack.fake, before) == [f"GET /openai/files/{file_id}"]
        before = len(stack.fake.requests)
        response = a.call("POST", "threads", body)
        assert response.status_code == 200, response.text
        assert lookups(stack.fake, before) == []  # known now: the cache


# ----------------------------------------------------------------------------- lists


def interleave(stack: Stack) -> tuple[list[str], list[str]]:
    """team-a's 4 assistants with 110 of team-b's between some of them (asc order):
    A1, B x110, A2, A3, B x110, A4."""
    a, b = Caller(stack, A), Caller(stack, B)
    mine: list[str] = []
    theirs: list[str] = []

    def make(caller: Caller, into: list[str]) -> None:
        into.append(caller.ok("POST", "assistants", {"model": "gpt-4o"})["id"])

    make(a, mine)
    for _ in range(110):
        make(b, theirs)
    make(a, mine)
    make(a, mine)
    for _ in range(110):
        make(b, theirs)
    make(a, mine)
    return mine, theirs


def test_lists_show_only_the_callers_objects_with_pagination_right(
    tmp_path: Path, private: RedisServer
) -> None:
    with owned_stack(tmp_path, private, scan_pages=3) as stack:
        mine, theirs = interleave(stack)
        a = Caller(stack, A)
        before = len(stack.fake.requests)
        page = a.ok("GET", "assistants", limit="2", order="asc")
        assert [x["id"] for x in page["data"]] == mine[:2]
        assert (page["first_id"], page["last_id"], page["has_more"]) == (mine[0], mine[1], True)
        assert len(stack.fake.requests) - before == 2  # two upstream pages of 100
        assert all(STAMP_KEY not in x["metadata"] for x in page["data"])
        page = a.ok("GET", "assistants", limit="2", order="asc", after=mine[1])
        assert [x["id"] for x in page["data"]] == mine[2:]
        assert (page["first_id"], page["last_id"], page["has_more"]) == (mine[2], mine[3], False)
        page = a.ok("GET", "assistants", limit="3")  # desc, the default
        assert [x["id"] for x in page["data"]] == mine[::-1][:3]
        assert page["has_more"] is True
        page = a.ok("GET", "assistants", limit="3", after=mine[1])
        assert ([x["id"] for x in page["data"]], page["has_more"]) == ([mine[0]], False)
        page = a.ok("GET", "assistants", limit="1", order="asc", before=mine[3])
        assert ([x["id"] for x in page["data"]], page["has_more"]) == ([mine[2]], True)
        # The stock SDK's auto-pagination walks the caller's objects, and only them.
        client = openai.AzureOpenAI(
            azure_endpoint=stack.url, api_version=V2, max_retries=0, azure_ad_token=stack.token()
        )
        other = openai.AzureOpenAI(
            azure_endpoint=stack.url,
            api_version=V2,
            max_retries=0,
            azure_ad_token=stack.token(namespace=B),
        )
        with client, other:
            assert [x.id for x in client.beta.assistants.list(limit=1, order="asc")] == mine
            assert [x.id for x in other.beta.assistants.list(limit=100, order="asc")] == theirs
        # The bound: one upstream page per list, then what was found and has_more.
        with replica(stack, list_scan_pages=1) as url:
            page = Caller(stack, A, url).ok("GET", "assistants", limit="5", order="asc")
            assert ([x["id"] for x in page["data"]], page["has_more"]) == ([mine[0]], True)


def test_vector_store_and_file_lists_are_filtered_too(tmp_path: Path, private: RedisServer) -> None:
    with owned_stack(tmp_path, private) as stack:
        a, b = Caller(stack, A), Caller(stack, B)
        stores = {A: [], B: []}  # type: dict[str, list[str]]
        files = {A: [], B: []}  # type: dict[str, list[str]]
        for n in range(6):
            for namespace, caller in ((A, a), (B, b)):
                stores[namespace].append(
                    caller.ok("POST", "vector_stores", {"name": f"s{n}"})["id"]
                )
                files[namespace].append(
                    put_file(stack, f"{namespace}-{n}.txt", owner_of(namespace))
                )
        page = a.ok("GET", "vector_stores", limit="4", order="asc")
        assert [x["id"] for x in page["data"]] == stores[A][:4] and page["has_more"] is True
        page = a.ok("GET", "vector_stores", limit="4", order="asc", after=page["last_id"])
        assert [x["id"] for x in page["data"]] == stores[A][4:] and page["has_more"] is False
        listed = b.ok("GET", "files", purpose="assistants")
        assert sorted(x["id"] for x in listed["data"]) == sorted(files[B])
        assert sorted(x["filename"] for x in listed["data"]) == [f"{B}-{n}.txt" for n in range(6)]


# ----------------------------------------------------------------------------- durability


def test_owners_hold_after_redis_loses_everything(tmp_path: Path, private: RedisServer) -> None:
    with owned_stack(tmp_path, private) as stack:
        objects = make_objects(stack, Caller(stack, A), A)
        flush(private)
        with replica(stack) as url:  # no cache, no records: the stamps at Azure decide
            before = len(stack.fake.requests)
            assert_foreign_by_path(stack, Caller(stack, B, url), objects)
            mine = make_objects(stack, Caller(stack, B, url), B)
            assert_foreign_by_reference(stack, Caller(stack, B, url), mine, objects)
            looked_up = lookups(stack.fake, before)
            for path in (
                f"/openai/assistants/{objects.assistant}",
                f"/openai/vector_stores/{objects.vector_store}",
                f"/openai/files/{objects.file}",
            ):
                assert looked_up.count(f"GET {path}") == 1, looked_up  # then cached
            owner = Caller(stack, A, url)
            assert owner.ok("GET", f"assistants/{objects.assistant}")["id"] == objects.assistant
            assert owner.ok("GET", f"files/{objects.file}")["filename"] == f"{A}.txt"
        for object_id in (objects.assistant, objects.vector_store, objects.file):
            assert recorded(private, object_id) == owner_of(A).encode()


# ----------------------------------------------------------------------------- unknown objects


@pytest.mark.parametrize("unknown", ["deny", "allow"])
def test_objects_made_outside_the_gateway_follow_unknown(
    tmp_path: Path, private: RedisServer, unknown: str
) -> None:
    with owned_stack(tmp_path, private, unknown=unknown) as stack:
        legacy = Objects(
            assistant=outside(stack, "assistants", {"model": "gpt-4o"}),
            vector_store=outside(stack, "vector_stores", {"name": "old"}),
            file=put_file(stack, "old.txt", None),
            thread=outside(stack, "threads", {}),
        )
        b = Caller(stack, B)
        mine = make_objects(stack, b, B)
        if unknown == "deny":
            assert_foreign_by_path(stack, b, legacy)
            assert_foreign_by_reference(stack, b, mine, legacy)
            assert b.ok("GET", "assistants", order="asc")["data"] == [
                b.ok("GET", f"assistants/{mine.assistant}")
            ]
            return
        assert b.ok("GET", f"assistants/{legacy.assistant}")["id"] == legacy.assistant
        assert b.ok("GET", f"files/{legacy.file}")["filename"] == "old.txt"
        run = b.call("POST", f"threads/{mine.thread}/runs", {"assistant_id": legacy.assistant})
        assert run.status_code == 200, run.text
        attached = b.call(
            "POST", f"vector_stores/{legacy.vector_store}/files", {"file_id": legacy.file}
        )
        assert attached.status_code == 200, attached.text
        listed = [x["id"] for x in b.ok("GET", "assistants", order="asc")["data"]]
        assert listed == [legacy.assistant, mine.assistant]
        # Never written as anyone's: a stamp-less object stays unknown.
        assert recorded(private, legacy.assistant) is None


# ----------------------------------------------------------------------------- inline stores


def test_vector_stores_made_inline_are_stamped_and_recorded(
    tmp_path: Path, private: RedisServer
) -> None:
    with owned_stack(tmp_path, private) as stack:
        a = Caller(stack, A)
        file_id = put_file(stack, "inline.txt", owner_of(A))
        # Azure makes the vector store and lists its id in the answer.
        answer = {
            "id": "thread_inline1",
            "object": "thread",
            "created_at": 1,
            "metadata": {STAMP_KEY: owner_of(A)},
            "tool_resources": {"file_search": {"vector_store_ids": ["vs_inline1"]}},
        }
        stack.fake.script(
            ScriptedResponse(
                200,
                (("content-type", "application/json"),),
                (json.dumps(answer).encode(),),
            ),
            path_prefix="/openai/threads",
        )
        body = {
            "tool_resources": {
                "file_search": {"vector_stores": [{"file_ids": [file_id], "metadata": {"k": "v"}}]}
            }
        }
        created = a.ok("POST", "threads", body)
        assert created["metadata"] == {}
        sent = [r for r in stack.fake.requests if r.path == "/openai/threads"][-1].json()
        assert sent["tool_resources"]["file_search"]["vector_stores"] == [
            {"file_ids": [file_id], "metadata": {"k": "v", STAMP_KEY: owner_of(A)}}
        ]
        assert sent["metadata"] == {STAMP_KEY: owner_of(A)}
        assert recorded(private, "thread_inline1") == owner_of(A).encode()
        assert recorded(private, "vs_inline1") == owner_of(A).encode()
        response = Caller(stack, B).call("GET", "vector_stores/vs_inline1")
        assert (response.status_code, error_of(response)["code"]) == (404, "vector_store_not_found")


# ----------------------------------------------------------------------------- uploads


def test_an_upload_through_the_gateway_is_the_uploaders_and_its_stamp_never_shows(
    tmp_path: Path, private: RedisServer
) -> None:
    with owned_stack(tmp_path, private) as stack:
        client = openai.AzureOpenAI(
            azure_endpoint=stack.url, api_version=V2, max_retries=0, azure_ad_token=stack.token()
        )
        with client:
            uploaded = client.files.create(file=("notes.txt", b"hello"), purpose="assistants")
        assert uploaded.filename == "notes.txt"
        with stack.fake.store.lock:
            stored = stack.fake.store.files.get(uploaded.id).filename
        assert stored == stamp_filename(owner_of(A), "notes.txt")
        assert recorded(private, uploaded.id) == owner_of(A).encode()
        a, b = Caller(stack, A), Caller(stack, B)
        assert a.ok("GET", f"files/{uploaded.id}")["filename"] == "notes.txt"
        assert [x["filename"] for x in a.ok("GET", "files")["data"]] == ["notes.txt"]
        assert b.ok("GET", "files")["data"] == []
        response = b.call("GET", f"files/{uploaded.id}/content")
        assert (response.status_code, error_of(response)["code"]) == (404, "file_not_found")


# ----------------------------------------------------------------------------- failures


def test_what_cannot_be_checked_is_never_passed_on(tmp_path: Path, private: RedisServer) -> None:
    json_headers = (("content-type", "application/json"),)
    with owned_stack(tmp_path, private) as stack:
        a = Caller(stack, A)
        # Azure's own refusal of a list page is relayed as it is.
        refusal = {"error": {"code": "server_error", "message": "boom", "param": None}}
        stack.fake.script(
            ScriptedResponse(500, json_headers, (json.dumps(refusal).encode(),)),
            path_prefix="/openai/assistants",
        )
        response = a.call("GET", "assistants")
        assert (response.status_code, response.json()) == (500, refusal)
        # A page the gateway cannot read: 502, none of it shown.
        unreadable = {
            "object": "list",
            "data": [{"id": "x/../y", "metadata": {}}],
            "has_more": False,
        }
        stack.fake.script(
            ScriptedResponse(200, json_headers, (json.dumps(unreadable).encode(),)),
            path_prefix="/openai/assistants",
        )
        response = a.call("GET", "assistants")
        assert response.status_code == 502 and "x/../y" not in response.text
        # A referenced file whose owner neither Redis nor Azure can tell: 503, not forwarded.
        file_id = put_file(stack, "unsure.txt", owner_of(A))
        stack.fake.script(
            ScriptedResponse(500, json_headers, (b"{}",)), path_prefix=f"/openai/files/{file_id}"
        )
        before = len(stack.fake.requests)
        response = a.call("POST", "vector_stores", {"file_ids": [file_id]})
        assert (response.status_code, error_of(response)["code"]) == (503, "ownership_unavailable")
        assert forwarded(stack.fake, before) == []
        # Azure answers again: the same request goes through.
        assert a.ok("POST", "vector_stores", {"file_ids": [file_id]})["object"] == "vector_store"


def test_an_assistants_inline_vector_store_is_its_creators_end_to_end(
    tmp_path: Path, private: RedisServer
) -> None:
    """Azure (the fake, as Azure does) makes the described vector store and answers its id:
    the store carries the stamp and is recorded, so it is the creator's everywhere."""
    with owned_stack(tmp_path, private) as stack:
        a, b = Caller(stack, A), Caller(stack, B)
        file_id = put_file(stack, "inline.txt", owner_of(A))
        body = {
            "model": "gpt-4o",
            "tools": [{"type": "file_search"}],
            "tool_resources": {"file_search": {"vector_stores": [{"file_ids": [file_id]}]}},
        }
        assistant = a.ok("POST", "assistants", body)
        [store_id] = assistant["tool_resources"]["file_search"]["vector_store_ids"]
        with stack.fake.store.lock:
            assert stack.fake.store.vector_stores.get(store_id).metadata == {STAMP_KEY: owner_of(A)}
        assert recorded(private, store_id) == owner_of(A).encode()
        assert STAMP_KEY not in a.ok("GET", f"vector_stores/{store_id}")["metadata"]
        assert [x["id"] for x in a.ok("GET", "vector_stores")["data"]] == [store_id]
        assert b.ok("GET", "vector_stores")["data"] == []
        response = b.call("GET", f"vector_stores/{store_id}")
        assert (response.status_code, error_of(response)["code"]) == (404, "vector_store_not_found")
        flush(private)
        with replica(stack) as url:  # the stamp alone
            response = Caller(stack, B, url).call(
                "POST",
                "threads",
                {"tool_resources": {"file_search": {"vector_store_ids": [store_id]}}},
            )
            assert (response.status_code, error_of(response)["param"]) == (
                400,
                "tool_resources.file_search.vector_store_ids[0]",
            )
