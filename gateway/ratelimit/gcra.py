"""Rate-limit rules, keys, decisions and headers (pure: no I/O, no clock; ``now`` is passed in).

Algorithm: GCRA (the generic cell rate algorithm, as in redis-cell's ``CL.THROTTLE``). One
stored value per rule, the *theoretical arrival time* (TAT), in integer microseconds of Redis's
own clock. For a :class:`Rate` of ``requests`` per ``per_seconds`` with ``burst``:

* emission interval ``T = round(per_seconds * 1e6 / requests)`` µs; tolerance ``tau = burst * T``.
* a request at ``now`` (cost ``c``) computes ``new_tat = max(tat, now) + c*T``; it is admitted
  iff ``new_tat - tau <= now``, and only then is ``new_tat`` stored.

Burst semantics, exactly: a caller idle for at least ``burst * T`` may send ``burst`` requests
at once, and the ``burst + 1``-th at that instant is refused; thereafter one request is admitted
every ``T`` (= ``per_seconds / requests`` seconds). Over any interval of length ``w`` at most
``burst + floor(w / T)`` requests are admitted. So ``N`` concurrent requests against an idle rule
admit exactly ``min(N, burst)``, and ``L`` requests at t = 59.9 s followed by ``L`` at 60.0 s
(with ``burst = requests = L`` per 60 s) admit only the first ``L`` plus what refilled in 0.1 s.

Decisions are all-or-nothing: every rule of a plan is checked first, and the TATs (and the
concurrency lease) are written only when all pass, so a refused request consumes nothing.
The concurrency rule (at most ``max_concurrent`` in-flight calls per caller) is checked only
when the rate rules pass. ``retry_after`` of a refusal is the exact time until the same request
would be admitted (the largest over the refusing rules); for the concurrency rule, which has
no schedule, it is the time until the oldest lease expires, capped at
``CONCURRENCY_RETRY_CAP_MS``.

Keys (all ASCII; raw caller ids and tenants never appear, only 64-bit SHA-256 prefixes)::

    gw:rl:{t:<h(tenant)>}:c:<h(caller)>:<op>      caller GCRA TAT (string, PX = until TAT)
    gw:rl:{t:<h(tenant)>}:t:<op>                  tenant GCRA TAT
    gw:rl:{t:<h(tenant)>}:cc:<h(caller)>          concurrency ZSET: lease id -> expiry (µs)
    gw:rl:{g}:g                                   global GCRA TAT (see below)

The ``{t:...}`` hash tag puts every per-caller and per-tenant key of one plan in one Redis
Cluster slot. The global key cannot share that slot: :func:`plan` includes it in the same
atomic call (correct on a single Redis or with Sentinel, where slots do not matter), and
``plan(..., cluster=True)`` leaves it out so the caller checks :func:`plan_global` in a
separate call (then a global refusal does not refund the per-caller tokens already taken).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from gateway.auth.caller import Caller
from gateway.errors import RateLimitedError

KEY_PREFIX = "gw:rl:"
OP_CLASSES = frozenset({"read", "write"})
RuleKind = Literal["caller", "tenant", "global"]
#: Every rule name a decision can report (bounded: safe as a metric label).
RATELIMIT_REASONS = frozenset(
    {f"{kind}-{op}" for kind in ("caller", "tenant") for op in OP_CLASSES}
    | {"global", "concurrency"}
)
CONCURRENCY_RETRY_CAP_MS = 1000
MAX_REQUESTS = 1_000_000
MAX_BURST = 1_000_000
MAX_PER_SECONDS = 31 * 86400.0
MAX_CONCURRENT = 100_000


@dataclass(frozen=True, slots=True)
class Rate:
    """``requests`` per ``per_seconds`` sustained, up to ``burst`` at once (see module doc).

    Construction does not validate (the config collects every problem with
    :func:`rate_problems`); :func:`plan` refuses an invalid rate with ``ValueError``.
    """

    requests: int
    per_seconds: float
    burst: int

    @property
    def emission_us(self) -> int:
        return max(1, round(self.per_seconds * 1_000_000 / self.requests))

    @property
    def tolerance_us(self) -> int:
        return self.burst * self.emission_us

    @property
    def window_s(self) -> int:
        return max(1, math.ceil(self.per_seconds))


def rate_problems(rate: Rate, path: str) -> list[str]:
    """Every problem of ``rate``, each prefixed with its config path."""
    problems: list[str] = []

    def bounded_int(name: str, value: object, high: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{path}.{name}: must be an integer")
        elif not 1 <= value <= high:
            problems.append(f"{path}.{name}: must be between 1 and {high}")

    bounded_int("requests", rate.requests, MAX_REQUESTS)
    bounded_int("burst", rate.burst, MAX_BURST)
    per = rate.per_seconds
    if not isinstance(per, int | float) or isinstance(per, bool) or not math.isfinite(per):
        problems.append(f"{path}.per_seconds: must be a finite number")
    elif not 0 < per <= MAX_PER_SECONDS:
        problems.append(f"{path}.per_seconds: must be > 0 and <= {MAX_PER_SECONDS:g}")
    elif not problems and per * 1_000_000 / rate.requests < 1:
        problems.append(f"{path}: more than one request per microsecond")
    return problems


def _frozen(rates: Mapping[str, Rate]) -> Mapping[str, Rate]:
    return MappingProxyType(dict(rates))


@dataclass(frozen=True, slots=True)
class RateLimitProfile:
    """A profile's budgets: operation class (``read``/``write``) -> Rate, per caller and tenant."""

    per_caller: Mapping[str, Rate] = field(default_factory=dict)
    per_tenant: Mapping[str, Rate] = field(default_factory=dict)
    max_concurrent: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_caller", _frozen(self.per_caller))
        object.__setattr__(self, "per_tenant", _frozen(self.per_tenant))


@dataclass(frozen=True, slots=True)
class RuleSpec:
    name: str
    kind: RuleKind
    key: str
    rate: Rate
    cost: int = 1
    #: ``rate.emission_us`` and ``rate.tolerance_us``, worked out once (a plan is kept per
    #: caller: ``PlanCache``).
    emission_us: int = field(init=False, repr=False, compare=False)
    tolerance_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "emission_us", self.rate.emission_us)
        object.__setattr__(self, "tolerance_us", self.rate.tolerance_us)


@dataclass(frozen=True, slots=True)
class ConcurrencySpec:
    key: str
    limit: int
    name: str = "concurrency"


@dataclass(frozen=True, slots=True)
class LimitPlan:
    """Everything one atomic limiter call needs: its keys and parameters."""

    rules: tuple[RuleSpec, ...]
    concurrency: ConcurrencySpec | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        extra = (self.concurrency.key,) if self.concurrency else ()
        return tuple(r.key for r in self.rules) + extra

    @property
    def empty(self) -> bool:
        return not self.rules and self.concurrency is None


@dataclass(frozen=True, slots=True)
class Lease:
    """One held concurrency slot: a member of the caller's ZSET, scored by its expiry."""

    key: str
    member: str
    #: Granted by this replica alone (``ratelimit_local``) while Redis could not decide.
    local: bool = False


@dataclass(frozen=True, slots=True)
class RuleState:
    name: str
    kind: RuleKind
    limit: int
    window_s: int
    burst: int
    remaining: int
    #: Milliseconds until one more request fits (0 when the burst is full): the draft's ``t``.
    next_ms: int
    #: Milliseconds until the rule is back to a full burst (OpenAI's ``x-ratelimit-reset-*``).
    reset_ms: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    #: Name of the rule that refused (or would have, in shadow mode), e.g. ``"caller-write"``.
    limited_by: str | None = None
    retry_after_ms: int = 0
    rules: tuple[RuleState, ...] = ()
    lease: Lease | None = None
    #: Decided by this replica alone (``ratelimit_local``): Redis failed or did not answer
    #: within the budget. Never an unchecked admission.
    degraded: bool = False
    #: Shadow mode admitted a request the limiter would have refused.
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class GcraResult:
    allowed: bool
    #: TAT after the decision: to store when allowed; ``max(tat, now)`` when refused.
    tat_us: int
    retry_after_us: int


def gcra(tat_us: int | None, now_us: int, rate: Rate, cost: int = 1) -> GcraResult:
    """The reference model of the Lua script's per-rule decision (see module doc)."""
    if not 1 <= cost <= rate.burst:
        raise ValueError(f"cost must be between 1 and burst ({rate.burst})")
    base = now_us if tat_us is None or tat_us < now_us else tat_us
    new_tat = base + cost * rate.emission_us
    allow_at = new_tat - rate.tolerance_us
    if allow_at <= now_us:
        return GcraResult(True, new_tat, 0)
    return GcraResult(False, base, allow_at - now_us)


def _ceil_ms(us: int) -> int:
    return -(-us // 1000)


def rule_state(spec: RuleSpec, tat_us: int, now_us: int) -> RuleState:
    """Remaining burst and reset times of a rule whose stored TAT is ``tat_us``."""
    rate = spec.rate
    t = spec.emission_us
    burst = rate.burst
    slack = now_us + spec.tolerance_us - (tat_us if tat_us > now_us else now_us)
    if slack < 0:
        slack = 0
    remaining = slack // t
    if remaining > burst:
        remaining = burst
    next_us = 0 if remaining >= burst else (remaining + 1) * t - slack
    reset_us = tat_us - now_us
    return RuleState(
        spec.name,
        spec.kind,
        rate.requests,
        rate.window_s,
        burst,
        remaining,
        -(-next_us // 1000),
        -(-reset_us // 1000) if reset_us > 0 else 0,
    )


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _checked(rate: Rate, name: str) -> Rate:
    problems = rate_problems(rate, name)
    if problems:
        raise ValueError("; ".join(problems))
    return rate


def plan(
    caller: Caller,
    op_class: str,
    profile: RateLimitProfile,
    global_rate: Rate | None = None,
    *,
    cluster: bool = False,
) -> LimitPlan:
    """The rules that apply to ``caller`` doing an ``op_class`` operation, with their keys."""
    if op_class not in OP_CLASSES:
        raise ValueError(f"unknown operation class {op_class!r}")
    tag = f"{KEY_PREFIX}{{t:{_hash(caller.tenant)}}}"
    # ``tenant`` is qualified by its issuer's domain; the caller by its issuer, so two issuers
    # mapped onto one domain still have distinct callers.
    who = _hash(f"{caller.issuer}\n{caller.id}")
    rules: list[RuleSpec] = []
    if (rate := profile.per_caller.get(op_class)) is not None:
        name = f"caller-{op_class}"
        rules.append(RuleSpec(name, "caller", f"{tag}:c:{who}:{op_class}", _checked(rate, name)))
    if (rate := profile.per_tenant.get(op_class)) is not None:
        name = f"tenant-{op_class}"
        rules.append(RuleSpec(name, "tenant", f"{tag}:t:{op_class}", _checked(rate, name)))
    if global_rate is not None and not cluster:
        rules.extend(plan_global(global_rate).rules)
    concurrency = None
    if profile.max_concurrent is not None:
        if not 1 <= profile.max_concurrent <= MAX_CONCURRENT:
            raise ValueError("max_concurrent out of range")
        concurrency = ConcurrencySpec(f"{tag}:cc:{who}", profile.max_concurrent)
    return LimitPlan(tuple(rules), concurrency)


class PlanCache:
    """:func:`plan` remembered per caller and operation class (a plan depends on nothing
    else but the profile, the global rate and ``cluster``, all fixed here or checked by
    identity): the keys' hashes and the rates' checks are done once per caller, not once per
    request. Bounded (a plan is about 1.1 KB): the oldest entry goes first. A plan that
    raises is not remembered."""

    def __init__(
        self, global_rate: Rate | None = None, *, cluster: bool = False, size: int = 1024
    ) -> None:
        self.global_rate = global_rate
        self.cluster = cluster
        self.size = size
        self._plans: dict[tuple[str, str, str, str], tuple[RateLimitProfile, LimitPlan]] = {}

    def plan(self, caller: Caller, op_class: str, profile: RateLimitProfile) -> LimitPlan:
        key = (caller.tenant, caller.issuer, caller.id, op_class)
        plans = self._plans
        found = plans.get(key)
        if found is not None and found[0] is profile:
            return found[1]
        made = plan(caller, op_class, profile, self.global_rate, cluster=self.cluster)
        if found is None and len(plans) >= self.size:
            del plans[next(iter(plans))]
        plans[key] = (profile, made)
        return made

    def __len__(self) -> int:
        return len(self._plans)


def plan_global(global_rate: Rate) -> LimitPlan:
    """The global ceiling alone, in its own slot (for a separate call on Redis Cluster)."""
    rate = _checked(global_rate, "global")
    return LimitPlan((RuleSpec("global", "global", f"{KEY_PREFIX}{{g}}:g", rate),))


def most_restrictive(decision: Decision) -> RuleState | None:
    if decision.limited_by is not None:
        for rule in decision.rules:
            if rule.name == decision.limited_by:
                return rule
    if not decision.rules:
        return None
    return min(decision.rules, key=lambda r: (r.remaining, -r.next_ms, -r.reset_ms))


def _duration(ms: int) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` style: ``20ms``, ``1.5s``, ``6m0s``."""
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def _rule_headers(rule: RuleState, remaining: int, t_s: int) -> list[tuple[str, str]]:
    return [
        ("RateLimit-Policy", f'"{rule.name}";q={rule.limit};w={rule.window_s}'),
        ("RateLimit", f'"{rule.name}";r={remaining};t={t_s}'),
        ("x-ratelimit-limit-requests", str(rule.limit)),
        ("x-ratelimit-remaining-requests", str(remaining)),
        ("x-ratelimit-reset-requests", _duration(rule.reset_ms)),
    ]


def response_headers(decision: Decision) -> list[tuple[str, str]]:
    """Limit state for an admitted response (the most restrictive rule); none when degraded."""
    rule = None if decision.degraded else most_restrictive(decision)
    if rule is None:
        return []
    return _rule_headers(rule, rule.remaining, -(-rule.next_ms // 1000))


def retry_after_s(retry_after_ms: int) -> int:
    return max(1, -(-retry_after_ms // 1000))


def refusal_headers(decision: Decision) -> dict[str, str]:
    """``Retry-After`` (whole seconds, ceil, >= 1), exact ``retry-after-ms``, and limit state."""
    seconds = retry_after_s(decision.retry_after_ms)
    headers = {
        "Retry-After": str(seconds),
        "retry-after-ms": str(max(1, decision.retry_after_ms)),
        "x-should-retry": "true",
    }
    rule = most_restrictive(decision)
    if rule is not None and rule.name == decision.limited_by:
        headers.update(_rule_headers(rule, 0, seconds))
    return headers


def refusal_error(decision: Decision) -> RateLimitedError:
    """The 429 for a refused decision."""
    concurrency = decision.limited_by == "concurrency"
    what = "concurrent requests" if concurrency else "requests"
    return RateLimitedError(
        f"Too many {what} for this caller. Retry after "
        f"{retry_after_s(decision.retry_after_ms)} seconds.",
        code="concurrency_limit_exceeded" if concurrency else "rate_limit_exceeded",
        headers=refusal_headers(decision),
    )


def decide(
    plan_: LimitPlan,
    now_us: int,
    tats_after: Sequence[int],
    *,
    status: Literal["allowed", "rate", "concurrency"],
    concurrency_wait_us: int = 0,
    lease: Lease | None = None,
) -> Decision:
    """Assemble a Decision from the script's (or the model's) per-rule TATs after the call."""
    states = tuple([rule_state(s, t, now_us) for s, t in zip(plan_.rules, tats_after, strict=True)])
    if status == "allowed":
        return Decision(True, rules=states, lease=lease)
    if status == "concurrency":
        wait_ms = min(CONCURRENCY_RETRY_CAP_MS, max(1, _ceil_ms(concurrency_wait_us)))
        return Decision(False, "concurrency", wait_ms, states)
    worst: tuple[int, str] | None = None
    for spec, tat in zip(plan_.rules, tats_after, strict=True):
        result = gcra(tat, now_us, spec.rate, spec.cost)
        if not result.allowed and (worst is None or result.retry_after_us > worst[0]):
            worst = (result.retry_after_us, spec.name)
    if worst is None:
        raise ValueError("status 'rate' but every rule admits")
    return Decision(False, worst[1], _ceil_ms(worst[0]), states)
