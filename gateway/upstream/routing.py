"""Which backend a new object goes to (pure: the breakers' answers and a random draw are
passed in).

* Candidates: the backends that serve the request's api-version and are available (their
  breaker closed, or half-open with its probe slot free).
* The lowest ``priority`` group among them wins (lower first: a higher group is a fallback
  used only while every backend of the lower ones is out of rotation or lacks the version).
* Within the group, one is drawn by ``weight``: ``draw`` in [0, 1) picks the backend whose
  share of the cumulative weights contains it.
* None left: ``soonest`` is when the first backend serving the version may take one again
  (the 503's ``Retry-After``); no backend serves the version at all: None.

``preferred`` is the first backend of that order without a draw (the lowest priority group's
heaviest, first configured on a tie): a list of top-level objects (no cursor) goes there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    weight: int
    priority: int
    #: api-versions served (empty: all of the gateway's).
    api_versions: frozenset[str]
    available: bool
    #: When it may take a new object again (now, when available).
    reopens_at: float

    def serves(self, api_version: str) -> bool:
        return not self.api_versions or api_version in self.api_versions


def _group(candidates: Sequence[Candidate], api_version: str) -> list[Candidate]:
    usable = [c for c in candidates if c.available and c.serves(api_version)]
    if not usable:
        return []
    best = min(c.priority for c in usable)
    return [c for c in usable if c.priority == best]


def choose(candidates: Sequence[Candidate], api_version: str, draw: float) -> Candidate | None:
    group = _group(candidates, api_version)
    if not group:
        return None
    total = sum(c.weight for c in group)
    point = min(max(draw, 0.0), 1.0) * total
    for candidate in group:
        point -= candidate.weight
        if point < 0:
            return candidate
    return group[-1]


def preferred(candidates: Sequence[Candidate], api_version: str) -> Candidate | None:
    group = _group(candidates, api_version)
    if not group:
        return None
    heaviest = max(c.weight for c in group)
    return next(c for c in group if c.weight == heaviest)


def soonest(candidates: Sequence[Candidate], api_version: str) -> float | None:
    times = [c.reopens_at for c in candidates if c.serves(api_version)]
    return min(times) if times else None
