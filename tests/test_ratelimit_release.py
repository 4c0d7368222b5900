"""A request's concurrency slot is released off its path (``RedisRateLimiter.release_soon``):
through the real operation and rate-limit middlewares against a real redis-server, the
request's task ends without waiting for Redis's answer to the release, the slot is free in
Redis right after, the lease keeper stops renewing it, and the release is sent even when the
request's task is cancelled; a release that fails is recorded like any other Redis failure."""

from __future__ import annotations

import asyncio
import time

import redis

from gateway.asgi import Message, Receive, Scope, Send
from gateway.auth.caller import Caller
from gateway.config.profiles import Profile
from gateway.context import CONTEXT, RequestContext
from gateway.operations.middleware import OperationMiddleware
from gateway.operations.table import OperationTable
from gateway.ratelimit.gcra import Lease, Rate, RateLimitProfile
from gateway.ratelimit.keeper import LeaseKeeper
from gateway.ratelimit.middleware import RateLimitMiddleware
from gateway.ratelimit.redis_limiter import RedisRateLimiter, make_redis_client
from tests.faultproxy import delay_proxy
from tests.ratelimitcases import run
from tests.servers import RedisServer
from tests.stack import V2

CALLER = Caller(id="team-a/sa", tenant="team-a", issuer="i", subject="sa", profile="p")
TABLE = OperationTable([V2])
PATH = "/openai/threads/thread_abc"
#: Redis's replies (not the commands) come this late, through the proxy.
LATE_S = 0.4


def profile() -> Profile:
    op_class = TABLE.match("GET", PATH.encode(), f"api-version={V2}".encode()).row.op_class
    rate = Rate(1000, 3600.0, 1000)
    return Profile(
        name="p", rate_limit=RateLimitProfile(per_caller={op_class: rate}, max_concurrent=5)
    )


def request() -> tuple[Scope, RequestContext]:
    ctx = RequestContext(request_id="r1", method="GET")
    ctx.caller = CALLER
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": f"api-version={V2}".encode(),
        "headers": [],
        CONTEXT: ctx,
    }
    return scope, ctx


async def receive() -> Message:
    return {"type": "http.disconnect"}


async def send(message: Message) -> None:
    pass


def test_the_request_ends_before_redis_answers_its_release(
    redis_server: RedisServer, redis_url: str
) -> None:
    """Redis answers 0.4 s late: the decision waits for it, the release does not (before,
    the request's task waited another 0.4 s after its response for the release's reply)."""
    sync = redis.Redis.from_url(redis_url, socket_timeout=5)

    async def scenario(proxy_url: str) -> tuple[float, int, int, int]:
        client = make_redis_client(proxy_url, socket_timeout_s=3, connect_timeout_s=3)
        limiter = RedisRateLimiter(client, budget_s=3)
        keeper = LeaseKeeper(limiter.renew, every_s=60)
        responded = 0.0

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal responded
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            responded = time.monotonic()

        limited = RateLimitMiddleware(app, limiter=limiter, keeper=keeper)
        pipeline = OperationMiddleware(limited, table=TABLE, profiles={"p": profile()})
        scope, ctx = request()
        try:
            await pipeline(scope, receive, send)
            after_response = time.monotonic() - responded
            assert ctx.decision is not None and ctx.decision.lease is not None
            key = ctx.decision.lease.key
            await asyncio.sleep(0.1)  # the release's ZREM has run; its reply is still late
            held_soon = await asyncio.to_thread(sync.zcard, key)
            return after_response, keeper.held, held_soon, limiter.errors_total
        finally:
            await keeper.aclose()
            await limiter.aclose()  # waits for the release's late reply
            await client.aclose()

    with delay_proxy(redis_server.port, delay_s=LATE_S) as proxy:
        after_response, renewed, held, errors = run(lambda: scenario(proxy.url))
    sync.close()
    assert after_response < LATE_S / 4, "the request waited for Redis to answer its release"
    assert renewed == 0  # the keeper dropped it at once
    assert held == 0  # released in Redis, not only here
    assert errors == 0


def test_a_cancelled_request_still_releases_its_slot(redis_url: str) -> None:
    """The client is gone: the request's task is cancelled mid-response; its slot is freed
    in Redis all the same, without waiting for shutdown."""
    sync = redis.Redis.from_url(redis_url, socket_timeout=5)

    async def scenario() -> tuple[int, int, int]:
        client = make_redis_client(redis_url, socket_timeout_s=2, connect_timeout_s=2)
        limiter = RedisRateLimiter(client, budget_s=2)
        keeper = LeaseKeeper(limiter.renew, every_s=60)
        started = asyncio.Event()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            started.set()
            await asyncio.sleep(60)  # a long response

        limited = RateLimitMiddleware(app, limiter=limiter, keeper=keeper)
        pipeline = OperationMiddleware(limited, table=TABLE, profiles={"p": profile()})
        scope, ctx = request()
        try:
            task = asyncio.ensure_future(pipeline(scope, receive, send))
            await started.wait()
            assert ctx.decision is not None and ctx.decision.lease is not None
            key = ctx.decision.lease.key
            held_before = await asyncio.to_thread(sync.zcard, key)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.sleep(0.1)
            held_after = await asyncio.to_thread(sync.zcard, key)
            return held_before, held_after, keeper.held
        finally:
            await keeper.aclose()
            await limiter.aclose()
            await client.aclose()

    held_before, held_after, renewed = run(scenario)
    sync.close()
    assert held_before == 1
    assert held_after == 0
    assert renewed == 0


def test_a_failed_release_is_logged_and_counted() -> None:
    """Nothing waits for the release, so its failure goes where every Redis failure goes."""
    errors: list[str] = []

    async def scenario() -> int:
        client = make_redis_client(
            "redis://127.0.0.1:1/0", socket_timeout_s=0.5, connect_timeout_s=0.5
        )
        limiter = RedisRateLimiter(client, budget_s=0.5, on_error=errors.append)
        try:
            limiter.release_soon(Lease("{rl:team-a}:conc", "m1"))
            await limiter.aclose()  # sends what is queued and waits for it
            return limiter.errors_total
        finally:
            await client.aclose()

    assert run(scenario) == 1
    assert errors == ["connection"]
