"""The gateway's one error tree, rendered once in Azure's error shape.

Every refusal the gateway makes is a ``GatewayError``. Each carries the HTTP status to
answer with, a stable machine-readable ``code`` (also used as a bounded metric label), the
``type`` Azure/OpenAI clients expect, the offending ``param`` if any, a human message, and
any headers the response must carry (``WWW-Authenticate``, ``Retry-After``, ...).

    GatewayError
    ├── BadRequestError            400  invalid_request_error
    │   └── RequestTimeoutError    408
    ├── AuthenticationError        401  (WWW-Authenticate: Bearer error="invalid_token")
    ├── PermissionDeniedError      403
    ├── NotFoundError              404
    ├── MethodNotAllowedError      405
    ├── PayloadTooLargeError       413
    ├── UnsupportedMediaTypeError  415
    ├── HeadersTooLargeError       431
    ├── RateLimitedError           429  (Retry-After, retry-after-ms, x-should-retry)
    ├── ServiceUnavailableError    503  (our own dependency is down: JWKS, Redis, pool)
    ├── BadGatewayError            502  (upstream unreachable or misbehaving)
    └── GatewayTimeoutError        504

Library exceptions are translated into this tree in exactly one place per library
(``upstream/client.py`` for httpx, ``redisconn/client.py`` for redis, ``auth/jwks.py``
for key fetches).
Library messages never reach clients: they go to the log with the request id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    default_code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "type": self.type,
            }
        }

    def render(self) -> bytes:
        return json.dumps(self.body(), ensure_ascii=True, separators=(",", ":")).encode()

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(status={self.status}, code={self.code!r}, param={self.param!r})"


class BadRequestError(GatewayError):
    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class RequestTimeoutError(BadRequestError):
    status = 408
    default_code = "request_body_timeout"


class AuthenticationError(GatewayError):
    """401. The message never says which check failed; the reason goes to logs and metrics."""

    status = 401
    type = "authentication_error"
    default_code = "invalid_token"

    def __init__(self, reason: str, *, message: str | None = None) -> None:
        super().__init__(
            message or "Access denied: a valid bearer token for this gateway is required.",
            code="invalid_token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
        #: Fixed, bounded reason for logs and metrics (never sent to the client).
        self.reason = reason


class PermissionDeniedError(GatewayError):
    status = 403
    type = "permission_error"
    default_code = "permission_denied"


class NotFoundError(GatewayError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class MethodNotAllowedError(GatewayError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"

    def __init__(self, message: str, *, allowed: list[str]) -> None:
        super().__init__(message, headers={"Allow": ", ".join(sorted(allowed))})


class PayloadTooLargeError(GatewayError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class UnsupportedMediaTypeError(GatewayError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_media_type"


class HeadersTooLargeError(GatewayError):
    status = 431
    type = "invalid_request_error"
    default_code = "request_header_too_large"


class RateLimitedError(GatewayError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class ServiceUnavailableError(GatewayError):
    status = 503
    type = "server_error"
    default_code = "service_unavailable"


class BadGatewayError(GatewayError):
    status = 502
    type = "server_error"
    default_code = "upstream_error"


class GatewayTimeoutError(GatewayError):
    status = 504
    type = "server_error"
    default_code = "upstream_timeout"


# ---------------------------------------------------------------- not rendered
#
# Two control-flow exceptions that never become an error response: the request is over.


class ClientGoneError(Exception):
    """The client disconnected (before its body arrived, or while the gateway waited)."""


class ResponseCut(Exception):
    """A started response cannot go on honestly (an upstream body that ended abnormally, a
    streamed object that cannot be checked): the connection is cut without the terminating
    chunk, never completed with made-up bytes."""
