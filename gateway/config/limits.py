"""Rate-limit settings: a rate, a profile's budgets, the gateway-wide section.

The rule types (``Rate``, ``RateLimitProfile``) and their own validation (``rate_problems``)
belong to the limiter's core (``gateway.ratelimit.gcra``); these sections declare the keys
they are read from and build them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.config.schema import REQUIRED, at, between, setting
from gateway.ratelimit.gcra import (
    MAX_CONCURRENT,
    OP_CLASSES,
    Rate,
    RateLimitProfile,
    rate_problems,
)


def op_class(name: str) -> str | None:
    return None if name in OP_CLASSES else "operation class must be read or write"


@dataclass(frozen=True, slots=True, kw_only=True)
class RateSettings:
    requests: int = setting(REQUIRED, "sustained: this many per `per_seconds`")
    per_seconds: float = setting(REQUIRED, "the period of `requests`, in seconds")
    burst: int | None = setting(None, "at once, after being idle", shown="`requests`")

    def build(self) -> Rate:
        burst = self.requests if self.burst is None else self.burst
        return Rate(requests=self.requests, per_seconds=self.per_seconds, burst=burst)

    def __check__(self, path: str) -> Iterable[str]:
        problems = rate_problems(self.build(), path)
        if self.burst is None:  # burst follows requests: its problem is the one of requests
            return [p for p in problems if not p.startswith(f"{at(path, 'burst')}:")]
        return problems


def _rates(doc: str) -> Mapping[str, Rate]:
    out: Mapping[str, Rate] = setting(
        factory=dict,
        doc=doc,
        shape=RateSettings,
        names=op_class,
        placeholder="<read|write>",
        shown="none",
    )
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitSettings:
    """A profile's budgets (``profiles.<name>.rate_limit``)."""

    per_caller: Mapping[str, Rate] = _rates("per caller and operation class")
    per_tenant: Mapping[str, Rate] = _rates("the same, shared by a tenant")
    max_concurrent: int | None = setting(
        None,
        "in-flight upstream calls per caller (streams count until they end)",
        check=between(1, MAX_CONCURRENT),
    )

    def build(self) -> RateLimitProfile:
        return RateLimitProfile(
            per_caller=self.per_caller,
            per_tenant=self.per_tenant,
            max_concurrent=self.max_concurrent,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitConfig:
    enabled: bool = setting(True, "switch the limiter off")
    fail_mode: Literal["open", "closed", "local"] = setting(
        "open",
        'when Redis fails (never unchecked; see "Redis: readiness and fail modes") — `open`: '
        "each replica enforces every limit in full, alone; `local`: each replica enforces its "
        "share of every limit (below); `closed`: 503. Degraded and counted",
    )
    replicas: int = setting(
        1,
        'replicas sharing the limits: with `fail_mode = "local"` each decides on '
        "`ceil(limit / replicas)` (burst, rate and `max_concurrent`)",
        check=between(1, 10_000),
    )
    budget_s: float = setting(
        0.25,
        "the longest a request waits on Redis; a call past it is decided by the local limiter "
        "(or, while calls are still pending on Redis, answered 503 with `Retry-After: 1`)",
        check=between(0.005, 5),
    )
    lease_ttl_s: float = setting(
        30.0,
        "concurrency slots of a crashed replica expire after this (live streams renew theirs)",
        check=between(1, 3600),
    )
    global_rate: Rate | None = setting(
        None, "optional gateway-wide rate", key="global", shape=RateSettings
    )
    shadow: bool = setting(
        False,
        "decide and count but never refuse (for roll-out): refusals are only logged and counted",
    )
