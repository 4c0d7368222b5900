"""The request-response cycle the gateway's protocol runs: uvicorn's, with a cheaper send.

uvicorn's ``RequestResponseCycle.send`` runs two regular expressions and a ``lower()`` per
response header and builds a list per header line (py-spy: uvicorn's module was 10 % of the
gateway's samples at c=64); its ``receive`` awaits an
``asyncio.Event`` made for every request even when the body is already there. This
subclass (made by ``GatewayHttpProtocol.on_headers_complete``) writes the same bytes and
refuses the same heads, for less:

* **Header names** are checked against uvicorn's ``HEADER_RE`` and lowered once per distinct
  name (the first ``_NAMES_KEPT`` names a process sees are kept); a name uvicorn refuses is
  refused, and never kept.
* **Header values** are checked once per head, not once per value: the names are clean (no
  control character) and the status line and separators carry exactly one CR and one LF per
  line, so the joined head holds a character ``HEADER_VALUE_RE`` refuses exactly when one
  of the values does (any other control character appears as itself; a CR or LF shows as
  one CR or LF more than there are lines). When it does (or anything in the quick walk
  fails: a length that is not a number, a name that is not ``bytes``), ``uvicorn_head``,
  uvicorn's walk as written there, raises what uvicorn raises for the first bad header
  (``Invalid HTTP header name.`` or ``... value.``). A refused head writes nothing and
  leaves the cycle's framing (length, chunked, keep-alive) as it was.
* **The request's body signal** (``_BodySignal``) is an ``asyncio.Event`` made only when
  ``receive`` has to wait for more of the body; the common request, whose body came with
  its head, waits for nothing.
* **A cut response ends quietly** (``run_asgi``): a response the proxy left incomplete (an
  upstream stream that broke, a stream past its deadline) or a request cancelled by the
  drain has been recorded as cut by the proxy; its connection is closed without the
  terminating chunk, and without uvicorn's "Exception in ASGI application" traceback or
  "returned without completing response" error.

Everything else (100-continue, keep-alive, ``HEAD``, flow control, the access log, the
errors for misordered or mis-sized messages) is uvicorn's, as written in uvicorn 0.54's
``httptools_impl.py`` (pinned in ``pyproject.toml``; ``tests/test_protocol_cycle.py`` runs
the two cycles side by side).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

ASGIApp = Any  # uvicorn's ASGI3Application; kept loose to stay off uvicorn's private types

#: HEADER_VALUE_RE without CR and LF, which every line of a head ends with.
_VALUE_CTL = re.compile(b"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NAMES_KEPT = 512
#: Header names checked and lowered: the name as sent -> its lowered form.
_NAMES: dict[bytes, bytes] = {}
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))


def _noop() -> None:
    pass


Head = tuple[bytes, "bool | None", int, bool]  # the head; chunked, content length, keep-alive


def head(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    method: str,
    chunked: bool | None,
    length: int,
    keep_alive: bool,
) -> Head:
    """A response's head and its framing: ``uvicorn_head``'s answer, or its error, for less."""
    try:
        content = [STATUS_LINE[status]]
        lines = 2  # the status line and the blank line
        has_connection_close = False
        names = _NAMES
        for name, value in headers:
            lowered = names.get(name) or _lowered(name)
            if lowered in _FRAMING:
                if lowered == b"content-length":
                    if chunked is None:
                        length = int(value.decode())
                        chunked = False
                elif lowered == b"transfer-encoding":
                    if value.lower() == b"chunked":
                        length = 0
                        chunked = True
                elif b"close" in [token.lower().strip() for token in value.split(b",")]:
                    keep_alive = False
                    has_connection_close = True
            content += (lowered, b": ", value, b"\r\n")
            lines += 1
        if not keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
            lines += 1
        if chunked is None and method != "HEAD" and status not in (204, 304):
            chunked = True
            content.append(b"transfer-encoding: chunked\r\n")
            lines += 1
        content.append(b"\r\n")
        joined = b"".join(content)
        clean = joined.count(b"\r") == lines and joined.count(b"\n") == lines
        if clean and not _VALUE_CTL.search(joined):
            return joined, chunked, length, keep_alive
    except (TypeError, ValueError, AttributeError, RuntimeError):
        pass  # uvicorn's walk raises what uvicorn raises, at the header it raises for
    return uvicorn_head(status, headers, method, chunked, length, keep_alive)


def _lowered(name: bytes) -> bytes:
    """``name`` lowered, or RuntimeError if uvicorn refuses it; kept while there is room."""
    if HEADER_RE.search(name):
        raise RuntimeError("Invalid HTTP header name.")
    lowered = name.lower()
    if len(_NAMES) < _NAMES_KEPT:
        _NAMES[name] = lowered
    return lowered


def uvicorn_head(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    method: str,
    chunked: bool | None,
    length: int,
    keep_alive: bool,
) -> Head:
    """uvicorn 0.54's ``RequestResponseCycle.send`` for a head, as written there (on locals
    instead of the cycle's attributes): the reference ``head`` is held to."""
    content = [STATUS_LINE[status]]
    has_connection_close = False
    for name, value in headers:
        if HEADER_RE.search(name):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(value):
            raise RuntimeError("Invalid HTTP header value.")
        name = name.lower()
        if name == b"content-length" and chunked is None:
            length = int(value.decode())
            chunked = False
        elif name == b"transfer-encoding" and value.lower() == b"chunked":
            length = 0
            chunked = True
        elif name == b"connection":
            connection = [token.lower().strip() for token in value.split(b",")]
            if b"close" in connection:
                keep_alive = False
                has_connection_close = True
        content.extend([name, b": ", value, b"\r\n"])
    if not keep_alive and not has_connection_close:
        content.append(b"connection: close\r\n")
    if chunked is None and method != "HEAD" and status not in (204, 304):
        chunked = True
        content.append(b"transfer-encoding: chunked\r\n")
    content.append(b"\r\n")
    return b"".join(content), chunked, length, keep_alive


class _BodySignal:
    """``asyncio.Event``'s ``set``/``clear``/``is_set``/``wait``, with the event made only
    when a ``wait`` finds the signal clear."""

    __slots__ = ("_event", "flag")

    def __init__(self) -> None:
        self.flag = False
        self._event: asyncio.Event | None = None

    def is_set(self) -> bool:
        return self.flag

    def set(self) -> None:
        self.flag = True
        if self._event is not None:
            self._event.set()

    def clear(self) -> None:
        self.flag = False
        if self._event is not None:
            self._event.clear()

    async def wait(self) -> bool:
        if self.flag:
            return True
        if self._event is None:
            self._event = asyncio.Event()
        return await self._event.wait()


class GatewayCycle(RequestResponseCycle):
    def __init__(
        self,
        scope: Any,
        transport: asyncio.Transport,
        flow: FlowControl,
        logger: logging.Logger,
        access_logger: logging.Logger,
        access_log: bool,
        default_headers: list[tuple[bytes, bytes]],
        expect_100_continue: bool,
        keep_alive: bool,
        on_response: Callable[..., None],
    ) -> None:
        self.scope = scope
        self.transport = transport
        self.flow = flow
        self.logger = logger
        self.access_logger = access_logger
        self.access_log = access_log
        self.default_headers = default_headers
        self.message_event = _BodySignal()  # type: ignore[assignment]
        self.on_response = on_response
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.body = bytearray()
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding: bool | None = None
        self.expected_content_length = 0

    async def run_asgi(self, app: ASGIApp) -> None:
        """uvicorn's, with the app's result not read and a cut response closed quietly."""
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:  # the end of the drain
            if not self.response_complete:
                self._cut()
        except BaseException as exc:
            self.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self.transport.close()
        else:
            if not self.response_started and not self.disconnected:
                self.logger.error("ASGI callable returned without starting response.")
                await self.send_500_response()
            elif not self.response_complete and not self.disconnected:
                self._cut()  # the proxy cut it, and has logged and counted the cut
        finally:
            self.on_response = _noop

    def _cut(self) -> None:
        self.disconnected = True  # nothing more is written; uvicorn logs nothing for it
        self.transport.close()

    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()  # pragma: no cover - uvicorn's, reached under back-pressure
        if self.disconnected:
            return
        if not self.response_started:
            self._send_head(message)
        elif not self.response_complete:
            self._send_body(message)
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent, after response already "
                "completed."
            )

    def _send_head(self, message: Any) -> None:
        if message["type"] != "http.response.start":
            raise RuntimeError(
                f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
            )
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        headers = message.get("headers", ())
        if self.default_headers or not isinstance(headers, list | tuple):
            headers = [*self.default_headers, *headers]
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(self.scope),
                self.scope["method"],
                get_path_with_query_string(self.scope),
                self.scope["http_version"],
                status_code,
            )
        written, self.chunked_encoding, self.expected_content_length, self.keep_alive = head(
            status_code,
            headers,
            self.scope["method"],
            self.chunked_encoding,
            self.expected_content_length,
            self.keep_alive,
        )
        self.transport.write(written)

    def _send_body(self, message: Any) -> None:
        if message["type"] != "http.response.body":
            raise RuntimeError(
                f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
            )
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
        elif self.chunked_encoding:
            if more_body:
                if body:
                    self.transport.write(b"".join((b"%x\r\n" % len(body), body, b"\r\n")))
                else:
                    self.transport.write(b"")
            elif body:
                self.transport.write(b"".join((b"%x\r\n" % len(body), body, b"\r\n0\r\n\r\n")))
            else:
                self.transport.write(b"0\r\n\r\n")
        else:
            if len(body) > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= len(body)
            self.transport.write(body)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    async def receive(self) -> Any:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            signal = self.message_event
            if not signal.is_set():
                await signal.wait()
            signal.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
        self.body = bytearray()
        return message
