"""The owner lookup (``ownership.lookup.ObjectOwners``) over typed fakes of its two ports:
cache hits skip Redis, misses ask Azure once, failures fail closed."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import NotFoundError, ServiceUnavailableError
from gateway.operations.row import ASSISTANT, FILE, THREAD, VECTOR_STORE, Kind
from gateway.ownership.lookup import ObjectOwners
from gateway.ownership.rules import Location, RecordsUnavailableError, tenant_digest

A = tenant_digest("team-a")


class Records:
    """An ``OwnerRecords`` in a dict; ``down`` makes every call fail like a stopped Redis."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.gets = 0
        self.down = False

    async def get(self, thread_id: str) -> str | None:
        self.gets += 1
        if self.down:
            raise RecordsUnavailableError
        return self.data.get(thread_id)

    async def put(self, thread_id: str, owner: str) -> bool:
        if self.down:
            return False
        self.data[thread_id] = owner
        return True

    async def delete(self, thread_id: str) -> None:
        self.data.pop(thread_id, None)


class Origin:
    """An ``OwnerOrigin``: stamps by object id; a missing id is Azure's 404 (of its kind)."""

    def __init__(self) -> None:
        self.stamps: dict[str, str | None] = {}
        self.calls = 0
        self.kinds: list[Kind] = []
        self.delay = 0.0
        self.error: Exception | None = None

    async def find(self, kind: Kind, object_id: str) -> Location:
        return Location(await self.stamp(kind, object_id), None)

    async def stamp(self, kind: Kind, object_id: str) -> str | None:
        self.calls += 1
        self.kinds.append(kind)
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        if object_id not in self.stamps:
            raise NotFoundError("No such object.", code=kind.not_found_code)
        return self.stamps[object_id]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def owners(ttl: float = 60.0) -> tuple[ObjectOwners, Records, Origin, Clock]:
    records, origin, clock = Records(), Origin(), Clock()
    return ObjectOwners(records, origin, cache_ttl_s=ttl, clock=clock), records, origin, clock


def test_known_owner_is_cached_and_forgotten_on_delete() -> None:
    threads, records, origin, clock = owners()

    async def scenario() -> None:
        assert await threads.record("thread_a", A)
        assert await threads.owner(THREAD, "thread_a") == A
        assert records.gets == 0  # recorded at creation: a cache hit
        clock.now += 61
        assert await threads.owner(THREAD, "thread_a") == A
        assert records.gets == 1  # expired: Redis again, Azure never
        await threads.forget("thread_a")
        assert "thread_a" not in records.data
        with pytest.raises(NotFoundError):
            await threads.owner(THREAD, "thread_a")  # Azure: no such thread
        assert origin.calls == 1

    asyncio.run(scenario())


def test_a_lost_record_is_read_from_the_stamp_and_written_back() -> None:
    threads, records, origin, _ = owners(ttl=0)  # no cache: every lookup goes to Redis
    origin.stamps["thread_a"] = A

    async def scenario() -> None:
        assert await threads.owner(THREAD, "thread_a") == A
        assert records.data["thread_a"] == A
        assert await threads.owner(THREAD, "thread_a") == A
        assert origin.calls == 1  # the second one found the written-back record

    asyncio.run(scenario())


def test_redis_down_asks_azure_and_fails_closed_without_a_stamp() -> None:
    threads, records, origin, _ = owners(ttl=0)
    records.down = True
    origin.stamps.update(thread_stamped=A, thread_legacy=None)

    async def scenario() -> None:
        assert await threads.owner(THREAD, "thread_stamped") == A
        # No stamp, and Redis could not say whether an older record exists: no guess.
        with pytest.raises(ServiceUnavailableError) as err:
            await threads.owner(THREAD, "thread_legacy")
        assert err.value.code == "ownership_unavailable"
        records.down = False
        assert await threads.owner(THREAD, "thread_legacy") is None  # now truly unknown

    asyncio.run(scenario())


def test_unowned_threads_are_cached_but_azure_errors_are_not() -> None:
    threads, _records, origin, _ = owners()
    origin.stamps["thread_legacy"] = None

    async def scenario() -> None:
        assert await threads.owner(THREAD, "thread_legacy") is None
        assert await threads.owner(THREAD, "thread_legacy") is None
        assert origin.calls == 1
        origin.error = ServiceUnavailableError("down", code="ownership_unavailable")
        for _ in range(2):
            with pytest.raises(ServiceUnavailableError):
                await threads.owner(THREAD, "thread_other")
        assert origin.calls == 3

    asyncio.run(scenario())


def test_concurrent_misses_share_one_azure_lookup() -> None:
    threads, records, origin, _ = owners(ttl=0)
    origin.stamps["thread_a"] = A
    origin.delay = 0.05

    async def scenario() -> None:
        results = await asyncio.gather(*(threads.owner(THREAD, "thread_a") for _ in range(20)))
        assert results == [A] * 20
        assert origin.calls == 1
        records.data.clear()
        # A waiter that goes away does not cancel the lookup the others wait for.
        first = asyncio.ensure_future(threads.owner(THREAD, "thread_a"))
        second = asyncio.ensure_future(threads.owner(THREAD, "thread_a"))
        await asyncio.sleep(0.01)
        first.cancel()
        assert await second == A
        assert origin.calls == 2

    asyncio.run(scenario())


def test_every_kind_is_looked_up_at_its_own_origin_and_recorded_by_id() -> None:
    """Assistants, vector stores and files go the same way as threads (cache, records,
    origin), the origin asked with the object's kind (its lookup row, its 404)."""
    objects, records, origin, _ = owners(ttl=0)
    origin.stamps.update({"asst_a": A, "vs_a": A, "file-a": A})

    async def scenario() -> None:
        for kind, object_id in ((ASSISTANT, "asst_a"), (VECTOR_STORE, "vs_a"), (FILE, "file-a")):
            assert await objects.owner(kind, object_id) == A
            assert records.data[object_id] == A  # written back, keyed by the id
            assert await objects.owner(kind, object_id) == A  # from the record now
        assert origin.kinds == [ASSISTANT, VECTOR_STORE, FILE]
        with pytest.raises(NotFoundError) as err:
            await objects.owner(VECTOR_STORE, "vs_missing")
        assert err.value.code == "vector_store_not_found"

    asyncio.run(scenario())


def test_known_is_the_cache_alone() -> None:
    """``known`` (the middleware's no-coroutine path) answers from the in-process cache only:
    a miss, an expired entry and a cache turned off are None (``locate`` then decides)."""
    threads, records, origin, clock = owners()
    off, _, _, _ = owners(ttl=0)

    async def scenario() -> None:
        assert threads.known("thread_a") is None
        assert await threads.record("thread_a", A, "west")
        assert threads.known("thread_a") == Location(A, "west")
        origin.stamps["thread_u"] = None
        await threads.locate(THREAD, "thread_u")  # known-unowned: cached too
        assert threads.known("thread_u") == Location(None, None)
        clock.now += 61
        assert threads.known("thread_a") is None
        assert await off.record("thread_a", A)
        assert off.known("thread_a") is None
        assert records.gets == 1 and origin.calls == 1

    asyncio.run(scenario())
