"""Cancelled limiter calls never leave a connection one reply behind (checklist D9,
CVE-2023-28858/28859): through a proxy that delays Redis's replies past the limiter's budget,
hundreds of calls for two callers with different limits time out mid-flight; every decision
that does come back, during and after, is the one for its own caller. The decisions issued in
one loop iteration share one script call (``redisconn.batch``): each round issues its calls
in twelve waves a few milliseconds apart, so batched calls are cancelled mid-flight while others
are answered, as single calls were before."""

from __future__ import annotations

import asyncio
import random

from gateway.auth.caller import Caller
from gateway.errors import ServiceUnavailableError
from gateway.ratelimit import gcra as ratelimit
from gateway.ratelimit.redis_limiter import RedisRateLimiter, make_redis_client
from tests.faultproxy import delay_proxy
from tests.servers import RedisServer

A = Caller(id="team-a/a", tenant="team-a", issuer="i", subject="a", profile="p")
B = Caller(id="team-b/b", tenant="team-b", issuer="i", subject="b", profile="p")
PROFILE_A = ratelimit.RateLimitProfile(
    per_caller={"write": ratelimit.Rate(requests=1_000_000, per_seconds=3600, burst=900_000)}
)
PROFILE_B = ratelimit.RateLimitProfile(
    per_caller={"write": ratelimit.Rate(requests=7, per_seconds=3600, burst=7)}
)


def test_cancelled_calls_leave_no_mismatched_replies(
    redis_server: RedisServer, redis_url: str
) -> None:
    plans = {"a": ratelimit.plan(A, "write", PROFILE_A), "b": ratelimit.plan(B, "write", PROFILE_B)}
    limits = {"a": 1_000_000, "b": 7}

    async def run(proxy_url: str) -> tuple[int, int]:
        client = make_redis_client(
            proxy_url, socket_timeout_s=1.0, connect_timeout_s=1.0, max_connections=32
        )
        limiter = RedisRateLimiter(client, fail_mode="open", budget_s=0.05)
        answered = timed_out = 0
        rng = random.Random(7)  # noqa: S311 (test traffic mix)

        async def one(i: int) -> None:
            nonlocal answered, timed_out
            who = rng.choice("ab")
            await asyncio.sleep((i % 12) * 0.003)  # twelve batches of one to three decisions
            try:
                decision = await limiter.check(plans[who], f"r{i}")
            except ServiceUnavailableError:  # cancelled, and calls pending: undecided
                timed_out += 1
                return
            if decision.degraded:  # the budget ran out mid-call: the call was cancelled
                timed_out += 1
                return
            answered += 1
            assert decision.rules[0].limit == limits[who], "a reply meant for another call"

        for batch in range(20):
            await asyncio.gather(*(one(batch * 25 + i) for i in range(25)))
        await client.aclose()
        return answered, timed_out

    async def after(url: str) -> None:
        client = make_redis_client(url, socket_timeout_s=1.0, connect_timeout_s=1.0)
        limiter = RedisRateLimiter(client, budget_s=1.0)
        for who in "abab":
            decision = await limiter.check(plans[who], "after")
            assert decision.rules[0].limit == limits[who]
        await client.aclose()

    with delay_proxy(redis_server.port, delay_s=0.06, jitter_s=0.04, chance=0.3) as proxy:
        answered, timed_out = asyncio.run(run(proxy.url))
    assert timed_out > 50, "the storm did not cancel calls mid-flight"
    assert answered > 50, "no call got through to check its reply"
    asyncio.run(after(redis_url))
