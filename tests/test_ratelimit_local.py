"""The per-replica fallback limiter (pure, injected clock)."""

from __future__ import annotations

import pytest

from gateway import ratelimit
from gateway.caller import Caller
from gateway.ratelimit import Rate
from gateway.ratelimit_local import LocalLimiter, share

CALLER = Caller(id="team-a/app", tenant="team-a", issuer="i", subject="s", profile="p")


def plan(burst: int = 6, tenant_burst: int = 100) -> ratelimit.LimitPlan:
    profile = ratelimit.RateLimitProfile(
        per_caller={"write": Rate(requests=60, per_seconds=60, burst=burst)},
        per_tenant={"write": Rate(requests=600, per_seconds=60, burst=tenant_burst)},
        max_concurrent=1)
    return ratelimit.plan(CALLER, "write", profile)


@pytest.mark.parametrize(("replicas", "admitted"), [(1, 6), (2, 3), (3, 2), (4, 2), (10, 1)])
def test_each_replica_gets_its_share_of_the_burst(replicas: int, admitted: int) -> None:
    limiter = LocalLimiter(replicas)
    decisions = [limiter.check(plan(), 1_000_000) for _ in range(8)]
    assert [d.allowed for d in decisions] == [True] * admitted + [False] * (8 - admitted)
    assert all(d.degraded for d in decisions)
    refused = decisions[-1]
    assert refused.limited_by == "caller-write"
    # 60/min shared by the replicas: one request per replicas seconds comes back.
    assert refused.retry_after_ms == pytest.approx(1000 * replicas, abs=1)


def test_refill_and_all_or_nothing() -> None:
    limiter = LocalLimiter(1)
    tight_tenant = plan(burst=10, tenant_burst=2)
    assert [limiter.check(tight_tenant, 0).allowed for _ in range(3)] == [True, True, False]
    # The refused request took nothing from the caller rule either: after the tenant refills
    # (600/min: 0.1 s) exactly one more passes.
    assert limiter.check(tight_tenant, 100_000).allowed
    assert not limiter.check(tight_tenant, 100_000).allowed


def test_share_and_bounds() -> None:
    assert share(Rate(requests=7, per_seconds=60, burst=3), 2) == Rate(4, 60, 2)
    assert share(Rate(requests=1, per_seconds=60, burst=1), 5) == Rate(1, 60, 1)
    with pytest.raises(ValueError, match="replicas"):
        LocalLimiter(0)
    limiter = LocalLimiter(1, max_keys=10)
    for i in range(50):
        caller = Caller(id=f"t/{i}", tenant=f"t{i}", issuer="i", subject="s", profile="p")
        profile = ratelimit.RateLimitProfile(per_caller={"read": Rate(10, 60, 5)})
        limiter.check(ratelimit.plan(caller, "read", profile), 0)
    assert len(limiter._tats) == 10
