"""The circuit breaker of one Azure backend (pure: no I/O, no clock; every call takes ``now``).

A breaker only decides whether a backend takes *new* objects (``routing``); a request on an
object that lives there is always sent there, whatever the state (elsewhere it would 404).

Rules:

* ``closed``: in rotation. An answer of 429 opens it for the answer's ``Retry-After``
  (capped at ``max_retry_after_s``; ``cooldown_s`` when absent or unreadable). ``failures``
  consecutive failures (5xx, a timeout, unreachable) open it for the current cooldown,
  which starts at ``cooldown_s`` and doubles on each re-opening, up to ``max_cooldown_s``.
  Any other answer (2xx-4xx) resets the count of consecutive failures.
* ``open``: out of rotation until ``open_until``. Answers on objects already there change
  nothing, except a later 429 whose ``Retry-After`` reaches further, which extends it.
* ``half_open``: from ``open_until`` on, ONE probe (a new object, ``take_probe``) may go
  there; until its answer (or ``probe_timeout_s``, if it never comes) no other. A probe that
  succeeds (not a failure, not a 429) closes the breaker and resets the cooldown; one that
  fails re-opens it (doubled cooldown, or the 429's ``Retry-After``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "half_open", "open"]
#: What became of one upstream request: an answer's status, or no answer at all.
Failure = Literal["timeout", "unreachable"]
#: The gauge value of each state (``gateway_upstream_backend_state``).
STATE_VALUES: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5
    cooldown_s: float = 10.0
    max_cooldown_s: float = 300.0
    max_retry_after_s: float = 300.0
    probe_timeout_s: float = 30.0


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header given as delta-seconds (Azure's form), else None."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 9:
        return None
    return float(int(text))


def is_failure(status: int) -> bool:
    """A status that counts against the backend (the service failing, not the request)."""
    return status >= 500


@dataclass(slots=True)
class Breaker:
    policy: BreakerPolicy
    opened: bool = False
    open_until: float = 0.0
    consecutive: int = 0
    cooldown_s: float = 0.0
    #: When the outstanding probe's slot lapses (None: no probe out).
    probe_until: float | None = None

    def __post_init__(self) -> None:
        self.cooldown_s = self.cooldown_s or self.policy.cooldown_s

    def state(self, now: float) -> State:
        if not self.opened:
            return "closed"
        return "open" if now < self.open_until else "half_open"

    def available(self, now: float) -> bool:
        """Whether a new object may go here now (closed, or half-open with no probe out)."""
        state = self.state(now)
        if state == "closed":
            return True
        if state == "open":
            return False
        return self.probe_until is None or now >= self.probe_until

    def take_probe(self, now: float) -> bool:
        """A new object is sent here: True when it is the half-open probe (its slot taken)."""
        if self.state(now) != "half_open" or not self.available(now):
            return False
        self.probe_until = now + self.policy.probe_timeout_s
        return True

    def reopens_at(self, now: float) -> float:
        """When a new object may next come here (now, when available)."""
        if self.available(now):
            return now
        if self.state(now) == "open":
            return self.open_until
        assert self.probe_until is not None
        return self.probe_until

    def record(
        self,
        now: float,
        *,
        status: int | None,
        retry_after: str | None = None,
        failure: Failure | None = None,
        probe: bool = False,
    ) -> None:
        """One upstream answer (``status``) or its absence (``failure``)."""
        throttled = status == 429
        failed = failure is not None or (status is not None and is_failure(status))
        if probe:
            self.probe_until = None
        if throttled:
            wait = retry_after_seconds(retry_after)
            wait = self.policy.cooldown_s if wait is None else wait
            self._open(now, min(wait, self.policy.max_retry_after_s), extend=not probe)
            return
        if self.opened and not probe:
            return  # open or half-open: only the probe decides
        if not failed:
            self.opened, self.consecutive = False, 0
            self.cooldown_s = self.policy.cooldown_s
            return
        self.consecutive += 1
        if probe or self.consecutive >= self.policy.failures:
            self._open(now, self.cooldown_s, extend=False)
            self.cooldown_s = min(self.cooldown_s * 2, self.policy.max_cooldown_s)

    def _open(self, now: float, seconds: float, *, extend: bool) -> None:
        until = now + seconds
        if extend and self.opened:
            until = max(until, self.open_until)
        self.opened, self.open_until, self.consecutive = True, until, 0
