"""The ``h1`` upstream transport: a lean HTTP/1.1 client (``asyncio.Protocol`` + httptools).

Used by ``upstream.client`` only (``upstream.transport = "h1"``); it keeps every property that
module's docstring lists, with less machinery on the hot path than aiohttp's client (no
request/response models, multidicts, payload registry or write task per request):

* A request is one ``transport.write`` when its body is bytes: the request line with the
  target exactly as given, ``Host`` (host, ``:port`` when not the scheme's default), exactly
  the header list given, and the framing the body needs (``Content-Length``, else
  ``Transfer-Encoding: chunked`` for a streamed body whose length the headers do not carry).
  Nothing else is added (no ``User-Agent``, ``Accept``, ``Accept-Encoding``,
  ``Content-Type``); a name or value with CR, LF or NUL, or a method that is not a token, is
  refused before anything is sent. A streamed body follows write flow control; when its
  iterable raises, or yields more or fewer bytes than declared, the connection is aborted
  (never reused) and the iterable's exception propagates.
* The response: status, the raw header list as received, and the body's raw bytes (never
  decompressed: nothing here knows an encoding), chunk by chunk as they arrive, with read flow
  control (reading pauses above ``_HIGH`` buffered bytes). 1xx interim answers are skipped. A
  body cut short (the connection lost before the message completed) raises ``H1BrokenError``.
* Each wait for the server (its headers, a body chunk, a write drain) is bounded by the
  request's read timeout (a ``sock_read``: reset by every wake-up), enforced by one lazily
  re-armed timer per connection rather than one per read.
* The pool: at most ``max_connections`` (waiters queue FIFO, for ``pool_timeout_s`` at most),
  idle ones reused LIFO, at most ``max_keepalive`` kept, dropped after ``_KEEPALIVE_S`` idle or
  when the server closes them; a connection goes back only when its response was read to the
  end and both sides keep it alive. A task cancelled mid-request, or a response closed before
  its end, closes that connection. Connect bounded by ``connect_timeout_s``; TLS with the
  context given and SNI; ``TCP_NODELAY``. No environment, redirects or cookies (nothing is
  read or stored by construction).

Exceptions (all ``H1Error``; ``client.translate`` maps them): ``H1PoolTimeout``,
``H1ConnectTimeout``, ``H1ConnectError``, ``H1ReadTimeout``, ``H1BrokenError`` (connection
lost, protocol error), ``H1RequestError`` (refused before sending).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import socket
import ssl
from collections.abc import AsyncIterable, Callable, Sequence
from typing import cast

import httptools

#: Response bytes buffered before reading pauses (resumed once the reader drained them).
_HIGH = 64 * 1024
#: Idle connections are closed after this long.
_KEEPALIVE_S = 30.0
#: Methods that carry no ``Content-Length: 0`` when sent without a body (as aiohttp).
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FRAMING = (b"content-length", b"transfer-encoding")


class H1Error(Exception):
    """Anything the h1 transport raises about the upstream exchange."""


class H1PoolTimeout(H1Error):
    """No connection became free within ``pool_timeout_s``."""


class H1ConnectTimeout(H1Error):
    """The TCP/TLS connect took longer than ``connect_timeout_s``."""


class H1ConnectError(H1Error):
    """The connect failed (refused, unresolvable, TLS handshake refused)."""


class H1ReadTimeout(H1Error):
    """The server sent nothing (or read nothing) for a whole read timeout."""


class H1BrokenError(H1Error):
    """The connection was lost or the server's bytes were not HTTP/1.1."""


class H1RequestError(H1Error):
    """The request cannot go out as given (nothing was sent)."""


class H1PoolClosed(H1Error):
    """The client was closed."""


def request_head(
    method: str,
    target: str,
    host: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    framing: bytes,
    *,
    keep_framing: bool,
) -> bytes:
    """The request line and header block (``framing``: the body's own framing header line).

    A framing header in ``headers`` is kept only with ``keep_framing`` (a streamed body whose
    declared ``Content-Length`` the caller checked), else replaced by ``framing``.

    Each name is checked once per process (``_NAMES``: a token, and whether it is framing);
    the values, target and host are checked together on the finished block: it holds no
    CR, LF or NUL but one CRLF per line (one anywhere else is refused)."""
    if method == "HEAD" or (
        method not in _METHODS and not _TOKEN.fullmatch(method.encode("latin-1"))
    ):
        # (HEAD: its answer's framing is not its body's, which httptools cannot be told; no
        # operation uses it.)
        raise H1RequestError("method")
    lines = [f"{method} {target} HTTP/1.1\r\nHost: ".encode("ascii") + host]
    names = _NAMES
    for name, value in headers:
        framed = names.get(name)
        if framed is None:
            framed = _checked_name(name)
        if framed and not keep_framing:
            continue
        lines.append(name + b": " + value)
    lines.append(framing)  # (its own CRLF, or empty: then the block's final CRLF follows)
    head = b"\r\n".join(lines) + b"\r\n"
    crlf = len(lines) + (2 if framing else 1)  # (the request line's, and the block's end)
    if len(head) - len(head.translate(None, b"\r\n\x00")) != 2 * crlf:
        raise H1RequestError("header")
    return head


#: Standard methods (tokens by construction: no regex for them).
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Header names already checked as tokens → whether each is a framing header (bounded).
_NAMES: dict[bytes, bool] = {}
_NAMES_MAX = 512


def _checked_name(name: bytes) -> bool:
    """Whether ``name`` (a token, else refused) is a framing header; remembered."""
    if not _TOKEN.fullmatch(name):
        raise H1RequestError("header")
    framed = name.lower() in _FRAMING
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[name] = framed
    return framed


def declared_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            if not value.isdigit():
                raise H1RequestError("content-length")
            return int(value)
    return None


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its response parsed by httptools."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.closed = False
        self._error: H1Error | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = 0.0
        self._write_paused = False
        self._read_paused = False
        self._active = False
        self._keep = False
        self._sent_all = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self._interim = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is no subclass)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self._active:  # bytes nobody asked for (on an idle connection): drop it
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(H1BrokenError(f"invalid response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._active and not self.complete:
            if self.headers_done and self._until_close():
                self.complete = True  # a body delimited by the close: this is its end
                self._wake()
            else:
                self._fail(H1BrokenError("connection lost before the response ended"))
        self._closed()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: the exchange is out of step
            self._fail(H1BrokenError("unsolicited response"))

    def on_header(self, name: bytes, value: bytes | None) -> None:
        self.headers.append((name, value or b""))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer: wait for the final one
            self._interim = True
            self.headers = []
            return
        self.status = status
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self._keep = self._parser.should_keep_alive()
        self._wake()

    # -- the exchange -----------------------------------------------------------------------

    def _until_close(self) -> bool:
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" or (
                lowered == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                return False
        return self.status not in (204, 304)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: H1Error) -> None:
        if self._error is None:
            self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.abort()

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nobody waits: re-armed by the next wait
        if self._loop.time() >= self._deadline - 0.001:
            self._fail(H1ReadTimeout("no data within the read timeout"))
        else:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)

    async def _wait(self) -> None:
        """Until the next wake-up (data, completion, a drained write), within the timeout."""
        if self._error is not None:
            raise self._error
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        self._deadline = loop.time() + self._timeout
        timer = self._timer
        if timer is None or timer.when() > self._deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(self._deadline, self._on_timer)
        try:
            await waiter
        finally:
            self._waiter = None

    async def send(
        self, head: bytes, body: bytes | AsyncIterable[bytes] | None, length: int | None
    ) -> None:
        """Write the request (``length``: a streamed body's declared length; None: chunked)."""
        assert self.transport is not None
        self._reset()
        self._keep = self._sent_all = False
        self._active = True
        if body is None or isinstance(body, bytes):
            self.transport.write(head + body if body else head)
            self._sent_all = True
        else:
            self.transport.write(head)
            self._sent_all = await self._stream(body, length)
        if self._write_paused:
            await self._drain()

    async def _stream(self, body: AsyncIterable[bytes], length: int | None) -> bool:
        """Write a streamed body; False: the server answered before its end."""
        assert self.transport is not None
        sent = 0
        async for chunk in body:
            if not chunk:
                continue
            sent += len(chunk)
            if length is None:
                self.transport.writelines((f"{len(chunk):x}\r\n".encode(), chunk, b"\r\n"))
            elif sent > length:
                raise H1RequestError("the body is longer than its Content-Length")
            else:
                self.transport.write(chunk)
            if self._write_paused:
                await self._drain()
            if self._error is not None:
                raise self._error
            if self.headers_done:
                return False  # answered before the body's end (an early refusal)
        if length is None:
            self.transport.write(b"0\r\n\r\n")
        elif sent != length:
            raise H1RequestError("the body is shorter than its Content-Length")
        return True

    async def _drain(self) -> None:
        while self._write_paused and self._error is None and not self.headers_done:
            await self._wait()
        if self._error is not None and not self.headers_done:
            raise self._error

    async def response_head(self) -> None:
        """Until the final response's headers arrived."""
        while not self.headers_done:
            await self._wait()

    async def next_chunk(self) -> bytes | None:
        """The body bytes arrived since the last call (None: the body's end)."""
        while not self._chunks:
            if self.complete:
                return None
            await self._wait()
        return self._take()

    def take_rest(self) -> bytes | None:
        """The whole rest of the body when all of it has arrived (None: some is to come)."""
        if not self.complete or self._error is not None:
            return None
        return self._take()

    def _take(self) -> bytes:
        """The body bytes buffered, and reading resumed if they had paused it (a large body
        that came whole: the next answer on the connection must be read)."""
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self._keep
            and self._sent_all
            and self._error is None
            and not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def finish(self) -> None:
        """The exchange is over: back to the pool when it can be reused, else closed."""
        if not self._active:
            return
        self._active = False
        if self.reusable:
            self._pool.release(self)
        else:
            self.abort()

    def abort(self) -> None:
        self._active = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():  # (the client closing under a request)
            self._error = self._error or H1BrokenError("connection closed")
            waiter.set_exception(self._error)
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self._closed()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self._closed()

    def _closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pool.discard(self)


class Pool:
    """One origin's connections (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        max_keepalive: int,
        connect_timeout_s: float,
        pool_timeout_s: float,
        keepalive_s: float = _KEEPALIVE_S,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self.max_connections = max_connections
        self._max_keepalive = max_keepalive
        self._connect_timeout = connect_timeout_s
        self._pool_timeout = pool_timeout_s
        self._keepalive = keepalive_s
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self._opening = 0
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def size(self) -> int:
        """Connections open or being opened."""
        return len(self._all) + self._opening

    @property
    def full(self) -> bool:
        return self.size >= self.max_connections and not self._idle

    async def acquire(self, timeout_s: float) -> Connection:
        """A connection ready for one request, whose waits are bounded by ``timeout_s``."""
        if self._closed:
            raise H1PoolClosed("the upstream client is closed")
        now = self.loop.time()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.reusable and now - conn.idle_since < self._keepalive:
                conn._timeout = timeout_s
                return conn
            conn.close()
        if self.size >= self.max_connections:
            got = await self._queue()
            if got is not None:
                got._timeout = timeout_s
                return got
        else:
            self._opening += 1
        conn = await self._connect()
        conn._timeout = timeout_s
        return conn

    async def _queue(self) -> Connection | None:
        """Wait in line: a connection handed over, or None (a slot to connect in)."""
        waiter: asyncio.Future[Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        timer = self.loop.call_later(self._pool_timeout, _expire, waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                got = waiter.result()  # handed over just as this task was cancelled: pass on
                if got is None:
                    self._slot_freed()
                else:
                    self._pass_on(got)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        finally:
            timer.cancel()

    async def _connect(self) -> Connection:
        """Open a connection in a slot already counted in ``_opening``."""
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                ),
                self._connect_timeout,
            )
        except TimeoutError:
            self._slot_freed()
            raise H1ConnectTimeout("connect timed out") from None
        except OSError as exc:
            self._slot_freed()
            raise H1ConnectError(type(exc).__name__) from exc
        except BaseException:
            self._slot_freed()
            raise
        self._opening -= 1
        if self._closed:
            conn.abort()
            raise H1PoolClosed("the upstream client is closed")
        self._all.add(conn)
        return conn

    def _slot_freed(self) -> None:
        self._opening -= 1
        self._pass_on(None)

    def _pass_on(self, conn: Connection | None) -> None:
        """Give a connection (or a free slot: None) to the first live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if conn is None:
                    self._opening += 1
                waiter.set_result(conn)
                return
        if conn is not None:
            self._keep_idle(conn)

    def release(self, conn: Connection) -> None:
        if self._closed:
            conn.close()
        elif self._waiters:
            self._pass_on(conn)
        else:
            self._keep_idle(conn)

    def _keep_idle(self, conn: Connection) -> None:
        if len(self._idle) >= self._max_keepalive or self._closed:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._keepalive, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        for conn in [c for c in self._idle if c.idle_since <= now - self._keepalive]:
            conn.close()
        if self._idle:  # again when the oldest left expires
            wait = self._idle[0].idle_since + self._keepalive - now
            self._sweeper = self.loop.call_later(max(wait, 0.0), self._sweep)

    def discard(self, conn: Connection) -> None:
        """A connection closed (by either side): forgotten, its slot given on."""
        if conn not in self._all:
            return
        self._all.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        if self._waiters and not self._closed:
            self._pass_on(None)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(H1PoolClosed("the upstream client is closed"))
        for conn in list(self._all):
            conn.abort()
        await asyncio.sleep(0)  # the transports finish closing


def _expire(waiter: asyncio.Future[Connection | None]) -> None:
    if not waiter.done():
        waiter.set_exception(H1PoolTimeout("no free upstream connection"))


class Body:
    """One response's body on its connection: ``async for`` its raw chunks; ``close()``
    hands the connection back (read to its end) or closes it (anything else). A task
    cancelled while reading closes the connection. An ``H1Error`` while reading is raised as
    ``broken(error)`` (the caller's own exception, with no wrapping layer per chunk)."""

    __slots__ = ("_broken", "_conn", "_done")

    def __init__(
        self, conn: Connection, broken: Callable[[H1Error], Exception] | None = None
    ) -> None:
        self._conn = conn
        self._done = False
        self._broken = broken

    def __aiter__(self) -> Body:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        try:
            chunk = await self._conn.next_chunk()
        except BaseException as exc:
            self._done = True
            self._conn.abort()
            if self._broken is not None and isinstance(exc, H1Error):
                raise self._broken(exc) from exc
            raise
        if chunk is None:
            self.close()
            raise StopAsyncIteration
        return chunk

    def rest(self) -> bytes | None:
        """The whole rest of the body when it has all arrived already, the connection then
        handed back; None (nothing taken): some of it is still to come, read it chunk by
        chunk."""
        if self._done:
            return b""
        data = self._conn.take_rest()
        if data is not None:
            self.close()
        return data

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._conn.finish()

    async def aclose(self) -> None:
        self.close()
