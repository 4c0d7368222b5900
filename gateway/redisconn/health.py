"""Readiness of the Redis dependencies: the rate limiter and the thread-ownership store.

Each readiness call runs, on probe keys, every command the gateway sends to Redis for that
dependency (the limiter's :func:`probe_limiter`; for
ownership ``SET``/``GET``/``DEL`` of ``gw:own:{probe}``, a key no thread id can take), each
within the limiter's budget, both at once. Per dependency the check reads:

* ``ok``: every command worked;
* ``refused``: Redis refused a command or the credentials (an ACL ``NOPERM``, ``WRONGPASS``,
  ``NOAUTH``): a misconfiguration no retry fixes, so the replica is **not ready**, whatever
  ``fail_mode`` says (a rollout with a wrong ACL must not pass);
* ``unavailable``: Redis unreachable or timing out. Not ready only when the limiter runs with
  ``fail_mode = "closed"`` (every limited request would get 503); with ``open``/``local``
  the replica still serves, degraded (limits decided locally; thread routes whose owner is
  not cached answer 503, as they would on every replica);
* ``slow``: the probe ran past the budget while this process was too busy to read the answer
  (``deadline``): not a Redis failure, ready.

``redis`` in the checks is the worst of the two. The ``gateway_dependency_up`` gauge is 0
while a dependency's last calls failed: the limiter's own calls (every request's, and the
probe's), the ownership store's last probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from redis.exceptions import RedisError

from gateway.ownership.rules import owner_key
from gateway.ratelimit.gcra import Rate
from gateway.ratelimit.lua import CHECK, RELEASE, RENEW
from gateway.ratelimit.redis_limiter import RedisRateLimiter
from gateway.redisconn.batch import Op
from gateway.redisconn.client import RedisClient, error_kind

log = logging.getLogger("gateway.redis_health")

OWNERSHIP_PROBE_KEY = owner_key("probe")
#: Keys the limiter's probe runs the scripts on (one slot; they expire within seconds).
LIMITER_PROBE_KEY = "gw:rl:{probe}:r"
LIMITER_PROBE_LEASES = "gw:rl:{probe}:cc"
PROBE_RATE = Rate(1000, 1, 1000)
PROBE_LEASE_TTL_US = 1_000_000
_ORDER = ("ok", "slow", "unavailable", "refused")
DEPENDENCIES = ("rate_limiter", "ownership_store")


def check_value(kind: str) -> str:
    """A probe's result (``ok``, ``deadline`` or an ``error_kind``) as a readiness check."""
    if kind in ("ok", "refused"):
        return kind
    return "slow" if kind == "deadline" else "unavailable"


async def probe_limiter(limiter: RedisRateLimiter) -> str:
    """Run every command the limiter sends, on probe keys that expire at once: its script
    with every kind of operation (so ``EVALSHA``, ``SCRIPT LOAD`` after ``NOSCRIPT``, and each
    command the script calls, which Redis checks against the ACL): two decisions (the second
    finds the single slot taken: ``ZRANGE``), a renewal and two releases; then ``PING``.
    Returns ``ok``, ``deadline`` (our own delay), or the failure's ``error_kind``."""
    members = (uuid.uuid4().hex, uuid.uuid4().hex)
    keys = [LIMITER_PROBE_KEY, LIMITER_PROBE_LEASES]
    rule = [1, PROBE_RATE.emission_us, PROBE_RATE.tolerance_us, 1]
    ops = [Op(CHECK, keys, ["", *rule, 1, PROBE_LEASE_TTL_US, member, ""]) for member in members]
    ops.append(Op(RENEW, [LIMITER_PROBE_LEASES], [members[0], PROBE_LEASE_TTL_US, ""]))
    ops += [Op(RELEASE, [LIMITER_PROBE_LEASES], [member]) for member in members]
    started = time.monotonic()
    try:
        for reply in await limiter.call(limiter.batch.execute(ops)):
            if isinstance(reply, BaseException):
                raise reply
        await limiter.call(limiter.client.ping())
    except (RedisError, OSError, TimeoutError) as exc:
        return limiter.failed(exc, "probe", "", started)
    return "ok"


class RedisHealth:
    def __init__(
        self,
        *,
        limiter: RedisRateLimiter | None,
        ownership: RedisClient | None,
        budget_s: float,
        fail_closed: bool,
    ) -> None:
        self.limiter = limiter
        self.ownership = ownership
        self.budget_s = budget_s
        self.fail_closed = fail_closed
        #: The last check per configured dependency (``ok`` until the first probe).
        self.last: dict[str, str] = {}
        if limiter is not None:
            self.last["rate_limiter"] = "ok"
        if ownership is not None:
            self.last["ownership_store"] = "ok"

    def up(self, dependency: str) -> bool:
        """False while the dependency's last calls failed (the limiter's live calls count)."""
        if dependency == "rate_limiter" and self.limiter is not None:
            return self.limiter.healthy
        return self.last.get(dependency) in ("ok", "slow")

    async def _probe_ownership(self, client: RedisClient) -> str:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.budget_s):
                await client.set(OWNERSHIP_PROBE_KEY, "probe", ex=10)
                await client.get(OWNERSHIP_PROBE_KEY)
                await client.delete(OWNERSHIP_PROBE_KEY)
        except (RedisError, OSError, TimeoutError) as exc:
            kind = error_kind(exc)
            if kind == "timeout" and time.monotonic() - started > self.budget_s * 1.5 + 0.05:
                return "deadline"
            return kind
        return "ok"

    async def checks(self) -> tuple[bool, dict[str, str]]:
        """``(ready, checks)`` for the Redis dependencies (empty when none is configured)."""
        names, probes = [], []
        if self.limiter is not None:
            names.append("rate_limiter")
            probes.append(probe_limiter(self.limiter))
        if self.ownership is not None:
            names.append("ownership_store")
            probes.append(self._probe_ownership(self.ownership))
        if not names:
            return True, {}
        results = await asyncio.gather(*probes)
        checks = {name: check_value(kind) for name, kind in zip(names, results, strict=True)}
        for name, value in checks.items():
            if value == "refused" and self.last.get(name) != "refused":
                log.error(
                    "Redis refuses the gateway's commands for the %s (ACL or "
                    "credentials): see the README's ACL SETUSER line",
                    name,
                )
            self.last[name] = value
        ready = "refused" not in checks.values() and not (
            self.fail_closed and checks.get("rate_limiter") == "unavailable"
        )
        checks["redis"] = max(checks.values(), key=_ORDER.index)
        return ready, checks
