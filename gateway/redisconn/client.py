"""The one Redis client the limiter and the ownership store share (redis-py asyncio adapter).

Built once by the composition root with explicit timeouts and no retries; ``error_kind`` is
the one translation of redis-py's errors into bounded kinds (metrics, readiness).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("gateway.ratelimit")
_ACL_REFUSAL = re.compile(r"NOPERM|no permissions|can't run this command|can't access", re.I)

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
    """A client for the limiter and the ownership records: explicit timeouts, no retries, a
    bounded pool, and nothing sent on connect beyond ``AUTH`` (RESP2: no ``HELLO``; no
    ``CLIENT SETNAME``/``SETINFO``), so the README's ACL user can run it.

    The pool blocks (up to the socket timeout, and always within the limiter's budget) when
    every connection is busy, rather than failing at once: a burst of requests larger than
    the pool must not turn into local decisions. With ``cluster`` the client speaks the
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
        "protocol": 2,
        "driver_info": None,
    }
    if cluster:
        return redis.asyncio.RedisCluster.from_url(url, **settings)
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, timeout=socket_timeout_s, **settings)
    return redis.asyncio.Redis.from_pool(pool)


async def connect_redis(client: RedisClient) -> None:
    """Discover a cluster's nodes before traffic arrives (a no-op for a single Redis)."""
    if isinstance(client, redis.asyncio.RedisCluster):
        try:
            await client.initialize()
        except (RedisError, OSError) as exc:
            log.warning("redis cluster not reachable at start-up: %s", type(exc).__name__)


def error_kind(exc: BaseException) -> str:
    """``refused`` (ACL or credentials: a misconfiguration), ``timeout``, ``connection``,
    ``response`` or ``other``."""
    if isinstance(
        exc,
        redis.exceptions.NoPermissionError
        | redis.exceptions.AuthenticationError
        | redis.exceptions.AuthorizationError
        | redis.exceptions.AuthenticationWrongNumberOfArgsError,
    ):
        return "refused"
    if isinstance(exc, redis.exceptions.ResponseError) and _ACL_REFUSAL.search(str(exc)):
        return "refused"  # an ACL refusal inside a script (its wording varies by version)
    if isinstance(exc, TimeoutError | redis.exceptions.TimeoutError):
        return "timeout"
    if isinstance(exc, redis.exceptions.ConnectionError | OSError):
        return "connection"
    if isinstance(exc, redis.exceptions.ResponseError):
        return "response"
    return "other"
