"""The Redis limiter against a real redis-server: exactness, the Lua model, leases, faults."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio

from gateway.errors import ServiceUnavailableError
from gateway.ratelimit.gcra import (
    Decision,
    LimitPlan,
    Rate,
    RateLimitProfile,
    decide,
    gcra,
    plan,
    response_headers,
)
from gateway.ratelimit.redis_limiter import RETRY_S, RedisRateLimiter, make_redis_client
from gateway.redisconn.client import RedisClient
from tests.ratelimitcases import caller, run
from tests.servers import RedisServer, private_redis

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
SLOW = 3600.0  # per_seconds that make refill negligible during a test
BUDGET = 0.1
MARGIN = 0.15  # scheduling slack on top of the budget


def client(url: str, max_connections: int = 32, timeout: float = BUDGET) -> RedisClient:
    return make_redis_client(
        url, socket_timeout_s=timeout, connect_timeout_s=timeout, max_connections=max_connections
    )


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def caller_plan(burst: int, per_seconds: float = SLOW, requests: int | None = None) -> LimitPlan:
    profile = RateLimitProfile(per_caller={"write": Rate(requests or burst, per_seconds, burst)})
    return plan(caller(), "write", profile)


# --- exactness across connections and processes (D1) ---------------------------------------


def test_concurrent_checks_on_several_connections_admit_exactly_burst(redis_url: str) -> None:
    limit, n_clients, n = 50, 4, 200
    p = plan(
        caller(),
        "write",
        RateLimitProfile(
            per_caller={"write": Rate(limit, SLOW, limit)},
            per_tenant={"write": Rate(1000, SLOW, 1000)},
        ),
    )

    async def scenario() -> list[Decision]:
        clients = [client(redis_url, timeout=2) for _ in range(n_clients)]
        try:
            limiters = [RedisRateLimiter(c, budget_s=2) for c in clients]
            return await asyncio.gather(
                *(limiters[i % n_clients].check(p, f"r{i}") for i in range(n))
            )
        finally:
            for c in clients:
                await c.aclose()

    decisions = run(scenario)
    assert sum(d.allowed for d in decisions) == limit
    assert {d.limited_by for d in decisions if not d.allowed} == {"caller-write"}
    # the tenant rule was charged only for admitted requests (all-or-nothing)
    admitted_tenant = [d.rules[1].remaining for d in decisions if d.allowed]
    assert min(admitted_tenant) == 1000 - limit


CHILD = """
import asyncio, sys, time
from gateway.auth.caller import Caller
from gateway.ratelimit.gcra import Rate, RateLimitProfile, plan
from gateway.ratelimit.redis_limiter import RedisRateLimiter, make_redis_client

url, start_at, n, limit = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
who = Caller(id="tenant-a/sa-0", tenant="tenant-a", issuer="i", subject="s", profile="p")
p = plan(who, "write", RateLimitProfile(per_caller={"write": Rate(limit, 3600.0, limit)}))

async def main():
    c = make_redis_client(url, socket_timeout_s=2, connect_timeout_s=2, max_connections=8)
    limiter = RedisRateLimiter(c, budget_s=3)
    await c.ping()
    time.sleep(max(0.0, start_at - time.time()))
    ds = await asyncio.gather(*(limiter.check(p, str(i)) for i in range(n)))
    await c.aclose()
    print(sum(d.allowed for d in ds))

asyncio.run(main())
"""


def test_three_processes_admit_exactly_burst_in_total(redis_url: str) -> None:
    limit, per_process = 50, 40
    start_at = time.time() + 1.5
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, redis_url, str(start_at), str(per_process), str(limit)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    admitted = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        admitted.append(int(out.strip()))
    assert sum(admitted) == limit


# --- the Lua script agrees with the pure model (D17, D6) -----------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_script_matches_the_model_on_random_arrivals(redis_url: str, seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 (a reproducible test sequence)
    # slow rates in simulated time: key TTLs (real time) outlive the test
    profile = RateLimitProfile(
        per_caller={"write": Rate(3, 60, 3), "read": Rate(10, 60, 4)},
        per_tenant={"write": Rate(5, 60, 6), "read": Rate(20, 60, 9)},
    )
    global_rate = Rate(7, 30, 8)
    callers = [caller(i) for i in range(3)]
    base = 1_700_000_000 * 1_000_000 + rng.randrange(1_000_000)

    async def scenario() -> None:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, budget_s=2, allow_clock_override=True)
        model: dict[str, int] = {}
        now = base
        try:
            for i in range(300):
                now += rng.choice([0, 0, rng.randrange(1, 3_000_000), rng.randrange(20_000_000)])
                op = rng.choice(["read", "write"])
                p = plan(rng.choice(callers), op, profile, global_rate)
                got = await limiter.check(p, str(i), now_us=now)
                results = [gcra(model.get(s.key), now, s.rate) for s in p.rules]
                ok = all(r.allowed for r in results)
                if ok:  # all-or-nothing: commit every rule, or none
                    model.update((s.key, r.tat_us) for s, r in zip(p.rules, results, strict=True))
                after = [max(model.get(s.key, now), now) for s in p.rules]
                expected = decide(p, now, after, status="allowed" if ok else "rate")
                assert got == expected, (i, now)
                for key, tat in model.items():
                    if tat > now:
                        assert int(await c.get(key) or b"") == tat
        finally:
            await c.aclose()

    run(scenario)


def test_replica_clocks_do_not_matter(redis_url: str) -> None:
    """Time comes from Redis: the caller's clock is never sent (no override in production)."""

    async def scenario() -> None:
        c = client(redis_url)
        try:
            limiter = RedisRateLimiter(c)
            with pytest.raises(ValueError, match="clock override"):
                await limiter.check(caller_plan(1), "r", now_us=0)
        finally:
            await c.aclose()

    run(scenario)


# --- real time: refill and Retry-After ------------------------------------------------------


def test_refill_and_retry_after_in_real_time(redis_url: str) -> None:
    p = caller_plan(burst=2, per_seconds=1, requests=10)  # one every 100 ms

    async def scenario() -> None:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, budget_s=1)
        try:
            assert [(await limiter.check(p, "r")).allowed for _ in range(2)] == [True, True]
            refused = await limiter.check(p, "r")
            assert not refused.allowed
            assert 0 < refused.retry_after_ms <= 100
            await asyncio.sleep(refused.retry_after_ms / 2000)
            early = await limiter.check(p, "r")
            assert not early.allowed
            await asyncio.sleep(early.retry_after_ms / 1000 + 0.003)
            assert (await limiter.check(p, "r")).allowed
            # and after a full idle burst period the whole burst is back
            await asyncio.sleep(0.25)
            assert [(await limiter.check(p, "r")).allowed for _ in range(3)] == [True, True, False]
        finally:
            await c.aclose()

    run(scenario)


def test_every_key_has_a_ttl_d2(redis_url: str) -> None:
    profile = RateLimitProfile(
        per_caller={"write": Rate(5, 10, 3), "read": Rate(5, 10, 3)},
        per_tenant={"write": Rate(50, 10, 30)},
        max_concurrent=2,
    )

    async def scenario() -> None:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, budget_s=1, lease_ttl_s=5)
        try:
            for i in range(40):
                op = "write" if i % 3 else "read"
                await limiter.check(plan(caller(i % 4), op, profile, Rate(100, 10, 50)), str(i))
            keys = await c.keys("gw:rl:*")
            assert len(keys) >= 4 + 2 + 1
            for key in keys:
                assert await c.pttl(key) > 0, key
        finally:
            await c.aclose()

    run(scenario)


def test_noscript_after_script_flush_is_reloaded_d11(redis_url: str) -> None:
    p = caller_plan(burst=5)

    async def scenario() -> None:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, budget_s=1)
        try:
            assert (await limiter.check(p, "1")).rules[0].remaining == 4
            await c.script_flush()
            second = await limiter.check(p, "2")
            assert second.allowed
            assert second.rules[0].remaining == 3
            assert not limiter.degraded
        finally:
            await c.aclose()

    run(scenario)


def test_shadow_mode_never_refuses_but_still_decides_d19(redis_url: str) -> None:
    p = caller_plan(burst=2)
    seen: list[Decision] = []

    async def scenario() -> list[Decision]:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, shadow=True, on_decision=lambda d, _s: seen.append(d))
        try:
            return [await limiter.check(p, str(i)) for i in range(5)]
        finally:
            await c.aclose()

    decisions = run(scenario)
    assert all(d.allowed for d in decisions)
    assert [d.shadow for d in decisions] == [False, False, True, True, True]
    assert {d.limited_by for d in decisions if d.shadow} == {"caller-write"}
    assert seen == decisions


# --- concurrency leases ---------------------------------------------------------------------


def conc_plan(limit: int, rate: Rate | None = None) -> LimitPlan:
    per_caller = {"write": rate} if rate else {}
    return plan(caller(), "write", RateLimitProfile(per_caller=per_caller, max_concurrent=limit))


def test_concurrency_slots_release_and_no_token_spent_on_refusal(redis_url: str) -> None:
    p = conc_plan(3, Rate(10, SLOW, 10))

    async def scenario() -> None:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, budget_s=1)
        try:
            held = [await limiter.check(p, str(i)) for i in range(3)]
            assert all(d.allowed and d.lease for d in held)
            assert len({d.lease for d in held}) == 3
            refused = await limiter.check(p, "4")
            assert (refused.allowed, refused.limited_by, refused.lease) == (
                False,
                "concurrency",
                None,
            )
            assert 1 <= refused.retry_after_ms <= 1000
            await limiter.release(held[0].lease)
            await limiter.release(held[0].lease)  # idempotent
            again = await limiter.check(p, "5")
            assert again.allowed
            # 4 admitted, 1 refused by concurrency: the caller rule was charged 4 times
            assert again.rules[0].remaining == 10 - 4
        finally:
            await c.aclose()

    run(scenario)


def test_unreleased_lease_expires_and_renew_extends(redis_url: str) -> None:
    p = conc_plan(2)

    async def scenario() -> None:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, budget_s=1, lease_ttl_s=0.4)
        try:
            a = await limiter.check(p, "a")
            b = await limiter.check(p, "b")
            assert a.lease
            assert b.lease
            assert not (await limiter.check(p, "c")).allowed
            await asyncio.sleep(0.25)
            assert await limiter.renew_held(a.lease)
            await asyncio.sleep(0.25)  # b (never released) expired; a was renewed
            assert not await limiter.renew_held(b.lease)
            d = await limiter.check(p, "d")
            assert d.allowed
            assert not (await limiter.check(p, "e")).allowed
            assert await c.pttl(a.lease.key) > 0
        finally:
            await c.aclose()

    run(scenario)


def test_rate_refusal_consumes_nothing_from_other_rules(redis_url: str) -> None:
    profile = RateLimitProfile(
        per_caller={"write": Rate(2, SLOW, 2)},
        per_tenant={"write": Rate(100, SLOW, 100)},
        max_concurrent=10,
    )
    p = plan(caller(), "write", profile)

    async def scenario() -> None:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, budget_s=1)
        try:
            decisions = [await limiter.check(p, str(i)) for i in range(6)]
            assert [d.allowed for d in decisions] == [True, True, False, False, False, False]
            assert decisions[-1].rules[1].remaining == 98
            assert await c.zcard(p.keys[-1]) == 2
        finally:
            await c.aclose()

    run(scenario)


# --- Redis faults (D7, D8) ------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


def test_client_has_no_retries_and_short_timeouts() -> None:
    c = make_redis_client("redis://127.0.0.1:1/0", socket_timeout_s=0.05, connect_timeout_s=0.07)
    assert isinstance(c, redis.asyncio.Redis)  # without cluster=True: one node's client
    pool: Any = c.connection_pool
    conn = pool.make_connection()
    assert conn.retry.get_retries() == 0
    assert (conn.socket_timeout, conn.socket_connect_timeout) == (0.05, 0.07)
    run(c.aclose)


async def timed(coro: Awaitable[T]) -> tuple[T, float]:
    started = time.monotonic()
    result = await coro
    return result, time.monotonic() - started


@pytest.mark.parametrize("fault", ["terminate", "sigstop"])
def test_fail_open_still_bounds_each_caller_within_budget_and_flags_degraded(
    own_redis: RedisServer, fault: str
) -> None:
    """fail_mode = "open" decides alone on the full limits while Redis is down, from the
    state Redis's answers left: the burst already spent in Redis is not handed out again."""
    proc = own_redis.proc
    assert proc is not None
    errors: list[str] = []

    async def scenario() -> None:
        c = client(own_redis.url, max_connections=4)
        limiter = RedisRateLimiter(c, fail_mode="open", budget_s=BUDGET, on_error=errors.append)
        try:
            p = caller_plan(burst=5)
            assert not (await limiter.check(p, "warm")).degraded  # Redis: 4 left
            if fault == "terminate":
                proc.terminate()
                proc.wait(5)
            else:
                proc.send_signal(signal.SIGSTOP)
            decision, elapsed = await timed(limiter.check(p, "r"))
            assert decision.allowed
            assert decision.degraded
            assert response_headers(decision) == []
            assert elapsed < BUDGET + MARGIN
            assert limiter.degraded
            assert not limiter.healthy
            # a crowd of requests, more than the pool holds: each bounded by the budget
            crowd, elapsed = await timed(
                asyncio.gather(*(limiter.check(p, str(i)) for i in range(20)))
            )
            assert all(d.degraded for d in crowd)
            assert sum(d.allowed for d in crowd) == 3  # 5 - the warm one - "r"
            refused = [d for d in crowd if not d.allowed]
            assert {d.limited_by for d in refused} == {"caller-write"}
            assert all(d.retry_after_ms > 1000 * (SLOW / 5 - 60) for d in refused)
            assert elapsed < BUDGET + MARGIN
            assert limiter.local_decisions_total == 21
            # release/renew/ping never raise, and stay within the budget
            (_, elapsed) = await timed(limiter.release(caller_lease(p)))
            assert elapsed < BUDGET + MARGIN
            assert not await limiter.renew_held(caller_lease(p))
            assert not await limiter.ping()
        finally:
            if fault == "sigstop":
                proc.send_signal(signal.SIGCONT)
            await c.aclose()

    run(scenario)
    assert errors
    assert set(errors) <= {"timeout", "connection"}


def caller_lease(p: LimitPlan) -> Any:
    from gateway.ratelimit.gcra import Lease

    return Lease(p.keys[0], "nobody")


@pytest.mark.parametrize("fault", ["terminate", "sigstop"])
def test_fail_closed_raises_503_within_budget(own_redis: RedisServer, fault: str) -> None:
    proc = own_redis.proc
    assert proc is not None

    async def scenario() -> None:
        c = client(own_redis.url)
        limiter = RedisRateLimiter(c, budget_s=BUDGET)
        try:
            p = caller_plan(burst=5)
            assert (await limiter.check(p, "warm")).allowed
            if fault == "terminate":
                proc.terminate()
                proc.wait(5)
            else:
                proc.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            with pytest.raises(ServiceUnavailableError) as caught:
                await limiter.check(p, "r")
            assert time.monotonic() - started < BUDGET + MARGIN
            assert caught.value.code == "rate_limiter_unavailable"
            assert caught.value.status == 503
            assert caught.value.headers == {"Retry-After": "1"}
            assert "Error" not in caught.value.message
            assert "127.0.0.1" not in caught.value.message
            assert limiter.degraded
        finally:
            if fault == "sigstop":
                proc.send_signal(signal.SIGCONT)
            await c.aclose()

    run(scenario)


def test_a_call_redis_runs_after_its_deadline_never_counts_d8(
    own_redis: RedisServer,
) -> None:
    """The script carries a deadline on Redis's clock: the timed-out call, run by Redis when
    it resumes, changes nothing (it used to count once more, for a request never forwarded
    by Redis's decision)."""
    proc = own_redis.proc
    assert proc is not None
    burst = 10
    p = caller_plan(burst=burst)

    async def scenario() -> None:
        c = client(own_redis.url)
        limiter = RedisRateLimiter(c, fail_mode="open", budget_s=BUDGET)
        try:
            assert (await limiter.check(p, "1")).rules[0].remaining == burst - 1
            proc.send_signal(signal.SIGSTOP)
            loop = asyncio.get_running_loop()
            loop.call_later(0.3, proc.send_signal, signal.SIGCONT)  # the EVAL then runs late
            slow, elapsed = await timed(limiter.check(p, "2"))
            assert slow.degraded
            assert elapsed < BUDGET + MARGIN
            await asyncio.sleep(0.4)
            assert await limiter.ping()
            assert not limiter.degraded
            after = await limiter.check(p, "3")
            assert not after.degraded
            # 1 + 1: the timed-out one ran after its deadline and changed nothing
            assert after.rules[0].remaining == burst - 2
        finally:
            proc.send_signal(signal.SIGCONT)
            await c.aclose()

    run(scenario)


def test_recovery_after_sigcont_clears_degraded(own_redis: RedisServer) -> None:
    """After a failure calls skip Redis for RETRY_S (decided alone at once, no budget's wait
    each); then the next one asks Redis again, and its answer ends the degraded state."""
    proc = own_redis.proc
    assert proc is not None
    p = caller_plan(burst=5)

    async def scenario() -> None:
        c = client(own_redis.url)
        limiter = RedisRateLimiter(c, fail_mode="open", budget_s=BUDGET)
        try:
            assert (await limiter.check(p, "0")).rules[0].remaining == 4
            proc.send_signal(signal.SIGSTOP)
            assert (await limiter.check(p, "1")).degraded
            second, elapsed = await timed(limiter.check(p, "2"))
            assert second.degraded
            assert elapsed < BUDGET / 2  # Redis was not asked
            await asyncio.sleep(0.2)  # Redis stays stopped past "1"'s deadline
            proc.send_signal(signal.SIGCONT)
            await asyncio.sleep(RETRY_S + 0.05)
            decision = await limiter.check(p, "3")
            assert decision.allowed
            assert not decision.degraded
            assert limiter.healthy
            assert response_headers(decision)
            # Redis counted only its own admissions: the stopped one never ran in time.
            assert decision.rules[0].remaining == 3
        finally:
            proc.send_signal(signal.SIGCONT)
            await c.aclose()

    run(scenario)


# --- our own slowness, and callers past their limit -----------------------------------------


def test_a_deadline_our_own_loop_missed_is_not_a_redis_failure(redis_url: str) -> None:
    """The event loop is blocked past the budget while Redis answers: the call times out,
    is decided by the local limiter (never unchecked), and Redis is not marked degraded."""
    errors: list[str] = []
    deadlines: list[int] = []
    p = caller_plan(burst=3)

    async def scenario() -> None:
        c = client(redis_url)
        limiter = RedisRateLimiter(
            c,
            fail_mode="open",
            budget_s=BUDGET,
            on_error=errors.append,
            on_deadline=lambda: deadlines.append(1),
        )
        try:
            assert (await limiter.check(p, "warm")).rules[0].remaining == 2
            pending = asyncio.ensure_future(limiter.check(p, "starved"))
            await asyncio.sleep(0)  # the call is sent; Redis answers at once
            time.sleep(BUDGET * 3)  # blocks the loop: this process too busy to read it
            decision = await pending
            assert decision.allowed and decision.degraded  # decided alone, from warm state
            assert not limiter.degraded and limiter.healthy
            assert limiter.deadlines_total == 1 and deadlines == [1]
            # The warm state knew 1 of 3 was spent; the starved call took a second one here.
            assert [(await limiter.check(p, str(i))).allowed for i in range(3)] in (
                [True, False, False],  # Redis also ran the starved call in time (charged)
                [True, True, False],
            )
        finally:
            await c.aclose()

    run(scenario)
    assert errors == []


def commandstat(url: str, command: str) -> int:
    sync = sync_client(url)
    try:
        stats = sync.info("commandstats").get(f"cmdstat_{command}", {})
        return int(stats.get("calls", 0))
    finally:
        sync.close()


def test_a_caller_past_its_limit_costs_no_redis_call(redis_url: str) -> None:
    """Redis's refusal says when the next request fits: until then the 429 (same rules,
    same Retry-After) is answered without asking Redis again."""
    p = caller_plan(burst=2)  # one request every 1800 s after the burst

    async def scenario() -> list[Decision]:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, fail_mode="open", budget_s=1)
        try:
            assert [(await limiter.check(p, str(i))).allowed for i in range(2)] == [True, True]
            before = commandstat(redis_url, "evalsha")
            # Redis's answer to the second admission already says the third cannot fit.
            refused = [await limiter.check(p, f"again-{i}") for i in range(50)]
            assert commandstat(redis_url, "evalsha") == before
            assert limiter.known_refusals_total == 50
            return refused
        finally:
            await c.aclose()

    refused = run(scenario)
    assert all(not d.allowed and not d.degraded and d.limited_by == "caller-write" for d in refused)
    # Redis's own wait: the next request fits one emission interval after the burst.
    assert all(1_790_000 < d.retry_after_ms <= 1_800_000 for d in refused)
    assert all(d.rules[0].remaining == 0 for d in refused)
