"""Thread-ownership records in Redis (adapter; redis-py asyncio only).

Ownership is a security control, so it fails closed: when Redis cannot answer within the
budget the request gets a 503 rather than a guess.

Known owners are also kept in a small in-process cache (``KNOWN_OWNERS`` entries for
``KNOWN_OWNER_TTL_S``), which saves the Redis round trip on the hot path (callers keep working
on the same threads). That is safe because a thread's owner never changes: Azure never reuses
a thread id, so a record is only ever created once and deleted. A stale entry after a delete
on another replica only lets the owner itself reach Azure, which answers 404. Missing records
are never cached (one may be written a moment later).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

import redis.asyncio
import redis.exceptions

from gateway.errors import ServiceUnavailableError
from gateway.ownership import owner_key, tenant_digest

log = logging.getLogger("gateway.ownership")


def _unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError("Thread ownership cannot be checked right now; retry shortly.",
                                   code="ownership_unavailable", headers={"Retry-After": "1"})


KNOWN_OWNERS = 10_000
KNOWN_OWNER_TTL_S = 60.0


class ThreadOwnership:
    def __init__(self, client: redis.asyncio.Redis | redis.asyncio.RedisCluster, *,
                 ttl_s: int, budget_s: float) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.budget_s = budget_s
        self._known: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def _remember(self, thread_id: str, owner: str) -> None:
        self._known[thread_id] = (owner, time.monotonic() + KNOWN_OWNER_TTL_S)
        self._known.move_to_end(thread_id)
        if len(self._known) > KNOWN_OWNERS:
            self._known.popitem(last=False)

    async def owner(self, thread_id: str) -> str | None:
        known = self._known.get(thread_id)
        if known is not None:
            if known[1] > time.monotonic():
                return known[0]
            del self._known[thread_id]
        try:
            async with asyncio.timeout(self.budget_s):
                value = await self.client.get(owner_key(thread_id))
        except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
            log.warning("ownership lookup failed: %s", type(exc).__name__)
            raise _unavailable() from None
        if value is None:
            return None
        owner = value.decode() if isinstance(value, bytes) else str(value)
        self._remember(thread_id, owner)
        return owner

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
        self._known.pop(thread_id, None)
        try:
            async with asyncio.timeout(self.budget_s):
                await self.client.delete(owner_key(thread_id))
        except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
            log.warning("ownership delete failed: %s", type(exc).__name__)
