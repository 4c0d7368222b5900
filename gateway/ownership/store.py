"""Owner records in Redis (adapter; redis-py asyncio only), one key per object id
(``rules.owner_key``: ``gw:own:{<id>}``, for every kind: their ids have distinct prefixes).

The records are a cache of the owner stamp on each Azure object (``stamp``, ``filenames``),
kept so the usual lookup costs one Redis ``GET`` rather than an Azure call. Losing them (an
empty restart, eviction, expiry) loses no ownership: ``lookup`` then reads the stamp and
writes the record back. Thread records written before stamping existed are the only copy of
their thread's owner for as long as Redis keeps them.

Every call is bounded by ``budget_s``. A read that fails raises ``RecordsUnavailableError`` (the
lookup then asks Azure); a write or delete that fails is logged and reported, never raised.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio
import redis.exceptions

from gateway.ownership.rules import RecordsUnavailableError, owner_key, parse_record

log = logging.getLogger("gateway.ownership")

_FAILURES = (TimeoutError, redis.exceptions.RedisError, OSError)


class RedisOwnerRecords:
    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster,
        *,
        ttl_s: int,
        budget_s: float,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.budget_s = budget_s

    async def get(self, object_id: str) -> str | None:
        """The record's value (``rules.record_value``: the owner, and its backend)."""
        try:
            async with asyncio.timeout(self.budget_s):
                value = await self.client.get(owner_key(object_id))
        except _FAILURES as exc:
            log.warning("ownership record lookup failed: %s", type(exc).__name__)
            raise RecordsUnavailableError from None
        if value is None:
            return None
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        if parse_record(text) is None:
            log.error("malformed ownership record ignored")
            return None
        return text

    async def put(self, object_id: str, value: str) -> bool:
        try:
            async with asyncio.timeout(self.budget_s):
                await self.client.set(owner_key(object_id), value, ex=self.ttl_s)
        except _FAILURES as exc:
            log.warning("ownership record write failed: %s", type(exc).__name__)
            return False
        return True

    async def delete(self, object_id: str) -> None:
        try:
            async with asyncio.timeout(self.budget_s):
                await self.client.delete(owner_key(object_id))
        except _FAILURES as exc:
            log.warning("ownership record delete failed: %s", type(exc).__name__)
