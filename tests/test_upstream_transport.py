"""The upstream adapter's properties under EVERY transport (``upstream.transport``).

The default transport changed from httpcore ("httpx") to aiohttp, then to the gateway's own
HTTP/1.1 client ("h1"), for CPU cost; every property
the proxy relies on is checked here against each, over real loopback servers: streaming chunk
by chunk, compressed bodies relayed raw, no cookie replay, timeouts → 504, connect errors →
502, a full pool → 503, a cut stays a cut, and a client disconnect closes the upstream request.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from gateway.upstream import h1
from tests.fakeazure import ScriptedResponse
from tests.rawhttp import build_request, raw_request
from tests.servers import free_port
from tests.stack import V2, Stack, running_stack

T = "thread_abc123"
TRANSPORTS = ["h1", "aiohttp", "httpx"]


@pytest.fixture(scope="module", params=TRANSPORTS)
def transport_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp(f"t-{request.param}"),
        overrides={"upstream": {"transport": request.param}},
    ) as running:
        yield running


@pytest.fixture
def ts(transport_stack: Stack) -> Stack:
    transport_stack.fake.reset()
    return transport_stack


def _messages(gw: Stack) -> str:
    return f"{gw.url}/openai/threads/{T}/messages"


def test_the_configured_transport_is_the_one_used(ts: Stack) -> None:
    response = httpx.post(
        f"{ts.url}/openai/threads", params={"api-version": V2}, json={}, headers=ts.auth()
    )
    assert response.status_code == 200
    upstream = ts.gateway.upstream
    if ts.config.upstream.transport == "h1":
        # The gateway's own HTTP/1.1 client: no aiohttp session, no httpx transport.
        assert upstream.transport is None and upstream._session is None
        assert isinstance(upstream._h1, h1.Pool)
    elif ts.config.upstream.transport == "aiohttp":
        # The aiohttp session, called directly: no httpx transport in between.
        assert upstream.transport is None
        assert isinstance(upstream._session, aiohttp.ClientSession)
    else:
        assert isinstance(upstream.transport, httpx.AsyncHTTPTransport)
        assert upstream._session is None


def test_body_arrives_chunk_by_chunk(ts: Stack) -> None:
    chunks = tuple(f'event: thread.message.delta\ndata: {{"i":{i}}}\n\n'.encode() for i in range(5))
    ts.fake.script(
        ScriptedResponse(
            chunks=chunks, chunk_delay_s=0.3, headers=(("content-type", "text/event-stream"),)
        )
    )
    arrivals: list[tuple[float, bytes]] = []
    started = time.monotonic()
    with httpx.stream(
        "GET", _messages(ts), params={"api-version": V2}, headers=ts.auth(), timeout=10
    ) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    assert b"".join(c for _, c in arrivals) == b"".join(chunks)
    assert arrivals[0][0] < 0.6  # not buffered until the end (~1.2 s)
    assert arrivals[-1][0] > 1.0
    assert len(arrivals) >= 4


def test_gzip_body_is_relayed_raw(ts: Stack) -> None:
    payload = gzip.compress(b'{"object":"list","data":[]}')
    ts.fake.script(
        ScriptedResponse(
            chunks=(payload,),
            headers=(("content-type", "application/json"), ("content-encoding", "gzip")),
        )
    )
    with httpx.stream(
        "GET",
        _messages(ts),
        params={"api-version": V2},
        headers={**ts.auth(), "Accept-Encoding": "gzip"},
    ) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert raw == payload  # not decompressed by the transport
    # The caller's Accept-Encoding never goes upstream: the gateway asks for identity.
    assert ts.fake.requests[0].header_values("accept-encoding") == ["identity"]


def test_upstream_cookies_are_never_replayed(ts: Stack) -> None:
    for namespace in ("team-a", "team-b", "team-a"):
        response = httpx.post(
            f"{ts.url}/openai/threads",
            params={"api-version": V2},
            json={},
            headers=ts.auth(namespace=namespace),
        )
        assert response.status_code == 200
        assert "set-cookie" not in response.headers
    assert all(r.header("cookie") is None for r in ts.fake.requests)
    session = ts.gateway.upstream._session
    if session is not None:
        assert len(session.cookie_jar) == 0


#: What the gateway itself puts on a request to Azure besides the caller's allowed headers
#: (its credential, request id and encoding; the framing the HTTP client writes).
_GATEWAY_OWN = {"host", "content-length", "accept-encoding", "api-key", "x-ms-client-request-id"}


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("POST", f"/openai/threads/{T}/runs/run_abc123/cancel", b""),  # a POST without a body
        ("POST", f"/openai/threads/{T}/messages", b'{"role":"user","content":"hi"}'),
        ("GET", f"/openai/threads/{T}/messages", b""),
    ],
)
def test_the_http_client_adds_no_header_of_its_own(
    ts: Stack, method: str, target: str, body: bytes
) -> None:
    """A caller that sends no User-Agent, Accept or Content-Type: Azure gets none of them
    (aiohttp would add ``User-Agent: Python/aiohttp``, ``Accept: */*`` and, on a POST without
    a body, ``Content-Type: application/octet-stream``); the only content type is the one the
    gateway sets on a body."""
    headers = dict(ts.auth())
    if body:
        headers["Content-Type"] = "application/json"
    response = raw_request(
        ts.url, build_request(method, f"{target}?api-version={V2}", headers, body)
    )
    assert response.status < 500, response.body
    [rec] = ts.fake.requests
    names = {name for name, _ in rec.headers}
    allowed = _GATEWAY_OWN | ({"content-type"} if body else set())
    assert names <= allowed, sorted(names - allowed)
    assert rec.header("user-agent") is None and rec.header("accept") is None
    if body:
        assert rec.header_values("content-type") == ["application/json"]


def test_the_callers_user_agent_and_accept_are_the_only_ones(ts: Stack) -> None:
    headers = {**ts.auth(), "User-Agent": "caller-agent/1", "Accept": "application/json"}
    response = raw_request(
        ts.url, build_request("GET", f"/openai/threads/{T}/messages?api-version={V2}", headers)
    )
    assert response.status < 500, response.body
    [rec] = ts.fake.requests
    assert rec.header_values("user-agent") == ["caller-agent/1"]
    assert rec.header_values("accept") == ["application/json"]


def test_read_timeout_is_504_and_not_retried(ts: Stack, tmp_path: Path) -> None:
    with running_stack(
        tmp_path,
        overrides={"upstream": {"transport": ts.config.upstream.transport, "read_timeout_s": 0.3}},
    ) as gw:
        gw.fake.script(ScriptedResponse(delay_headers_s=2.0, chunks=(b"{}",)))
        started = time.monotonic()
        response = httpx.post(
            f"{gw.url}/openai/threads", params={"api-version": V2}, json={}, headers=gw.auth()
        )
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "upstream_timeout"
        assert time.monotonic() - started < 1.5
        assert len(gw.fake.requests) == 1


def test_connect_error_is_502(ts: Stack, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with running_stack(
        tmp_path,
        overrides={"upstream": {"transport": ts.config.upstream.transport, "endpoint": dead}},
    ) as gw:
        response = httpx.post(
            f"{gw.url}/openai/threads", params={"api-version": V2}, json={}, headers=gw.auth()
        )
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_unreachable"


def test_full_pool_is_503(ts: Stack, tmp_path: Path) -> None:
    with running_stack(
        tmp_path,
        overrides={
            "upstream": {
                "transport": ts.config.upstream.transport,
                "max_connections": 1,
                "max_keepalive": 1,
                "pool_timeout_s": 0.2,
                "connect_timeout_s": 0.2,
            }
        },
    ) as gw:
        gw.fake.script(ScriptedResponse(delay_headers_s=2.0, chunks=(b"{}",)))
        holder = threading.Thread(
            target=lambda: httpx.get(
                _messages(gw), params={"api-version": V2}, headers=gw.auth(), timeout=10
            )
        )
        holder.start()
        assert gw.fake.wait_for_requests(1, timeout=5)
        response = httpx.get(
            _messages(gw), params={"api-version": V2}, headers=gw.auth(), timeout=10
        )
        holder.join()
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "upstream_pool_exhausted"


def test_cut_mid_body_is_a_cut(ts: Stack) -> None:
    chunks = (b"event: thread.run.created\ndata: {}\n\n",) * 4
    ts.fake.script(
        ScriptedResponse(
            chunks=chunks,
            cut_after=2,
            chunk_delay_s=0.05,
            headers=(("content-type", "text/event-stream"),),
        )
    )
    received = bytearray()
    with (  # noqa: PT012 (the stream is read inside the raises block)
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "GET", _messages(ts), params={"api-version": V2}, headers=ts.auth()
        ) as response,
    ):
        for chunk in response.iter_raw():
            received += chunk
    assert bytes(received) == b"".join(chunks[:2])


@pytest.mark.parametrize("during", ["body", "headers"])
def test_client_disconnect_closes_the_upstream_request(ts: Stack, during: str) -> None:
    if during == "body":
        script = ScriptedResponse(
            chunks=(b"x" * 100,) * 50,
            chunk_delay_s=0.2,
            headers=(("content-type", "text/event-stream"),),
        )
    else:
        script = ScriptedResponse(delay_headers_s=5.0, chunks=(b"{}",))
    ts.fake.script(script)
    port = int(ts.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(build_request("GET", f"/openai/threads/{T}/messages?api-version={V2}", ts.auth()))
    assert ts.fake.wait_for_requests(1, timeout=5)
    if during == "body":
        assert sock.recv(1024)
    sock.close()
    closed_at = time.monotonic()
    [rec] = ts.fake.requests
    assert rec.closed_early.wait(timeout=3), "the upstream request stayed open"
    assert time.monotonic() - closed_at < 1.5
    assert not rec.finished.is_set()
