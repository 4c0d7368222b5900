"""The proxy pipeline as one pure-ASGI application (thin: every decision is a core call).

    admission (shed at once when overloaded) → headers → authenticate → match route
            → profile permits operation → rate limit (one Redis call) → read body (bounded)
            → strict JSON + policy → thread owned by the caller's tenant → owner stamp
            → swap credentials → Azure → record a new thread's owner, take the stamp off
            thread objects → relay status, filtered headers and raw bytes

The ownership check comes last before forwarding: on a miss of the cache and of Redis it costs
an Azure call, which only a request that passed every other check may cause.

Gateway errors before the response starts are rendered once, here, in Azure's shape. After
the response has started the only honest signal left is to cut the connection: a broken
upstream stream ends the client's stream without a terminating chunk (never a made-up
``[DONE]``). A client disconnect cancels the relay and closes the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from gateway.asgi import Message, Receive, Scope, Send
from gateway.auth.authenticator import Authenticator
from gateway.config import Config
from gateway.context import RequestContext, current_request_id
from gateway.errors import (
    BadGatewayError,
    BadRequestError,
    GatewayError,
    HeadersTooLargeError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from gateway.operations.routes import RouteMatch, RouteTable
from gateway.ownership.rules import (
    CREATES_THREAD,
    SSE_PEEK_LIMIT,
    check_owner,
    first_event_complete,
    tenant_digest,
    thread_id_from_json,
)
from gateway.ownership.stamp import (
    SseStampFilter,
    StampFilterError,
    stamp_request,
    strip_thread_json,
)
from gateway.policy.bodyread import ClientGoneError, check_transfer_encoding, read_body
from gateway.policy.checks import check_request
from gateway.policy.jsonbody import dump_json, parse_json_object
from gateway.ratelimit import gcra as ratelimit
from gateway.ratelimit.gcra import Decision, Lease
from gateway.server.admission import NO_ADMISSION, Admission, Ticket, overloaded
from gateway.upstream.client import UpstreamBrokenError, UpstreamClient, UpstreamResponse
from gateway.upstream.headers import (
    downstream_response_headers,
    header_values,
    request_id_from,
    upstream_request_headers,
)

log = logging.getLogger("gateway.proxy")


class Limiter(Protocol):
    async def check(self, plan: ratelimit.LimitPlan, request_id: str) -> Decision: ...
    async def release(self, lease: Lease) -> None: ...
    async def renew(self, lease: Lease) -> None: ...


class OwnershipStore(Protocol):
    """Who owns each thread (``ownership_lookup.ThreadOwners``): owner digests in, out."""

    async def owner(self, thread_id: str) -> str | None: ...
    async def record(self, thread_id: str, owner: str) -> bool: ...
    async def forget(self, thread_id: str) -> None: ...


#: Operations whose JSON answer is the thread object (it carries the owner stamp).
_THREAD_OBJECT = frozenset({"threads.create", "threads.retrieve", "threads.modify"})


class Observer(Protocol):
    """Sees every request's life (metrics and the access log attach here).

    ``request_started`` when it arrives; ``response_started`` when Azure's response headers
    have been relayed (``ctx.stream`` is known then); ``request_finished`` once, at the end,
    whatever happened. Observers must not raise.
    """

    def request_started(self, ctx: RequestContext) -> None: ...
    def response_started(self, ctx: RequestContext) -> None: ...
    def request_finished(self, ctx: RequestContext) -> None: ...


class NullObserver:
    def request_started(self, ctx: RequestContext) -> None:
        return None

    def response_started(self, ctx: RequestContext) -> None:
        return None

    def request_finished(self, ctx: RequestContext) -> None:
        return None


@dataclass
class ProxyDeps:
    config: Config
    routes: RouteTable
    authenticator: Authenticator
    upstream: UpstreamClient
    api_key: Callable[[], str]
    limiter: Limiter | None = None
    threads: OwnershipStore | None = None
    observer: Observer = NullObserver()
    #: Re-read the Azure key now (called when Azure refuses it: it may have been rotated).
    reload_api_key: Callable[[], object] | None = None
    #: Sheds requests before any work when this process is overloaded.
    admission: Admission | None = None


class ProxyApp:
    def __init__(self, deps: ProxyDeps) -> None:
        self.deps = deps
        self.config = deps.config
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers: Sequence[tuple[bytes, bytes]] = scope["headers"]
        ctx = RequestContext(request_id=request_id_from(headers), method=scope["method"])
        current_request_id.set(ctx.request_id)  # this request's task: every log line has it
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                ctx.status = message["status"]
            await send(message)

        admission = self.deps.admission
        ticket = admission.enter() if admission is not None else NO_ADMISSION
        self.inflight += 1
        self.deps.observer.request_started(ctx)
        try:
            if ticket.shed is not None:
                raise overloaded()
            await self._handle(ctx, scope, receive, tracked_send, ticket)
        except ClientGoneError:
            ctx.client_disconnected = True
            ctx.status = ctx.status or 499
        except asyncio.CancelledError:
            # Only the server cancels a request's task: at the end of the SIGTERM drain
            # (``server.drain_timeout_s``). A started response is cut (its connection is closed
            # without the terminating chunk, ``httpprotocol``); one not started gets a 503.
            ctx.reason = "drain"
            log.warning("request cut at the end of the drain (status %s)", ctx.status or 503)
            if started:
                ctx.stream_cut = True
            else:
                await self._send_error(
                    ctx, ServiceUnavailableError("The gateway is shutting down."), tracked_send
                )
            raise
        except GatewayError as exc:
            ctx.reason = getattr(exc, "reason", None) or exc.code
            if started:
                log.warning("error after response start", extra={"request_id": ctx.request_id})
            else:
                await self._send_error(ctx, exc, tracked_send)
        except Exception:
            log.exception("unhandled error", extra={"request_id": ctx.request_id})
            ctx.reason = "internal_error"
            if not started:
                await self._send_error(ctx, GatewayError("Internal gateway error."), tracked_send)
        finally:
            ticket.release()
            self.inflight -= 1
            self.deps.observer.request_finished(ctx)

    async def _send_error(self, ctx: RequestContext, exc: GatewayError, send: Send) -> None:
        body = exc.render()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", ctx.request_id.encode()),
            *[(k.lower().encode(), v.encode()) for k, v in exc.headers.items()],
        ]
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(
        self,
        ctx: RequestContext,
        scope: Scope,
        receive: Receive,
        send: Send,
        ticket: Ticket = NO_ADMISSION,
    ) -> None:
        headers: Sequence[tuple[bytes, bytes]] = scope["headers"]
        self._check_headers(headers)
        check_transfer_encoding(headers, scope.get("http_version", "1.1"))

        t0 = time.perf_counter()
        ctx.caller = await self.deps.authenticator.authenticate(
            header_values(headers, b"authorization")
        )
        ctx.stages["auth"] = time.perf_counter() - t0

        match = self.deps.routes.match(
            scope["method"],
            scope.get("raw_path") or scope["path"].encode(),
            scope.get("query_string", b""),
        )
        ctx.operation = match.operation
        ctx.op_class = match.route.op_class
        profile = self.config.profiles[ctx.caller.profile]
        if not profile.allows(match.operation):
            raise PermissionDeniedError(
                f"Your profile does not allow the operation {match.operation}.",
                code="operation_not_allowed",
            )

        decision = await self._rate_limit(ctx, match, profile.rate_limit)
        ticket.release()  # past admission: the body, Azure and the relay are bounded elsewhere
        lease = decision.lease if decision is not None else None
        # A held concurrency slot is renewed for as long as the request lives, so a live call
        # never loses it to the lease TTL (which only exists for crashed replicas).
        keeper = asyncio.ensure_future(self._keep_lease(lease)) if lease is not None else None
        try:
            t0 = time.perf_counter()
            raw = await read_body(
                receive,
                headers,
                max_bytes=self.config.server.max_body_bytes,
                timeout_s=self.config.server.body_timeout_s,
            )
            body = self._checked_body(match, raw, headers, profile.policy)
            ctx.stages["policy"] = time.perf_counter() - t0
            ctx.stream = bool(
                match.route.streams and isinstance(body, dict) and body.get("stream") is True
            )
            owner = await self._owner(ctx, match)
            body = stamp_request(match.operation, body, owner)
            await self._forward(ctx, scope, match, headers, body, decision, receive, send, owner)
        finally:
            if keeper is not None:
                keeper.cancel()
            if lease is not None and self.deps.limiter is not None:
                await self.deps.limiter.release(lease)

    async def _owner(self, ctx: RequestContext, match: RouteMatch) -> str | None:
        """The owner digest of the request's thread (checked: the caller's tenant, or an
        unknown thread ``threads.unknown`` lets through), of the thread it creates, or None."""
        threads = self.deps.threads
        assert ctx.caller is not None
        if threads is None:
            return None
        if match.operation in CREATES_THREAD:
            return tenant_digest(ctx.caller.tenant)
        thread_id = match.ids.get("thread_id")
        if thread_id is None:
            return None
        t0 = time.perf_counter()
        owner = await threads.owner(thread_id)
        check_owner(owner, ctx.caller.tenant, self.config.threads.unknown, ctx.caller.legacy_tenant)
        ctx.stages["ownership"] = time.perf_counter() - t0
        # The caller's tenant owns it: a stamp written now names the qualified tenant, also
        # for a thread whose record predates qualified tenants.
        return None if owner is None else tenant_digest(ctx.caller.tenant)

    def _check_headers(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        size = sum(len(n) + len(v) + 4 for n, v in headers)
        if size > self.config.server.max_header_bytes:
            raise HeadersTooLargeError("Request headers are too large.")
        if header_values(headers, b"upgrade"):
            raise BadRequestError("Protocol upgrades are not supported.", code="upgrade_refused")

    def _checked_body(
        self, match: RouteMatch, raw: bytes, headers: Sequence[tuple[bytes, bytes]], limits: Any
    ) -> Any:
        if not raw:
            if match.route.has_body:
                raise BadRequestError("A JSON request body is required.", code="invalid_body")
            return check_request(match.operation, match.version, None, limits)
        content_type = header_values(headers, b"content-type")
        if len(content_type) > 1:
            raise BadRequestError("Content-Type given more than once.", code="invalid_header")
        parsed = parse_json_object(raw, content_type[0].decode("latin-1") if content_type else None)
        return check_request(match.operation, match.version, parsed, limits)

    async def _rate_limit(
        self, ctx: RequestContext, match: RouteMatch, profile: ratelimit.RateLimitProfile
    ) -> Decision | None:
        limiter = self.deps.limiter
        if limiter is None or not self.config.rate_limit.enabled:
            return None
        assert ctx.caller is not None
        cluster = self.config.redis.cluster
        global_rate = self.config.rate_limit.global_rate
        t0 = time.perf_counter()
        plan = ratelimit.plan(
            ctx.caller, match.route.op_class, profile, global_rate, cluster=cluster
        )
        decision = None if plan.empty else await limiter.check(plan, ctx.request_id)
        if decision is not None and not decision.allowed:
            self._refuse(ctx, decision)
        if cluster and global_rate is not None:
            # On Redis Cluster the global key lives in its own slot: a second call.
            ceiling = await limiter.check(ratelimit.plan_global(global_rate), ctx.request_id)
            if not ceiling.allowed:
                if decision is not None and decision.lease is not None:
                    await limiter.release(decision.lease)
                self._refuse(ctx, ceiling)
            decision = decision or ceiling
        ctx.stages["ratelimit"] = time.perf_counter() - t0
        return decision

    @staticmethod
    def _refuse(ctx: RequestContext, decision: Decision) -> NoReturn:
        ctx.reason = decision.limited_by
        ctx.ratelimit_rule = decision.limited_by
        raise ratelimit.refusal_error(decision)

    async def _forward(
        self,
        ctx: RequestContext,
        scope: Scope,
        match: RouteMatch,
        headers: Sequence[tuple[bytes, bytes]],
        body: Any,
        decision: Decision | None,
        receive: Receive,
        send: Send,
        owner: str | None,
    ) -> None:
        payload = dump_json(body) if body is not None else None
        upstream_headers = upstream_request_headers(
            headers,
            api_key=self.deps.api_key(),
            request_id=ctx.request_id,
            has_body=payload is not None,
        )
        ctx.upstream_started = time.perf_counter()
        response = await self._send_upstream(ctx, scope, match, upstream_headers, payload, receive)
        try:
            ctx.stages["upstream_ttfb"] = time.perf_counter() - ctx.upstream_started
            if response.status in (401, 403):
                log.error(
                    "Azure refused the gateway's credential (status %d)",
                    response.status,
                    extra={"request_id": ctx.request_id},
                )
                if self.deps.reload_api_key is not None:
                    self.deps.reload_api_key()
                raise BadGatewayError(
                    "The upstream service refused the gateway's credentials.",
                    code="upstream_auth_failed",
                )
            out_headers = downstream_response_headers(response.headers, request_id=ctx.request_id)
            for name, value in out_headers:
                if name == b"x-upstream-request-id":
                    ctx.upstream_request_id = value.decode("latin-1")
            if decision is not None and not decision.degraded:
                # The gateway's limits replace Azure's, which describe the shared key.
                out_headers = [(n, v) for n, v in out_headers if not n.startswith(b"x-ratelimit-")]
                out_headers += [
                    (k.lower().encode(), v.encode())
                    for k, v in ratelimit.response_headers(decision)
                ]
            if response.is_event_stream:
                ctx.stream = True
                out_headers = [
                    (n, v) for n, v in out_headers if n not in (b"content-length", b"cache-control")
                ]
                out_headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
            try:
                prefix, stamps = await self._ownership_after(ctx, match, response, owner)
            except UpstreamBrokenError:
                raise BadGatewayError("The upstream response ended abnormally.") from None
            except StampFilterError as exc:
                log.error(
                    "unreadable thread object from upstream: %s",
                    exc,
                    extra={"request_id": ctx.request_id},
                )
                raise BadGatewayError(
                    "The upstream service answered with an unreadable thread."
                ) from None
            if prefix is not None and stamps is None:  # the whole JSON body, maybe rewritten
                out_headers = [(n, v) for n, v in out_headers if n != b"content-length"]
                out_headers.append((b"content-length", str(len(prefix)).encode()))
            if self.config.server.overhead_header:
                ms = ctx.overhead_seconds() * 1000
                out_headers.append((b"x-gateway-overhead-ms", f"{ms:.2f}".encode()))
            await send(
                {"type": "http.response.start", "status": response.status, "headers": out_headers}
            )
            self.deps.observer.response_started(ctx)
            if prefix:
                await send({"type": "http.response.body", "body": prefix, "more_body": True})
            await self._relay(ctx, response, receive, send, stamps)
        finally:
            ctx.upstream_finished = time.perf_counter()
            await response.aclose()

    async def _ownership_after(
        self,
        ctx: RequestContext,
        match: RouteMatch,
        response: UpstreamResponse,
        owner: str | None,
    ) -> tuple[bytes | None, SseStampFilter | None]:
        """Record (or forget) thread ownership and take the owner stamp off thread objects,
        before the caller sees the response.

        Returns the body bytes to relay first: the whole (rewritten) JSON body, or the start
        of a stream, then the filter the rest of that stream goes through. ``(None, None)``
        leaves the response as it is."""
        threads = self.deps.threads
        operation = match.operation
        if threads is None or not 200 <= response.status < 300:
            return None, None
        if operation == "threads.delete":
            await threads.forget(match.ids["thread_id"])
            return None, None
        stamps = None
        if response.is_event_stream:
            if operation != "threads.create_and_run":
                return None, None
            stamps = SseStampFilter()
            prefix = stamps.feed(await response.read_until(first_event_complete, SSE_PEEK_LIMIT))
            thread_id = stamps.thread_id
        elif operation in _THREAD_OBJECT or operation == "threads.create_and_run":
            limit = self.config.server.max_body_bytes
            prefix = await response.read_until(lambda b: False, limit + 1)
            if len(prefix) > limit:
                raise StampFilterError("the thread object is too large")
            thread_id = thread_id_from_json(operation, prefix)
            if operation in _THREAD_OBJECT:
                prefix = strip_thread_json(prefix)
        else:
            return None, None
        if operation in CREATES_THREAD and owner is not None:
            await self._record(ctx, threads, thread_id, owner)
        return prefix, stamps

    @staticmethod
    async def _record(
        ctx: RequestContext, threads: OwnershipStore, thread_id: str | None, owner: str
    ) -> None:
        """A new thread's owner: stamped on it already, recorded in Redis for speed."""
        if thread_id is None:
            log.error(
                "the id of a new thread could not be read", extra={"request_id": ctx.request_id}
            )
            ctx.reason = "ownership_not_recorded"
        elif not await threads.record(thread_id, owner):
            log.warning(
                "owner of a new thread not recorded in Redis (it is stamped on the thread)",
                extra={"request_id": ctx.request_id},
            )

    async def _send_upstream(
        self,
        ctx: RequestContext,
        scope: Scope,
        match: RouteMatch,
        headers: list[tuple[bytes, bytes]],
        payload: bytes | None,
        receive: Receive,
    ) -> UpstreamResponse:
        """Send; for streams and reads, give up waiting for Azure's headers when the client
        goes away first. A non-idempotent call that is not streamed is let finish (bounded by
        the upstream timeouts) so Azure's state and the caller's view agree."""
        sent = self.deps.upstream.send(
            scope["method"],
            match.upstream_path,
            match.upstream_query,
            headers,
            payload,
            stream=ctx.stream,
        )
        if not ctx.stream and match.route.op_class != "read":
            return await sent
        sending = asyncio.ensure_future(sent)
        watching = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait({sending, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
        if sending in done:
            return sending.result()
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, GatewayError):
            await sending
        raise ClientGoneError

    async def _relay(
        self,
        ctx: RequestContext,
        response: UpstreamResponse,
        receive: Receive,
        send: Send,
        stamps: SseStampFilter | None = None,
    ) -> None:
        async def pump() -> None:
            async for chunk in response.iter_raw():
                if stamps is not None:
                    chunk = _filtered(stamps, chunk)
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            tail = stamps.finish() if stamps is not None else b""
            await send({"type": "http.response.body", "body": tail, "more_body": False})

        if not ctx.stream and response.has_length:
            # A body of known length (Azure's JSON answers): relay it without watching for a
            # disconnect (uvicorn drops writes to a gone client; the body is bounded).
            try:
                await pump()
            except UpstreamBrokenError as broken:
                _mark_cut(ctx, broken)
            return
        pumping = asyncio.ensure_future(pump())
        watching = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            # Per-read timeouts alone let an upstream that dribbles a byte now and then hold a
            # stream forever: the whole relay also has a deadline.
            done, _ = await asyncio.wait(
                {pumping, watching},
                timeout=self.config.upstream.stream_max_duration_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (pumping, watching):
                task.cancel()
            await asyncio.gather(pumping, watching, return_exceptions=True)
        if not done:
            ctx.stream_cut = True
            ctx.reason = "stream_deadline"
            log.warning("stream cut at its deadline", extra={"request_id": ctx.request_id})
            return
        if pumping not in done:
            ctx.client_disconnected = True
            return
        failure = pumping.exception()
        if isinstance(failure, UpstreamBrokenError):
            _mark_cut(ctx, failure)
        elif isinstance(failure, OSError):  # the server could no longer write to the client
            ctx.client_disconnected = True
        elif failure is not None:
            raise failure

    async def _keep_lease(self, lease: Lease) -> None:
        assert self.deps.limiter is not None
        interval = max(1.0, self.config.rate_limit.lease_ttl_s / 3)
        while True:
            await asyncio.sleep(interval)
            await self.deps.limiter.renew(lease)


def _filtered(stamps: SseStampFilter, chunk: bytes) -> bytes:
    """A stream chunk without the owner stamp; one that cannot be checked cuts the stream."""
    try:
        return stamps.feed(chunk)
    except StampFilterError as exc:
        raise UpstreamBrokenError(str(exc)) from None


def _mark_cut(ctx: RequestContext, broken: UpstreamBrokenError) -> None:
    """Azure's body ended abnormally after the response started: the caller's response ends
    without its terminating chunk (never a made-up completion), and it is counted."""
    ctx.stream_cut = True
    log.warning("upstream body ended abnormally: %s", broken, extra={"request_id": ctx.request_id})


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
