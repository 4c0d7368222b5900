"""Authentication: the caller's JWT becomes a ``Caller`` (``auth.authenticator``), or 401/403."""

from __future__ import annotations

import time

from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.auth.authenticator import Authenticator
from gateway.context import context_of
from gateway.upstream.headers import header_values


class AuthenticationMiddleware:
    def __init__(self, app: ASGIApp, *, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = context_of(scope)
        started = time.perf_counter()
        ctx.caller = await self.authenticator.authenticate(
            header_values(scope["headers"], b"authorization")
        )
        ctx.stages["auth"] = time.perf_counter() - started
        await self.app(scope, receive, send)
