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
* A forced refresh (Azure answered 401/403 to the token) is due ``FORCE_INTERVAL_S`` after
  the last fetch started (at once if that is past): a refused token cannot turn every request
  into a fetch, and a refusal right after a fetch is not forgotten.
* Without a usable token, a request may start (or join) a fetch only when one is due;
  otherwise it is refused at once with ``Retry-After`` = the time until the next fetch.
"""

from __future__ import annotations

import dataclasses
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
    #: Azure refused the token held: fetch again as soon as allowed.
    forced: bool = False

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
        due = self.retry_at() if self.failures else self.refresh_at()
        if self.forced:
            last = -math.inf if self.last_attempt is None else self.last_attempt
            due = min(due, last + FORCE_INTERVAL_S)
        return due

    def due(self, now: float) -> bool:
        return now >= self.due_at()

    def retry_after_s(self, now: float) -> int:
        """Whole seconds until a fetch is due (at least 1): the ``Retry-After`` of a refusal."""
        wait = self.due_at() - now
        return math.ceil(wait) if math.isfinite(wait) and wait > 1 else 1

    # -- transitions

    def started(self, now: float) -> Schedule:
        """A fetch started (it answers a forced refresh too)."""
        return dataclasses.replace(self, last_attempt=now, forced=False)

    def succeeded(self, token: Token, jitter: float) -> Schedule:
        return dataclasses.replace(self, token=token, failures=0, jitter=jitter)

    def failed(self, jitter: float) -> Schedule:
        return dataclasses.replace(self, failures=self.failures + 1, jitter=jitter)

    def force(self) -> Schedule:
        return dataclasses.replace(self, forced=True)
