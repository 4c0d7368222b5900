"""Runs and server-sent events through a real gateway, and tenant isolation of threads."""

from __future__ import annotations

import gc
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.beta.threads import Message

from tests.fakeazure import ScriptedResponse
from tests.rawhttp import build_request
from tests.servers import RedisServer
from tests.stack import V2, Stack, running_stack


def sdk(stack: Stack, namespace: str = "team-a") -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=stack.url,
        api_version=V2,
        max_retries=0,
        azure_ad_token=stack.token(namespace=namespace),
    )


def test_sdk_streamed_run_events_arrive_one_by_one(gw: Stack) -> None:
    gw.fake.run_event_delay_s = 0.1
    client = sdk(gw)
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread.id, role="user", content="What is 2+2?")
    seen: list[tuple[float, str]] = []
    started = time.monotonic()
    stream = client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id="asst_abc123", stream=True
    )
    for event in stream:
        seen.append((time.monotonic() - started, event.event))
    names = [name for _, name in seen]
    assert names[0] == "thread.run.created"
    assert names[-1] == "thread.run.completed"
    assert "thread.message.delta" in names
    # Each event was relayed as it was produced: arrival times spread out with the upstream's
    # 0.1 s pacing instead of arriving in one batch at the end.
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(seen)]
    assert sum(1 for g in gaps if g > 0.05) >= len(gaps) - 2
    assert seen[0][0] < seen[-1][0] - 0.5
    final = client.beta.threads.messages.list(thread.id, order="desc").data[0]
    assert final.role == "assistant"
    [run_request] = [r for r in gw.fake.requests if r.path.endswith("/runs")]
    assert run_request.json()["stream"] is True
    response_headers = stream.response.headers
    assert response_headers["content-type"].startswith("text/event-stream")
    assert response_headers["cache-control"] == "no-cache"
    assert response_headers["x-accel-buffering"] == "no"
    assert "content-length" not in response_headers


def test_sdk_run_stream_helper_gets_the_final_message(gw: Stack) -> None:
    client = sdk(gw)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hello there"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id="asst_abc123") as stream:
        messages: list[Message] = stream.get_final_messages()
    assert messages
    assert messages[-1].role == "assistant"
    assert messages[-1].content[0].type == "text"


def test_create_thread_and_run_streamed_records_the_new_thread(isolated: Stack) -> None:
    client = sdk(isolated)
    # With ownership on, the run's assistant must be the caller's own (a reference).
    made = httpx.post(
        f"{isolated.url}/openai/assistants",
        params={"api-version": V2},
        json={"model": "gpt-4o"},
        headers=isolated.auth(),
    )
    assert made.status_code == 200, made.text
    stream = client.beta.threads.create_and_run(
        assistant_id=made.json()["id"],
        stream=True,
        thread={"messages": [{"role": "user", "content": "hi"}]},
    )
    events = list(stream)
    assert events[0].event == "thread.created"
    thread_id = events[0].data.id
    # The owner was recorded before the stream reached the caller: team-a may use the thread,
    # team-b may not even see it.
    assert client.beta.threads.messages.list(thread_id).data
    with pytest.raises(openai.NotFoundError):
        sdk(isolated, namespace="team-b").beta.threads.messages.list(thread_id)


def test_polled_run_and_run_steps(gw: Stack) -> None:
    client = sdk(gw)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "poll me"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id="asst_abc123", poll_interval_ms=50
    )
    assert run.status == "completed"
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    assert steps.data
    listed = client.beta.threads.runs.list(thread.id)
    assert [r.id for r in listed.data] == [run.id]


def test_bypass_through_additional_messages_is_refused(gw: Stack) -> None:
    client = sdk(gw)
    thread = client.beta.threads.create()
    gw.fake.reset()
    with pytest.raises(openai.BadRequestError) as err:
        client.beta.threads.runs.create(
            thread_id=thread.id,
            assistant_id="asst_abc123",
            additional_messages=[
                {"role": "user", "content": "x", "metadata": {f"k{i}": "v" for i in range(17)}}
            ],
        )
    assert err.value.code == "metadata_too_many_pairs"
    assert gw.fake.requests == []


def test_cut_stream_ends_without_a_made_up_done(gw: Stack) -> None:
    gw.fake.fail_runs_after_events = 4
    try:
        client = sdk(gw)
        thread = client.beta.threads.create()
        with httpx.stream(
            "POST",
            f"{gw.url}/openai/threads/{thread.id}/runs",
            params={"api-version": V2},
            headers=gw.auth(),
            json={"assistant_id": "asst_abc123", "stream": True},
        ) as response:
            assert response.status_code == 200
            received = bytearray()
            with pytest.raises(httpx.RemoteProtocolError):  # noqa: PT012
                for chunk in response.iter_raw():
                    received += chunk
    finally:
        gw.fake.fail_runs_after_events = None
    assert received.count(b"event: ") == 4
    assert b"[DONE]" not in received
    assert b"event: done" not in received


def _sse_script(count: int) -> ScriptedResponse:
    frame = b'event: thread.message.delta\ndata: {"id":"msg_x"}\n\n'
    return ScriptedResponse(
        chunks=(frame,) * 40, chunk_delay_s=0.05, headers=(("content-type", "text/event-stream"),)
    )


def test_client_disconnect_mid_stream_closes_upstream_within_a_second(gw: Stack) -> None:
    gw.fake.script(_sse_script(1), path_prefix="/openai/threads/")
    port = int(gw.url.rsplit(":", 1)[1])
    body = json.dumps({"assistant_id": "asst_abc123", "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            build_request(
                "POST",
                f"/openai/threads/thread_abc123/runs?api-version={V2}",
                {**gw.auth(), "Content-Type": "application/json"},
                body,
            )
        )
        received = b""
        while b"thread.message.delta" not in received:
            chunk = sock.recv(4096)
            assert chunk, "stream ended early"
            received += chunk
    closed = time.monotonic()
    [rec] = gw.fake.requests
    assert rec.closed_early.wait(2.0)
    assert time.monotonic() - closed < 1.5


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_a_thousand_disconnects_leave_no_leak(gw: Stack) -> None:
    total, workers = 1000, 25
    gw.fake.script(_sse_script(total), path_prefix="/openai/threads/", count=total)
    port = int(gw.url.rsplit(":", 1)[1])
    request = build_request(
        "POST",
        f"/openai/threads/thread_abc123/runs?api-version={V2}",
        {**gw.auth(), "Content-Type": "application/json"},
        b'{"assistant_id":"asst_abc123","stream":true}',
    )
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for _ in range(n):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(request)
                    sock.recv(256)  # the stream has started; now vanish
        except BaseException as exc:
            errors.append(exc)

    def run_batch(n: int) -> None:
        threads = [threading.Thread(target=worker, args=(n // workers,)) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)

    run_batch(100)  # warm-up: pools, caches and allocator arenas reach their working size
    assert _wait(lambda: all(r.outcome.ended.is_set() for r in gw.fake.requests), 10)
    gc.collect()
    fds, rss = _fd_count(), _rss_kib()
    run_batch(total - 100)
    assert not errors
    assert _wait(lambda: all(r.outcome.ended.is_set() for r in gw.fake.requests), 15)
    assert all(r.closed_early.is_set() for r in gw.fake.requests)
    assert _wait(lambda: gw.gateway.inflight == 0, 5)
    assert gw.gateway.upstream.pool_connections() <= gw.config.upstream.max_keepalive
    gc.collect()
    assert _wait(lambda: _fd_count() <= fds + 10, 5), (fds, _fd_count())
    assert _rss_kib() - rss < 40_000, (rss, _rss_kib())


def _wait(predicate: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


# ---------------------------------------------------------------- ownership


def _owned_stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, unknown: str
) -> Iterator[Stack]:
    url = os.environ.get("GATEWAY_TEST_REDIS_URL") or redis_server.url
    with running_stack(
        Path(tmp_path_factory.mktemp("owned")),
        redis_url=url,
        overrides={"threads": {"ownership": True, "unknown": unknown}},
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def isolated(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Stack]:
    yield from _owned_stack(tmp_path_factory, redis_server, "deny")


@pytest.fixture(scope="module")
def allowing(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Stack]:
    yield from _owned_stack(tmp_path_factory, redis_server, "allow")


def _only_owner_lookups(stack: Stack, since: int, thread_id: str) -> bool:
    """What reached Azure since ``since`` is at most the gateway's own owner lookups of
    ``thread_id`` (``GET`` of the thread, none of the caller's headers): nothing forwarded."""
    return all(
        r.method == "GET"
        and r.path == f"/openai/threads/{thread_id}"
        and r.header("x-stainless-lang") is None
        and r.header("openai-beta") is None
        for r in stack.fake.requests[since:]
    )


def test_tenants_cannot_touch_each_others_threads(isolated: Stack) -> None:
    a, b = sdk(isolated, "team-a"), sdk(isolated, "team-b")
    thread = a.beta.threads.create()
    message = a.beta.threads.messages.create(thread.id, role="user", content="private")
    before = len(isolated.fake.requests)
    attempts: list[Callable[[], object]] = [
        lambda: b.beta.threads.retrieve(thread.id),
        lambda: b.beta.threads.update(thread.id, metadata={"x": "y"}),
        lambda: b.beta.threads.messages.list(thread.id),
        lambda: b.beta.threads.messages.retrieve(message.id, thread_id=thread.id),
        lambda: b.beta.threads.messages.create(thread.id, role="user", content="hi"),
        lambda: b.beta.threads.messages.update(message.id, thread_id=thread.id, metadata={}),
        lambda: b.beta.threads.messages.delete(message.id, thread_id=thread.id),
        lambda: b.beta.threads.runs.create(thread_id=thread.id, assistant_id="asst_abc123"),
        lambda: b.beta.threads.runs.list(thread.id),
        lambda: b.beta.threads.delete(thread.id),
    ]
    for attempt in attempts:
        with pytest.raises(openai.NotFoundError) as err:
            attempt()
        assert err.value.code == "thread_not_found"
    assert len(isolated.fake.requests) == before
    # Another caller of the same tenant shares its threads.
    same_tenant = openai.AzureOpenAI(
        azure_endpoint=isolated.url,
        api_version=V2,
        max_retries=0,
        azure_ad_token=isolated.token(namespace="team-a", sa="two"),
    )
    assert same_tenant.beta.threads.messages.list(thread.id).data[0].id == message.id


def test_unknown_threads_are_denied_and_deleted_threads_are_forgotten(isolated: Stack) -> None:
    a = sdk(isolated)
    before = len(isolated.fake.requests)
    with pytest.raises(openai.NotFoundError) as err:
        a.beta.threads.messages.list("thread_createdelsewhere01")
    assert err.value.code == "thread_not_found"
    assert _only_owner_lookups(isolated, before, "thread_createdelsewhere01")
    thread = a.beta.threads.create()
    assert a.beta.threads.delete(thread.id).deleted is True
    before = len(isolated.fake.requests)
    with pytest.raises(openai.NotFoundError) as err:
        a.beta.threads.retrieve(thread.id)
    assert err.value.code == "thread_not_found"
    assert _only_owner_lookups(isolated, before, thread.id)


def test_unknown_threads_may_be_allowed(allowing: Stack) -> None:
    # unknown = "allow": a thread Azure has without an owner stamp (created outside the
    # gateway) is usable by any tenant; one Azure does not have is the gateway's 404.
    allowing.fake.reset()
    with allowing.fake.store.lock:
        legacy = allowing.fake.store.create_thread({}, "v2").id
    for namespace in ("team-a", "team-b"):
        assert sdk(allowing, namespace).beta.threads.messages.list(legacy).data == []
    with pytest.raises(openai.NotFoundError) as err:
        sdk(allowing).beta.threads.messages.list("thread_createdelsewhere02")
    assert err.value.code == "thread_not_found"
    assert [r.path for r in allowing.fake.requests] == [
        f"/openai/threads/{legacy}",
        f"/openai/threads/{legacy}/messages",
        f"/openai/threads/{legacy}/messages",
        "/openai/threads/thread_createdelsewhere02",
    ]
