"""The limiter and thread ownership on a real 3-master Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.crc import key_slot

from gateway.auth.caller import Caller
from gateway.ratelimit import gcra as ratelimit
from gateway.ratelimit.redis_limiter import RedisRateLimiter, connect_redis, make_redis_client
from tests.servers import RedisServer, private_redis_cluster
from tests.stack import V2, running_stack


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[RedisServer]]:
    with private_redis_cluster() as nodes:
        yield nodes


def caller(n: int, tenant: str = "team-a") -> Caller:
    return Caller(id=f"{tenant}/svc{n}", tenant=tenant, issuer="i", subject="s", profile="p")


def test_limiter_is_exact_on_a_cluster(cluster: list[RedisServer]) -> None:
    profile = ratelimit.RateLimitProfile(
        per_caller={"write": ratelimit.Rate(requests=10, per_seconds=60, burst=7)},
        per_tenant={"write": ratelimit.Rate(requests=100, per_seconds=60, burst=50)},
        max_concurrent=100,
    )

    async def run() -> list[bool]:
        client = make_redis_client(
            cluster[0].url, socket_timeout_s=1, connect_timeout_s=1, cluster=True
        )
        await connect_redis(client)
        limiter = RedisRateLimiter(client, budget_s=2)
        plans = [ratelimit.plan(caller(1), "write", profile, cluster=True) for _ in range(30)]
        slots = {key_slot(k.encode()) for k in plans[0].keys}
        assert len(slots) == 1
        decisions = await asyncio.gather(*(limiter.check(p, f"r{i}") for i, p in enumerate(plans)))
        # Several tenants land on different nodes: each is still one script in one slot.
        others = [
            await limiter.check(
                ratelimit.plan(caller(i, f"tenant-{i}"), "write", profile, cluster=True), "x"
            )
            for i in range(12)
        ]
        assert all(d.allowed for d in others)
        await client.script_flush()  # NOSCRIPT on every node: reloaded transparently
        assert (await limiter.check(plans[0], "after-flush")).allowed is False
        assert await limiter.ping()
        await client.aclose()
        return [d.allowed for d in decisions]

    assert sum(asyncio.run(run())) == 7


def test_gateway_on_a_cluster(tmp_path: Path, cluster: list[RedisServer]) -> None:
    overrides = {
        "redis": {"cluster": True},
        "threads": {"ownership": True, "unknown": "deny"},
        "rate_limit": {"global": {"requests": 6, "per_seconds": 3600, "burst": 6}},
        "profiles": {
            "writer": {
                "rate_limit": {
                    "per_caller": {"write": {"requests": 60, "per_seconds": 60, "burst": 3}}
                }
            }
        },
    }
    with (
        running_stack(tmp_path, redis_url=cluster[1].url, overrides=overrides) as stack,
        httpx.Client(base_url=stack.url) as client,
    ):
        statuses = [
            client.post(
                "/openai/threads", params={"api-version": V2}, json={}, headers=stack.auth(sa="one")
            ).status_code
            for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        thread = client.post(
            "/openai/threads", params={"api-version": V2}, json={}, headers=stack.auth(sa="two")
        ).json()["id"]
        # Ownership records live on the cluster too.
        assert (
            client.get(
                f"/openai/threads/{thread}",
                params={"api-version": V2},
                headers=stack.auth(sa="two"),
            ).status_code
            == 200
        )
        # (Ownership is checked after the limits: this refusal counts towards them too.)
        assert (
            client.get(
                f"/openai/threads/{thread}",
                params={"api-version": V2},
                headers=stack.auth(namespace="team-b"),
            ).status_code
            == 404
        )
        # The global ceiling (burst 6) is its own call in its own slot.
        ceiling = client.post(
            "/openai/threads", params={"api-version": V2}, json={}, headers=stack.auth(sa="three")
        )
        assert ceiling.status_code == 429
        assert ceiling.json()["error"]["code"] == "rate_limit_exceeded"
        assert httpx.get(f"{stack.url}/readyz").status_code == 200


def test_batched_operations_of_many_slots_are_exact_on_a_cluster(
    cluster: list[RedisServer],
) -> None:
    """Decisions and releases of twelve tenants (slots on every node) issued in one loop
    iteration: one script call per slot, and each tenant's counts exactly as if alone."""
    profile = ratelimit.RateLimitProfile(
        per_caller={"write": ratelimit.Rate(requests=10, per_seconds=3600, burst=4)},
        max_concurrent=100,
    )
    tenants = [f"batch-tenant-{i}" for i in range(12)]
    plans = {t: ratelimit.plan(caller(0, t), "write", profile, cluster=True) for t in tenants}
    slots = {key_slot(p.keys[0].encode()) for p in plans.values()}

    async def run() -> tuple[dict[str, int], int, int]:
        client = make_redis_client(
            cluster[0].url, socket_timeout_s=1, connect_timeout_s=1, cluster=True
        )
        await connect_redis(client)
        limiter = RedisRateLimiter(client, budget_s=2)
        order = [t for t in tenants for _ in range(6)]
        decisions = await asyncio.gather(*(limiter.check(plans[t], t) for t in order))
        calls = limiter.batch.calls_total
        leases = [d.lease for d in decisions if d.lease is not None]
        await asyncio.gather(*(limiter.release(lease) for lease in leases))
        held = sum([await client.zcard(p.keys[-1]) for p in plans.values()])
        await client.aclose()
        admitted = {t: 0 for t in tenants}
        for t, d in zip(order, decisions, strict=True):
            admitted[t] += d.allowed
        return admitted, calls, held

    admitted, calls, held = asyncio.run(run())
    assert admitted == {t: 4 for t in tenants}
    assert calls == len(slots)  # 72 decisions: one script call per slot
    assert held == 0  # every release reached its own slot's node
