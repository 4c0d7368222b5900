"""Body policy: the bounded body (``bodyread``), strict JSON (``jsonbody``) and the profile's
policy for the operation (the row's checker, ``checks``). What is forwarded is the validated,
re-serialised object in ``ctx.body``, never the caller's bytes.

A file upload (the row's ``upload``) is not read whole: its head is checked here and the rest
streams to Azure through ``ctx.upload`` (``uploads``), re-emitted by the multipart rewriter."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.context import context_of
from gateway.errors import BadRequestError
from gateway.operations.table import OperationMatch
from gateway.policy.bodyread import body_headers, length_of, receive_body, within_limit
from gateway.policy.checks import check_body
from gateway.policy.jsonbody import parse_json_object
from gateway.policy.limits import effective_limits
from gateway.policy.uploads import read_upload_head


class PolicyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_s: float,
        upload_timeout_s: float = 900.0,
    ) -> None:
        if max_body_bytes < 1 or body_timeout_s <= 0 or upload_timeout_s <= 0:
            raise ValueError("max_body_bytes and the body timeouts must be positive")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.upload_timeout_s = upload_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = context_of(scope)
        assert ctx.match is not None  # the operation middleware runs first
        headers: Sequence[tuple[bytes, bytes]] = scope["headers"]
        started = time.perf_counter()
        if ctx.match.row.upload:
            ctx.upload = await read_upload_head(
                receive,
                headers,
                effective_limits(ctx.profile.policy),
                idle_timeout_s=self.body_timeout_s,
                total_timeout_s=self.upload_timeout_s,
                owner=lambda: ctx.owner,
            )
            ctx.stages["policy"] = time.perf_counter() - started
            await self.app(scope, receive, send)
            return
        lengths, content_type = body_headers(headers)
        within_limit(length_of(lengths), self.max_body_bytes)
        raw = await receive_body(
            receive, max_bytes=self.max_body_bytes, timeout_s=self.body_timeout_s
        )
        body = _checked(ctx.match, raw, content_type, ctx.profile.policy)
        ctx.body = body
        ctx.stages["policy"] = time.perf_counter() - started
        ctx.stream = ctx.match.wants_stream(body)
        await self.app(scope, receive, send)


def _checked(
    match: OperationMatch, raw: bytes, content_type: list[bytes], limits: Any
) -> dict[str, Any] | None:
    row = match.row
    if not raw:
        if row.has_body:
            raise BadRequestError("A JSON request body is required.", code="invalid_body")
        return check_body(row.body, match.version, None, limits)
    if len(content_type) > 1:
        raise BadRequestError("Content-Type given more than once.", code="invalid_header")
    parsed = parse_json_object(raw, content_type[0].decode("latin-1") if content_type else None)
    return check_body(row.body, match.version, parsed, limits)
