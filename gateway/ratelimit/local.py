"""The per-replica limiter that decides while Redis cannot (pure: ``now`` passed in).

Redis decides every request it answers in time. When a call fails or runs past the budget
(Redis down, slow, or this process too busy to read the answer), this replica decides alone
with the same GCRA maths (``ratelimit.gcra``), so a limit never switches itself off:

* ``rate_limit.fail_mode = "open"``: each replica enforces every limit in full
  (``replicas = 1`` here): during an outage the fleet admits at most ``replicas`` times a
  limit, never an unbounded flood.
* ``rate_limit.fail_mode = "local"``: each replica enforces its share of every limit,
  ``ceil(requests / replicas)``, ``ceil(burst / replicas)`` and ``ceil(max_concurrent /
  replicas)`` with the configured replica count, so the fleet stays near its budget.

The local state is kept warm while Redis decides (:meth:`LocalLimiter.sync`): every answer
Redis gives carries each rule's TAT, and the local rule takes the same *fraction* of its own
tolerance (``(tat - now) / tau``, on Redis's clock, mapped onto this replica's clock). A caller
that has spent its burst in Redis has spent it here too, so whoever can make Redis fail (or
make us slow) gets no fresh burst. The local TAT only ever moves forward: admissions this
replica made alone, which Redis never saw, are not forgotten when Redis answers again.

Concurrency slots are counted here as well, for the leases Redis grants and the ones this
replica grants alone, each with its own expiry (``lease_ttl_us``), renewed and released like
Redis's; while deciding alone a caller gets at most its (share of) ``max_concurrent``.

Redis's own refusals are remembered too (:meth:`known_refusal`): each rule's TAT as Redis last
reported it, on this replica's clock, at the full rate. A TAT only grows in Redis (until the
key expires with it), so while that copy alone refuses a request, by more than ``margin_us``,
Redis would refuse it too: the request gets its 429 here, with the same headers and
``Retry-After``, without a Redis call. A caller flooding past its limit costs no Redis round
trips (the deny cache of envoyproxy/ratelimit).

Calls still waiting on Redis (:meth:`begin` … :meth:`end`) may yet come back admitted, so a
decision made alone counts each of them as spent: one emission interval per rule and one slot.
When only those pending calls stand in the way, :meth:`check` answers None ("cannot tell
yet"), which the adapter turns into a 503 with ``Retry-After: 1`` rather than a 429 the caller
did not earn. So the sum of what Redis admits and what this replica admits alone stays within
the local limits, however many calls are in flight when the deadline fires.

Decisions are all-or-nothing like the Lua script's and marked ``degraded``. State is bounded:
at most ``max_keys`` rate keys and ``max_keys`` lease keys, least recently used first out.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from gateway.ratelimit.gcra import (
    Decision,
    Lease,
    LimitPlan,
    Rate,
    RuleSpec,
    decide,
    gcra,
)


def share(rate: Rate, replicas: int) -> Rate:
    """One replica's part of ``rate``."""
    return Rate(
        requests=max(1, math.ceil(rate.requests / replicas)),
        per_seconds=rate.per_seconds,
        burst=max(1, math.ceil(rate.burst / replicas)),
    )


class LocalLimiter:
    def __init__(
        self, replicas: int, *, max_keys: int = 100_000, lease_ttl_us: int = 30_000_000
    ) -> None:
        if replicas < 1:
            raise ValueError("replicas must be >= 1")
        if lease_ttl_us < 1:
            raise ValueError("lease_ttl_us must be >= 1")
        self.replicas = replicas
        self.max_keys = max_keys
        self.lease_ttl_us = lease_ttl_us
        self._tats: OrderedDict[str, int] = OrderedDict()
        #: Concurrency key -> {lease member: expiry (µs, this replica's clock)}.
        self._leases: OrderedDict[str, dict[str, int]] = OrderedDict()
        #: Key -> calls on it still waiting for Redis's answer.
        self._pending: dict[str, int] = {}
        #: Key -> its TAT as Redis last reported it, on this replica's clock (full rate).
        self._redis_tats: OrderedDict[str, int] = OrderedDict()

    def begin(self, plan: LimitPlan) -> None:
        """A call for ``plan`` goes to Redis; its answer may admit the request."""
        for key in plan.keys:
            self._pending[key] = self._pending.get(key, 0) + 1

    def end(self, plan: LimitPlan) -> None:
        """The call came back (and was synced) or was given up."""
        for key in plan.keys:
            left = self._pending.get(key, 0) - 1
            if left > 0:
                self._pending[key] = left
            else:
                self._pending.pop(key, None)

    def _local_rules(self, plan: LimitPlan) -> tuple[RuleSpec, ...]:
        return tuple(
            RuleSpec(r.name, r.kind, r.key, share(r.rate, self.replicas), r.cost)
            for r in plan.rules
        )

    def concurrency_limit(self, limit: int) -> int:
        return max(1, math.ceil(limit / self.replicas))

    def check(self, plan: LimitPlan, now_us: int, *, member: str = "") -> Decision | None:
        """Decide ``plan`` alone; an admitted concurrency plan holds a slot named ``member``.

        None when the calls still pending on Redis might have taken what is left."""
        rules = self._local_rules(plan)
        local = LimitPlan(rules)
        results = [gcra(self._tats.get(r.key), now_us, r.rate, r.cost) for r in rules]
        tats = [max(self._tats.get(rule.key, now_us), now_us) for rule in rules]
        if not all(r.allowed for r in results):
            decision = decide(local, now_us, tats, status="rate")
            return _degraded(decision)
        for rule, tat in zip(rules, tats, strict=True):
            pending = self._pending.get(rule.key, 0)
            if (
                pending
                and not gcra(
                    tat + pending * rule.cost * rule.rate.emission_us, now_us, rule.rate, rule.cost
                ).allowed
            ):
                return None
        lease = None
        if plan.concurrency is not None:
            held = self._held(plan.concurrency.key, now_us)
            limit = self.concurrency_limit(plan.concurrency.limit)
            if len(held) >= limit:
                wait = min(held.values()) - now_us
                decision = decide(
                    local, now_us, tats, status="concurrency", concurrency_wait_us=wait
                )
                return _degraded(decision)
            if len(held) + self._pending.get(plan.concurrency.key, 0) >= limit:
                return None
            lease = Lease(plan.concurrency.key, member, local=True)
            self.hold(lease, now_us)
        for rule, result in zip(rules, results, strict=True):
            self._remember(rule.key, result.tat_us)
        decision = decide(local, now_us, [r.tat_us for r in results], status="allowed", lease=lease)
        return _degraded(decision)

    def known_refusal(self, plan: LimitPlan, now_us: int, margin_us: int) -> Decision | None:
        """Redis's refusal of ``plan``, as certain from its last answers, or None (ask it)."""
        tats = [max(self._redis_tats.get(r.key, now_us), now_us) for r in plan.rules]
        refused = False
        for rule, tat in zip(plan.rules, tats, strict=True):
            result = gcra(tat, now_us, rule.rate, rule.cost)
            if not result.allowed and result.retry_after_us > margin_us:
                refused = True
        return decide(plan, now_us, tats, status="rate") if refused else None

    def sync(
        self, plan: LimitPlan, tats_after: Sequence[int], redis_now_us: int, now_us: int
    ) -> None:
        """Take over Redis's view of ``plan``'s rules (its TATs after a decision at
        ``redis_now_us`` on its clock), as the same fraction of each local tolerance."""
        for rule, tat in zip(plan.rules, tats_after, strict=True):
            if tat > redis_now_us:
                mapped = now_us + tat - redis_now_us
                _put(
                    self._redis_tats,
                    rule.key,
                    max(mapped, self._redis_tats.get(rule.key, 0)),
                    self.max_keys,
                )
        for full, local, tat in zip(plan.rules, self._local_rules(plan), tats_after, strict=True):
            used = min(1.0, max(0.0, (tat - redis_now_us) / full.rate.tolerance_us))
            if used <= 0.0 and full.key not in self._tats:
                continue  # an idle rule: nothing to remember
            synced = now_us + math.ceil(used * local.rate.tolerance_us)
            self._remember(full.key, max(synced, self._tats.get(full.key, now_us)))

    def hold(self, lease: Lease, now_us: int) -> None:
        """Count ``lease`` (granted by Redis, or here) as one of its caller's slots."""
        held = self._leases.get(lease.key)
        if held is None:
            held = self._leases[lease.key] = {}
            while len(self._leases) > self.max_keys:
                self._leases.popitem(last=False)
        self._leases.move_to_end(lease.key)
        held[lease.member] = now_us + self.lease_ttl_us

    def renew(self, lease: Lease, now_us: int) -> bool:
        held = self._leases.get(lease.key)
        if held is None or held.get(lease.member, 0) <= now_us:
            return False
        held[lease.member] = now_us + self.lease_ttl_us
        return True

    def release(self, lease: Lease) -> None:
        held = self._leases.get(lease.key)
        if held is not None:
            held.pop(lease.member, None)
            if not held:
                del self._leases[lease.key]

    def holding(self, key: str, now_us: int) -> int:
        """Slots of one concurrency key held on this replica right now."""
        return len(self._held(key, now_us)) if key in self._leases else 0

    def _held(self, key: str, now_us: int) -> dict[str, int]:
        held = self._leases.get(key, {})
        expired = [member for member, expiry in held.items() if expiry <= now_us]
        for member in expired:
            del held[member]
        return held

    def _remember(self, key: str, tat_us: int) -> None:
        _put(self._tats, key, tat_us, self.max_keys)


def _put(lru: OrderedDict[str, int], key: str, value: int, max_keys: int) -> None:
    lru[key] = value
    lru.move_to_end(key)
    while len(lru) > max_keys:
        lru.popitem(last=False)


def _degraded(decision: Decision) -> Decision:
    return Decision(
        decision.allowed,
        decision.limited_by,
        decision.retry_after_ms,
        decision.rules,
        lease=decision.lease,
        degraded=True,
    )
