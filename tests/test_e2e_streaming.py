"""Relaying through a real uvicorn gateway: a chunked body of unknown length (not SSE) is
passed on as it arrives, and the caller's missing Accept-Encoding never lets the upstream
client ask for compression on its behalf. (Per-transport streaming, gzip, cuts and
disconnects: tests/test_upstream_transport.py; SSE runs: tests/test_e2e_runs.py.)"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.fakeazure import ScriptedResponse
from tests.rawhttp import build_request
from tests.stack import V2, Stack, running_stack

T = "thread_abc123"


def test_slow_upstream_body_arrives_chunk_by_chunk(gw: Stack) -> None:
    chunks = tuple(f'{{"part":{i}}}\n'.encode() for i in range(5))
    gw.fake.script(
        ScriptedResponse(
            chunks=chunks, chunk_delay_s=0.3, headers=(("content-type", "application/json"),)
        )
    )
    arrivals: list[tuple[float, bytes]] = []
    started = time.monotonic()
    with httpx.stream(
        "GET",
        f"{gw.url}/openai/threads/{T}/messages",
        params={"api-version": V2},
        headers=gw.auth(),
        timeout=10,
    ) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    body = b"".join(c for _, c in arrivals)
    assert body == b"".join(chunks)  # byte for byte
    # The first bytes arrive long before the upstream finishes (~1.2 s for all five).
    assert arrivals[0][0] < 0.6
    assert arrivals[-1][0] > 1.0
    assert len(arrivals) >= 4


def test_a_body_of_declared_length_still_arriving_is_relayed_as_it_arrives(gw: Stack) -> None:
    """Only a body that came whole with its headers goes on as one message: one still coming
    is never held back for its end."""
    chunks = tuple(f'{{"part":{i}}}\n'.encode() for i in range(4))
    length = str(sum(len(c) for c in chunks))
    gw.fake.script(
        ScriptedResponse(
            chunks=chunks,
            chunk_delay_s=0.3,
            headers=(("content-type", "application/json"), ("content-length", length)),
        )
    )
    arrivals: list[tuple[float, bytes]] = []
    started = time.monotonic()
    with httpx.stream(
        "GET",
        f"{gw.url}/openai/threads/{T}/messages",
        params={"api-version": V2},
        headers=gw.auth(),
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == length
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    assert b"".join(c for _, c in arrivals) == b"".join(chunks)
    assert arrivals[0][0] < 0.5  # long before the last part (~0.9 s)
    assert arrivals[-1][0] > 0.8
    assert len(arrivals) >= 3


def test_caller_without_accept_encoding_gets_identity(gw: Stack) -> None:
    with socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(
            build_request(
                "POST",
                f"/openai/threads?api-version={V2}",
                {**gw.auth(), "Content-Type": "application/json"},
                b"{}",
            )
        )
        sock.recv(65536)
    assert gw.fake.requests[0].header("accept-encoding") == "identity"


def test_a_dribbling_stream_is_cut_at_its_deadline(tmp_path: Path) -> None:
    with running_stack(tmp_path, overrides={"upstream": {"stream_max_duration_s": 1.0}}) as gw:
        # Each event arrives well inside the per-read timeout; only the total deadline stops it.
        gw.fake.script(
            ScriptedResponse(
                chunks=(b"event: x\ndata: {}\n\n",) * 20,
                chunk_delay_s=0.25,
                headers=(("content-type", "text/event-stream"),),
            )
        )
        started = time.monotonic()
        received = bytearray()
        with (  # noqa: PT012 (the stream is read inside the raises block)
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream(
                "GET",
                f"{gw.url}/openai/threads/{T}/messages",
                params={"api-version": V2},
                headers=gw.auth(),
                timeout=10,
            ) as response,
        ):
            for chunk in response.iter_raw():
                received += chunk
        elapsed = time.monotonic() - started
        assert 0.9 < elapsed < 3.0
        assert 0 < received.count(b"event: x") < 20
        [rec] = gw.fake.requests
        assert rec.closed_early.wait(2)
