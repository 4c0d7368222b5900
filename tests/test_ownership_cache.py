"""The in-process cache of known thread owners: hits skip Redis, misses and deletes do not."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.ownership import owner_key
from gateway.ownership_redis import ThreadOwnership


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.gets = 0

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        return self.data.get(key)

    async def set(self, key: str, value: str, ex: int) -> None:
        self.data[key] = value.encode()

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


def test_known_owner_is_cached_and_forgotten_on_delete() -> None:
    redis: Any = FakeRedis()
    threads = ThreadOwnership(redis, ttl_s=60, budget_s=1)

    async def scenario() -> None:
        assert await threads.owner("thread_a") is None
        assert await threads.owner("thread_a") is None
        assert redis.gets == 2  # a missing record is never cached
        assert await threads.record("thread_a", "team-a")
        first = await threads.owner("thread_a")
        assert first is not None and await threads.owner("thread_a") == first
        assert redis.gets == 3  # the second lookup was a cache hit
        await threads.forget("thread_a")
        assert owner_key("thread_a") not in redis.data
        assert await threads.owner("thread_a") is None
        assert redis.gets == 4

    asyncio.run(scenario())
