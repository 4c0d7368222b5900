"""Streaming through a real uvicorn gateway: no buffering, cuts stay cuts, disconnects close
the upstream request."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from gateway.fakeazure import ScriptedResponse
from tests.rawhttp import build_request
from tests.stack import V2, Stack

T = "thread_abc123"


def test_slow_upstream_body_arrives_chunk_by_chunk(gw: Stack) -> None:
    chunks = tuple(f'{{"part":{i}}}\n'.encode() for i in range(5))
    gw.fake.script(ScriptedResponse(chunks=chunks, chunk_delay_s=0.3,
                                    headers=(("content-type", "application/json"),)))
    arrivals: list[tuple[float, bytes]] = []
    started = time.monotonic()
    with httpx.stream("GET", f"{gw.url}/openai/threads/{T}/messages",
                      params={"api-version": V2}, headers=gw.auth(), timeout=10) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    body = b"".join(c for _, c in arrivals)
    assert body == b"".join(chunks)  # byte for byte
    # The first bytes arrive long before the upstream finishes (~1.2 s for all five).
    assert arrivals[0][0] < 0.6
    assert arrivals[-1][0] > 1.0
    assert len(arrivals) >= 4


def test_compressed_upstream_body_is_relayed_raw(gw: Stack) -> None:
    import gzip

    payload = gzip.compress(b'{"object":"list","data":[]}')
    gw.fake.script(ScriptedResponse(chunks=(payload,), headers=(
        ("content-type", "application/json"), ("content-encoding", "gzip"))))
    with httpx.stream("GET", f"{gw.url}/openai/threads/{T}/messages",
                      params={"api-version": V2},
                      headers={**gw.auth(), "Accept-Encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert raw == payload
    assert gw.fake.requests[0].header("accept-encoding") == "gzip"


def test_caller_without_accept_encoding_gets_identity(gw: Stack) -> None:
    with socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(build_request("POST", f"/openai/threads?api-version={V2}",
                                   {**gw.auth(), "Content-Type": "application/json"}, b"{}"))
        sock.recv(65536)
    assert gw.fake.requests[0].header("accept-encoding") == "identity"


def test_upstream_cut_mid_body_is_a_cut_for_the_client(gw: Stack) -> None:
    chunks = (b"event: thread.run.created\ndata: {}\n\n",) * 4
    gw.fake.script(ScriptedResponse(chunks=chunks, cut_after=2, chunk_delay_s=0.05,
                                    headers=(("content-type", "text/event-stream"),)))
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream(  # noqa: PT012
            "GET", f"{gw.url}/openai/threads/{T}/messages", params={"api-version": V2},
            headers=gw.auth()) as response:
        for chunk in response.iter_raw():
            received += chunk
    assert bytes(received) == b"".join(chunks[:2])
    assert b"[DONE]" not in received


@pytest.mark.parametrize("during", ["body", "headers"])
def test_client_disconnect_closes_the_upstream_request(gw: Stack, during: str) -> None:
    if during == "body":
        script = ScriptedResponse(chunks=(b"x" * 100,) * 50, chunk_delay_s=0.2,
                                  headers=(("content-type", "text/event-stream"),))
    else:
        script = ScriptedResponse(delay_headers_s=5.0, chunks=(b"{}",))
    gw.fake.script(script)
    port = int(gw.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(build_request("GET", f"/openai/threads/{T}/messages?api-version={V2}",
                               gw.auth()))
    assert gw.fake.wait_for_requests(1, timeout=5)
    if during == "body":
        assert sock.recv(1024)  # the response has started streaming
    sock.close()
    closed_at = time.monotonic()
    [rec] = gw.fake.requests
    assert rec.closed_early.wait(timeout=3), "the upstream request stayed open"
    assert time.monotonic() - closed_at < 1.5
    assert not rec.finished.is_set()
