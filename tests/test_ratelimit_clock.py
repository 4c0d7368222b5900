"""This replica's estimate of Redis's clock, and the script deadline it gives (pure)."""

from __future__ import annotations

from gateway.ratelimit.clock import MARGIN_US, ClockOffset

OFFSET = 1_700_000_000_000_000  # Redis's clock minus ours, µs


def test_no_deadline_until_redis_has_answered() -> None:
    assert ClockOffset().deadline(0, 250_000) is None


def test_the_fastest_round_trip_wins_and_the_deadline_is_never_early() -> None:
    clock = ClockOffset()
    # Sent at 0, run by Redis at our 300 (its OFFSET + 300), answered at 1000.
    clock.learn(OFFSET + 300, 0, 1000)
    assert clock.offset_us == OFFSET + 300 - 500
    slow_first = clock.offset_us
    clock.learn(OFFSET + 10_100, 10_000, 40_000)  # a slower round trip: ignored
    assert clock.offset_us == slow_first
    clock.learn(OFFSET + 50_050, 50_000, 50_100)  # faster: taken
    assert (clock.offset_us, clock.rtt_us) == (OFFSET - 0, 100)
    deadline = clock.deadline(60_000, 250_000)
    assert deadline is not None
    # The real deadline on Redis's clock is OFFSET + 60_000 + 250_000; the estimate errs by
    # at most half the round trip, and the round trip plus a millisecond is added.
    assert OFFSET + 310_000 <= deadline <= OFFSET + 310_000 + 100 + MARGIN_US + 50


def test_old_estimates_are_replaced_and_an_expiry_always_corrects() -> None:
    clock = ClockOffset(refresh_us=1_000_000)
    clock.learn(OFFSET + 50, 0, 100)
    clock.learn(OFFSET + 5_000_000 + 2_000, 2_000_000, 2_001_000)  # stale best: replaced
    assert clock.offset_us == OFFSET + 5_000_000 + 2_000 - 2_000_500
    clock.learn(OFFSET, 2_100_000, 2_200_000, force=True)  # "expired": Redis's clock jumped
    assert clock.offset_us == OFFSET - 2_150_000
