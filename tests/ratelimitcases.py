"""What the limiter's tests over a real Redis share: a caller and a bounded ``asyncio.run``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.auth.caller import Caller

T = TypeVar("T")


def caller(n: int = 0, tenant: str = "tenant-a") -> Caller:
    return Caller(id=f"{tenant}/sa-{n}", tenant=tenant, issuer="i", subject="s", profile="p")


def run(factory: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
    """``asyncio.run`` of ``factory()``, failing after ``timeout`` seconds instead of hanging."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await factory()

    return asyncio.run(bounded())
