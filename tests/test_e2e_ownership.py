"""Thread ownership that cannot go unrecorded and survives Redis losing its data (issue 12,
items 3 and 4): real gateways, a private ``redis-server`` per test that breaks it (SIGSTOP,
SIGKILL, an empty restart), and the recording fake Azure, which keeps the owner stamp on its
thread objects as Azure would.

"A replica" below is a second gateway on the same fake Azure and the same Redis: it starts with
an empty in-process cache, as any other replica or a restarted one does.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.app import build
from gateway.auth.tokens import default_domain
from gateway.ownership.rules import owner_key, tenant_digest
from gateway.upstream.credentials import ApiKeySource
from tests.fakeazure import FakeAzure, ScriptedResponse
from tests.servers import RedisServer, ThreadedUvicorn, private_redis, wait_for_port
from tests.stack import ISSUER, V2, Stack, running_stack

#: The reserved metadata key (the README's contract; ``gateway.ownership.STAMP_KEY``).
STAMP_KEY = "gateway_owner"
A, B = "team-a", "team-b"


def owner_of(namespace: str) -> str:
    """The stamp of a namespace's threads: the digest of its issuer-qualified tenant."""
    return tenant_digest(f"{default_domain(ISSUER)}:{namespace}")


#: What the version before tenants were qualified recorded for namespace A.
LEGACY_A = tenant_digest(A)
Q = {"api-version": V2}
NEWEST = "2025-04-01-preview"  # the newest api-version the default config allows


_CLIENTS: list[openai.AzureOpenAI] = []


def sdk(url: str, stack: Stack, namespace: str = A) -> openai.AzureOpenAI:
    client = openai.AzureOpenAI(
        azure_endpoint=url,
        api_version=V2,
        max_retries=0,
        azure_ad_token=stack.token(namespace=namespace),
    )
    _CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


@contextlib.contextmanager
def owned_stack(tmp: Path, server: RedisServer, unknown: str, **threads: Any) -> Iterator[Stack]:
    """Ownership on (limiter off: these tests are about ownership alone)."""
    overrides = {
        "threads": {"ownership": True, "unknown": unknown, **threads},
        "rate_limit": {"enabled": False},
        "redis": {"socket_timeout_s": 0.2, "connect_timeout_s": 0.2},
    }
    with running_stack(tmp, redis_url=server.url, overrides=overrides) as stack:
        yield stack


@contextlib.contextmanager
def replica(stack: Stack) -> Iterator[str]:
    """Another gateway of the same deployment (same config, fake Azure and Redis)."""
    config = stack.config
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


def create_thread(stack: Stack, url: str | None = None, **body: Any) -> str:
    """A thread created by team-a asking for no compression (unlike the SDK, whose httpx asks
    for gzip): these tests are about Redis, not about 3(a)."""
    response = httpx.post(
        f"{url or stack.url}/openai/threads",
        params=Q,
        json=body,
        headers={**stack.auth(), "Accept-Encoding": "identity"},
    )
    assert response.status_code == 200, response.text
    thread_id: str = response.json()["id"]
    return thread_id


def create_assistant(stack: Stack, url: str | None = None) -> str:
    """An assistant of team-a's (runs name one: ownership checks the reference)."""
    response = httpx.post(
        f"{url or stack.url}/openai/assistants",
        params=Q,
        json={"model": "gpt-4o"},
        headers={**stack.auth(), "Accept-Encoding": "identity"},
    )
    assert response.status_code == 200, response.text
    assistant_id: str = response.json()["id"]
    return assistant_id


def restart_empty(server: RedisServer) -> None:
    """Kill the private redis-server and start an empty one on the same port."""
    assert server.proc is not None
    server.proc.send_signal(signal.SIGCONT)
    server.proc.kill()
    server.proc.wait(timeout=5)
    argv = [str(a) for a in server.proc.args]  # type: ignore[union-attr]
    server.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(server.port)


def redis_do(server: RedisServer, command: str, *args: str) -> Any:
    """One command on a short-lived connection (closed again: no socket left behind)."""
    with redis.Redis(host=server.host, port=server.port, socket_timeout=2) as client:
        return client.execute_command(command, *args)


def recorded(server: RedisServer, thread_id: str) -> bytes | None:
    value: bytes | None = redis_do(server, "GET", owner_key(thread_id))
    return value


def azure_thread(fake: FakeAzure, thread_id: str) -> dict[str, str]:
    with fake.store.lock:
        return dict(fake.store.threads[thread_id].metadata)


def nothing_forwarded(fake: FakeAzure, since: int, thread_id: str) -> bool:
    """Since ``since`` at most the gateway's own owner lookups reached Azure: a ``GET`` of the
    thread without any of the caller's headers."""
    return all(
        r.method == "GET"
        and r.path == f"/openai/threads/{thread_id}"
        and r.header("x-stainless-lang") is None
        and r.header("authorization") is None
        for r in fake.requests[since:]
    )


def assert_foreign_404(url: str, stack: Stack, thread_id: str) -> None:
    before = len(stack.fake.requests)
    other = sdk(url, stack, B)
    for attempt in (
        lambda: other.beta.threads.retrieve(thread_id),
        lambda: other.beta.threads.messages.list(thread_id),
        lambda: other.beta.threads.update(thread_id, metadata={"x": "y"}),
        lambda: other.beta.threads.delete(thread_id),
    ):
        with pytest.raises(openai.NotFoundError) as err:
            attempt()
        assert err.value.code == "thread_not_found"
    assert nothing_forwarded(stack.fake, before, thread_id)


def assert_owner_reads(url: str, stack: Stack, thread_id: str) -> None:
    owner = sdk(url, stack)
    assert owner.beta.threads.retrieve(thread_id).id == thread_id
    assert owner.beta.threads.messages.list(thread_id).data is not None


@contextlib.contextmanager
def restartable_redis() -> Iterator[RedisServer]:
    """``private_redis`` whose ``restart_empty`` children are stopped at the end too."""
    with private_redis() as server:
        original = server.proc
        try:
            yield server
        finally:
            if server.proc is not original and server.proc is not None:
                server.proc.send_signal(signal.SIGCONT)
                server.proc.terminate()
                server.proc.wait(timeout=5)


@pytest.fixture
def private() -> Iterator[RedisServer]:
    with restartable_redis() as server:
        yield server


# -- 3(a): the caller's Accept-Encoding -----------------------------------------------


@pytest.mark.parametrize("unknown", ["deny", "allow"])
def test_gzip_accept_encoding_on_create(tmp_path: Path, private: RedisServer, unknown: str) -> None:
    with owned_stack(tmp_path, private, unknown) as stack:
        created = httpx.post(
            f"{stack.url}/openai/threads",
            params=Q,
            json={},
            headers={**stack.auth(), "Accept-Encoding": "gzip"},
        )
        assert created.status_code == 200
        thread_id = created.json()["id"]
        assert_owner_reads(stack.url, stack, thread_id)
        assert_foreign_404(stack.url, stack, thread_id)
        assert stack.fake.requests[0].header_values("accept-encoding") == ["identity"]


# -- 3(b): Redis slow or down at creation -----------------------------------------------


@pytest.mark.parametrize("unknown", ["deny", "allow"])
@pytest.mark.parametrize("fault", ["stopped", "killed"])
def test_redis_down_at_creation(
    tmp_path: Path, private: RedisServer, unknown: str, fault: str
) -> None:
    assert private.proc is not None
    with owned_stack(tmp_path, private, unknown) as stack:
        if fault == "stopped":
            private.proc.send_signal(signal.SIGSTOP)
        else:
            private.proc.kill()
            private.proc.wait(timeout=5)
        thread_id = create_thread(stack, metadata={"k": "v"})
        # Still down: this replica knows the owner, a fresh one reads the stamp at Azure.
        assert_owner_reads(stack.url, stack, thread_id)
        assert_foreign_404(stack.url, stack, thread_id)
        with replica(stack) as other:
            assert_owner_reads(other, stack, thread_id)
            assert_foreign_404(other, stack, thread_id)
        assert azure_thread(stack.fake, thread_id) == {"k": "v", STAMP_KEY: owner_of(A)}
        # Redis back (without the record): another fresh replica still knows the owner.
        if fault == "stopped":
            private.proc.send_signal(signal.SIGCONT)
        else:
            restart_empty(private)
        with replica(stack) as other:
            assert_owner_reads(other, stack, thread_id)
            assert_foreign_404(other, stack, thread_id)
        assert recorded(private, thread_id) == owner_of(A).encode()


# -- 4: Redis loses its data after creation ----------------------------------------------


@pytest.mark.parametrize("unknown", ["deny", "allow"])
def test_redis_empty_restart_after_creation(
    tmp_path: Path, private: RedisServer, unknown: str
) -> None:
    with owned_stack(tmp_path, private, unknown) as stack:
        thread_id = create_thread(stack, messages=[{"role": "user", "content": "mine"}])
        assert recorded(private, thread_id) == owner_of(A).encode()
        restart_empty(private)
        assert redis_do(private, "DBSIZE") == 0
        assert_owner_reads(stack.url, stack, thread_id)
        assert_foreign_404(stack.url, stack, thread_id)
        with replica(stack) as other:  # no in-process cache entry there
            before = len(stack.fake.requests)
            assert_owner_reads(other, stack, thread_id)
            lookups = [r for r in stack.fake.requests[before:] if r.header("openai-beta") is None]
            assert len(lookups) == 1  # one Azure GET for the thread, then Redis and the cache
            assert_foreign_404(other, stack, thread_id)
        assert recorded(private, thread_id) == owner_of(A).encode()


@pytest.mark.parametrize("unknown", ["deny", "allow"])
def test_redis_flushed_with_the_cache_off(
    tmp_path: Path, private: RedisServer, unknown: str
) -> None:
    """``threads.cache_ttl_s = 0``: every lookup of this one gateway misses its own cache."""
    with owned_stack(tmp_path, private, unknown, cache_ttl_s=0) as stack:
        thread_id = create_thread(stack)
        redis_do(private, "FLUSHALL")
        assert_owner_reads(stack.url, stack, thread_id)
        redis_do(private, "FLUSHALL")
        assert_foreign_404(stack.url, stack, thread_id)


# -- the reserved key -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    with restartable_redis() as server:
        yield server


@pytest.fixture(scope="module")
def owned(tmp_path_factory: pytest.TempPathFactory, module_redis: RedisServer) -> Iterator[Stack]:
    with owned_stack(tmp_path_factory.mktemp("owned"), module_redis, "deny") as stack:
        yield stack


@pytest.fixture
def gw(owned: Stack) -> Stack:
    owned.fake.reset()
    return owned


def _post(stack: Stack, path: str, body: Any) -> httpx.Response:
    return httpx.post(f"{stack.url}/openai{path}", params=Q, json=body, headers=stack.auth())


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/threads", {"metadata": {STAMP_KEY: owner_of(B)}}, "metadata"),
        (
            "/threads",
            {"messages": [{"role": "user", "content": "x", "metadata": {STAMP_KEY: "x"}}]},
            "messages[0].metadata",
        ),
        (
            "/threads/runs",
            {"assistant_id": "asst_abc123", "thread": {"metadata": {"a": "b", STAMP_KEY: "x"}}},
            "thread.metadata",
        ),
        (
            "/threads/runs",
            {"assistant_id": "asst_abc123", "metadata": {STAMP_KEY: "x"}},
            "metadata",
        ),
        ("/threads/{id}", {"metadata": {STAMP_KEY: owner_of(B)}}, "metadata"),
        (
            "/threads/{id}/messages",
            {"role": "user", "content": "x", "metadata": {STAMP_KEY: ""}},
            "metadata",
        ),
        (
            "/threads/{id}/runs",
            {"assistant_id": "asst_abc123", "metadata": {STAMP_KEY: "x"}},
            "metadata",
        ),
    ],
)
def test_callers_cannot_set_the_reserved_key(gw: Stack, path: str, body: Any, param: str) -> None:
    thread_id = create_thread(gw)
    before = len(gw.fake.requests)
    refused = _post(gw, path.replace("{id}", thread_id), body)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "metadata_key_reserved"
    assert refused.json()["error"]["param"] == param
    assert len(gw.fake.requests) == before


def test_the_stamp_is_on_azure_and_never_shown(gw: Stack) -> None:
    owner = sdk(gw.url, gw)
    created = owner.beta.threads.with_raw_response.create(metadata={"k": "v"})
    thread = created.parse()
    assert thread.metadata == {"k": "v"}
    assert azure_thread(gw.fake, thread.id) == {"k": "v", STAMP_KEY: owner_of(A)}  # on Azure
    retrieved = owner.beta.threads.with_raw_response.retrieve(thread.id)
    modified = owner.beta.threads.with_raw_response.update(thread.id, metadata={"k": "w"})
    for raw in (created, retrieved, modified):
        assert STAMP_KEY.encode() not in raw.http_response.content
        assert int(raw.headers["content-length"]) == len(raw.http_response.content)
    assert retrieved.parse().metadata == {"k": "v"}
    assert modified.parse().metadata == {"k": "w"}
    assert azure_thread(gw.fake, thread.id) == {"k": "w", STAMP_KEY: owner_of(A)}


def test_streamed_create_and_run_hides_the_stamp(gw: Stack) -> None:
    gw.fake.run_event_delay_s = 0.01
    assistant_id = create_assistant(gw)
    with httpx.stream(
        "POST",
        f"{gw.url}/openai/threads/runs",
        params=Q,
        headers=gw.auth(),
        json={
            "assistant_id": assistant_id,
            "stream": True,
            "thread": {"metadata": {"k": "v"}, "messages": [{"role": "user", "content": "hi"}]},
        },
    ) as response:
        assert response.status_code == 200
        chunks = list(response.iter_raw())
    raw = b"".join(chunks)
    assert len(chunks) > 3  # still streamed event by event, not buffered
    assert STAMP_KEY.encode() not in raw
    first = raw.split(b"\n\n")[0].split(b"\n")
    assert first[0] == b"event: thread.created"
    created = json.loads(first[1].removeprefix(b"data: "))
    assert created["metadata"] == {"k": "v"}
    assert raw.endswith(b"event: done\ndata: [DONE]\n\n")
    assert azure_thread(gw.fake, created["id"])[STAMP_KEY] == owner_of(A)
    # The SDK reads the rewritten event like any other; a thread made without one is stamped.
    events = list(
        sdk(gw.url, gw).beta.threads.create_and_run(assistant_id=assistant_id, stream=True)
    )
    assert events[0].event == "thread.created"
    assert events[0].data.metadata == {}
    assert azure_thread(gw.fake, events[0].data.id) == {STAMP_KEY: owner_of(A)}
    assert_foreign_404(gw.url, gw, events[0].data.id)


def test_modify_cannot_remove_the_stamp(gw: Stack, module_redis: RedisServer) -> None:
    owner = sdk(gw.url, gw)
    thread_id = create_thread(gw, metadata={"a": "1"})
    assert owner.beta.threads.update(thread_id, metadata={"b": "2"}).metadata == {"b": "2"}
    cleared = httpx.post(
        f"{gw.url}/openai/threads/{thread_id}", params=Q, headers=gw.auth(), json={"metadata": None}
    )
    assert cleared.status_code == 200 and cleared.json()["metadata"] == {}
    assert owner.beta.threads.update(thread_id).metadata == {}
    redis_do(module_redis, "FLUSHALL")
    with replica(gw) as other:
        assert_owner_reads(other, gw, thread_id)
        assert_foreign_404(other, gw, thread_id)
    assert azure_thread(gw.fake, thread_id) == {STAMP_KEY: owner_of(A)}


def _pairs(n: int) -> dict[str, str]:
    return {f"key{i:02d}": f"value{i}" for i in range(n)}


def test_metadata_pairs_boundary_with_the_stamp(gw: Stack) -> None:
    owner = sdk(gw.url, gw)
    thread = owner.beta.threads.create(metadata=_pairs(15))
    assert thread.metadata == _pairs(15)
    assert len(azure_thread(gw.fake, thread.id)) == 16
    assert owner.beta.threads.update(thread.id, metadata=_pairs(15)).metadata == _pairs(15)
    assistant_id = create_assistant(gw)
    run_body = {"assistant_id": assistant_id, "thread": {"metadata": _pairs(15)}}
    assert _post(gw, "/threads/runs", run_body).status_code == 200
    before = len(gw.fake.requests)
    for path, body, param in (
        ("/threads", {"metadata": _pairs(16)}, "metadata"),
        (f"/threads/{thread.id}", {"metadata": _pairs(16)}, "metadata"),
        (
            "/threads/runs",
            {"assistant_id": assistant_id, "thread": {"metadata": _pairs(16)}},
            "thread.metadata",
        ),
    ):
        refused = _post(gw, path, body)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("metadata_too_many_pairs", param)
        assert "at most 15" in error["message"]
    assert len(gw.fake.requests) == before
    # Messages and runs carry no stamp: Azure's 16 pairs stay theirs.
    message = owner.beta.threads.messages.create(
        thread.id, role="user", content="x", metadata=_pairs(16)
    )
    assert message.metadata == _pairs(16)


# -- the lookup at Azure --------------------------------------------------------------------


def test_the_owner_lookup_is_the_gateways_own_request(gw: Stack, module_redis: RedisServer) -> None:
    thread = sdk(gw.url, gw).beta.threads.create()
    redis_do(module_redis, "FLUSHALL")
    with replica(gw) as other:
        before = len(gw.fake.requests)
        response = httpx.get(
            f"{other}/openai/threads/{thread.id}/messages",
            params={"api-version": V2},
            headers={
                **gw.auth(),
                "Accept-Encoding": "gzip",
                "Cookie": "session=caller",
                "X-Stainless-Lang": "python",
                "OpenAI-Beta": "assistants=v2",
                "User-Agent": "caller-agent",
                "x-request-id": "caller-request-1",
            },
        )
        assert response.status_code == 200
    lookup, forwarded = gw.fake.requests[before:]
    assert (lookup.method, lookup.path, lookup.query) == (
        "GET",
        f"/openai/threads/{thread.id}",
        f"api-version={NEWEST}",
    )
    assert lookup.header_values("api-key") == [gw.api_key]
    assert lookup.header_values("accept-encoding") == ["identity"]
    assert lookup.header("x-ms-client-request-id") not in (None, "caller-request-1")
    for name in ("authorization", "cookie", "x-stainless-lang", "openai-beta", "x-request-id"):
        assert lookup.header(name) is None, name
    assert lookup.header("user-agent") != "caller-agent"
    assert forwarded.path == f"/openai/threads/{thread.id}/messages"


@pytest.mark.parametrize(
    ("azure", "status", "code"),
    [
        (
            ScriptedResponse(status=500, chunks=(b'{"error":{"code":"secret-500"}}',)),
            503,
            "ownership_unavailable",
        ),
        (
            ScriptedResponse(
                status=429,
                headers=(("retry-after", "9"),),
                chunks=(b'{"error":{"code":"secret-429"}}',),
            ),
            503,
            "ownership_unavailable",
        ),
        (
            ScriptedResponse(status=302, headers=(("location", "http://127.0.0.1:1/secret"),)),
            503,
            "ownership_unavailable",
        ),
        (
            ScriptedResponse(chunks=(b'{"id":"thread_someoneelse","metadata":{}}',)),
            503,
            "ownership_unavailable",
        ),
        (ScriptedResponse(delay_headers_s=3, chunks=(b"{}",)), 503, "ownership_unavailable"),
        (
            ScriptedResponse(status=404, chunks=(b'{"error":{"code":"secret-404"}}',)),
            404,
            "thread_not_found",
        ),
    ],
)
def test_a_failed_lookup_fails_closed_and_shows_nothing(
    tmp_path: Path, module_redis: RedisServer, azure: ScriptedResponse, status: int, code: str
) -> None:
    with owned_stack(tmp_path, module_redis, "allow", lookup_timeout_s=1) as stack:
        thread = sdk(stack.url, stack).beta.threads.create()
        redis_do(module_redis, "FLUSHALL")
        stack.fake.script(azure, path_prefix=f"/openai/threads/{thread.id}")
        with replica(stack) as other:
            before = len(stack.fake.requests)
            started = time.monotonic()
            response = httpx.get(
                f"{other}/openai/threads/{thread.id}/messages",
                params=Q,
                headers=stack.auth(),
                timeout=10,
            )
            assert time.monotonic() - started < 2.5
        assert response.status_code == status
        assert response.json()["error"]["code"] == code
        assert b"secret" not in response.content
        if status == 503:
            assert response.headers["retry-after"] == "1"
        assert nothing_forwarded(stack.fake, before, thread.id)
        assert len(stack.fake.requests) == before + 1  # the lookup, never followed


def test_legacy_records_keep_working_and_get_stamped(tmp_path: Path, private: RedisServer) -> None:
    """A record written before stamping existed (its thread carries no stamp) stays the owner
    for as long as Redis keeps it; the owner's next metadata modify stamps the thread."""
    with owned_stack(tmp_path, private, "allow") as stack:
        with stack.fake.store.lock:
            legacy = stack.fake.store.create_thread({"metadata": {"k": "v"}}, "v2").id
        # The record as the previous version wrote it.
        redis_do(private, "SET", owner_key(legacy), LEGACY_A)
        with replica(stack) as other:
            assert_owner_reads(other, stack, legacy)
            assert_foreign_404(other, stack, legacy)
        # Redis down and a fresh replica: no stamp, the record cannot be read: no guessing.
        assert private.proc is not None
        private.proc.send_signal(signal.SIGSTOP)
        try:
            with replica(stack) as other:
                for namespace in (A, B):
                    with pytest.raises(openai.InternalServerError) as err:
                        sdk(other, stack, namespace).beta.threads.retrieve(legacy)
                    assert err.value.status_code == 503
        finally:
            private.proc.send_signal(signal.SIGCONT)
        owner = sdk(stack.url, stack)
        assert owner.beta.threads.update(legacy, metadata={"k": "w"}).metadata == {"k": "w"}
        assert azure_thread(stack.fake, legacy) == {"k": "w", STAMP_KEY: owner_of(A)}
        redis_do(private, "FLUSHALL")
        with replica(stack) as other:
            assert_owner_reads(other, stack, legacy)
            assert_foreign_404(other, stack, legacy)


def test_an_unowned_threads_modify_is_never_stamped(tmp_path: Path, private: RedisServer) -> None:
    """``unknown = "allow"``: anyone may use a thread created outside the gateway, and no one
    takes it over by modifying it."""
    with owned_stack(tmp_path, private, "allow") as stack:
        with stack.fake.store.lock:
            legacy = stack.fake.store.create_thread({}, "v2").id
        for namespace in (B, A):
            updated = sdk(stack.url, stack, namespace).beta.threads.update(
                legacy, metadata={"by": namespace}
            )
            assert updated.metadata == {"by": namespace}
        assert azure_thread(stack.fake, legacy) == {"by": A}
