"""Operation and permission: the request target matched against the operation table (the row,
its api-version, its validated ids and query, the upstream target built from them), then the
caller's profile must allow that operation (403 ``operation_not_allowed``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.context import context_of
from gateway.errors import PermissionDeniedError
from gateway.operations.table import OperationTable


class OperationMiddleware:
    def __init__(self, app: ASGIApp, *, table: OperationTable, profiles: Mapping[str, Any]) -> None:
        self.app = app
        self.table = table
        self.profiles = profiles

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = context_of(scope)
        match = self.table.match(
            scope["method"],
            scope.get("raw_path") or scope["path"].encode(),
            scope.get("query_string", b""),
        )
        row = match.row
        ctx.match, ctx.operation, ctx.op_class = match, row.name, row.op_class
        assert ctx.caller is not None  # authentication runs first
        profile = self.profiles[ctx.caller.profile]
        ctx.profile = profile
        if not profile.allows(row.name):
            raise PermissionDeniedError(
                f"Your profile does not allow the operation {row.name}.",
                code="operation_not_allowed",
            )
        await self.app(scope, receive, send)
