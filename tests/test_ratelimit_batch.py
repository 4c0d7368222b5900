"""Auto-pipelining of the limiter (``redisconn.batch``) against a real redis-server: the
decisions, releases and renewals of concurrent requests share one script call per loop
iteration, and still count exactly, across replicas; a release is never lost (alone, its
waiter gone, at shutdown); one caller's broken key fails only that caller."""

from __future__ import annotations

import asyncio
import time

import redis

from gateway.errors import ServiceUnavailableError
from gateway.ratelimit.gcra import Decision, LimitPlan, Rate, RateLimitProfile, plan
from gateway.ratelimit.redis_limiter import RedisRateLimiter, make_redis_client
from gateway.redisconn.client import RedisClient
from tests.ratelimitcases import caller, run

SLOW = 3600.0


def client(url: str, timeout: float = 2.0) -> RedisClient:
    return make_redis_client(url, socket_timeout_s=timeout, connect_timeout_s=timeout)


def limited(burst: int, n: int = 0, concurrency: int | None = None) -> LimitPlan:
    profile = RateLimitProfile(
        per_caller={"write": Rate(burst, SLOW, burst)},
        per_tenant={"write": Rate(10_000, SLOW, 10_000)},
        max_concurrent=concurrency,
    )
    return plan(caller(n), "write", profile)


def test_concurrent_decisions_share_one_call_and_count_exactly_across_replicas(
    redis_url: str,
) -> None:
    """Two replicas, 120 concurrent requests each for one caller allowed 50: one script call
    per replica carries them all, and exactly 50 are admitted in total."""
    burst, n = 50, 120
    p = limited(burst, concurrency=10_000)

    async def scenario() -> tuple[int, list[int], int]:
        clients = [client(redis_url), client(redis_url)]
        replicas = [RedisRateLimiter(c, budget_s=2) for c in clients]
        try:
            decisions = await asyncio.gather(
                *(replicas[i % 2].check(p, f"r{i}") for i in range(2 * n))
            )
            held = await clients[0].zcard(p.keys[-1])
            return sum(d.allowed for d in decisions), [r.batch.calls_total for r in replicas], held
        finally:
            for c in clients:
                await c.aclose()

    admitted, calls, held = run(scenario)
    assert admitted == burst
    assert held == burst  # every admitted decision holds its lease, no refused one does
    assert calls == [1, 1]  # 120 decisions, one round trip per replica


def test_a_release_shares_the_next_call_and_frees_the_slot_first(redis_url: str) -> None:
    p = limited(1000, concurrency=1)

    async def scenario() -> None:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, budget_s=2)
        try:
            first = await limiter.check(p, "a")
            assert first.lease is not None
            assert not (await limiter.check(p, "b")).allowed  # the one slot is held
            before = limiter.batch.calls_total
            _, again = await asyncio.gather(limiter.release(first.lease), limiter.check(p, "c"))
            assert again.allowed  # the release ran first, in the same script call
            assert limiter.batch.calls_total == before + 1
        finally:
            await c.aclose()

    run(scenario)


def test_a_release_with_no_later_call_happens_within_the_budget(redis_url: str) -> None:
    p = limited(1000, concurrency=5)
    sync = redis.Redis.from_url(redis_url, socket_timeout=5)

    async def scenario() -> None:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, budget_s=0.5)
        try:
            decision = await limiter.check(p, "a")
            assert decision.lease is not None
            assert sync.zcard(decision.lease.key) == 1
            started = time.monotonic()
            await limiter.release(decision.lease)
            assert time.monotonic() - started < 0.5
            assert sync.zcard(decision.lease.key) == 0  # freed in Redis, not only queued
        finally:
            await c.aclose()

    run(scenario)
    sync.close()


def test_a_release_is_sent_at_shutdown_even_when_its_waiter_is_gone(redis_url: str) -> None:
    """The request that released its slot is cancelled, the gateway shuts down at once: the
    release still reaches Redis (``aclose`` sends what is queued and waits for it)."""
    p = limited(1000, concurrency=5)
    sync = redis.Redis.from_url(redis_url, socket_timeout=5)

    async def scenario() -> str:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, budget_s=1)
        try:
            leases = [(await limiter.check(p, str(i))).lease for i in range(2)]
            assert all(leases)
            gone = asyncio.ensure_future(limiter.release(leases[0]))
            kept = asyncio.ensure_future(limiter.release(leases[1]))
            await asyncio.sleep(0)  # both are queued for this iteration's call
            gone.cancel()
            await limiter.aclose()
            assert kept.done()
            assert leases[0] is not None
            return leases[0].key
        finally:
            await c.aclose()

    key = run(scenario)
    assert sync.zcard(key) == 0
    sync.close()


def test_one_callers_broken_key_fails_only_that_caller(redis_url: str) -> None:
    """Decisions batched with one whose key holds the wrong type: only that one fails."""
    good, bad = limited(10, n=1), limited(10, n=2)
    sync = redis.Redis.from_url(redis_url, socket_timeout=5)
    sync.hset(bad.keys[0], "x", "1")  # WRONGTYPE for the script's GET
    errors: list[str] = []

    async def scenario() -> list[object]:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, budget_s=2, on_error=errors.append)
        try:
            results = await asyncio.gather(
                limiter.check(good, "g1"),
                limiter.check(bad, "b"),
                limiter.check(good, "g2"),
                return_exceptions=True,
            )
            assert limiter.batch.calls_total == 1
            return list(results)
        finally:
            await c.aclose()

    first, broken, second = run(scenario)
    sync.close()
    assert isinstance(broken, ServiceUnavailableError)  # fail_mode = "closed": 503
    assert errors == ["response"]
    assert isinstance(first, Decision)
    assert isinstance(second, Decision)
    assert first.allowed
    assert second.allowed
    assert second.rules[0].remaining == 8
