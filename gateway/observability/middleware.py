"""The first middleware: the request's context, its observation, and errors rendered once.

It puts a :class:`~gateway.context.RequestContext` in the scope (every later stage reads and
writes it), tells the observers (metrics, access log) when the request starts, when its
response starts and when it is over (a stream's first event bytes sent to the caller are
timed: ``ctx.first_event_s``), and renders every ``GatewayError`` raised by a later stage
in Azure's error shape — here and nowhere else. After the response has started the only honest
signal left is to cut the connection, so an error then is logged, never rendered.

Cancellation: only the server cancels a request's task, at the end of the SIGTERM drain
(``server.drain_timeout_s``). A started response is then cut (``server.protocol`` closes the
connection without the terminating chunk); one not started gets a 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from gateway.asgi import ASGIApp, Message, Receive, Scope, Send
from gateway.context import CONTEXT, RequestContext, current_request_id
from gateway.errors import ClientGoneError, GatewayError, ServiceUnavailableError
from gateway.upstream.headers import request_id_from

log = logging.getLogger("gateway.proxy")


class Observer(Protocol):
    """Sees every request's life (metrics and the access log attach here).

    ``request_started`` when it arrives; ``response_started`` when its response headers are
    sent (``ctx.stream`` is known then); ``request_finished`` once, at the end, whatever
    happened. Observers must not raise.
    """

    def request_started(self, ctx: RequestContext) -> None: ...
    def response_started(self, ctx: RequestContext) -> None: ...
    def request_finished(self, ctx: RequestContext) -> None: ...


class Observers:
    """Fans the observer calls out to each observer (each must not raise)."""

    def __init__(self, *observers: Observer) -> None:
        self._observers = observers
        # Each hook's bound methods, looked up once (three lookups per observer per request).
        self._started = tuple(o.request_started for o in observers)
        self._responded = tuple(o.response_started for o in observers)
        self._finished = tuple(o.request_finished for o in observers)

    def request_started(self, ctx: RequestContext) -> None:
        for hook in self._started:
            hook(ctx)

    def response_started(self, ctx: RequestContext) -> None:
        for hook in self._responded:
            hook(ctx)

    def request_finished(self, ctx: RequestContext) -> None:
        for hook in self._finished:
            hook(ctx)


class InFlight:
    """Counts the requests being served (an observer; tests and the drain read ``count``)."""

    def __init__(self) -> None:
        self.count = 0

    def request_started(self, ctx: RequestContext) -> None:
        self.count += 1

    def response_started(self, ctx: RequestContext) -> None:
        return None

    def request_finished(self, ctx: RequestContext) -> None:
        self.count -= 1


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, observer: Observer, overhead_header: bool = False) -> None:
        self.app = app
        self.observer = observer
        self.overhead_header = overhead_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = RequestContext(request_id=request_id_from(scope["headers"]), method=scope["method"])
        scope[CONTEXT] = ctx
        current_request_id.set(ctx.request_id)  # this request's task: every log line has it
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                ctx.status = message["status"]
                if self.overhead_header and ctx.upstream_started is not None:
                    ms = f"{ctx.overhead_seconds() * 1000:.2f}".encode()
                    message["headers"] = [*message["headers"], (b"x-gateway-overhead-ms", ms)]
                await send(message)
                self.observer.response_started(ctx)
                return
            if ctx.stream and ctx.first_event_s is None and message.get("body"):
                ctx.first_event_s = ctx.elapsed()  # the time to first event, as sent
            await send(message)

        self.observer.request_started(ctx)
        try:
            await self.app(scope, receive, tracked_send)
        except ClientGoneError:
            ctx.client_disconnected = True
            ctx.status = ctx.status or 499
        except asyncio.CancelledError:
            ctx.reason = "drain"
            log.warning("request cut at the end of the drain (status %s)", ctx.status or 503)
            if started:
                ctx.stream_cut = True
            else:
                await _send_error(
                    ctx, ServiceUnavailableError("The gateway is shutting down."), send
                )
            raise
        except GatewayError as exc:
            ctx.reason = getattr(exc, "reason", None) or exc.code
            if started:
                log.warning("error after response start", extra={"request_id": ctx.request_id})
            else:
                await _send_error(ctx, exc, send)
        except Exception:
            log.exception("unhandled error", extra={"request_id": ctx.request_id})
            ctx.reason = "internal_error"
            if not started:
                await _send_error(ctx, GatewayError("Internal gateway error."), send)
        finally:
            ctx.ended = time.perf_counter()  # every observer's durations end here
            self.observer.request_finished(ctx)


async def _send_error(ctx: RequestContext, exc: GatewayError, send: Send) -> None:
    body = exc.render()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", ctx.request_id.encode()),
        *[(k.lower().encode(), v.encode()) for k, v in exc.headers.items()],
    ]
    ctx.status = exc.status
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
