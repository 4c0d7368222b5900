"""The per-replica limiter that decides while Redis cannot (pure, injected clock)."""

from __future__ import annotations

import pytest

from gateway.auth.caller import Caller
from gateway.ratelimit import gcra as ratelimit
from gateway.ratelimit.gcra import Decision, Lease, Rate
from gateway.ratelimit.local import LocalLimiter, share

CALLER = Caller(id="team-a/app", tenant="team-a", issuer="i", subject="s", profile="p")
S = 1_000_000  # µs


def plan(
    burst: int = 6, tenant_burst: int = 100, max_concurrent: int | None = None
) -> ratelimit.LimitPlan:
    profile = ratelimit.RateLimitProfile(
        per_caller={"write": Rate(requests=60, per_seconds=60, burst=burst)},
        per_tenant={"write": Rate(requests=600, per_seconds=60, burst=tenant_burst)},
        max_concurrent=max_concurrent,
    )
    return ratelimit.plan(CALLER, "write", profile)


def checked(
    limiter: LocalLimiter, p: ratelimit.LimitPlan, now_us: int, *, member: str = ""
) -> Decision:
    """``limiter.check``: with no call pending on Redis it always decides (never None)."""
    decision = limiter.check(p, now_us, member=member)
    assert decision is not None
    return decision


@pytest.mark.parametrize(("replicas", "admitted"), [(1, 6), (2, 3), (3, 2), (4, 2), (10, 1)])
def test_each_replica_gets_its_share_of_the_burst(replicas: int, admitted: int) -> None:
    limiter = LocalLimiter(replicas)
    decisions = [checked(limiter, plan(), S) for _ in range(8)]
    assert [d.allowed for d in decisions] == [True] * admitted + [False] * (8 - admitted)
    assert all(d.degraded for d in decisions)
    refused = decisions[-1]
    assert refused.limited_by == "caller-write"
    # 60/min shared by the replicas: one request per replicas seconds comes back.
    assert refused.retry_after_ms == pytest.approx(1000 * replicas, abs=1)


def test_refill_and_all_or_nothing() -> None:
    limiter = LocalLimiter(1)
    tight_tenant = plan(burst=10, tenant_burst=2)
    assert [checked(limiter, tight_tenant, 0).allowed for _ in range(3)] == [True, True, False]
    # The refused request took nothing from the caller rule either: after the tenant refills
    # (600/min: 0.1 s) exactly one more passes.
    assert checked(limiter, tight_tenant, 100_000).allowed
    assert not checked(limiter, tight_tenant, 100_000).allowed


def test_share_and_bounds() -> None:
    assert share(Rate(requests=7, per_seconds=60, burst=3), 2) == Rate(4, 60, 2)
    assert share(Rate(requests=1, per_seconds=60, burst=1), 5) == Rate(1, 60, 1)
    with pytest.raises(ValueError, match="replicas"):
        LocalLimiter(0)
    limiter = LocalLimiter(1, max_keys=10)
    for i in range(50):
        caller = Caller(id=f"t/{i}", tenant=f"t{i}", issuer="i", subject="s", profile="p")
        profile = ratelimit.RateLimitProfile(per_caller={"read": Rate(10, 60, 5)}, max_concurrent=3)
        checked(limiter, ratelimit.plan(caller, "read", profile), 0, member=f"m{i}")
    assert len(limiter._tats) == 10
    assert len(limiter._leases) == 10


# -- kept warm by Redis's answers --------------------------------------------------------


def redis_tats(p: ratelimit.LimitPlan, spent: list[int], redis_now: int) -> list[int]:
    """The TATs Redis reports after ``spent[i]`` admissions against rule ``i`` at once."""
    return [redis_now + n * rule.rate.emission_us for rule, n in zip(p.rules, spent, strict=True)]


@pytest.mark.parametrize(
    ("replicas", "spent", "left"),
    [(1, 0, 6), (1, 2, 4), (1, 6, 0), (2, 0, 3), (2, 4, 1), (2, 6, 0), (3, 3, 1)],
)
def test_a_burst_spent_in_redis_is_spent_here(replicas: int, spent: int, left: int) -> None:
    """The local rule takes the fraction of its tolerance that Redis's rule has used: a
    caller gets no fresh burst when Redis stops answering."""
    limiter = LocalLimiter(replicas)
    p = plan()
    # Redis's clock and this replica's differ by an arbitrary offset: only durations count.
    limiter.sync(p, redis_tats(p, [spent, spent], 7 * S), 7 * S, 123 * S)
    admitted = sum(checked(limiter, p, 123 * S).allowed for _ in range(10))
    assert admitted == left


def test_sync_never_forgets_local_admissions_and_ignores_idle_rules() -> None:
    limiter = LocalLimiter(1)
    p = plan(burst=6)
    assert all(checked(limiter, p, 0).allowed for _ in range(4))  # alone, Redis never saw them
    limiter.sync(p, redis_tats(p, [1, 1], 0), 0, 0)  # Redis's view: one spent
    assert [checked(limiter, p, 0).allowed for _ in range(3)] == [True, True, False]
    fresh = LocalLimiter(1)
    fresh.sync(p, [5 * S, 5 * S], 9 * S, 0)  # TATs in Redis's past: idle rules
    assert fresh._tats == {}


def test_sync_maps_a_refusal_to_an_empty_local_bucket() -> None:
    limiter = LocalLimiter(2)
    p = plan(burst=6)
    # A refusal reports the TATs unchanged: the burst is spent (plus any debt, capped).
    limiter.sync(p, redis_tats(p, [9, 9], 0), 0, 50 * S)
    first = checked(limiter, p, 50 * S)
    assert not first.allowed and first.limited_by == "caller-write"
    assert first.retry_after_ms == pytest.approx(2000, abs=1)  # one share interval


# -- concurrency while alone -------------------------------------------------------------


def test_concurrency_is_bounded_alone_and_counts_slots_redis_granted() -> None:
    limiter = LocalLimiter(2, lease_ttl_us=10 * S)
    p = plan(burst=100, max_concurrent=3)  # a share of 2 slots per replica
    assert p.concurrency is not None
    limiter.hold(Lease(p.concurrency.key, "from-redis"), 0)
    alone = checked(limiter, p, S, member="a")
    assert alone.allowed and alone.lease == Lease(p.concurrency.key, "a", local=True)
    refused = checked(limiter, p, S, member="b")
    assert (refused.allowed, refused.limited_by) == (False, "concurrency")
    assert refused.retry_after_ms == ratelimit.CONCURRENCY_RETRY_CAP_MS
    assert refused.lease is None
    # The refusal charged no rate rule: only the admitted request did.
    assert refused.rules[0].remaining == 49  # the share: burst 50
    limiter.release(Lease(p.concurrency.key, "from-redis"))
    assert checked(limiter, p, S, member="c").allowed
    assert limiter.holding(p.concurrency.key, S) == 2


def test_local_slots_expire_unless_renewed() -> None:
    limiter = LocalLimiter(1, lease_ttl_us=2 * S)
    p = plan(burst=100, max_concurrent=1)
    held = checked(limiter, p, 0, member="a").lease
    assert held is not None
    assert not checked(limiter, p, S, member="b").allowed
    assert limiter.renew(held, S)  # now expires at 3 s
    assert not checked(limiter, p, int(2.5 * S), member="c").allowed
    assert checked(limiter, p, 3 * S, member="d").allowed  # a's slot expired
    assert not limiter.renew(held, 3 * S)
    limiter.release(held)  # releasing what is gone is harmless
    limiter.release(Lease("unknown", "x"))


# -- calls still pending on Redis ----------------------------------------------------------


def test_calls_pending_on_redis_count_as_spent_when_deciding_alone() -> None:
    """Each call still waiting on Redis may come back admitted: a decision made alone counts
    it as spent, and when only those calls stand in the way the answer is None (undecided)."""
    limiter = LocalLimiter(1)
    p = plan(burst=3)
    limiter.begin(p)
    limiter.begin(p)
    first = limiter.check(p, S)  # 1 here + 2 pending = 3: fits
    assert first is not None and first.allowed
    assert limiter.check(p, S) is None  # 2 spent + 2 pending > 3: cannot tell yet
    limiter.end(p)  # one came back refused (or was given up)
    second = limiter.check(p, S)
    assert second is not None and second.allowed
    limiter.end(p)
    third = limiter.check(p, S)
    assert third is not None and third.allowed  # 3 spent, nothing pending
    fourth = limiter.check(p, S)
    assert fourth is not None and not fourth.allowed  # now certain: a 429
    assert fourth.limited_by == "caller-write"
    assert limiter._pending == {}


def test_pending_calls_hold_slots_too() -> None:
    limiter = LocalLimiter(1)
    p = plan(burst=100, max_concurrent=2)
    limiter.begin(p)
    alone = limiter.check(p, S, member="a")
    assert alone is not None and alone.allowed
    assert limiter.check(p, S, member="b") is None
    limiter.end(p)
    assert limiter.check(p, S, member="c") is not None


def test_a_refusal_redis_gave_is_known_until_it_would_pass() -> None:
    limiter = LocalLimiter(1)
    p = plan(burst=2)  # 60/min: one a second after the burst
    assert limiter.known_refusal(p, 0, margin_us=50_000) is None  # nothing known: ask Redis
    # Redis admitted 2 at its t=10 s (our t=0): its TATs are 2 s ahead.
    limiter.sync(p, redis_tats(p, [2, 2], 10 * S), 10 * S, 0)
    known = limiter.known_refusal(p, 0, margin_us=50_000)
    assert known is not None and not known.allowed and not known.degraded
    assert known.limited_by == "caller-write"
    assert known.retry_after_ms == 1000
    assert known.rules[0].remaining == 0
    # Within the margin of fitting: ask Redis (its clock and ours may differ a little).
    assert limiter.known_refusal(p, 960_000, margin_us=50_000) is None
    assert limiter.known_refusal(p, S, margin_us=50_000) is None
