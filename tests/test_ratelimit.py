"""The pure rate-limit core: GCRA maths on an injected clock, plans and keys, headers."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from gateway.auth.caller import Caller
from gateway.errors import RateLimitedError
from gateway.ratelimit.gcra import (
    RATELIMIT_REASONS,
    Decision,
    PlanCache,
    Rate,
    RateLimitProfile,
    RuleSpec,
    RuleState,
    decide,
    gcra,
    plan,
    plan_global,
    rate_problems,
    refusal_error,
    refusal_headers,
    response_headers,
    rule_state,
)

S = 1_000_000  # µs per second
CALLER = Caller(
    id="team-secret/svc-account", tenant="tenant-Alpha", issuer="i", subject="s", profile="p"
)


def run(rate: Rate, arrivals: list[int], tat: int | None = None) -> tuple[list[bool], int | None]:
    """Feed arrivals (µs) through the model, committing admitted requests."""
    out = []
    for now in arrivals:
        result = gcra(tat, now, rate)
        out.append(result.allowed)
        if result.allowed:
            tat = result.tat_us
    return out, tat


# --- GCRA maths --------------------------------------------------------------------------------


@pytest.mark.parametrize(("burst", "n"), [(1, 5), (10, 11), (10, 100), (50, 200)])
def test_idle_caller_gets_exactly_burst_at_once(burst: int, n: int) -> None:
    admitted, _ = run(Rate(60, 60, burst), [7 * S] * n)
    assert admitted == [True] * min(n, burst) + [False] * (n - min(n, burst))


def test_refill_after_one_emission_interval() -> None:
    rate = Rate(10, 1, 3)  # T = 100 ms
    _, tat = run(rate, [0, 0, 0])
    assert not gcra(tat, 99_999, rate).allowed
    assert gcra(tat, 100_000, rate).allowed
    # after a full idle period of burst*T the whole burst is back, and no more
    admitted, _ = run(rate, [300_000] * 4, tat)
    assert admitted == [True, True, True, False]


def test_retry_after_is_exact() -> None:
    rate = Rate(7, 3, 2)  # T = 428571 µs (rounded)
    _, tat = run(rate, [0, 0])
    refused = gcra(tat, 1000, rate)
    assert not refused.allowed
    assert refused.retry_after_us == rate.emission_us - 1000
    assert not gcra(tat, 1000 + refused.retry_after_us - 1, rate).allowed
    assert gcra(tat, 1000 + refused.retry_after_us, rate).allowed


def test_off_by_one_exactly_limit_per_window_d4() -> None:
    # 10 per second, burst 10, a request every millisecond for 1 s from idle:
    # the burst plus one per 100 ms after the first instant = 10 + 9 (t = 100..900 ms) + 1 (1 s).
    rate = Rate(10, 1, 10)
    admitted, _ = run(rate, [i * 1000 for i in range(1001)])
    assert sum(admitted) == 10 + 10
    # within the first window (t < 1 s): never limit + 1 beyond the burst's refill
    assert sum(admitted[:1000]) == 10 + 9


def test_window_boundary_burst_refused_d5() -> None:
    rate = Rate(60, 60, 60)
    first, tat = run(rate, [59_900_000] * 60)
    second, _ = run(rate, [60_000_000] * 60, tat)
    assert all(first)
    assert sum(second) == 0


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 300_000), min_size=1, max_size=80),
    burst=st.integers(1, 6),
    requests=st.integers(1, 20),
)
def test_never_more_than_burst_plus_refill_in_any_interval(
    gaps: list[int], burst: int, requests: int
) -> None:
    rate = Rate(requests, 1, burst)
    times, now = [], 0
    for gap in gaps:
        now += gap
        times.append(now)
    admitted, _ = run(rate, times)
    hits = [t for t, ok in zip(times, admitted, strict=True) if ok]
    for i, start in enumerate(hits):
        for end in hits[i:]:
            count = sum(1 for t in hits if start <= t <= end)
            assert count <= burst + (end - start) // rate.emission_us


@pytest.mark.parametrize("cost", [0, -1, 4])
def test_cost_outside_one_to_burst_is_an_error_d16(cost: int) -> None:
    with pytest.raises(ValueError, match="cost"):
        gcra(None, 0, Rate(10, 1, 3), cost)


def test_rule_state_remaining_next_and_reset() -> None:
    rate = Rate(10, 1, 3)
    (spec,) = plan(CALLER, "read", RateLimitProfile(per_caller={"read": rate})).rules
    state = rule_state(spec, 0, 0)  # idle
    assert (state.remaining, state.next_ms, state.reset_ms) == (3, 0, 0)
    _, tat = run(rate, [0, 0])
    assert tat is not None
    state = rule_state(spec, tat, 0)
    assert (state.remaining, state.next_ms, state.reset_ms) == (1, 100, 200)
    state = rule_state(spec, tat, 150_000)
    assert (state.remaining, state.next_ms, state.reset_ms) == (2, 50, 50)


def _rule_state_reference(spec: RuleSpec, tat_us: int, now_us: int) -> RuleState:
    """``rule_state`` as first written, over the ``Rate`` properties (the model it keeps)."""
    rate = spec.rate
    t = rate.emission_us
    slack = max(0, now_us + rate.tolerance_us - max(tat_us, now_us))
    remaining = min(rate.burst, slack // t)
    next_us = 0 if remaining >= rate.burst else (remaining + 1) * t - slack
    return RuleState(
        name=spec.name,
        kind=spec.kind,
        limit=rate.requests,
        window_s=rate.window_s,
        burst=rate.burst,
        remaining=remaining,
        next_ms=-(-next_us // 1000),
        reset_ms=-(-max(0, tat_us - now_us) // 1000),
    )


@settings(max_examples=400, deadline=None)
@given(
    requests=st.integers(1, 10_000),
    per_seconds=st.sampled_from([0.001, 0.5, 1, 7, 60, 3600.5]),
    burst=st.integers(1, 10_000),
    tat_offset=st.integers(-(10**10), 10**10),
    now_us=st.integers(0, 10**15),
)
def test_rule_state_equals_its_reference(
    requests: int, per_seconds: float, burst: int, tat_offset: int, now_us: int
) -> None:
    rate = Rate(requests, per_seconds, burst)
    if rate_problems(rate, "x"):
        return
    spec = RuleSpec("caller-read", "caller", "k", rate)
    tat_us = now_us + tat_offset
    assert rule_state(spec, tat_us, now_us) == _rule_state_reference(spec, tat_us, now_us)


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "problem"),
    [
        (Rate(0, 60, 1), "x.requests: must be between 1 and"),
        (Rate(10, 0, 1), "x.per_seconds: must be > 0"),
        (Rate(10, -1, 1), "x.per_seconds: must be > 0"),
        (Rate(10, math.nan, 1), "x.per_seconds: must be a finite number"),
        (Rate(10, math.inf, 1), "x.per_seconds: must be a finite number"),
        (Rate(10, 60, 0), "x.burst: must be between 1 and"),
        (Rate(True, 60, 1), "x.requests: must be an integer"),
        (Rate(1.5, 60, 1), "x.requests: must be an integer"),  # type: ignore[arg-type]
        (Rate(1_000_000, 0.5, 1), "x: more than one request per microsecond"),
    ],
)
def test_rate_problems_name_the_path(rate: Rate, problem: str) -> None:
    problems = rate_problems(rate, "x")
    assert any(p.startswith(problem) for p in problems), problems


def test_valid_rate_has_no_problems() -> None:
    assert rate_problems(Rate(60, 60, 10), "x") == []


def test_plan_refuses_invalid_rate_and_unknown_op_class() -> None:
    with pytest.raises(ValueError, match=r"caller-read\.requests"):
        plan(CALLER, "read", RateLimitProfile(per_caller={"read": Rate(0, 1, 1)}))
    with pytest.raises(ValueError, match="operation class"):
        plan(CALLER, "delete", RateLimitProfile())


# --- plans and keys -------------------------------------------------------------------------

PROFILE = RateLimitProfile(
    per_caller={"read": Rate(100, 60, 20), "write": Rate(60, 60, 10)},
    per_tenant={"read": Rate(1000, 60, 200), "write": Rate(600, 60, 100)},
    max_concurrent=4,
)


def test_plan_has_the_rules_that_apply() -> None:
    p = plan(CALLER, "write", PROFILE, Rate(10_000, 60, 1000))
    assert [r.name for r in p.rules] == ["caller-write", "tenant-write", "global"]
    assert p.concurrency is not None
    assert p.concurrency.limit == 4
    assert {r.name for r in p.rules} | {"concurrency"} <= RATELIMIT_REASONS
    only_read = plan(CALLER, "read", RateLimitProfile(per_caller={"write": Rate(1, 1, 1)}))
    assert only_read.empty


def test_all_keys_of_a_plan_share_one_cluster_slot_d10() -> None:
    p = plan(CALLER, "write", PROFILE, Rate(10_000, 60, 1000), cluster=True)
    assert [r.name for r in p.rules] == ["caller-write", "tenant-write"]
    slots = {key_slot(k.encode()) for k in p.keys}
    assert len(slots) == 1
    # the concurrency key is in the same slot; the global key has its own tag
    assert p.concurrency is not None
    assert key_slot(p.concurrency.key.encode()) in slots
    (global_key,) = plan_global(Rate(10, 1, 1)).keys
    assert global_key == "gw:rl:{g}:g"
    assert key_slot(global_key.encode()) == key_slot(b"g")
    # without cluster=True the global rule rides in the same (single-Redis) call
    assert plan(CALLER, "write", PROFILE, Rate(10, 1, 1)).keys[2] == global_key


def test_keys_never_contain_raw_ids() -> None:
    tricky = Caller(id="a}{b/évil\n*", tenant="{t}:x", issuer="i", subject="s", profile="p")
    for caller in (CALLER, tricky):
        for key in plan(caller, "read", PROFILE, Rate(1, 1, 1)).keys:
            assert re.fullmatch(r"gw:rl:\{(t:[0-9a-f]{16}|g)\}(:[a-z0-9]+)+", key), key
            assert caller.id not in key
            assert caller.tenant not in key
    ids = {plan(c, "read", PROFILE).keys[0] for c in (CALLER, tricky)}
    assert len(ids) == 2


def test_plan_cache_gives_the_plan_of_each_caller_and_class() -> None:
    other = Caller(
        id="team-secret/other", tenant="tenant-Alpha", issuer="i", subject="s", profile="p"
    )
    cache = PlanCache(Rate(10_000, 60, 1000), cluster=True)
    for caller in (CALLER, other, CALLER):
        for op_class in ("read", "write", "read"):
            got = cache.plan(caller, op_class, PROFILE)
            assert got == plan(caller, op_class, PROFILE, Rate(10_000, 60, 1000), cluster=True)
    assert len(cache) == 4
    assert cache.plan(CALLER, "read", PROFILE) is cache.plan(CALLER, "read", PROFILE)
    # another profile object (a reloaded config) is planned anew, never served the old plan
    tighter = RateLimitProfile(per_caller={"read": Rate(1, 60, 1)})
    assert cache.plan(CALLER, "read", tighter) == plan(
        CALLER, "read", tighter, Rate(10_000, 60, 1000), cluster=True
    )
    assert len(cache) == 4


def test_plan_cache_is_bounded_and_remembers_no_refusal() -> None:
    cache = PlanCache(size=3)
    callers = [
        Caller(id=f"ns/sa-{i}", tenant="tenant-Alpha", issuer="i", subject="s", profile="p")
        for i in range(5)
    ]
    for caller in callers:
        cache.plan(caller, "read", PROFILE)
    assert len(cache) == 3
    assert cache.plan(callers[0], "read", PROFILE) == plan(callers[0], "read", PROFILE)
    bad = RateLimitProfile(per_caller={"read": Rate(0, 1, 1)})
    for _ in range(2):
        with pytest.raises(ValueError, match=r"caller-read\.requests"):
            cache.plan(CALLER, "read", bad)
    with pytest.raises(ValueError, match="operation class"):
        cache.plan(CALLER, "delete", PROFILE)


# --- headers --------------------------------------------------------------------------------

SF_ITEM = re.compile(r'"(?P<name>[a-z0-9-]+)"(?P<params>(?:;[a-z]+=\d+)+)')


def parse_sf_item(value: str) -> tuple[str, dict[str, int]]:
    """A strict parser for the one RFC 8941 item shape the draft uses: "name";k=int;..."""
    match = SF_ITEM.fullmatch(value)
    assert match, value
    params = dict(p.split("=") for p in match["params"][1:].split(";"))
    return match["name"], {k: int(v) for k, v in params.items()}


def state(name: str, remaining: int, next_ms: int, reset_ms: int = 0) -> RuleState:
    kind = name.split("-")[0]
    return RuleState(name, kind, 60, 60, 10, remaining, next_ms, reset_ms)  # type: ignore[arg-type]


def test_response_headers_report_the_most_restrictive_rule() -> None:
    decision = Decision(
        True, rules=(state("caller-write", 12, 2500, 9000), state("tenant-write", 3, 400, 60000))
    )
    headers = dict(response_headers(decision))
    assert parse_sf_item(headers["RateLimit-Policy"]) == ("tenant-write", {"q": 60, "w": 60})
    assert parse_sf_item(headers["RateLimit"]) == ("tenant-write", {"r": 3, "t": 1})
    assert headers["x-ratelimit-limit-requests"] == "60"
    assert headers["x-ratelimit-remaining-requests"] == "3"
    assert headers["x-ratelimit-reset-requests"] == "1m0s"


@pytest.mark.parametrize(
    ("reset_ms", "text"), [(0, "0ms"), (20, "20ms"), (1500, "1.5s"), (61_250, "1m1.25s")]
)
def test_reset_duration_format(reset_ms: int, text: str) -> None:
    decision = Decision(True, rules=(state("caller-read", 1, 0, reset_ms),))
    assert dict(response_headers(decision))["x-ratelimit-reset-requests"] == text


def test_degraded_and_ruleless_decisions_carry_no_limit_headers() -> None:
    rules = (state("caller-read", 1, 1),)
    assert response_headers(Decision(True, rules=rules))
    assert response_headers(Decision(True, degraded=True, rules=rules)) == []
    assert response_headers(Decision(True, degraded=True)) == []
    assert response_headers(Decision(True)) == []


@pytest.mark.parametrize(
    ("ms", "seconds"), [(0, 1), (1, 1), (999, 1), (1000, 1), (1001, 2), (59_999, 60)]
)
def test_retry_after_is_ceil_and_at_least_one(ms: int, seconds: int) -> None:
    decision = Decision(False, "caller-write", ms, (state("caller-write", 0, ms),))
    headers = refusal_headers(decision)
    assert headers["Retry-After"] == str(seconds)
    assert headers["retry-after-ms"] == str(max(1, ms))
    assert headers["x-should-retry"] == "true"
    name, params = parse_sf_item(headers["RateLimit"])
    assert (name, params["r"]) == ("caller-write", 0)
    assert int(headers["Retry-After"]) >= params["t"]


def test_refusal_error_is_a_429_with_the_headers() -> None:
    error = refusal_error(Decision(False, "concurrency", 1000))
    assert isinstance(error, RateLimitedError)
    assert (error.status, error.code) == (429, "concurrency_limit_exceeded")
    assert error.headers["Retry-After"] == "1"
    assert "RateLimit" not in error.headers
    rate_error = refusal_error(
        Decision(False, "caller-read", 1500, (state("caller-read", 0, 1500),))
    )
    assert rate_error.code == "rate_limit_exceeded"
    assert rate_error.headers["Retry-After"] == "2"


def test_decide_reports_the_longest_wait_over_refusing_rules() -> None:
    p = plan(
        CALLER,
        "write",
        RateLimitProfile(per_caller={"write": Rate(1, 1, 1)}, per_tenant={"write": Rate(1, 5, 1)}),
    )
    # both rules just used: the caller refills after 1 s, the tenant after 5 s
    decision = decide(p, 0, [1 * S, 5 * S], status="rate")
    assert (decision.allowed, decision.limited_by, decision.retry_after_ms) == (
        False,
        "tenant-write",
        5000,
    )
    assert decide(p, 0, [1 * S, 1 * S], status="allowed").allowed
    conc = decide(p, 0, [0, 0], status="concurrency", concurrency_wait_us=30 * S)
    assert (conc.limited_by, conc.retry_after_ms) == ("concurrency", 1000)
