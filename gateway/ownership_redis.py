"""Thread-ownership records in Redis (adapter; redis-py asyncio only).

Ownership is a security control, so it fails closed: when Redis cannot answer within the
budget the request gets a 503 rather than a guess.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio
import redis.exceptions

from gateway.errors import ServiceUnavailableError
from gateway.ownership import owner_key, tenant_digest

log = logging.getLogger("gateway.ownership")


def _unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError("Thread ownership cannot be checked right now; retry shortly.",
                                   code="ownership_unavailable", headers={"Retry-After": "1"})


class ThreadOwnership:
    def __init__(self, client: redis.asyncio.Redis | redis.asyncio.RedisCluster, *,
                 ttl_s: int, budget_s: float) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.budget_s = budget_s

    async def owner(self, thread_id: str) -> str | None:
        try:
            async with asyncio.timeout(self.budget_s):
                value = await self.client.get(owner_key(thread_id))
        except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
            log.warning("ownership lookup failed: %s", type(exc).__name__)
            raise _unavailable() from None
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def record(self, thread_id: str, tenant: str) -> bool:
        try:
            async with asyncio.timeout(self.budget_s):
                await self.client.set(owner_key(thread_id), tenant_digest(tenant),
                                      ex=self.ttl_s)
        except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
            log.error("ownership record failed: %s", type(exc).__name__)
            return False
        return True

    async def forget(self, thread_id: str) -> None:
        try:
            async with asyncio.timeout(self.budget_s):
                await self.client.delete(owner_key(thread_id))
        except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
            log.warning("ownership delete failed: %s", type(exc).__name__)
