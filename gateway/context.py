"""The typed per-request context: what each stage decided, for the next stages, logs, metrics
and headers. One travels in every request's scope (``scope[CONTEXT]``, ``context_of``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.asgi import Scope
from gateway.auth.caller import Caller

if TYPE_CHECKING:
    from gateway.operations.table import OperationMatch
    from gateway.ratelimit.gcra import Decision
    from gateway.server.admission import Ticket

#: The scope key of the request's context (set by ``RequestContextMiddleware``).
CONTEXT = "gateway.context"

#: The id of the request being served in this task (and the tasks it starts): set once per
#: request by the request-context middleware, read by the JSON log formatter, so every log
#: line written while a request is served carries its id. uvicorn runs each request in its own
#: task, whose context is a copy: the value never leaks into another request.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


class UploadStream(Protocol):
    """A request body streamed to Azure as the caller sends it (``policy.uploads.UploadBody``):
    what the forwarder needs of it."""

    #: The upstream ``Content-Type`` (the body is re-emitted with the gateway's boundary).
    @property
    def content_type(self) -> bytes: ...

    #: Why the body stopped before its end (raised out of the iterator; None: it did not).
    failure: Exception | None

    def length(self) -> int | None:
        """The exact upstream length, or None (sent chunked)."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...


@dataclass(slots=True)
class RequestContext:
    request_id: str
    method: str
    started: float = field(default_factory=time.perf_counter)
    #: The matched operation's name (``unmatched`` until the operation middleware has run).
    operation: str = "unmatched"
    op_class: str = "none"
    caller: Caller | None = None
    status: int = 0
    #: Stable reason code of a refusal (``errors.GatewayError.code`` or an auth reason).
    reason: str | None = None
    stream: bool = False
    #: Seconds from arrival until a streamed response's first event bytes were sent to the
    #: caller (None: not a stream, or nothing of it sent).
    first_event_s: float | None = None
    upstream_request_id: str | None = None
    #: Seconds spent per stage (``auth``, ``policy``, ``ratelimit``, ``upstream_ttfb``, ...).
    stages: dict[str, float] = field(default_factory=dict)
    upstream_started: float | None = None
    upstream_finished: float | None = None
    #: When the request was over (``time.perf_counter``; set by the request-context middleware
    #: before the observers' ``request_finished``; None: still being served). Every duration
    #: read after it (the access line's, the metrics') ends there: one clock read, one value.
    ended: float | None = None
    stream_cut: bool = False
    client_disconnected: bool = False
    #: The limiter rule that refused the request (``ratelimit.Decision.limited_by``, one of
    #: ``ratelimit.RATELIMIT_REASONS``); ``reason`` then holds the 429's error code.
    ratelimit_rule: str | None = None
    # What the pipeline's stages hand on, in order:
    #: The request's place in the admission gate (released once the limiter has decided).
    ticket: Ticket | None = None
    #: The operation row matched, its api-version, ids, query and upstream target.
    match: OperationMatch | None = None
    #: The caller's profile (``config.Profile``).
    profile: Any = None
    #: The rate limiter's decision (None: no limits apply).
    decision: Decision | None = None
    #: The validated body to forward (None: none).
    body: dict[str, Any] | None = None
    #: The owner digest of the object the request acts on or creates (None: not owned).
    owner: str | None = None
    #: The Azure backend the request goes to (``upstream.backends``; None: the first, or the
    #: only one) and whether it is that backend's half-open probe (set by the ownership
    #: middleware: the object's home, its references' home, or the routing choice).
    backend: str | None = None
    backend_probe: bool = False
    #: A file upload's body, streamed to Azure as the caller sends it (``policy.uploads``;
    #: None: not an upload, the body is ``body``).
    upload: UploadStream | None = None

    def _now(self) -> float:
        ended = self.ended
        return time.perf_counter() if ended is None else ended

    def elapsed(self) -> float:
        return self._now() - self.started

    def upstream_seconds(self) -> float:
        return self.durations()[2]

    def overhead_seconds(self) -> float:
        """Total time minus time spent waiting on Azure."""
        return self.durations()[1]

    def durations(self) -> tuple[float, float, float]:
        """``(elapsed, overhead, upstream)`` seconds, read at one instant (``ended`` once the
        request is over): what ``elapsed``, ``overhead_seconds`` and ``upstream_seconds``
        return then, with one clock read."""
        now = self._now()
        elapsed = now - self.started
        start = self.upstream_started
        if start is None:
            return elapsed, max(0.0, elapsed), 0.0
        upstream = (self.upstream_finished or now) - start
        return elapsed, max(0.0, elapsed - upstream), upstream


def context_of(scope: Scope) -> RequestContext:
    """The request's context (the request-context middleware runs first)."""
    ctx: RequestContext = scope[CONTEXT]
    return ctx
