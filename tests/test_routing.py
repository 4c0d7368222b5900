"""Choosing a backend for a new object (``gateway.upstream.routing``), pure."""

from __future__ import annotations

import random

from gateway.upstream.routing import Candidate, choose, preferred, soonest


def cand(
    name: str,
    *,
    weight: int = 1,
    priority: int = 0,
    versions: tuple[str, ...] = (),
    available: bool = True,
    reopens_at: float = 0.0,
) -> Candidate:
    return Candidate(name, weight, priority, frozenset(versions), available, reopens_at)


def test_lowest_priority_group_first() -> None:
    group = [cand("b", priority=1, weight=100), cand("a", priority=0)]
    assert {choose(group, "v", d / 10).name for d in range(10)} == {"a"}  # type: ignore[union-attr]


def test_a_higher_group_serves_while_the_lower_is_out_of_rotation() -> None:
    group = [cand("a", available=False, reopens_at=9), cand("b", priority=1)]
    assert choose(group, "v", 0.3).name == "b"  # type: ignore[union-attr]


def test_weighted_within_the_group_by_the_draw() -> None:
    group = [cand("a", weight=3), cand("b", weight=1)]
    assert choose(group, "v", 0.0).name == "a"  # type: ignore[union-attr]
    assert choose(group, "v", 0.74).name == "a"  # type: ignore[union-attr]
    assert choose(group, "v", 0.75).name == "b"  # type: ignore[union-attr]
    assert choose(group, "v", 0.9999).name == "b"  # type: ignore[union-attr]
    rng = random.Random(7)  # noqa: S311 (a weighted spread, not a secret)
    picks = [choose(group, "v", rng.random()).name for _ in range(4000)]  # type: ignore[union-attr]
    assert 0.72 < picks.count("a") / len(picks) < 0.78


def test_only_backends_serving_the_api_version() -> None:
    group = [cand("a", versions=("2024-05-01-preview",)), cand("b", priority=5)]
    assert choose(group, "2024-05-01-preview", 0.5).name == "a"  # type: ignore[union-attr]
    assert choose(group, "v1", 0.5).name == "b"  # type: ignore[union-attr]
    assert soonest([cand("a", versions=("x",))], "v1") is None


def test_none_available_and_the_soonest_reopening() -> None:
    group = [cand("a", available=False, reopens_at=30), cand("b", available=False, reopens_at=12)]
    assert choose(group, "v", 0.5) is None and preferred(group, "v") is None
    assert soonest(group, "v") == 12


def test_preferred_is_the_heaviest_of_the_lowest_group_first_on_a_tie() -> None:
    group = [cand("c", priority=1, weight=9), cand("a", weight=2), cand("b", weight=2)]
    assert preferred(group, "v").name == "a"  # type: ignore[union-attr]
    group = [cand("a", weight=1), cand("b", weight=2)]
    assert preferred(group, "v").name == "b"  # type: ignore[union-attr]
