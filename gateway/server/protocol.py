"""The HTTP/1.1 protocol ``gateway serve`` runs: uvicorn's httptools protocol with deadlines.

uvicorn's ``HttpToolsProtocol`` has no deadline for a request head (its keep-alive timer is
reset by every byte) and none at all for a new connection, and its ``limit_concurrency``
counts every open connection: 3,000 sockets sending a header byte a second held the
process's connections and made every legitimate request a 503. This subclass (installed
with ``uvicorn.Config(http=protocol_class(...))``) adds what nginx (``client_header_timeout``,
reusable connections drained at ``worker_connections``) and envoy
(``request_headers_timeout``, overload actions) have:

* **First-request deadline** (``first_request_timeout_s``): a new connection must deliver its
  first complete request head within this long of being accepted, else it is closed.
* **Header deadline** (``header_timeout_s``): every request head must be complete within this
  long of its first byte (not reset by further bytes), else 408 and the connection closes.
  After a response that did not read the whole request body, the rest of it and the next
  head get the same deadline.
* **Waiting connections are capped apart** (``max_waiting``): connections with no request in
  progress — new, still sending a head, or idle keep-alive — are kept oldest first; when one
  more would exceed the cap, the oldest is closed (no answer: it has asked nothing). So slow
  clients can hold at most ``max_waiting`` sockets, each for a bounded time, and never a slot
  a request needs.
* **Requests in flight are capped** (``max_in_flight``): beyond it a request is answered 503
  at once (Azure's error shape, ``Retry-After: 1``, ``Connection: close``). Only running
  requests count, not connections waiting for one.
* **A response head leaves with its body** (``HeldHead``): uvicorn writes a response's head
  and its body in two ``write`` calls, and on loopback (or a VM) each one that finds the
  client asleep costs a wake-up of the reader. A head of declared length is held until the
  response's first body write and leaves with it (nginx's ``postpone_output``); a stream's
  head, or a bodiless or ``HEAD`` answer's, at the end of the loop iteration it was sent in
  at the latest, so it is never delayed past the iteration that produced it.
* **Requests run in ``GatewayCycle``** (``gateway/server/cycle.py``): uvicorn's cycle with a
  cheaper head (one value check per head, names checked once), a body signal made only
  when a read must wait, and a cut response ended quietly: a request cancelled by the
  drain or a stream the proxy cut is closed without the terminating chunk and without
  uvicorn's error lines.
* **One keep-alive timer per connection**: uvicorn makes a timer when a response ends and
  cancels it when the next request arrives; here it stays armed across requests, and when
  it fires either closes the connection (idle ``timeout_keep_alive`` since its last
  response, as uvicorn does) or waits again for the current idle period's end.

The common path costs no timer: a request head that arrives in the packet that starts it is
parsed before any deadline is armed. Relies on uvicorn's protocol internals (pinned in
``pyproject.toml``; ``tests/test_slow_clients.py`` and ``tests/test_shutdown.py`` run them on
a real ``gateway serve``).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from gateway.errors import RequestTimeoutError, ServiceUnavailableError
from gateway.server.cycle import GatewayCycle

log = logging.getLogger("gateway.server")

ASGIApp = Any  # uvicorn's ASGI3Application; kept loose to stay off uvicorn's private types
_REPORT_EVERY_S = 10.0
_TIMER_SLACK_S = 0.01  # a timer may fire this early (the loop's clock resolution, rounded up)


def _response(status_line: bytes, body: bytes, *extra: bytes) -> bytes:
    head = [
        status_line,
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


_HEADER_TIMEOUT = _response(
    b"HTTP/1.1 408 Request Timeout",
    RequestTimeoutError(
        "The request headers did not arrive in time.", code="request_header_timeout"
    ).render(),
)
_BUSY_BODY = ServiceUnavailableError("The gateway is at its limit of requests in flight.").render()


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_BUSY_BODY)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _BUSY_BODY})


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float
    first_request_timeout_s: float
    max_waiting: int
    #: Requests in flight before new ones get a 503; None: no cap (the metrics listener).
    max_in_flight: int | None


class WaitingConnections:
    """The server's connections with no request in progress, oldest first, and what was
    closed among them (reported at most every 10 s)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._order: dict[GatewayHttpProtocol, None] = {}
        self.evicted = 0
        self.timed_out = 0
        self.refused = 0
        self._reported_at = 0.0

    def __len__(self) -> int:
        return len(self._order)

    def enter(self, conn: GatewayHttpProtocol) -> None:
        self._order.pop(conn, None)
        while len(self._order) >= self.cap:
            oldest = next(iter(self._order))
            del self._order[oldest]
            self.evicted += 1
            oldest.evict()
            self.report(conn.loop.time())
        self._order[conn] = None

    def leave(self, conn: GatewayHttpProtocol) -> None:
        self._order.pop(conn, None)

    def report(self, now: float) -> None:
        if now - self._reported_at < _REPORT_EVERY_S:
            return
        self._reported_at = now
        if self.evicted or self.timed_out or self.refused:
            log.warning(
                "slow or excess clients: closed %d connections past their header "
                "deadline and %d waiting connections over the cap of %d, answered %d "
                "requests 503 over the in-flight cap (since the last report)",
                self.timed_out,
                self.evicted,
                self.cap,
                self.refused,
            )
            self.evicted = self.timed_out = self.refused = 0


class HeldHead:
    """The transport a connection's responses are written through. Armed with a response
    (``arm``), its first write (the head) is held: a response of declared length keeps it
    until its first body write, which carries it (nginx's ``postpone_output`` does the
    same); any other (a stream, a bodiless or ``HEAD`` answer, a ``100 Continue``) until the
    end of this loop iteration at the latest. Every later write goes straight through, and
    closing or completing the response writes what is held first: nothing is lost or
    reordered."""

    __slots__ = ("_armed", "_flush_at_end", "held", "loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self._armed: RequestResponseCycle | None = None
        self.held: bytes | None = None
        self._flush_at_end: asyncio.Handle | None = None

    def arm(self, cycle: RequestResponseCycle) -> None:
        self.flush()
        self._armed = cycle

    def write(self, data: bytes) -> None:
        held = self.held
        if held is not None:
            self.held = None
            if self._flush_at_end is not None:
                self._flush_at_end.cancel()
                self._flush_at_end = None
            self.transport.write(held + data)
            return
        cycle = self._armed
        if cycle is None:
            if data:  # uvicorn writes b"" to end a body of declared length
                self.transport.write(data)
            return
        self._armed = None
        self.held = bytes(data)
        # uvicorn has parsed the head's framing before writing it: a declared length means
        # a body write follows (b"" for an empty body); anything else may not send one soon.
        if cycle.chunked_encoding is not False or cycle.scope["method"] == "HEAD":
            self._flush_at_end = self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._armed = None
        if self._flush_at_end is not None:
            self._flush_at_end.cancel()
            self._flush_at_end = None
        held = self.held
        if held is not None:
            self.held = None
            if not self.transport.is_closing():
                self.transport.write(held)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.flush()
        self.transport.close()


class GatewayHttpProtocol(HttpToolsProtocol):
    limits: ConnectionLimits
    waiting: WaitingConnections

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # replaced by the in-flight cap in _start_asgi_task
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_at = 0.0
        self._reading_head = False
        self._idle_since: float | None = None  # when the last response ended; None: busy

    # -- connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._held_head = HeldHead(transport, self.loop)
        self.waiting.enter(self)
        self._arm(self.limits.first_request_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.waiting.leave(self)
        self._disarm()
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        self._held_head.flush()  # writes nothing to a closed transport; drops the reference
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._reading_head:
            # The head did not arrive in this packet: it has header_timeout_s from now
            # (or less: a new connection's first-request deadline may come sooner).
            at = self.loop.time() + self.limits.header_timeout_s
            if self._deadline is None or at < self._deadline_at:
                self._arm(self.limits.header_timeout_s)

    # -- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True

    def on_headers_complete(self) -> None:
        """uvicorn's, making a ``GatewayCycle`` (and with no ``limit_concurrency``: the
        in-flight cap is ``_start_asgi_task``'s)."""
        self._reading_head = False
        self._disarm()
        self.waiting.leave(self)
        parser = self.parser
        scope = self.scope
        http_version = parser.get_http_version()
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root_path = self.root_path
        scope["path"] = root_path + path if root_path else path
        scope["raw_path"] = root_path.encode("ascii") + raw_path if root_path else raw_path
        scope["query_string"] = parsed_url.query or b""
        existing_cycle = self.cycle
        self.cycle = cycle = GatewayCycle(
            scope,
            self._held_head,  # type: ignore[arg-type]
            self.flow,
            self.logger,
            self.access_logger,
            self.access_log,
            self.server_state.default_headers,
            self.expect_100_continue,
            http_version != "1.0" and parser.should_keep_alive(),
            self.on_response_complete,
        )
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(cycle, self.app)
        else:  # pipelined: queued until the response before it is complete
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))

    def on_response_complete(self) -> None:
        """uvicorn's, with a keep-alive timer that outlives requests (``_keep_alive_due``)."""
        self._held_head.flush()  # a response that ended with no write after its head (HEAD)
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = now = self.loop.time()  # idle keep-alive
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_at(
                now + self.timeout_keep_alive, self._keep_alive_due
            )
        self.waiting.enter(self)
        if self.cycle is not None and self.cycle.more_body:
            # Answered before its body was read: the rest of it (and the next head) must
            # arrive in time, or a trickle would hold the connection forever.
            self._arm(self.limits.header_timeout_s)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGIApp) -> None:
        cap = self.limits.max_in_flight
        if cap is not None and len(self.tasks) >= cap:
            app = _busy
            self.waiting.refused += 1
            self.waiting.report(self.loop.time())
        self._held_head.arm(cycle)  # this response's head waits for its body (or this iteration)
        super()._start_asgi_task(cycle, app)

    # -- keep-alive

    def _unset_keepalive_if_required(self) -> None:
        """Called by uvicorn for every packet received: the connection is not idle. Its
        timer stays armed (making and cancelling one per request costs 1.6 µs)."""
        self._idle_since = None

    def _keep_alive_due(self) -> None:
        """The keep-alive timer: closes the connection ``timeout_keep_alive`` after its
        last response if nothing came since, else waits again for the current idle
        period's end (or, busy, for the next response to arm it)."""
        self.timeout_keep_alive_task = None
        if self._idle_since is None:
            return
        due = self._idle_since + self.timeout_keep_alive
        if due - self.loop.time() > _TIMER_SLACK_S:
            self.timeout_keep_alive_task = self.loop.call_at(due, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    # -- deadlines

    def _arm(self, timeout_s: float) -> None:
        self._disarm()
        self._deadline_at = self.loop.time() + timeout_s
        self._deadline = self.loop.call_at(self._deadline_at, self._deadline_passed)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head is late while a response runs: finish it, then close.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self.waiting.timed_out += 1
        self.waiting.report(self.loop.time())
        if self._reading_head:
            self.transport.write(_HEADER_TIMEOUT)
        self.transport.close()

    def evict(self) -> None:
        """Closed to admit a newer connection (the waiting cap)."""
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[GatewayHttpProtocol]:
    """A protocol class for one server: its limits and its own waiting-connection set."""
    return type(
        "GatewayHttpProtocol",
        (GatewayHttpProtocol,),
        {"limits": limits, "waiting": WaitingConnections(limits.max_waiting)},
    )
