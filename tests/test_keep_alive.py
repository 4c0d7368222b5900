"""The gateway's protocol keeps one keep-alive timer per connection, across requests.

uvicorn makes a timer when a response ends and cancels it when the next request arrives;
``GatewayHttpProtocol`` keeps the one it made and, when it fires, closes the connection only
if it has been idle ``timeout_keep_alive`` since its last response. Checked on a real uvicorn
server running the protocol (``timeout_keep_alive = 1``), with raw sockets.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.server.protocol import ConnectionLimits, GatewayHttpProtocol, protocol_class
from tests.servers import ThreadedUvicorn

pytestmark = pytest.mark.timeout(30)

REQUEST = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def server() -> Iterator[ThreadedUvicorn]:
    limits = ConnectionLimits(10, 10, 64, 64)
    http = protocol_class(limits)
    options: dict[str, Any] = {"lifespan": "off", "date_header": False, "server_header": False}
    with ThreadedUvicorn(app, http=http, timeout_keep_alive=1, **options) as running:
        yield running


def _ask(sock: socket.socket) -> None:
    sock.sendall(REQUEST)
    answer = b""
    while len(answer) < len(ANSWER):
        chunk = sock.recv(65536)
        assert chunk, "closed"
        answer += chunk
    assert answer == ANSWER


def _closed_after(sock: socket.socket, since: float) -> float:
    """Seconds from ``since`` until the server closes the connection."""
    sock.settimeout(5)
    assert sock.recv(65536) == b""
    return time.monotonic() - since


def _timer(server: ThreadedUvicorn) -> Any:
    [connection] = server.server.server_state.connections
    assert isinstance(connection, GatewayHttpProtocol)
    return connection.timeout_keep_alive_task


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    server: ThreadedUvicorn,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        _ask(sock)
        assert 0.8 < _closed_after(sock, time.monotonic()) < 1.8


def test_a_busy_connection_keeps_its_timer_and_is_closed_one_timeout_after_its_last_answer(
    server: ThreadedUvicorn,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        _ask(sock)
        time.sleep(0.05)
        first = _timer(server)
        assert first is not None
        timers = [first]
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # past two timeouts: the timer fired, re-armed
            time.sleep(0.3)
            _ask(sock)
            time.sleep(0.02)
            timer = _timer(server)
            if not any(timer is seen for seen in timers):
                timers.append(timer)
        answered = time.monotonic()
        assert len(timers) <= 4  # one per timeout at most, not one per request (9)
        assert 0.8 < _closed_after(sock, answered) < 1.8
