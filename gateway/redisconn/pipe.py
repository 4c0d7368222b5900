"""One pipelined connection for one Lua script's calls (redis-py asyncio adapter, asyncio).

The limiter's batches (``redisconn.batch``) went through redis-py's whole command path, one
batch at a time: a task per batch, the pool checkout and release, the retry wrapper, the
health check, ``asyncio.wait_for`` around the write (another task) and a timeout around the
read, ``AsyncScript``, the parser's coroutines: about a tenth of the gateway's main thread.
:class:`ScriptPipe` sends each batch as one ``EVALSHA`` written from the callback that
flushes it, on one connection, without waiting for the calls before it: replies come back in
order, each to the first call still waiting (a FIFO). No task, no coroutine, no timer per
call on the way (the batcher keeps its budget timers); the bytes are packed once.

The connection is redis-py's own: checked out of the client's pool (``get_connection``:
its ``connection_class`` and kwargs, so TLS, unix sockets, ``AUTH`` user and password or a
credential provider, ``SELECT`` and the timeouts work exactly as configured), kept checked out
while the pipe uses it, and its transport handed to :class:`_PipeProtocol` once redis-py has
done the handshake (``transport.set_protocol``; the stream protocol redis-py reads through
is still told when the connection closes, so ``disconnect`` and the pool's ``aclose`` work as
for any connection). The client's ``aclose`` closes it like its other connections.

Failure, as redis-py fails a call (no call is ever sent twice, except the one retry after
``NOSCRIPT``, as redis-py's ``Script`` does: ``SCRIPT LOAD``, then the same ``EVALSHA``):

* the checkout or handshake fails: every call waiting for it gets that error;
* the connection closes, or a reply is not RESP: every call sent on it gets
  ``ConnectionError``; no reply for ``socket_timeout``: ``TimeoutError``, and the
  connection is dropped (a stopped Redis or a lost peer);
* an error reply fails its own call with redis-py's exception for it (``ResponseError``,
  ``NoPermissionError``…).

The connection goes back to the pool, disconnected, after a failure; the next call checks
out a new one. The batcher keeps a few pipes and sends each call on the one with the fewest
calls in flight: a reply held up on one connection holds back only the calls behind it there.
A call failed or given up on leaves nothing behind: its reply, if one comes, goes to it and
is dropped there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard, cast

import redis.asyncio
import redis.exceptions
from redis._parsers import BaseParser
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import NoScriptError

from gateway.redisconn.resp import ErrorReply, ProtocolError, ReplyReader, command

log = logging.getLogger("gateway.ratelimit")

#: A call's outcome: its reply, or the exception it failed with.
Done = Callable[[Any], None]
#: The connection classes whose transport the pipe knows how to take over.
_CLASSES = (Connection, SSLConnection, UnixDomainSocketConnection)


def usable(client: object) -> TypeGuard[redis.asyncio.Redis]:
    """True for a single Redis (not Cluster) whose pool makes redis-py's own TCP, TLS or
    unix-socket connections speaking RESP2 (not an in-process fake, not RESP3)."""
    if not isinstance(client, redis.asyncio.Redis):
        return False
    pool = client.connection_pool
    return (
        isinstance(pool, redis.asyncio.ConnectionPool)
        and pool.connection_class in _CLASSES
        and str(pool.connection_kwargs.get("protocol") or 2) == "2"
    )


def _error(reply: ErrorReply) -> Exception:
    """redis-py's exception for an error reply (``NOSCRIPT`` → ``NoScriptError``…)."""
    exc: Exception = BaseParser.parse_error(reply.message)  # type: ignore[no-untyped-call]
    return exc


class _Call:
    __slots__ = ("done", "load_error", "payload", "retried", "sent")

    def __init__(self, payload: bytes, done: Done, *, retried: bool = False) -> None:
        self.payload = payload
        self.done = done
        self.retried = retried
        self.sent = 0.0
        #: The ``SCRIPT LOAD`` before a retry failed with this.
        self.load_error: Exception | None = None


class _PipeProtocol(asyncio.Protocol):
    """Replies to the pipe; the connection's end to the pipe and to redis-py's protocol."""

    def __init__(self, pipe: ScriptPipe, previous: asyncio.BaseProtocol) -> None:
        self._pipe = pipe
        self._previous = previous
        self._reader = ReplyReader()

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._reader.feed(data)
        except ProtocolError as exc:
            self._pipe._lost(
                self, redis.exceptions.ConnectionError(f"Protocol error from Redis: {exc}")
            )
            return
        for reply in replies:
            self._pipe._reply(self, reply)

    def eof_received(self) -> bool:
        return False  # close the transport: Redis does not half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self._pipe._lost(self, redis.exceptions.ConnectionError("Connection closed by server."))
        self._previous.connection_lost(exc)


class ScriptPipe:
    """``EVALSHA`` calls of one script, pipelined on one connection of ``client``'s pool."""

    def __init__(self, client: redis.asyncio.Redis, script: str) -> None:
        self._pool = client.connection_pool
        self._script = script.encode()
        self._sha = hashlib.sha1(self._script, usedforsecurity=False).hexdigest().encode()
        timeout = self._pool.connection_kwargs.get("socket_timeout")
        self._timeout: float | None = float(timeout) if timeout else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: AbstractConnection | None = None
        self._transport: asyncio.Transport | None = None
        self._protocol: _PipeProtocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        #: Calls written on the connection, oldest first; waiting for the connection.
        self._sent: deque[_Call] = deque()
        self._waiting: list[_Call] = []
        self._timer: asyncio.TimerHandle | None = None
        self._idle: list[asyncio.Future[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        #: Connections checked out (the first and every reconnection), for tests.
        self.connects_total = 0

    def payload(self, keys: Sequence[str], args: Sequence[str]) -> bytes:
        """``EVALSHA sha numkeys keys… args…`` packed."""
        return command(
            b"EVALSHA",
            self._sha,
            str(len(keys)).encode(),
            *(k.encode() for k in keys),
            *(a.encode() for a in args),
        )

    def send(
        self,
        loop: asyncio.AbstractEventLoop,
        keys: Sequence[str],
        args: Sequence[str],
        done: Done,
    ) -> None:
        """Send one call now (or as soon as a connection is ready); ``done`` gets its reply,
        or the exception it failed with, exactly once."""
        self._loop = loop
        self._write(_Call(self.payload(keys, args), done))

    def _write(self, call: _Call) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            if transport is not None:
                self._drop(redis.exceptions.ConnectionError("Connection closed by server."))
            self._waiting.append(call)
            if self._connecting is None:
                assert self._loop is not None
                self._connecting = self._loop.create_task(self._connect())
            return
        assert self._loop is not None
        call.sent = self._loop.time()
        transport.write(call.payload)
        self._sent.append(call)
        if self._timer is None and self._timeout is not None:
            self._timer = self._loop.call_at(call.sent + self._timeout, self._check)

    async def _connect(self) -> None:
        try:
            conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        except BaseException as exc:
            self._connecting = None
            waiting, self._waiting = self._waiting, []
            failure = (
                exc if isinstance(exc, Exception) else redis.exceptions.ConnectionError("cancelled")
            )
            for call in waiting:
                call.done(failure)
            self._notify_idle()
            if not isinstance(exc, Exception):
                raise
            return
        self._connecting = None
        self.connects_total += 1
        # redis-py keeps its stream writer in ``_writer`` (no public accessor): its transport
        # (asyncio's or uvloop's, which is not an ``asyncio.Transport`` subclass) is ours.
        writer: asyncio.StreamWriter | None = getattr(conn, "_writer", None)
        transport = cast(asyncio.Transport | None, writer.transport if writer else None)
        if transport is None or transport.is_closing():
            self._release(conn)
            waiting, self._waiting = self._waiting, []
            for call in waiting:
                call.done(redis.exceptions.ConnectionError("Connection closed by server."))
            self._notify_idle()
            return
        protocol = _PipeProtocol(self, transport.get_protocol())
        transport.set_protocol(protocol)
        self._conn, self._transport, self._protocol = conn, transport, protocol
        waiting, self._waiting = self._waiting, []
        for call in waiting:
            self._write(call)

    def _reply(self, protocol: _PipeProtocol, reply: Any) -> None:
        if protocol is not self._protocol or not self._sent:
            return
        call = self._sent.popleft()
        if isinstance(reply, ErrorReply):
            exc = _error(reply)
            if isinstance(exc, NoScriptError) and not call.retried:
                self._retry(call)
                return
            if isinstance(exc, NoScriptError) and call.load_error is not None:
                exc = call.load_error
            call.done(exc)
        else:
            call.done(reply)
        if not self._sent and not self._waiting:
            self._notify_idle()

    def _retry(self, call: _Call) -> None:
        """``NOSCRIPT`` (a flush or a restart): load the script, then the same call once."""
        again = _Call(call.payload, call.done, retried=True)

        def loaded(reply: Any) -> None:
            if isinstance(reply, Exception):
                again.load_error = reply

        self._write(_Call(command(b"SCRIPT", b"LOAD", self._script), loaded, retried=True))
        self._write(again)

    def _check(self) -> None:
        """The oldest call has waited ``socket_timeout``: Redis is stopped or gone."""
        self._timer = None
        if not self._sent or self._loop is None or self._timeout is None:
            return
        due = self._sent[0].sent + self._timeout
        if self._loop.time() >= due - 0.001:
            conn = self._conn
            where = conn._host_error() if conn is not None else "redis"
            self._drop(redis.exceptions.TimeoutError(f"Timeout reading from {where}"))
        else:
            self._timer = self._loop.call_at(due, self._check)

    def _lost(self, protocol: _PipeProtocol, exc: Exception) -> None:
        if protocol is self._protocol:
            self._drop(exc)

    def _drop(self, exc: Exception, *, closing: bool = False) -> None:
        """Fail every call sent on the connection, and give the connection back (when
        ``closing``, once it is closed: a TLS close takes a few more loop iterations)."""
        conn, self._conn, self._transport, self._protocol = self._conn, None, None, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sent, self._sent = self._sent, deque()
        for call in sent:
            call.done(exc)
        if conn is not None:
            self._release(conn, wait=closing)
        if not self._waiting and self._connecting is None:
            self._notify_idle()

    def _release(self, conn: AbstractConnection, *, wait: bool = False) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._disconnect(conn, wait=wait))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _disconnect(self, conn: AbstractConnection, *, wait: bool) -> None:
        try:
            await conn.disconnect(nowait=not wait)
        except Exception:  # noqa: S110 (closing a broken connection: nothing to tell)
            pass
        finally:
            await self._pool.release(conn)

    def _notify_idle(self) -> None:
        idle, self._idle = self._idle, []
        for future in idle:
            if not future.done():
                future.set_result(None)

    @property
    def in_flight(self) -> int:
        """Calls sent and not yet answered, or waiting for the connection."""
        return len(self._sent) + len(self._waiting)

    @property
    def busy(self) -> bool:
        return bool(self._sent or self._waiting or self._connecting is not None)

    async def aclose(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) for the calls sent, then give the connection back."""
        if self.busy:
            future = asyncio.get_running_loop().create_future()
            self._idle.append(future)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout_s)
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._conn is not None:  # what is still waiting past the budget fails now
            self._drop(
                redis.exceptions.ConnectionError("the rate limiter is closing"), closing=True
            )
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
