"""The backend circuit breaker (``gateway.upstream.breaker``), pure: every step takes ``now``."""

from __future__ import annotations

import pytest

from gateway.upstream.breaker import Breaker, BreakerPolicy, retry_after_seconds

POLICY = BreakerPolicy(
    failures=3, cooldown_s=10.0, max_cooldown_s=40.0, max_retry_after_s=60.0, probe_timeout_s=5.0
)


def breaker() -> Breaker:
    return Breaker(POLICY)


def test_starts_closed_and_successes_keep_it_closed() -> None:
    b = breaker()
    for t in range(10):
        b.record(float(t), status=200)
        assert b.state(float(t)) == "closed" and b.available(float(t))


def test_429_opens_for_its_retry_after_then_half_open() -> None:
    b = breaker()
    b.record(100.0, status=429, retry_after="7")
    assert b.state(100.0) == "open" and not b.available(106.9)
    assert b.reopens_at(101.0) == 107.0
    assert b.state(107.0) == "half_open" and b.available(107.0)


def test_429_retry_after_is_capped_and_defaults_to_the_cooldown() -> None:
    b = breaker()
    b.record(0.0, status=429, retry_after="99999")
    assert b.reopens_at(0.0) == 60.0
    c = breaker()
    c.record(0.0, status=429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    assert c.reopens_at(0.0) == 10.0


@pytest.mark.parametrize(
    "outcome",
    [
        {"status": 500},
        {"status": 503},
        {"status": None, "failure": "timeout"},
        {"status": None, "failure": "unreachable"},
    ],
)
def test_n_consecutive_failures_open_it(outcome: dict[str, object]) -> None:
    b = breaker()
    b.record(0.0, **outcome)  # type: ignore[arg-type]
    b.record(1.0, **outcome)  # type: ignore[arg-type]
    assert b.state(1.0) == "closed"
    b.record(2.0, **outcome)  # type: ignore[arg-type]
    assert b.state(2.0) == "open" and b.reopens_at(2.0) == 12.0


def test_a_success_or_a_4xx_resets_the_count() -> None:
    b = breaker()
    for t, status in enumerate([500, 500, 404, 500, 500, 200, 500, 500]):
        b.record(float(t), status=status)
    assert b.state(8.0) == "closed"


def test_half_open_lets_one_probe_through_and_its_success_closes() -> None:
    b = breaker()
    for t in range(3):
        b.record(float(t), status=502)
    assert b.available(12.0) and b.take_probe(12.0)
    assert not b.available(12.1)  # the one probe is out
    assert not b.take_probe(12.1)
    b.record(12.5, status=200)  # an answer on an existing object: not the probe's
    assert b.state(12.5) == "half_open" and not b.available(12.5)
    b.record(13.0, status=200, probe=True)
    assert b.state(13.0) == "closed" and b.available(13.0)


def test_a_failed_probe_reopens_with_a_doubled_cooldown_up_to_the_cap() -> None:
    b = breaker()
    for t in range(3):
        b.record(float(t), status=500)
    opened_for = []
    now = 2.0
    for _ in range(4):
        now = b.reopens_at(now)
        assert b.take_probe(now)
        b.record(now, status=None, failure="timeout", probe=True)
        opened_for.append(b.reopens_at(now) - now)
    assert opened_for == [20.0, 40.0, 40.0, 40.0]
    now = b.reopens_at(now)
    b.take_probe(now)
    b.record(now, status=201, probe=True)
    for t in range(3):
        b.record(now + t, status=500)
    assert b.reopens_at(now + 2) == now + 2 + 10.0  # the cooldown was reset on closing


def test_a_probe_that_never_answers_frees_its_slot_after_the_probe_timeout() -> None:
    b = breaker()
    b.record(0.0, status=429, retry_after="1")
    assert b.take_probe(1.0)
    assert not b.available(5.9) and b.reopens_at(5.9) == 6.0
    assert b.available(6.0)


def test_while_open_a_later_429_extends_and_nothing_else_changes_it() -> None:
    b = breaker()
    b.record(0.0, status=429, retry_after="10")
    b.record(1.0, status=200)
    b.record(2.0, status=500)
    assert b.reopens_at(2.0) == 10.0
    b.record(5.0, status=429, retry_after="20")
    assert b.reopens_at(5.0) == 25.0
    b.record(6.0, status=429, retry_after="1")
    assert b.reopens_at(6.0) == 25.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5.0),
        (" 12 ", 12.0),
        ("0", 0.0),
        (None, None),
        ("-1", None),
        ("1.5", None),
        ("x", None),
        ("9" * 12, None),
    ],
)
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds
