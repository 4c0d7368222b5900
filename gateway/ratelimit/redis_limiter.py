"""The Redis limiter: one atomic Lua decision per request, and what happens when Redis fails.

One atomic decision per request checks every rule of a :class:`~gateway.ratelimit.LimitPlan`
(the caller's, the tenant's, the optional global ceiling) and acquires the concurrency lease,
all-or-nothing, on Redis's own clock (``TIME``), so replicas with skewed clocks agree. The
decisions, lease releases and renewals of concurrent requests issued in one event-loop
iteration share one ``EVALSHA`` (``redisconn.batch``: auto-pipelining; the script runs them in
order, each as it would alone, so counts stay exact across replicas); a request does not wait
for its lease's release (``release_soon``). After ``NOSCRIPT`` (a flush or a restart) the
script is loaded and the call sent once more (``redisconn.pipe``, as redis-py's ``Script``
does on Cluster). The maths is the pure model in
``ratelimit.gcra``; the script is in ``ratelimit.lua``.

Failure: the client has explicit short timeouts and no retries (a retried ``EVAL`` that already
ran would count a request twice), and every operation is bounded by ``budget_s`` from when it
was issued (its own timer, whatever batch it travels in). A call that fails is never re-run,
and a limit never switches itself off:

* ``fail_mode = "open"`` / ``"local"``: this replica decides alone (``ratelimit_local``: the
  full limits, or its share of them), from local state Redis's answers kept warm; the
  decision is marked ``degraded`` (no rate-limit headers). When calls still pending on Redis
  might have taken what is left, the answer is a 503 with ``Retry-After: 1``.
* ``fail_mode = "closed"``: ``ServiceUnavailableError`` (503, ``rate_limiter_unavailable``,
  ``Retry-After: 1``).

A request that Redis's last answers already refuse (a caller past its limit) is refused
without a call (``LocalLimiter.known_refusal``): a flood costs no Redis round trips.

After a Redis failure, calls skip Redis for ``RETRY_S`` (decided alone at once, not after a
budget's wait each), then the next call tries again; a successful readiness probe ends the
pause early. Each script carries a deadline on Redis's clock (``ratelimit_clock``), so a call
given up on never counts when a stopped Redis runs it later.

A call that runs past the budget while Redis is answering other calls (or that the event loop
woke far too late) is a *deadline*: this process was too busy, which says nothing about Redis.
It is decided the same way but neither marks Redis degraded nor pauses the calls; it is
counted apart. redis-py errors are translated here and only here; their text goes to the
log, never to clients.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Literal

from redis.exceptions import RedisError

from gateway.errors import ServiceUnavailableError
from gateway.ratelimit.clock import ClockOffset
from gateway.ratelimit.gcra import Decision, Lease, LimitPlan, decide
from gateway.ratelimit.local import LocalLimiter
from gateway.ratelimit.lua import CHECK, LIMITER_LUA, RELEASE, RENEW
from gateway.redisconn.batch import ScriptBatcher
from gateway.redisconn.client import RedisClient, connect_redis, error_kind, make_redis_client
from gateway.server.admission import overloaded

__all__ = ["RedisClient", "RedisRateLimiter", "connect_redis", "error_kind", "make_redis_client"]

log = logging.getLogger("gateway.ratelimit")

Status = Literal["allowed", "rate", "concurrency"]
FailMode = Literal["open", "closed", "local"]
_STATUS: dict[str, Status] = {"1": "allowed", "0": "rate", "2": "concurrency"}
_EXPIRED = "3"
#: After a Redis failure, calls skip Redis for this long (seconds).
RETRY_S = 0.5
#: A request Redis's last answers refuse by more than this is refused without asking (µs).
KNOWN_REFUSAL_MARGIN_US = 50_000
DecisionHook = Callable[[Decision, float], None]
ErrorHook = Callable[[str], None]
_ERRORS = (RedisError, OSError, TimeoutError)


def _unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "Rate limiting is temporarily unavailable; retry shortly.",
        code="rate_limiter_unavailable",
        headers={"Retry-After": "1"},
    )


class ScriptExpiredError(TimeoutError):
    """The script ran after its deadline (Redis stopped or busy): it changed nothing."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisRateLimiter:
    """Implements the limiter port over one Redis (or one Cluster slot per call)."""

    def __init__(
        self,
        client: RedisClient,
        *,
        fail_mode: FailMode = "closed",
        replicas: int = 1,
        budget_s: float = 0.1,
        lease_ttl_s: float = 30.0,
        shadow: bool = False,
        on_decision: DecisionHook | None = None,
        on_error: ErrorHook | None = None,
        on_deadline: Callable[[], None] | None = None,
        allow_clock_override: bool = False,
    ) -> None:
        if not 0 < budget_s <= 5:
            raise ValueError("budget_s must be in (0, 5]")
        if not 0 < lease_ttl_s <= 86400:
            raise ValueError("lease_ttl_s must be in (0, 86400]")
        self._budget_s = budget_s
        self._budget_us = round(budget_s * 1_000_000)
        #: A timeout that fires this much after the budget means our own loop was late.
        self._late_s = max(0.05, budget_s / 2)
        self._lease_ttl_us = round(lease_ttl_s * 1_000_000)
        self._shadow = shadow
        self._on_decision = on_decision
        self._on_error = on_error
        self._on_deadline = on_deadline
        self._allow_clock_override = allow_clock_override
        #: Decides while Redis cannot: the full limits (open) or this replica's share (local).
        self.local = (
            None
            if fail_mode == "closed"
            else LocalLimiter(
                replicas if fail_mode == "local" else 1, lease_ttl_us=self._lease_ttl_us
            )
        )
        self.client = client
        #: Every decision, release and renewal: one script call per loop iteration (per slot).
        self.batch = ScriptBatcher(client, LIMITER_LUA, budget_s=budget_s)
        self._degraded = False
        self._clock = ClockOffset()
        self._skip_until = float("-inf")
        self._last_ok = float("-inf")
        self._last_log = float("-inf")
        #: Requests this replica decided alone because Redis failed or the deadline fired.
        self.local_decisions_total = 0
        self.errors_total = 0
        self.deadlines_total = 0
        #: Refusals answered from Redis's last answers, without a call.
        self.known_refusals_total = 0
        #: The kind of the last Redis failure (``error_kind``), None once a call succeeds.
        self.last_error: str | None = None

    @property
    def degraded(self) -> bool:
        """True while Redis calls fail (not while this process is merely too busy)."""
        return self._degraded

    @property
    def healthy(self) -> bool:
        return not self._degraded

    def _now_arg(self, now_us: int | None) -> str:
        if now_us is None:
            return ""
        if not self._allow_clock_override:
            raise ValueError("clock override is for tests: pass allow_clock_override=True")
        return str(int(now_us))

    @staticmethod
    def _local_now() -> int:
        return time.monotonic_ns() // 1000

    def _deadline_arg(self, sent_us: int, now_override: int | None) -> str:
        """'' until Redis's clock is known (or with a test clock)."""
        deadline = self._clock.deadline(sent_us, self._budget_us)
        return "" if now_override is not None or deadline is None else str(deadline)

    async def call(self, coro: Any) -> Any:
        """One Redis call within the budget; its success clears ``degraded``."""
        async with asyncio.timeout(self._budget_s):
            result = await coro
        self._succeeded()
        return result

    async def _run(self, kind: str, keys: list[str], args: list[str | int]) -> Any:
        """One operation of the limiter script, batched, within the budget."""
        result = await self.batch.run(kind, keys, args)
        self._succeeded()
        return result

    async def aclose(self) -> None:
        """Send the operations still queued (a release: never lost on shutdown)."""
        await self.batch.aclose()
        log.info(
            "rate limiter: %d operations in %d script calls",
            self.batch.ops_total,
            self.batch.calls_total,
        )

    def _succeeded(self) -> None:
        self._degraded = False
        self.last_error = None
        self._last_ok = time.monotonic()
        self._skip_until = float("-inf")

    def _was_ours(self, started: float) -> bool:
        """A timeout while Redis answered other calls, or one the loop noticed far too late,
        measures this process's load, not Redis's health."""
        return self._last_ok > started or time.monotonic() - started > self._budget_s + self._late_s

    def failed(self, exc: BaseException, what: str, request_id: str, started: float) -> str:
        """Record a failed call; return its kind (``deadline`` when it was our own delay)."""
        kind = error_kind(exc)
        if isinstance(exc, ScriptExpiredError) or (kind == "timeout" and self._was_ours(started)):
            kind = "deadline"
            self.deadlines_total += 1
        else:
            self._degraded = True
            self.errors_total += 1
            self.last_error = kind
            self._skip_until = time.monotonic() + RETRY_S
        now = time.monotonic()
        if now - self._last_log >= 1.0:  # at most one line a second: failures come in floods
            self._last_log = now
            log.warning(
                "rate limiter %s failed (%s): %r", what, kind, exc, extra={"request_id": request_id}
            )
        try:
            if kind == "deadline" and self._on_deadline is not None:
                self._on_deadline()
            elif kind != "deadline" and self._on_error is not None:
                self._on_error(kind)
        except Exception:
            log.exception("rate limit hook failed")
        return kind

    async def check(
        self, plan: LimitPlan, request_id: str, *, now_us: int | None = None
    ) -> Decision:
        """Decide ``plan`` atomically; ``now_us`` (µs) overrides Redis's clock, tests only."""
        started = time.monotonic()
        if plan.empty:
            return Decision(True)
        args: list[str | int] = [self._now_arg(now_us), len(plan.rules)]
        for spec in plan.rules:
            args += [spec.emission_us, spec.tolerance_us, spec.cost]
        member = ""
        if plan.concurrency is not None:
            member = os.urandom(16).hex()  # 128 random bits, as unique as a uuid4's 122
            args += [plan.concurrency.limit, self._lease_ttl_us, member]
        known = None
        if self.local is not None and now_us is None:
            known = self.local.known_refusal(plan, self._local_now(), KNOWN_REFUSAL_MARGIN_US)
        if known is not None:  # Redis refused this caller and would again: no round trip
            self.known_refusals_total += 1
            decision = known
        elif time.monotonic() < self._skip_until:  # Redis just failed: do not wait on it
            if self.local is None:
                raise _unavailable()
            decision = self._alone(plan, member)
        else:
            decision = await self._ask(plan, args, member, request_id, started, now_us)
        if self._shadow and not decision.allowed:
            log.info(
                "rate limit shadow refusal by %s",
                decision.limited_by,
                extra={"request_id": request_id},
            )
            decision = Decision(
                True,
                decision.limited_by,
                decision.retry_after_ms,
                decision.rules,
                degraded=decision.degraded,
                shadow=True,
            )
        if self._on_decision is not None:
            try:
                self._on_decision(decision, time.monotonic() - started)
            except Exception:
                log.exception("rate limit on_decision hook failed")
        return decision

    async def _ask(
        self,
        plan: LimitPlan,
        args: list[str | int],
        member: str,
        request_id: str,
        started: float,
        now_us: int | None,
    ) -> Decision:
        sent_us = self._local_now()
        args.append(self._deadline_arg(sent_us, now_us))
        if self.local is not None:
            self.local.begin(plan)
        try:
            reply = await self._run(CHECK, list(plan.keys), args)
            code, now, wait = _text(reply[0]), int(reply[1]), int(reply[2])
            self._clock.learn(now, sent_us, self._local_now(), force=code == _EXPIRED)
            if code == _EXPIRED:
                raise ScriptExpiredError("the limiter script ran after its deadline")
            status = _STATUS[code]
            tats = [int(t) for t in reply[3:]]
        except (*_ERRORS, KeyError, ValueError, IndexError) as exc:
            kind = self.failed(exc, "check", request_id, started)
            if self.local is None:
                raise _unavailable() from None
            self.local.end(plan)
            return self._alone(plan, member, busy=kind == "deadline")
        except BaseException:  # cancelled: the call is given up
            if self.local is not None:
                self.local.end(plan)
            raise
        # No await from here on: the answer is synced before any other call can decide alone.
        lease = Lease(plan.concurrency.key, member) if plan.concurrency else None
        decision = decide(
            plan,
            now,
            tats,
            status=status,
            concurrency_wait_us=wait,
            lease=lease if status == "allowed" else None,
        )
        if self.local is not None:  # keep the local view warm
            self.local.end(plan)
            local_now = self._local_now()
            self.local.sync(plan, tats, now, local_now)
            if decision.lease is not None:
                self.local.hold(decision.lease, local_now)
        return decision

    def _alone(self, plan: LimitPlan, member: str, *, busy: bool = False) -> Decision:
        """This replica's own decision. The same lease member as the Redis call had: if that
        call did run after all, releasing the lease frees both. When calls still pending on
        Redis may have taken what is left: 503, ``server_overloaded`` if the deadline was our
        own delay (``busy``), else ``rate_limiter_unavailable``."""
        assert self.local is not None
        self.local_decisions_total += 1
        decision = self.local.check(plan, self._local_now(), member=member)
        if decision is None:
            raise overloaded() if busy else _unavailable()
        return decision

    def release_local(self, lease: Lease) -> None:
        if self.local is not None:
            self.local.release(lease)

    def _to_free(self, lease: Lease | None) -> Lease | None:
        """Free ``lease``'s local slot; the lease if Redis holds a slot to free too (not one
        granted locally while Redis is failing)."""
        if lease is None:
            return None
        self.release_local(lease)
        return None if self._skip_redis(lease) else lease

    def _skip_redis(self, lease: Lease) -> bool:
        """A slot granted locally while Redis is failing has nothing to free there."""
        return lease.local and self._degraded

    async def release(self, lease: Lease | None) -> None:
        """Free a concurrency slot. Best effort within the budget; never raises."""
        lease = self._to_free(lease)
        if lease is None:
            return
        started = time.monotonic()
        try:
            await self._run(RELEASE, [lease.key], [lease.member])
        except _ERRORS as exc:
            self.failed(exc, "release", "", started)

    def release_soon(self, lease: Lease | None) -> None:
        """Free a concurrency slot without waiting for Redis: the release is queued for this
        loop iteration's script call (``ScriptBatcher.submit``), so the request's task ends
        at once. It is sent whatever becomes of that task, and at shutdown (``aclose``); a
        failure is recorded like any other (log, ``on_error``), and the lease TTL bounds a
        release that is lost. Never raises."""
        lease = self._to_free(lease)
        if lease is None:
            return
        started = time.monotonic()

        def failed(exc: BaseException) -> None:
            self.failed(exc, "release", "", started)

        self.batch.submit(RELEASE, [lease.key], [lease.member], failed)

    async def renew(self, lease: Lease | None) -> None:
        """Extend a lease to a full TTL from now (long streams). Never raises."""
        await self.renew_held(lease)

    async def renew_held(self, lease: Lease | None, *, now_us: int | None = None) -> bool:
        """``renew`` that says whether the slot is still held. Never raises.

        False when the lease already expired (or was never held) or Redis failed: the stream may
        go on, its slot is simply no longer reserved.
        """
        if lease is None:
            return False
        held_here = self.local.renew(lease, self._local_now()) if self.local else False
        if self._skip_redis(lease):
            return held_here
        args: list[str | int] = [lease.member, self._lease_ttl_us, self._now_arg(now_us)]
        started = time.monotonic()
        try:
            return bool(await self._run(RENEW, [lease.key], args) == [b"1"])
        except _ERRORS as exc:
            self.failed(exc, "renew", "", started)
            return False

    async def ping(self) -> bool:
        """True when Redis answers ``PING`` within the budget (clears ``degraded``)."""
        started = time.monotonic()
        try:
            await self.call(self.client.ping())
        except _ERRORS as exc:
            self.failed(exc, "ping", "", started)
            return False
        return True
