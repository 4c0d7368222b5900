"""One structured JSON access-log line per request (stdlib logging only).

The record's fields are written at the top level of the line beside ``level``, ``logger``
and ``message`` (``access``), as ``jsonlog.JsonFormatter`` writes ``extra={"fields": ...}``:
``jsonlog.write_fields`` puts the line straight on ``jsonlog.configure``'s handler's stream
when that handler is the only one (no ``LogRecord``: ~3 of a line's ~20 µs), else logs it.

The line carries ids, decisions and durations; never a token, key, message content or
metadata value (the context holds none of them, and the record is built from named context
fields only, never from headers, the body or a caller's claims). Fields: ``time`` (unix
seconds), ``request_id``, ``method``, ``operation``, ``status``, ``reason`` (the refusal or
error code), ``ratelimit_rule``, ``caller``, ``tenant``, ``profile``, ``stream``,
``stream_cut``, ``client_disconnected``, ``duration_ms``, ``overhead_ms``, ``upstream_ms``,
``stages_ms`` and ``upstream_request_id`` (Azure's).
"""

from __future__ import annotations

import logging
import time

from gateway.context import RequestContext
from gateway.observability import jsonlog

log = logging.getLogger("gateway.access")


def access_record(ctx: RequestContext) -> dict[str, object]:
    caller = ctx.caller
    return {
        "time": round(time.time(), 3),
        "request_id": ctx.request_id,
        "method": ctx.method,
        "operation": ctx.operation,
        "status": ctx.status,
        "reason": ctx.reason,
        "ratelimit_rule": ctx.ratelimit_rule,
        "caller": caller.id if caller else None,
        "tenant": caller.tenant if caller else None,
        "profile": caller.profile if caller else None,
        "stream": ctx.stream,
        "stream_cut": ctx.stream_cut,
        "client_disconnected": ctx.client_disconnected,
        # A stream's time to its first event (null: not a stream, or nothing of it sent).
        "first_event_ms": (
            None if ctx.first_event_s is None else round(ctx.first_event_s * 1000, 3)
        ),
        "duration_ms": round(ctx.elapsed() * 1000, 3),
        "overhead_ms": round(ctx.overhead_seconds() * 1000, 3),
        "upstream_ms": round(ctx.upstream_seconds() * 1000, 3),
        "stages_ms": {k: round(v * 1000, 3) for k, v in ctx.stages.items()},
        "upstream_request_id": ctx.upstream_request_id,
    }


class AccessLog:
    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled

    def request_started(self, ctx: RequestContext) -> None:
        return None

    def response_started(self, ctx: RequestContext) -> None:
        return None

    def request_finished(self, ctx: RequestContext) -> None:
        if self.enabled and log.isEnabledFor(logging.INFO):
            jsonlog.write_fields(log, logging.INFO, "access", access_record(ctx))
