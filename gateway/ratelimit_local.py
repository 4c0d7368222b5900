"""The per-replica fallback limiter for when Redis is down (pure: ``now`` passed in).

``rate_limit.fail_mode = "local"``: while Redis cannot decide, each replica decides alone with
the same GCRA maths (``ratelimit.gcra``) on its share of every rate, ``ceil(requests /
replicas)`` and ``ceil(burst / replicas)`` with the configured replica count, so the fleet as a
whole stays near its budget instead of opening the flood gates (checklist D7). Decisions are
all-or-nothing like the Lua script's, marked ``degraded`` and counted; the concurrency rule
is not applied (no shared view of in-flight calls). State is bounded: at most ``max_keys``
rules are remembered, least recently used first out.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from gateway.ratelimit import Decision, LimitPlan, Rate, RuleSpec, decide, gcra


def share(rate: Rate, replicas: int) -> Rate:
    """One replica's part of ``rate``."""
    return Rate(requests=max(1, math.ceil(rate.requests / replicas)),
                per_seconds=rate.per_seconds,
                burst=max(1, math.ceil(rate.burst / replicas)))


class LocalLimiter:
    def __init__(self, replicas: int, *, max_keys: int = 100_000) -> None:
        if replicas < 1:
            raise ValueError("replicas must be >= 1")
        self.replicas = replicas
        self.max_keys = max_keys
        self._tats: OrderedDict[str, int] = OrderedDict()

    def check(self, plan: LimitPlan, now_us: int) -> Decision:
        rules = tuple(RuleSpec(r.name, r.kind, r.key, share(r.rate, self.replicas), r.cost)
                      for r in plan.rules)
        local = LimitPlan(rules)
        results = [gcra(self._tats.get(r.key), now_us, r.rate, r.cost) for r in rules]
        allowed = all(r.allowed for r in results)
        if allowed:
            for rule, result in zip(rules, results, strict=True):
                self._remember(rule.key, result.tat_us)
        tats = [result.tat_us if allowed else max(self._tats.get(rule.key, now_us), now_us)
                for rule, result in zip(rules, results, strict=True)]
        decision = decide(local, now_us, tats, status="allowed" if allowed else "rate")
        return Decision(decision.allowed, decision.limited_by, decision.retry_after_ms,
                        decision.rules, degraded=True)

    def _remember(self, key: str, tat_us: int) -> None:
        self._tats[key] = tat_us
        self._tats.move_to_end(key)
        while len(self._tats) > self.max_keys:
            self._tats.popitem(last=False)
