"""The gateway's request-response cycle (``gateway/server/cycle.py``) answers as uvicorn's.

Its head is built with one value check per head and a cache of checked names: held to
uvicorn's own ``RequestResponseCycle.send`` (the bytes written, the framing read, the error
raised) over a table of heads and over every byte in a name and in a value. Then the same
raw conversations (keep-alive, pipelining, ``Expect: 100-continue``, a body that arrives
late, ``HEAD``, chunked streams, a header injection, a cut stream) are held byte for byte to
plain uvicorn, on real servers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.server import cycle as cycle_module
from gateway.server.cycle import GatewayCycle, _BodySignal, head, uvicorn_head
from gateway.server.protocol import ConnectionLimits, protocol_class
from tests.servers import ThreadedUvicorn

pytestmark = pytest.mark.timeout(60)

Headers = list[tuple[Any, Any]]


class Recorded(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _run(cls: type[RequestResponseCycle], messages: list[dict[str, Any]], method: str) -> Any:
    """What a cycle of ``cls`` writes for ``messages``, its framing, or what it raised."""

    async def scenario() -> Any:
        transport = Recorded()
        kwargs: dict[str, Any] = {
            "scope": {"method": method, "http_version": "1.1"},
            "transport": transport,
            "flow": FlowControl(transport),
            "logger": logging.getLogger("test"),
            "access_logger": logging.getLogger("test.access"),
            "access_log": False,
            "default_headers": [],
            "expect_100_continue": False,
            "keep_alive": True,
            "on_response": lambda: None,
        }
        if cls is RequestResponseCycle:
            kwargs["message_event"] = asyncio.Event()
        cycle = cls(**kwargs)
        try:
            for message in messages:
                await cycle.send(message)  # type: ignore[arg-type]
        except Exception as exc:  # compared with uvicorn's
            return type(exc), str(exc), transport.writes
        framing = (cycle.chunked_encoding, cycle.expected_content_length, cycle.keep_alive)
        return transport.writes, framing, cycle.response_complete, transport.closed

    return asyncio.run(scenario())


def _same_as_uvicorn(
    headers: Headers, *, status: int = 200, method: str = "GET", body: bytes = b"hello"
) -> Any:
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    messages = [start, {"type": "http.response.body", "body": body}]
    ours = _run(GatewayCycle, messages, method)
    assert ours == _run(RequestResponseCycle, messages, method)
    if not isinstance(ours[0], type):  # the pure head agrees with uvicorn's walk
        args = (status, headers, method, None, 0, True)
        assert head(*args) == uvicorn_head(*args)
    return ours


HEADS: list[tuple[str, Headers, dict[str, Any]]] = [
    ("no headers: chunked", [], {}),
    ("declared length", [(b"content-length", b"5")], {}),
    ("names lowered", [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")], {}),
    ("two lengths: the first counts", [(b"content-length", b"5"), (b"content-length", b"9")], {}),
    ("chunked", [(b"transfer-encoding", b"Chunked")], {}),
    ("chunked, then a length", [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")], {}),
    ("other encoding", [(b"transfer-encoding", b"gzip"), (b"content-length", b"5")], {}),
    ("connection close", [(b"content-length", b"5"), (b"Connection", b"Keep-Alive, Close")], {}),
    ("connection keep-alive", [(b"content-length", b"5"), (b"connection", b"keep-alive")], {}),
    ("tab in a value", [(b"x-a", b"a\tb"), (b"content-length", b"5")], {}),
    ("high bytes", [(b"x-\xe9", b"\xff\x80"), (b"content-length", b"5")], {}),
    ("empty name and value", [(b"", b""), (b"content-length", b"5")], {}),
    ("bytearray name", [(bytearray(b"X-A"), b"1"), (b"content-length", b"5")], {}),
    ("HEAD", [(b"content-length", b"5")], {"method": "HEAD", "body": b""}),
    ("HEAD, no length", [], {"method": "HEAD", "body": b""}),
    ("204", [], {"status": 204, "body": b""}),
    ("304", [], {"status": 304, "body": b""}),
    ("599", [(b"content-length", b"0")], {"status": 599, "body": b""}),
    ("CRLF injection", [(b"x-a", b"v\r\nset-cookie: a=b"), (b"content-length", b"5")], {}),
    ("lone LF", [(b"x-a", b"v\nx"), (b"content-length", b"5")], {}),
    ("lone CR", [(b"content-length", b"5"), (b"x-a", b"v\rx")], {}),
    ("NUL", [(b"content-length", b"5"), (b"x-a", b"\x00")], {}),
    ("DEL", [(b"content-length", b"5"), (b"x-a", b"\x7f")], {}),
    ("bad name", [(b"x a", b"1"), (b"content-length", b"5")], {}),
    ("bad name, after a bad value", [(b"x", b"\n"), (b"x:a", b"1")], {}),
    ("bad value, after a bad name", [(b"x:a", b"1"), (b"x", b"\n")], {}),
    ("length not a number", [(b"content-length", b"five")], {}),
    ("bad value, then a length not a number", [(b"x", b"\r"), (b"content-length", b"x")], {}),
    ("str value", [(b"x-a", "text"), (b"content-length", b"5")], {}),
    ("str name", [("x-a", b"1"), (b"content-length", b"5")], {}),
    ("too long a body", [(b"content-length", b"2")], {}),
    ("too short a body", [(b"content-length", b"9")], {}),
    ("unknown status", [(b"content-length", b"5")], {"status": 99}),
]


@pytest.mark.parametrize(("case", "headers", "options"), HEADS, ids=[c[0] for c in HEADS])
def test_a_head_is_written_and_refused_as_uvicorn_does(
    case: str, headers: Headers, options: dict[str, Any]
) -> None:
    _same_as_uvicorn(headers, **options)


def test_a_header_injection_is_refused_and_nothing_is_written() -> None:
    kind, message, writes = _same_as_uvicorn([(b"x-a", b"v\r\nset-cookie: a=b")])
    assert (kind, message, writes) == (RuntimeError, "Invalid HTTP header value.", [])


def test_every_byte_in_a_name_and_in_a_value_is_taken_or_refused_as_uvicorn_does() -> None:
    for byte in range(256):
        char = bytes([byte])
        for headers in (
            [(b"x-a" + char, b"1"), (b"content-length", b"5")],
            [(b"content-length", b"5"), (b"x-a", b"v" + char + b"w")],
            [(b"x-a", char)],
        ):
            _same_as_uvicorn(headers)


def test_checked_names_are_kept_up_to_the_cap_and_refused_ones_never() -> None:
    names = cycle_module._NAMES
    with pytest.raises(RuntimeError, match="name"):
        head(200, [(b"Bad Name", b"1")], "GET", None, 0, True)
    assert b"Bad Name" not in names
    head(200, [(b"X-Kept", b"1")], "GET", None, 0, True)
    assert names[b"X-Kept"] == b"x-kept"
    many = [(b"x-many-%d" % i, b"1") for i in range(cycle_module._NAMES_KEPT + 10)]
    written, *_ = head(200, many, "GET", None, 0, True)
    assert len(names) == cycle_module._NAMES_KEPT
    assert written == uvicorn_head(200, many, "GET", None, 0, True)[0]


def _event(signal: _BodySignal) -> asyncio.Event | None:
    return signal._event


def test_the_body_signal_waits_only_when_it_is_clear() -> None:
    async def scenario() -> list[str]:
        seen: list[str] = []
        signal = _BodySignal()
        signal.set()
        assert await signal.wait() and _event(signal) is None  # set: no event made
        signal.clear()

        async def waiter(name: str) -> None:
            await signal.wait()
            seen.append(name)

        tasks = [asyncio.create_task(waiter(name)) for name in ("a", "b", "cancelled")]
        await asyncio.sleep(0)
        assert seen == [] and not signal.is_set()
        tasks[2].cancel()  # one waiter cancelled: the others still wait
        await asyncio.sleep(0)
        assert seen == []
        signal.set()
        await asyncio.gather(*tasks[:2])
        signal.clear()
        made = _event(signal)
        assert made is not None and not made.is_set()
        return seen

    assert asyncio.run(scenario()) == ["a", "b"]


# -- real servers: the gateway's protocol against plain uvicorn, byte for byte


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    received = b""
    more = True
    while more:
        message = await receive()
        received += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one", b"", b"two"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/inject":
        headers = [(b"x-a", b"v\r\nset-cookie: a=b"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"no"})
    elif path == "/cut":  # a stream the proxy cut: started, never completed
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    else:  # echo what was read, with its method and path
        body = b"%s %s %s" % (scope["method"].encode(), path.encode(), received)
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ThreadedUvicorn, ThreadedUvicorn]]:
    options: dict[str, Any] = {"lifespan": "off", "date_header": False, "log_config": None}
    gateway = ThreadedUvicorn(app, http=protocol_class(ConnectionLimits(10, 10, 64, 64)), **options)
    plain = ThreadedUvicorn(app, http="httptools", **options)
    with gateway, plain:
        yield gateway, plain


def _converse(server: ThreadedUvicorn, steps: list[bytes]) -> bytes:
    """Sends each step and reads until the server is quiet for a moment (or closes)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        received = b""
        for step in steps:
            sock.sendall(step)
            sock.settimeout(0.3)
            try:
                while chunk := sock.recv(65536):
                    received += chunk
                else:
                    return received + b"<closed>"
            except TimeoutError:
                pass
        return received


def _post(path: bytes, body: bytes, *extra: bytes) -> bytes:
    head = [b"POST " + path + b" HTTP/1.1", b"host: x", b"content-length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


CONVERSATIONS: dict[str, list[bytes]] = {
    "keep-alive": [_post(b"/a", b"one"), _post(b"/b", b"two")],
    "pipelined": [_post(b"/a", b"1") + _post(b"/b", b"2") + b"GET /c HTTP/1.1\r\nhost: x\r\n\r\n"],
    "100-continue": [
        _post(b"/a", b"late", b"expect: 100-continue")[: -len(b"late")],
        b"late",
    ],
    "body in parts": [_post(b"/a", b"0123456789")[:-6], b"456", b"789"],
    "HEAD": [b"HEAD /a HTTP/1.1\r\nhost: x\r\n\r\n", _post(b"/b", b"x")],
    "stream": [b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n", _post(b"/b", b"x")],
    "HTTP/1.0": [b"GET /a HTTP/1.0\r\n\r\n"],
    "connection close": [b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"],
    "injection": [b"GET /inject HTTP/1.1\r\nhost: x\r\n\r\n"],
    "cut": [b"GET /cut HTTP/1.1\r\nhost: x\r\n\r\n"],
}


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_a_conversation_goes_as_under_plain_uvicorn(
    servers: tuple[ThreadedUvicorn, ThreadedUvicorn], name: str
) -> None:
    gateway, plain = servers
    steps = CONVERSATIONS[name]
    ours = _converse(gateway, steps)
    assert ours == _converse(plain, steps)
    assert ours  # every conversation gets an answer, or a close
    if name == "injection":
        assert ours == b"<closed>"
    if name == "cut":
        assert ours.endswith(b"7\r\npartial\r\n<closed>")  # no terminating chunk


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_cut_stream_logs_no_uvicorn_error(
    servers: tuple[ThreadedUvicorn, ThreadedUvicorn],
) -> None:
    logger = logging.getLogger("uvicorn.error")
    seen = {}
    for server in servers:
        handler = Lines()
        logger.addHandler(handler)
        try:
            assert _converse(server, CONVERSATIONS["cut"]).endswith(b"<closed>")
            time.sleep(0.1)
        finally:
            logger.removeHandler(handler)
        seen[server] = handler.lines
    gateway, plain = servers
    assert seen[gateway] == []
    assert seen[plain] == ["ASGI callable returned without completing response."]
