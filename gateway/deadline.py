"""A deadline for a block of the running task: ``asyncio.timeout``'s semantics as a plain
(not async) context manager over one timer handle (adapter: asyncio only).

``with Deadline(delay):`` arms ``loop.call_at`` for ``delay`` seconds from now; when it fires,
the task is cancelled, and leaving the block with that ``CancelledError`` raises
``TimeoutError`` instead, as ``asyncio.timeout`` does (3.11): its cancellation is taken back
(``Task.uncancel``), and only when no other cancellation was requested meanwhile does it
become the ``TimeoutError``; any other cancellation goes on as one. Leaving the block cancels
the timer.

Why not ``asyncio.timeout``: its ``async with`` runs two coroutines and a state machine per
use; on uvloop that is 3.9 µs against 2.2 µs for this (in process), on every request's body
read and every rate-limiter script call.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    __slots__ = ("_cancelling", "_delay", "_expired", "_task", "_timer")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._expired = False

    def __enter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a Deadline must be entered inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + self._delay, self._expire)
        return self

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
