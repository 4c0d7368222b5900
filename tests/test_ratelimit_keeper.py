"""One task renews every held concurrency lease (``gateway.ratelimit.keeper``): each lease
every ``every_s`` while held, a dropped one never again, nothing after ``aclose``; and no task
per request."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from gateway.ratelimit.gcra import Lease
from gateway.ratelimit.keeper import LeaseKeeper

EVERY = 0.2


class Renewals:
    def __init__(self) -> None:
        self.at: dict[str, list[float]] = {}

    async def __call__(self, lease: Lease) -> None:
        self.at.setdefault(lease.member, []).append(time.monotonic())


def test_each_held_lease_is_renewed_every_period_until_dropped() -> None:
    async def main() -> tuple[Renewals, dict[str, float]]:
        renewals = Renewals()
        keeper = LeaseKeeper(renewals, every_s=EVERY)
        held = {}
        a, b, c = (Lease("gw:rl:{t}:conc", m) for m in ("a", "b", "c"))
        keeper.hold(a)
        held["a"] = time.monotonic()
        await asyncio.sleep(EVERY / 2)
        keeper.hold(b)
        held["b"] = time.monotonic()
        keeper.hold(c)
        keeper.drop(c)  # a request that ended before its first renewal
        await asyncio.sleep(EVERY * 2.3)
        keeper.drop(a)
        dropped_a = time.monotonic()
        await asyncio.sleep(EVERY * 1.5)
        await keeper.aclose()
        held["dropped_a"] = dropped_a
        closed = time.monotonic()
        await asyncio.sleep(EVERY * 1.5)
        held["closed"] = closed
        return renewals, held

    renewals, held = asyncio.run(main())
    assert "c" not in renewals.at
    for member in ("a", "b"):
        times = [held[member], *renewals.at[member]]
        gaps = [t - s for s, t in itertools.pairwise(times)]
        assert gaps, member
        assert all(EVERY * 0.9 <= g <= EVERY * 1.5 for g in gaps), (member, gaps)
    assert all(t < held["dropped_a"] for t in renewals.at["a"])
    assert len(renewals.at["b"]) >= 3
    assert all(t < held["closed"] for t in renewals.at["b"])


def test_one_task_whatever_the_number_of_leases() -> None:
    async def main() -> tuple[int, int]:
        keeper = LeaseKeeper(Renewals(), every_s=EVERY)
        before = len(asyncio.all_tasks())
        for i in range(100):
            keeper.hold(Lease("k", str(i)))
        during = len(asyncio.all_tasks())
        for i in range(100):
            keeper.drop(Lease("k", str(i)))
        await keeper.aclose()
        return during - before, len(asyncio.all_tasks()) - before

    assert asyncio.run(main()) == (1, 0)


def test_a_failing_renewal_does_not_stop_the_others() -> None:
    async def main() -> list[str]:
        seen: list[str] = []

        async def renew(lease: Lease) -> None:
            seen.append(lease.member)
            if lease.member == "bad":
                raise RuntimeError("boom")

        keeper = LeaseKeeper(renew, every_s=EVERY)
        keeper.hold(Lease("k", "bad"))
        keeper.hold(Lease("k", "good"))
        await asyncio.sleep(EVERY * 2.5)
        await keeper.aclose()
        return seen

    seen = asyncio.run(main())
    assert seen.count("good") >= 2 and seen.count("bad") >= 2


def test_the_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="every_s"):
        LeaseKeeper(Renewals(), every_s=0)
