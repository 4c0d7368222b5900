"""The benchmark's fake Azure (``tests/benchmark/servers.py``): the fast protocol server the
benchmark runs answers byte for byte as the same app under uvicorn did (status lines, header
names, order and values, chunked SSE, ``connection: close``), the thread's owner stamp read
back included. Both as real processes on loopback; only the ``date`` value may differ."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping

import pytest

from tests.benchmark.servers import ASSISTANT_ID, THREAD_ID
from tests.servers import free_port, wait_for_port

pytestmark = pytest.mark.timeout(60)
_DATE = re.compile(rb"\r\ndate: [^\r]*\r\n")


def _request(
    method: str, path: str, body: Mapping[str, object] | None, close: bool = False
) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    head = [f"{method} {path} HTTP/1.1", "Host: azure", f"Content-Length: {len(data)}"]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


_STAMP = {"metadata": {"gw_owner": "t:abc", "conversation": "c1"}}
EXCHANGES = [
    _request("POST", "/openai/threads?api-version=x", _STAMP),
    _request("GET", f"/openai/threads/{THREAD_ID}?api-version=x", None),
    _request("POST", "/openai/assistants", {"model": "gpt-4o", "metadata": {"a": "b"}}),
    _request("GET", f"/openai/assistants/{ASSISTANT_ID}", None),
    _request("POST", f"/openai/threads/{THREAD_ID}/messages?api-version=x", {"role": "user"}),
    _request("POST", f"/openai/threads/{THREAD_ID}/runs", {"stream": True}),
    _request("GET", "/openai/files", None),
    _request("POST", f"/openai/threads/{THREAD_ID}/messages", {"role": "user"}, close=True),
]


def _read_one(sock: socket.socket, buf: bytearray) -> bytes:
    """One response from ``buf`` + the socket (content-length or chunked)."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buf[:end]).lower()
            if b"transfer-encoding: chunked" in head:
                stop = buf.find(b"\r\n0\r\n\r\n", end)
                if stop >= 0:
                    size = stop + 7
                    break
            else:
                match = re.search(rb"content-length: (\d+)", head)
                size = end + 4 + (int(match.group(1)) if match else 0)
                if len(buf) >= size:
                    break
        try:
            chunk = sock.recv(65536)
        except TimeoutError:  # a framing that differs: say what arrived, not the 60 s timeout
            raise AssertionError(f"no complete response in 5 s: {bytes(buf)!r}") from None
        if not chunk:
            raise AssertionError(f"closed early: {bytes(buf)!r}")
        buf += chunk
    one = bytes(buf[:size])
    del buf[:size]
    return one


def _exchange(port: int) -> tuple[list[bytes], bytes]:
    answers: list[bytes] = []
    buf = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for request in EXCHANGES:
            sock.sendall(request)
            answers.append(_DATE.sub(b"\r\ndate: -\r\n", _read_one(sock, buf)))
        rest = bytes(buf) + sock.recv(65536)  # closed after the "connection: close" one
    return answers, rest


@pytest.fixture
def servers() -> Iterator[dict[str, int]]:
    ports: dict[str, int] = {}
    procs = []
    try:
        for kind in ("upstream", "upstream-uvicorn"):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.benchmark.servers", kind, str(port)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_for_port(port, timeout=20)
            ports[kind] = port
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def test_the_fast_upstream_answers_as_uvicorn_did(servers: dict[str, int]) -> None:
    fast, fast_rest = _exchange(servers["upstream"])
    asgi, asgi_rest = _exchange(servers["upstream-uvicorn"])
    assert fast == asgi
    assert fast_rest == asgi_rest == b""
    assert b"gw_owner" in fast[1] and fast[1].startswith(b"HTTP/1.1 200 OK\r\ndate: -\r\n")
    assert fast[5].count(b"event: ") == 27 and b"transfer-encoding: chunked" in fast[5]
    assert fast[6].startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"connection: close" in fast[7]
