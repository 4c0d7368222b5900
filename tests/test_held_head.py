"""The gateway's HTTP protocol sends a response's head with its body (``HeldHead``).

uvicorn writes a head and its body in two ``write`` calls; each one that finds the client
asleep costs a wake-up. The gateway's protocol holds a head of declared length until the first
body write, a stream's head (or a bodiless or ``HEAD`` answer's) until the end of the loop
iteration at the latest, and never loses or reorders what it holds. Checked on a real uvicorn
server running the protocol, with raw sockets, and on the transport wrapper itself.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.server.protocol import ConnectionLimits, HeldHead, protocol_class
from tests.servers import ThreadedUvicorn

pytestmark = pytest.mark.timeout(30)

#: What the app sends once the test lets it go on.
GO = threading.Event()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    path = scope["path"]
    if path == "/length":  # a body of declared length that comes later
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"5")],
            }
        )
        await _go()
        await send({"type": "http.response.body", "body": b"hello"})
    elif path == "/stream":  # a stream whose first chunk comes later
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await _go()
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    else:  # /json: head and body in one go, then the next request on the connection
        body = b'{"ok": true}'
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _go() -> None:
    while not GO.is_set():
        await asyncio.sleep(0.01)


@pytest.fixture
def server() -> Iterator[ThreadedUvicorn]:
    GO.clear()
    limits = ConnectionLimits(10, 10, 64, 64)
    with ThreadedUvicorn(app, lifespan="off", http=protocol_class(limits)) as running:
        yield running
    GO.set()


def _connect(server: ThreadedUvicorn) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _arrived(sock: socket.socket, wait_s: float) -> bytes:
    """What has arrived within ``wait_s`` (b"": nothing)."""
    sock.settimeout(wait_s)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return b""
    finally:
        sock.settimeout(5)


def _read_response(sock: socket.socket, first: bytes = b"") -> bytes:
    data = first
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(line[15:]) for line in lines if line.startswith(b"content-length:")), 0)
    if b"transfer-encoding: chunked" in lines:
        while not rest.endswith(b"0\r\n\r\n"):
            rest += sock.recv(65536)
    else:
        while len(rest) < length:
            rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest


def test_a_head_of_declared_length_waits_for_its_body(server: ThreadedUvicorn) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /length HTTP/1.1\r\nhost: x\r\n\r\n")
        assert _arrived(sock, 0.3) == b""  # uvicorn alone sends the head at once
        GO.set()
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"\r\n\r\nhello")


def test_a_streams_head_is_not_held_for_its_first_chunk(server: ThreadedUvicorn) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        head = _arrived(sock, 2)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n"), head
        assert b"transfer-encoding: chunked" in head
        GO.set()
        response = _read_response(sock, head)
    assert response.endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n")


@pytest.mark.parametrize("method", [b"HEAD", b"GET"])
def test_bodiless_answers_and_keep_alive_requests_complete(
    server: ThreadedUvicorn, method: bytes
) -> None:
    """A ``HEAD`` answer writes nothing after its head and a 204 none of its own: each head
    leaves anyway, and the connection's next requests are answered in order."""
    with _connect(server) as sock:
        sock.sendall(method + b" /json HTTP/1.1\r\nhost: x\r\n\r\n")
        first = _read_response(sock) if method == b"GET" else sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 12" in first
        assert first.endswith(b'{"ok": true}' if method == b"GET" else b"\r\n\r\n")
        sock.sendall(b"GET /empty HTTP/1.1\r\nhost: x\r\n\r\n")
        second = _read_response(sock)
        assert second.startswith(b"HTTP/1.1 204 No Content\r\n"), second
        sock.sendall(b"GET /json HTTP/1.1\r\nhost: x\r\n\r\nGET /json HTTP/1.1\r\nhost: x\r\n\r\n")
        both = b""
        deadline = time.monotonic() + 5
        while both.count(b'{"ok": true}') < 2 and time.monotonic() < deadline:
            both += sock.recv(65536)
    assert both.count(b"HTTP/1.1 200 OK\r\n") == 2 and both.endswith(b'{"ok": true}'), both


class Recorded(asyncio.Transport):
    """An asyncio transport that records its writes (the stand-in for the socket's)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class _Cycle:
    """What ``HeldHead`` reads of uvicorn's cycle: the head's framing and the method."""

    def __init__(self, chunked: bool | None, method: str = "POST") -> None:
        self.chunked_encoding = chunked
        self.scope = {"method": method}


def test_the_head_and_its_body_leave_in_one_write() -> None:
    async def scenario() -> list[bytes]:
        transport = Recorded()
        held = HeldHead(transport, asyncio.get_running_loop())
        held.arm(_Cycle(chunked=False))  # type: ignore[arg-type]
        held.write(b"HEAD\r\n\r\n")
        await asyncio.sleep(0.05)  # a head of declared length waits past the iteration
        assert transport.writes == []
        held.write(b"body")
        held.write(b"")  # uvicorn's end of a body of declared length: nothing to write
        held.write(b"more")  # not armed: straight through
        return transport.writes

    assert asyncio.run(scenario()) == [b"HEAD\r\n\r\nbody", b"more"]


def test_a_streams_head_leaves_at_the_end_of_the_iteration_and_close_writes_first() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], bool]:
        loop = asyncio.get_running_loop()
        transport = Recorded()
        held = HeldHead(transport, loop)
        held.arm(_Cycle(chunked=True))  # type: ignore[arg-type]
        held.write(b"STREAM HEAD")
        assert transport.writes == []
        await asyncio.sleep(0)  # the iteration ends
        streamed = list(transport.writes)
        closing = Recorded()
        held = HeldHead(closing, loop)
        held.arm(_Cycle(chunked=False))  # type: ignore[arg-type]
        held.write(b"CUT HEAD")
        held.close()  # a response cut after its head: the head goes first
        await asyncio.sleep(0)
        return streamed, closing.writes, closing.closed

    streamed, cut, closed = asyncio.run(scenario())
    assert streamed == [b"STREAM HEAD"]
    assert cut == [b"CUT HEAD"] and closed


def test_nothing_is_written_to_a_closed_transport() -> None:
    async def scenario() -> list[bytes]:
        transport = Recorded()
        held = HeldHead(transport, asyncio.get_running_loop())
        held.arm(_Cycle(chunked=None, method="HEAD"))  # type: ignore[arg-type]
        held.write(b"HEAD ANSWER")
        transport.closed = True  # the client went away in this iteration
        await asyncio.sleep(0)
        return transport.writes

    assert asyncio.run(scenario()) == []
