"""Auto-pipelining of one Lua script: the operations issued in one event-loop iteration travel
in one ``EVALSHA`` (redis-py asyncio adapter).

Concurrent requests each need a limiter operation (a decision, a lease release, a renewal).
Sent one call each, most of the cost is redis-py's per-command path (a pool checkout, three
``asyncio.timeout`` blocks, the health check, the retry wrapper: and on CPython 3.11 a
``getpid`` syscall in every ``asyncio.get_running_loop``). :class:`ScriptBatcher` queues the
operations submitted while the loop runs its ready callbacks and sends them, at the end of
that iteration (``call_soon``), as one call of a script that runs them in order
(``ratelimit.lua``): one round trip for all of them. On a single Redis that call is written
from that callback on the batcher's own pipelined connection (``redisconn.pipe``: no task,
no pool checkout, calls in flight together answered in order); on Redis Cluster (and an
in-process fake) it goes through redis-py's command path in a task, the operations grouped
by hash slot (every key of one operation shares its slot): one call per slot, sent
concurrently.

Each waiter keeps its own budget: a timer started when it submitted (no ``asyncio.timeout``,
no extra task) fails it with ``TimeoutError`` while the call may still be running (on the
pipe, one timer per call, started when its first operation was queued, bounds all of them:
an operation queued later in the same iteration is given up on that much earlier); the
operation itself carries its deadline on Redis's clock where it matters (the limiter's
decisions), so an answer nobody waits for changes nothing. The call itself is bounded by the
budget too (its deadline, or on the pipe a timer: past it, its operations fail with
``TimeoutError`` and a late reply is dropped). A call that fails fails every operation in it
with that error; an operation that fails inside the script (its own key)
fails alone with ``ResponseError``. Nothing is retried. An operation may also have no waiter
at all (``submit``: a lease release, off the request's path): it travels the same way and
only its failure is reported, to a hook. ``aclose`` sends what is queued and waits for the
calls in flight (within the budget): a release submitted before shutdown is sent, whether or
not its waiter is still there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from redis.crc import key_slot
from redis.exceptions import ResponseError

from gateway.deadline import Deadline
from gateway.redisconn.client import RedisClient
from gateway.redisconn.pipe import ScriptPipe, usable

log = logging.getLogger("gateway.ratelimit")

#: At most this many operations in one ``EVALSHA`` (bounds the script's run on Redis).
MAX_OPS = 128
#: Pipelined connections a batcher may use on a single Redis (each checked out when needed).
PIPES = 4
_ERROR = b"E"


@dataclass(slots=True)
class Op:
    """One operation of the script: its kind, keys and arguments."""

    kind: str
    keys: Sequence[str]
    args: Sequence[str | int]
    future: asyncio.Future[Any] | None = field(default=None, compare=False)
    #: For an operation nobody waits for (``submit``): told of its failure.
    on_error: Callable[[BaseException], None] | None = field(default=None, compare=False)


def encode(ops: Sequence[Op]) -> tuple[list[str], list[str]]:
    """``KEYS`` and ``ARGV`` of one script call running ``ops`` in order: each operation's
    kind, key count and arguments as one string of words (``-`` for an empty argument;
    an argument never contains a space)."""
    keys: list[str] = []
    args: list[str] = []
    for op in ops:
        keys += op.keys
        words = [op.kind, str(len(op.keys))]
        words += [str(a) if a != "" else "-" for a in op.args]
        args.append(" ".join(words))
    return keys, args


def outcome(reply: Any) -> list[bytes] | ResponseError:
    """One operation's reply as its words, or the ``ResponseError`` it failed with inside
    the script."""
    if isinstance(reply, list):
        message = reply[1] if len(reply) == 2 and reply[0] in (_ERROR, "E") else reply
        return ResponseError(message.decode() if isinstance(message, bytes) else str(message))
    return (reply if isinstance(reply, bytes) else str(reply).encode()).split()


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("the call ran past its budget"))


def _fail(op: Op, exc: BaseException) -> None:
    if op.future is not None:
        if not op.future.done():
            op.future.set_exception(exc)
    elif op.on_error is not None:
        try:
            op.on_error(exc)
        except Exception:  # one hook's failure must not keep the others' replies back
            log.exception("a batched operation's error hook failed")


def _deliver(ops: Sequence[Op], replies: list[Any] | BaseException) -> None:
    """Each operation's reply to its waiter (the call's failure to all of them)."""
    if isinstance(replies, BaseException):
        for op in ops:
            _fail(op, replies)
        return
    for op, reply in zip(ops, replies, strict=True):
        if isinstance(reply, BaseException):
            _fail(op, reply)
        elif op.future is not None and not op.future.done():
            op.future.set_result(reply)
        # else: its waiter gave up (budget, cancelled), or there is none: dropped


def _replies(ops: Sequence[Op], replies: Any) -> list[Any]:
    if not isinstance(replies, list) or len(replies) != len(ops):
        raise ResponseError("the limiter script answered the wrong number of replies")
    return [outcome(reply) for reply in replies]


class _Piped:
    """One call on the pipe: its operations until it is answered or runs past the budget of
    the first of them (then they fail with ``TimeoutError``, as a call cancelled by its
    deadline, and a late reply is dropped): one timer for the call, none per operation."""

    __slots__ = ("ops", "timer")

    def __init__(self, ops: Sequence[Op], loop: asyncio.AbstractEventLoop, expires_at: float):
        self.ops = ops
        self.timer = loop.call_at(expires_at, self.expire)

    def expire(self) -> None:
        ops, self.ops = self.ops, ()
        _deliver(ops, TimeoutError("the call ran past its budget"))

    def done(self, reply: Any) -> None:
        self.timer.cancel()
        ops, self.ops = self.ops, ()
        if ops:
            try:
                replies = reply if isinstance(reply, BaseException) else _replies(ops, reply)
            except ResponseError as exc:
                replies = exc
            _deliver(ops, replies)


def _in_flight(pipe: ScriptPipe) -> int:
    return pipe.in_flight


class ScriptBatcher:
    def __init__(self, client: RedisClient, script: str, *, budget_s: float) -> None:
        self.client = client
        self.script = client.register_script(script)
        self.budget_s = budget_s
        self.cluster = isinstance(client, redis.asyncio.RedisCluster)
        #: A single Redis's calls go on pipelined connections (``redisconn.pipe``), each to
        #: the one with the fewest calls in flight (the first when they tie): one while
        #: Redis answers, another while one is held up, as the pool would (a delayed reply
        #: holds back only the calls behind it on its own connection); a Cluster's (and an
        #: in-process fake's) through redis-py's command path.
        self.pipes = [ScriptPipe(client, script) for _ in range(PIPES)] if usable(client) else []
        self._queued: list[Op] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        #: When the first operation queued for this iteration's call runs past its budget.
        self._expires_at = 0.0
        self._sending: set[asyncio.Task[None]] = set()
        #: Script calls sent and operations they carried (the batching's effect, for tests).
        self.calls_total = 0
        self.ops_total = 0

    def _queue(self, op: Op) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or not loop.is_running():  # the first operation of this iteration
            loop = self._loop = asyncio.get_running_loop()
            self._queued = []
        if not self._queued:
            loop.call_soon(self._flush)
            if self.pipes:
                self._expires_at = loop.time() + self.budget_s
        self._queued.append(op)
        return loop

    async def run(self, kind: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Queue one operation, and wait (within the budget) for its reply."""
        op = Op(kind, keys, args)
        loop = self._queue(op)
        future = op.future = loop.create_future()
        if self.pipes:  # bounded by its call's timer (armed when the first queued)
            return await future
        timer = loop.call_later(self.budget_s, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def submit(
        self,
        kind: str,
        keys: Sequence[str],
        args: Sequence[str | int],
        on_error: Callable[[BaseException], None],
    ) -> None:
        """Queue one operation nobody waits for (a lease release): it travels in this
        iteration's call like the others, bounded by the call's budget; its failure goes to
        ``on_error``. Whatever happens to the task that submitted it, it is sent (``aclose``
        sends what is still queued)."""
        self._queue(Op(kind, keys, args, on_error=on_error))

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        loop = self._loop
        assert loop is not None
        if self.pipes:
            for start in range(0, len(queued), MAX_OPS):
                ops = queued[start : start + MAX_OPS]
                keys, args = encode(ops)
                self.calls_total += 1
                self.ops_total += len(ops)
                pipe = min(self.pipes, key=_in_flight)
                pipe.send(loop, keys, args, _Piped(ops, loop, self._expires_at).done)
            return
        for group in self._groups(queued):
            for start in range(0, len(group), MAX_OPS):
                task = loop.create_task(self._send(group[start : start + MAX_OPS]))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    def _groups(self, ops: list[Op]) -> list[list[Op]]:
        if not self.cluster:
            return [ops]
        slots: dict[int, list[Op]] = {}
        for op in ops:
            slots.setdefault(key_slot(op.keys[0].encode()), []).append(op)
        return list(slots.values())

    async def execute(self, ops: Sequence[Op]) -> list[Any]:
        """Run ``ops`` in one script call now (no queue, no budget of its own): each reply, or
        the ``ResponseError`` its operation failed with."""
        keys, args = encode(ops)
        self.calls_total += 1
        self.ops_total += len(ops)
        return _replies(ops, await self.script(keys=keys, args=args))

    async def _send(self, ops: list[Op]) -> None:
        try:
            with Deadline(self.budget_s):
                replies = await self.execute(ops)
        except Exception as exc:  # every waiter gets the call's failure
            _deliver(ops, exc)
            return
        _deliver(ops, replies)

    async def aclose(self) -> None:
        """Send what is queued and wait for every call in flight (each within the budget)."""
        if self._queued:
            self._flush()
        if self.pipes:
            await asyncio.gather(*(pipe.aclose(self.budget_s) for pipe in self.pipes))
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
