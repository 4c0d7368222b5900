"""The Redis limiter: one atomic Lua script per decision, and what happens when Redis fails.

One ``EVALSHA`` per request checks every rule of a :class:`~gateway.ratelimit.LimitPlan`
(the caller's, the tenant's, the optional global ceiling) and acquires the concurrency lease,
all-or-nothing, on Redis's own clock (``TIME``), so replicas with skewed clocks agree. redis-py's
``Script`` reloads the script after ``NOSCRIPT`` (a flush or a restart). The maths is the pure
model in ``ratelimit.py``; the script returns integer microseconds as strings (Lua numbers
would be truncated).

Failure: the client has explicit short timeouts and no retries (a retried ``EVAL`` that already
ran would count a request twice), and every call is bounded by ``budget_s`` with
``asyncio.timeout``. A call that fails is never re-run. Then ``fail_open`` admits the request
with ``Decision.degraded`` set (no rate-limit headers), else ``ServiceUnavailableError`` (503,
``rate_limiter_unavailable``, ``Retry-After: 1``). redis-py errors are translated here and only
here; their text goes to the log, never to clients.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.errors import ServiceUnavailableError
from gateway.ratelimit import Decision, Lease, LimitPlan, decide
from gateway.ratelimit_local import LocalLimiter

log = logging.getLogger("gateway.ratelimit")

#: KEYS: GCRA keys (n), then the concurrency ZSET if any.
#: ARGV: now override (µs, '' = Redis TIME), n, then (T, tau, cost) per rule,
#: then (limit, lease ttl µs, lease member) if concurrency.
#: Reply: {status (1 allowed, 0 rate, 2 concurrency), now, concurrency wait, tat_1..tat_n}.
CHECK_LUA = """
local function fmt(x) return string.format('%.0f', x) end
local now
if ARGV[1] ~= '' then now = tonumber(ARGV[1]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) * 1000000 + tonumber(t[2]) end
local n = tonumber(ARGV[2])
local tats, news, ok = {}, {}, true
for i = 1, n do
  local a = 3 + (i - 1) * 3
  local emission, tau, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '')
  if tat == nil or tat < now then tat = now end
  tats[i] = tat
  news[i] = tat + cost * emission
  if news[i] - tau > now then ok = false end
end
local status, wait = 0, 0
if ok then
  status = 1
  if #KEYS > n then
    local a = 3 + n * 3
    local limit, ttl, member = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2]
    local ck = KEYS[n + 1]
    redis.call('ZREMRANGEBYSCORE', ck, '-inf', fmt(now))
    if redis.call('ZCARD', ck) >= limit then
      status = 2
      local first = redis.call('ZRANGE', ck, 0, 0, 'WITHSCORES')
      wait = tonumber(first[2]) - now
    else
      redis.call('ZADD', ck, fmt(now + ttl), member)
      redis.call('PEXPIRE', ck, math.ceil(ttl / 1000) + 1000)
    end
  end
end
local reply = {tostring(status), fmt(now), fmt(wait)}
for i = 1, n do
  if status == 1 then
    tats[i] = news[i]
    redis.call('SET', KEYS[i], fmt(news[i]), 'PX', math.ceil((news[i] - now) / 1000))
  end
  reply[3 + i] = fmt(tats[i])
end
return reply
"""

#: KEYS: the lease's ZSET. ARGV: member, ttl µs, now override. Reply: 1 renewed, 0 lease gone.
RENEW_LUA = """
local now
if ARGV[3] ~= '' then now = tonumber(ARGV[3]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) * 1000000 + tonumber(t[2]) end
local ttl = tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', now + ttl), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000) + 1000)
return 1
"""

Status = Literal["allowed", "rate", "concurrency"]
_STATUS: dict[str, Status] = {"1": "allowed", "0": "rate", "2": "concurrency"}
DecisionHook = Callable[[Decision, float], None]
ErrorHook = Callable[[str], None]


RedisClient = redis.asyncio.Redis | redis.asyncio.RedisCluster


def make_redis_client(
    url: str,
    *,
    socket_timeout_s: float,
    connect_timeout_s: float,
    max_connections: int = 64,
    health_check_interval_s: int = 30,
    cluster: bool = False,
) -> RedisClient:
    """A client for the limiter: explicit timeouts, no retries, a bounded pool.

    The pool blocks (up to the socket timeout, and always within the limiter's budget) when
    every connection is busy, rather than failing at once: a burst of requests larger than
    the pool must not turn into fail-open admissions. With ``cluster`` the client speaks the
    Redis Cluster protocol (``url`` names any node); every key of one limiter call shares a
    hash tag, so each decision is still one script on one node. Call ``connect_redis`` at
    start-up: a cluster client discovers its nodes on first use, and (without retries)
    concurrent first uses race that discovery.
    """
    settings: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": connect_timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "max_connections": max_connections,
        "health_check_interval": health_check_interval_s,
        "client_name": "gateway-ratelimit",
    }
    if cluster:
        return redis.asyncio.RedisCluster.from_url(url, **settings)
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, timeout=socket_timeout_s,
                                                         **settings)
    return redis.asyncio.Redis.from_pool(pool)


async def connect_redis(client: RedisClient) -> None:
    """Discover a cluster's nodes before traffic arrives (a no-op for a single Redis)."""
    if isinstance(client, redis.asyncio.RedisCluster):
        try:
            await client.initialize()
        except (RedisError, OSError) as exc:
            log.warning("redis cluster not reachable at start-up: %s", type(exc).__name__)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | redis.exceptions.TimeoutError):
        return "timeout"
    if isinstance(exc, redis.exceptions.ConnectionError | OSError):
        return "connection"
    if isinstance(exc, redis.exceptions.ResponseError):
        return "response"
    return "other"


class RedisRateLimiter:
    """Implements the limiter port over one Redis (or one Cluster slot per call)."""

    def __init__(
        self,
        client: RedisClient,
        *,
        fail_open: bool,
        budget_s: float = 0.1,
        lease_ttl_s: float = 30.0,
        shadow: bool = False,
        on_decision: DecisionHook | None = None,
        on_error: ErrorHook | None = None,
        allow_clock_override: bool = False,
        fallback: LocalLimiter | None = None,
    ) -> None:
        if not 0 < budget_s <= 5:
            raise ValueError("budget_s must be in (0, 5]")
        if not 0 < lease_ttl_s <= 86400:
            raise ValueError("lease_ttl_s must be in (0, 86400]")
        self._client = client
        self._fail_open = fail_open
        self._budget_s = budget_s
        self._lease_ttl_us = round(lease_ttl_s * 1_000_000)
        self._shadow = shadow
        self._on_decision = on_decision
        self._on_error = on_error
        self._allow_clock_override = allow_clock_override
        #: Decides alone, on this replica's share, while Redis cannot (``fail_mode = "local"``).
        self._fallback = fallback
        self._check = client.register_script(CHECK_LUA)
        self._renew = client.register_script(RENEW_LUA)
        self._degraded = False
        #: Requests admitted unchecked because Redis failed (fail-open).
        self.fail_open_total = 0
        self.errors_total = 0

    @property
    def degraded(self) -> bool:
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

    async def _call(self, coro: Any) -> Any:
        async with asyncio.timeout(self._budget_s):
            return await coro

    def _failed(self, exc: BaseException, what: str, request_id: str) -> None:
        kind = _error_kind(exc)
        self._degraded = True
        self.errors_total += 1
        log.warning(
            "rate limiter %s failed (%s): %r", what, kind, exc, extra={"request_id": request_id}
        )
        if self._on_error is not None:
            try:
                self._on_error(kind)
            except Exception:
                log.exception("rate limit on_error hook failed")

    async def check(
        self, plan: LimitPlan, request_id: str, *, now_us: int | None = None
    ) -> Decision:
        """Decide ``plan`` atomically; ``now_us`` (µs) overrides Redis's clock, tests only."""
        started = time.monotonic()
        if plan.empty:
            return Decision(True)
        args: list[str | int] = [self._now_arg(now_us), len(plan.rules)]
        for spec in plan.rules:
            args += [spec.rate.emission_us, spec.rate.tolerance_us, spec.cost]
        lease = None
        if plan.concurrency is not None:
            lease = Lease(plan.concurrency.key, uuid.uuid4().hex)
            args += [plan.concurrency.limit, self._lease_ttl_us, lease.member]
        try:
            reply = await self._call(self._check(keys=list(plan.keys), args=args))
            status = _STATUS[_text(reply[0])]
            now, wait = int(reply[1]), int(reply[2])
            tats = [int(t) for t in reply[3:]]
        except (RedisError, OSError, TimeoutError, KeyError, ValueError, IndexError) as exc:
            self._failed(exc, "check", request_id)
            if self._fallback is not None:
                decision = self._fallback.check(plan, time.monotonic_ns() // 1000)
            elif not self._fail_open:
                raise ServiceUnavailableError(
                    "Rate limiting is temporarily unavailable; retry shortly.",
                    code="rate_limiter_unavailable",
                    headers={"Retry-After": "1"},
                ) from None
            else:
                self.fail_open_total += 1
                decision = Decision(True, degraded=True)
        else:
            self._degraded = False
            decision = decide(
                plan,
                now,
                tats,
                status=status,
                concurrency_wait_us=wait,
                lease=lease if status == "allowed" else None,
            )
        if self._shadow and not decision.allowed:
            log.info(
                "rate limit shadow refusal by %s",
                decision.limited_by,
                extra={"request_id": request_id},
            )
            decision = Decision(
                True, decision.limited_by, decision.retry_after_ms, decision.rules,
                degraded=decision.degraded, shadow=True,
            )
        if self._on_decision is not None:
            try:
                self._on_decision(decision, time.monotonic() - started)
            except Exception:
                log.exception("rate limit on_decision hook failed")
        return decision

    async def release(self, lease: Lease | None) -> None:
        """Free a concurrency slot. Best effort within the budget; never raises."""
        if lease is None:
            return
        try:
            await self._call(self._client.zrem(lease.key, lease.member))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc, "release", "")

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
        args: list[str | int] = [lease.member, self._lease_ttl_us, self._now_arg(now_us)]
        try:
            return bool(await self._call(self._renew(keys=[lease.key], args=args)) == 1)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc, "renew", "")
            return False

    async def ping(self) -> bool:
        """Readiness: True when Redis answers within the budget (clears ``degraded``)."""
        try:
            await self._call(self._client.ping())
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc, "ping", "")
            return False
        self._degraded = False
        return True
