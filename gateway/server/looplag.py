"""The event-loop lag monitor (asyncio adapter): how late this process runs what is due.

One task sleeps ``interval_s`` at a time and measures how much later than asked it woke up
(``lag_s``, exported as ``gateway_event_loop_lag_seconds``). A saturated loop wakes the task
late, so the lag is a direct measure of the queueing every request in the process sees. One
timer a tick: nothing measurable on the request path. (Not used to shed: see
``gateway.admission``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class LoopLagMonitor:
    def __init__(self, *, interval_s: float = 0.25) -> None:
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        #: The last measurement (seconds).
        self.lag_s = 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def _run(self) -> None:
        while True:
            asked = time.monotonic() + self._interval_s
            await asyncio.sleep(self._interval_s)
            self.lag_s = max(0.0, time.monotonic() - asked)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
