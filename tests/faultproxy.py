"""A small asyncio TCP fault proxy for tests: delays what the server sends back.

Runs in its own thread and event loop on a free loopback port and forwards bytes to a target,
holding a share (``chance``) of the server's chunks for ``delay_s`` plus a random part of
``jitter_s`` first. Used to
make replies arrive after a client has already given up (timeouts, cancellations).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Iterator

from tests.servers import free_port


class DelayProxy:
    def __init__(
        self, target_port: int, *, delay_s: float = 0.0, jitter_s: float = 0.0, chance: float = 1.0
    ) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        #: The share of server chunks that are delayed at all.
        self.chance = chance
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delayed: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if delayed and random.random() < self.chance:  # noqa: S311
                    await asyncio.sleep(self.delay_s + random.uniform(0, self.jitter_s))  # noqa: S311
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            self._pipe(client_r, server_w, delayed=False),
            self._pipe(server_r, client_w, delayed=True),
        )

    def start(self) -> DelayProxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)  # let the closed transports finish closing

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@contextlib.contextmanager
def delay_proxy(target_port: int, **kw: float) -> Iterator[DelayProxy]:
    proxy = DelayProxy(target_port, **kw).start()
    try:
        yield proxy
    finally:
        proxy.stop()
