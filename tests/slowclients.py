"""A slow-header flood for tests: many sockets that send a request head one byte at a time.

Runs in its own thread and event loop. Each of ``count`` sockets connects, then sends the
next byte of a never-ending request head every ``interval_s``; when the server closes one,
it is replaced (a sustained attack) until ``stop()``. Each closed connection's lifetime is
recorded, so a test can check the server's header deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

HEAD = (
    b"POST /openai/threads?api-version=2024-05-01-preview HTTP/1.1\r\nHost: gateway\r\n"
    b"X-Slow: " + b"a" * 100_000
)


@dataclass
class FloodStats:
    opened: int = 0
    connect_errors: int = 0
    #: Lifetimes (s) of connections the server closed, connect to EOF.
    closed_after_s: list[float] = field(default_factory=list)
    open_now: int = 0
    peak_open: int = 0


class SlowHeaderFlood:
    def __init__(self, port: int, count: int, *, interval_s: float = 1.0) -> None:
        self.port = port
        self.count = count
        self.interval_s = interval_s
        self.stats = FloodStats()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="slow-flood", daemon=True)
        self._stopping: asyncio.Event | None = None
        self._done = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()
            self._done.set()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        connecting = asyncio.Semaphore(100)
        await asyncio.gather(*(self._socket(connecting) for _ in range(self.count)))

    async def _socket(self, connecting: asyncio.Semaphore) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            async with connecting:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", self.port), 10
                    )
                except (OSError, TimeoutError):
                    self.stats.connect_errors += 1
                    await asyncio.sleep(0.2)
                    continue
            self.stats.opened += 1
            self.stats.open_now += 1
            self.stats.peak_open = max(self.stats.peak_open, self.stats.open_now)
            opened = time.monotonic()
            closed_by_server = await self._dribble(reader, writer)
            self.stats.open_now -= 1
            if closed_by_server:
                self.stats.closed_after_s.append(time.monotonic() - opened)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _dribble(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Send a byte per interval until the server closes (True) or the flood stops."""
        assert self._stopping is not None
        eof = asyncio.ensure_future(reader.read(65536))
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            for i in range(len(HEAD)):
                try:
                    writer.write(HEAD[i : i + 1])
                except (OSError, RuntimeError):
                    return True
                done, _ = await asyncio.wait(
                    {eof, stop}, timeout=self.interval_s, return_when=asyncio.FIRST_COMPLETED
                )
                if stop in done:
                    return False
                if eof in done:
                    return True
            return False
        finally:
            for task in (eof, stop):
                task.cancel()
            await asyncio.gather(eof, stop, return_exceptions=True)

    def start(self) -> SlowHeaderFlood:
        self._thread.start()
        return self

    def wait_open(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats.opened >= n:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._done.wait(30)
        self._thread.join(5)


@contextlib.contextmanager
def slow_header_flood(port: int, count: int, **kw: float) -> Iterator[SlowHeaderFlood]:
    flood = SlowHeaderFlood(port, count, **kw).start()
    try:
        yield flood
    finally:
        flood.stop()
