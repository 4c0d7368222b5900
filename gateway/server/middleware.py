"""Admission: the second middleware, before any token, body or limiter work.

A request first takes a place in the admission gate (``server.admission``): when this process
already admits ``server.max_pending_requests`` requests it is shed at once (503
``server_overloaded``). The place is given back when the rate limiter has decided (the
rate-limit middleware releases it) or, at the latest, when the request is over. Then the
request's framing is checked: its header set's size, no protocol upgrade, and an unambiguous
body framing (``policy.bodyread.check_transfer_encoding``).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.context import context_of
from gateway.errors import BadRequestError, HeadersTooLargeError
from gateway.policy.bodyread import check_transfer_encoding
from gateway.server.admission import NO_ADMISSION, Admission, overloaded


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, *, admission: Admission | None, max_header_bytes: int) -> None:
        if max_header_bytes < 1:
            raise ValueError("max_header_bytes must be >= 1")
        self.app = app
        self.admission = admission
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = context_of(scope)
        ticket = self.admission.enter() if self.admission is not None else NO_ADMISSION
        ctx.ticket = ticket
        try:
            if ticket.shed is not None:
                raise overloaded()
            headers: Sequence[tuple[bytes, bytes]] = scope["headers"]
            size, upgrade, transfer_encoding = _scan(headers)
            if size > self.max_header_bytes:
                raise HeadersTooLargeError("Request headers are too large.")
            if upgrade:
                raise BadRequestError(
                    "Protocol upgrades are not supported.", code="upgrade_refused"
                )
            if transfer_encoding:
                check_transfer_encoding(headers, scope.get("http_version", "1.1"))
            await self.app(scope, receive, send)
        finally:
            ticket.release()


def _scan(headers: Sequence[tuple[bytes, bytes]]) -> tuple[int, bool, bool]:
    """One pass over the request's headers: their size (each line as ``name: value\r\n``),
    and whether an ``Upgrade`` and a ``Transfer-Encoding`` header are among them."""
    size = 0
    upgrade = transfer_encoding = False
    for name, value in headers:
        n = len(name)
        size += n + len(value) + 4
        # Only a name of the right length is lowered and compared (most are neither).
        if n == 7:
            if name.lower() == b"upgrade":
                upgrade = True
        elif n == 17 and name.lower() == b"transfer-encoding":
            transfer_encoding = True
    return size, upgrade, transfer_encoding
