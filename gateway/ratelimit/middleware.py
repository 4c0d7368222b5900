"""Rate limit: one decision per request for every rule that applies (caller, tenant, global,
concurrency), before the body is read.

* Refused → 429 with ``Retry-After``/``retry-after-ms`` (``gcra.refusal_error``).
* Admitted → the admission place is given back (what follows is bounded elsewhere); a held
  concurrency slot is renewed for as long as the request lives (the lease TTL exists only for
  crashed replicas) and released when it is over: the release is queued for the limiter's
  next Redis call, not waited for (the request's task ends at once; a lost release is
  bounded by the lease TTL).
* The response carries the gateway's limit headers instead of Azure's ``x-ratelimit-*``, which
  describe the shared key — unless the decision was degraded (made without Redis).
* On Redis Cluster the global ceiling lives in its own slot: a second call.
"""

from __future__ import annotations

import time
from typing import NoReturn, Protocol

from gateway.asgi import ASGIApp, Message, Receive, Scope, Send
from gateway.context import RequestContext, context_of
from gateway.ratelimit import gcra
from gateway.ratelimit.gcra import Decision, Lease, LimitPlan, Rate
from gateway.ratelimit.keeper import LeaseKeeper


class Limiter(Protocol):
    async def check(self, plan: LimitPlan, request_id: str) -> Decision: ...
    def release_soon(self, lease: Lease) -> None: ...
    async def renew(self, lease: Lease) -> None: ...


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: Limiter | None,
        global_rate: Rate | None = None,
        cluster: bool = False,
        keeper: LeaseKeeper | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.global_rate = global_rate
        self.cluster = cluster
        if limiter is not None and keeper is None:
            raise ValueError("a limiter needs the lease keeper that renews its leases")
        self.keeper = keeper
        self.plans = gcra.PlanCache(global_rate, cluster=cluster)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = context_of(scope)
        if self.limiter is None:
            if ctx.ticket is not None:
                ctx.ticket.release()
            await self.app(scope, receive, send)
            return
        decision = await self._decide(ctx, self.limiter)
        ctx.decision = decision
        if ctx.ticket is not None:
            ctx.ticket.release()  # past admission: the body, Azure and the relay are bounded
        lease = decision.lease if decision is not None else None
        if lease is not None:
            assert self.keeper is not None
            self.keeper.hold(lease)  # renewed for as long as the request lives
        try:
            if decision is None or decision.degraded:
                await self.app(scope, receive, send)
            else:
                await self.app(scope, receive, _with_limit_headers(send, decision))
        finally:
            if lease is not None:
                assert self.keeper is not None
                self.keeper.drop(lease)  # no renewal from now on
                self.limiter.release_soon(lease)  # sent even if this task is cancelled

    async def _decide(self, ctx: RequestContext, limiter: Limiter) -> Decision | None:
        assert ctx.caller is not None and ctx.match is not None
        started = time.perf_counter()
        plan = self.plans.plan(ctx.caller, ctx.match.row.op_class, ctx.profile.rate_limit)
        decision = None if plan.empty else await limiter.check(plan, ctx.request_id)
        if decision is not None and not decision.allowed:
            _refuse(ctx, decision)
        if self.cluster and self.global_rate is not None:
            ceiling = await limiter.check(gcra.plan_global(self.global_rate), ctx.request_id)
            if not ceiling.allowed:
                if decision is not None and decision.lease is not None:
                    limiter.release_soon(decision.lease)
                _refuse(ctx, ceiling)
            decision = decision or ceiling
        ctx.stages["ratelimit"] = time.perf_counter() - started
        return decision


def _refuse(ctx: RequestContext, decision: Decision) -> NoReturn:
    ctx.reason = decision.limited_by
    ctx.ratelimit_rule = decision.limited_by
    raise gcra.refusal_error(decision)


def _with_limit_headers(send: Send, decision: Decision) -> Send:
    ours = [(k.lower().encode(), v.encode()) for k, v in gcra.response_headers(decision)]

    async def limited_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(n, v) for n, v in message["headers"] if not n.startswith(b"x-ratelimit-")]
            message["headers"] = headers + ours
        await send(message)

    return limited_send
