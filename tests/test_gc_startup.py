"""``gateway serve``'s start-up hook for the cyclic collector (``gateway.cli.GatewayServer``).

Once the server has started, everything built so far is frozen out of the collector's
generations (``gc.freeze``: full collections under load never walk the start-up heap again)
and the young generation's threshold is ``GC_THRESHOLD``. A real uvicorn start-up in this
process; the collector's state is restored afterwards.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
import uvicorn

from gateway.app import Gateway
from gateway.cli import GC_THRESHOLD, GatewayServer
from tests.servers import free_port


async def _ok(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover (never called)
    raise AssertionError("no request is sent")


@pytest.fixture
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector")
def test_startup_freezes_the_heap_and_raises_the_young_threshold() -> None:
    config = uvicorn.Config(
        _ok, host="127.0.0.1", port=free_port(), lifespan="off", log_config=None
    )
    server = GatewayServer(config, cast(Gateway, SimpleNamespace(draining=False)))
    assert gc.get_freeze_count() == 0
    seen: dict[str, Any] = {}

    async def watch() -> None:
        while not server.started:  # uvicorn has no event for it
            await asyncio.sleep(0.01)
        seen["frozen"], seen["threshold"] = gc.get_freeze_count(), gc.get_threshold()
        server.should_exit = True

    async def serve_once() -> None:
        watcher = asyncio.create_task(watch())
        await server.serve()
        await watcher

    asyncio.run(serve_once())
    assert seen["frozen"] > 10_000  # the interpreter, the gateway's modules and objects
    assert seen["threshold"][0] == GC_THRESHOLD
