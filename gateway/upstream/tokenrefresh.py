"""When to fetch an Entra access token (pure: no I/O, no clock; ``now`` is passed in).

Rules:

* A token is **usable** while ``now < expires_on``: the cached token serves until it expires,
  whatever happened to the token endpoint meanwhile.
* A held token is **due** for refresh ``margin_s`` to ``margin_s * (1 + JITTER)`` before it
  expires (``jitter`` in [0, 1) is drawn once per token, so replicas spread their fetches), or
  at the server's ``refresh_on`` if that is sooner, and never before half its lifetime has
  passed (a token shorter-lived than the margin is not fetched again at once, in a loop).
* After a failed fetch the next one is due after a backoff: ``RETRY_BASE_S`` doubling per
  consecutive failure up to ``RETRY_CAP_S`` (times the same jitter spread), whether or not a
  token is still held.
* A forced refresh (Azure answered 401/403 to the token) is allowed at most once per
  ``FORCE_INTERVAL_S`` since the last fetch started: a refused token cannot turn every
  request into a fetch.
* Without a usable token, a request may start (or join) a fetch only when one is due;
  otherwise it is refused at once with ``Retry-After`` = the time until the next fetch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

JITTER = 0.2
RETRY_BASE_S = 1.0
RETRY_CAP_S = 30.0
FORCE_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    #: Unix seconds.
    expires_on: float
    obtained_on: float
    #: The server's recommended refresh time (Unix seconds), if it gave one.
    refresh_on: float | None = None

    def usable(self, now: float) -> bool:
        return now < self.expires_on

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.expires_on - now)


@dataclass(frozen=True, slots=True)
class Schedule:
    """The refresh state of one credential: the token held (if any) and the fetch history."""

    margin_s: float
    token: Token | None = None
    #: Consecutive failed fetches since the last good one.
    failures: int = 0
    #: When the last fetch started (Unix seconds), or None.
    last_attempt: float | None = None
    #: This token's (or this failure streak's) jitter draw, in [0, 1).
    jitter: float = 0.0

    def refresh_at(self) -> float:
        """When a held token is due (``-inf`` with no token: due now)."""
        token = self.token
        if token is None:
            return -math.inf
        early = token.expires_on - self.margin_s * (1 + JITTER * self.jitter)
        if token.refresh_on is not None:
            early = min(early, token.refresh_on)
        half_life = token.obtained_on + (token.expires_on - token.obtained_on) / 2
        return max(early, half_life)

    def retry_at(self) -> float:
        """When the next fetch after a failure is due (``-inf`` when none failed)."""
        if self.failures == 0 or self.last_attempt is None:
            return -math.inf
        backoff = min(RETRY_CAP_S, RETRY_BASE_S * 2.0 ** (self.failures - 1))
        return self.last_attempt + backoff * (1 + JITTER * self.jitter)

    def due_at(self) -> float:
        """When the next fetch is due (``-inf``: now)."""
        if self.failures:
            return self.retry_at()
        return self.refresh_at()

    def due(self, now: float) -> bool:
        return now >= self.due_at()

    def may_force(self, now: float) -> bool:
        return self.last_attempt is None or now - self.last_attempt >= FORCE_INTERVAL_S

    def retry_after_s(self, now: float) -> int:
        """Whole seconds until a fetch is due (at least 1): the ``Retry-After`` of a refusal."""
        return max(1, math.ceil(self.due_at() - now))

    # -- transitions

    def started(self, now: float) -> Schedule:
        return _replace(self, last_attempt=now)

    def succeeded(self, token: Token, jitter: float) -> Schedule:
        return Schedule(self.margin_s, token, 0, self.last_attempt, jitter)

    def failed(self, jitter: float) -> Schedule:
        return Schedule(self.margin_s, self.token, self.failures + 1, self.last_attempt, jitter)


def _replace(schedule: Schedule, *, last_attempt: float) -> Schedule:
    return Schedule(
        schedule.margin_s, schedule.token, schedule.failures, last_attempt, schedule.jitter
    )
