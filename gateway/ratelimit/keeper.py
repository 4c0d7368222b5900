"""The concurrency leases held by this process's requests, renewed by one task.

A lease's TTL exists only for crashed replicas: while its request lives, the lease is renewed
every ``every_s``. One task for all of them, not one per request (creating, scheduling and
cancelling a task per request cost more than the renewals it almost never made: a request
usually ends long before its first renewal). The leases are kept in the order of their last
renewal, so the task sleeps until the oldest one is due, renews every lease that is due (the
limiter batches those calls into one round trip), and sleeps again; a released lease is
simply dropped. The task starts with the first lease and stops on ``aclose``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.ratelimit.gcra import Lease

log = logging.getLogger("gateway.ratelimit")


class LeaseKeeper:
    def __init__(self, renew: Callable[[Lease], Awaitable[None]], *, every_s: float) -> None:
        if every_s <= 0:
            raise ValueError("every_s must be > 0")
        self._renew = renew
        self.every_s = every_s
        #: lease → when it was acquired or last renewed (monotonic), oldest first.
        self._held: dict[Lease, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.renewals_total = 0

    def hold(self, lease: Lease) -> None:
        """Renew ``lease`` every ``every_s`` until ``drop``."""
        self._held[lease] = time.monotonic()
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lease-keeper")

    def drop(self, lease: Lease) -> None:
        self._held.pop(lease, None)

    @property
    def held(self) -> int:
        return len(self._held)

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            due: list[Lease] = []
            for lease, at in self._held.items():  # oldest first: the due ones are a prefix
                if at + self.every_s > now:
                    break
                due.append(lease)
            for lease in due:  # to the back: renewed now, due last
                del self._held[lease]
                self._held[lease] = now
            if due:
                self.renewals_total += len(due)
                results = await asyncio.gather(
                    *(self._renew(lease) for lease in due), return_exceptions=True
                )
                for result in results:
                    if isinstance(result, Exception):
                        log.warning("lease renewal failed: %r", result)
            oldest = next(iter(self._held.values()), None)
            wait = self.every_s if oldest is None else oldest + self.every_s - time.monotonic()
            await asyncio.sleep(max(wait, 0.0))

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
