"""Admission control: shed load before any per-request work when this process is too busy (pure).

The first thing the proxy does with a request, before reading its body or verifying its
token, is :meth:`Admission.enter`. The request is refused at once (503 ``server_overloaded``,
``Retry-After: 1``, ``x-should-retry: true``) when ``max_pending`` requests are already being
admitted (``server.max_pending_requests``): arrived and not yet past the rate limiter, the part
of a request that competes for this process's CPU and for the limiter's budget (token checks,
the ownership lookup, the limiter's call). A bounded queue instead of one in which every
request, and every Redis answer, waits longer and longer. A request leaves it once the limiter
has decided; what follows (body, Azure, the relay) is bounded by the body timeout, the upstream
pool and the per-caller concurrency limit, so a slow upstream or a long stream holds no place.

Shedding on the event loop's lag was measured and left out: before authentication every
request looks alike, and under a one-caller flood a lag threshold (50 ms) refused 88 % of a
well-behaved caller's requests while the count above refused far fewer. The lag is exported
as a gauge (``gateway.looplag``) for alerts instead.

A refusal does no I/O and costs microseconds, so shedding stays cheap exactly when it matters.
The rate limits are never relaxed here: an admitted request still meets the limiter, and one
whose limiter call runs out of time is decided by the local limiter, never admitted unchecked
(``ratelimit_redis``). ``Admission`` only counts; it reads no clock.
"""

from __future__ import annotations

from gateway.errors import ServiceUnavailableError

#: Fixed reasons (bounded metric labels).
SHED_REASONS = ("pending",)


class Admission:
    def __init__(self, *, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.max_pending = max_pending
        self.pending = 0
        #: Refusals so far, by reason.
        self.shed = dict.fromkeys(SHED_REASONS, 0)

    def enter(self) -> Ticket:
        """Admit one request (release its ticket when it is past admission) or shed it."""
        if self.pending >= self.max_pending:
            self.shed["pending"] += 1
            return Ticket(None, "pending")
        self.pending += 1
        return Ticket(self, None)

    def leave(self) -> None:
        self.pending -= 1


class Ticket:
    """One request's place: ``release`` (idempotent) gives it back; a shed ticket holds none."""

    __slots__ = ("_admission", "shed")

    def __init__(self, admission: Admission | None, shed: str | None) -> None:
        self._admission = admission
        self.shed = shed

    def release(self) -> None:
        if self._admission is not None:
            self._admission.leave()
            self._admission = None


#: The ticket of a request when no admission control is configured.
NO_ADMISSION = Ticket(None, None)


def overloaded() -> ServiceUnavailableError:
    """The 503 of a shed request (and of a limiter call this process was too busy to finish)."""
    return ServiceUnavailableError(
        "The gateway is overloaded; retry shortly.",
        code="server_overloaded",
        headers={"Retry-After": "1", "x-should-retry": "true"},
    )
