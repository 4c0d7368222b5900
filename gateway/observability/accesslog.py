"""One structured JSON access-log line per request (stdlib logging only).

The record's fields are written at the top level of the line beside ``level``, ``logger``
and ``message`` (``access``), as ``jsonlog.JsonFormatter`` writes ``extra={"fields": ...}``.
When ``jsonlog.configure``'s handler is the only one (``jsonlog.direct_handler``) the line is
put straight on its stream (no ``LogRecord``), and ``access_line`` encodes it from the
context itself: the formatter's text byte for byte, without the record's dict, the line's
dict and the general encoder (``tests/test_accesslog.py`` checks it over generated
contexts). Else (another handler, a filter: e.g. pytest's ``caplog``) the record is logged.

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
from json.encoder import encode_basestring_ascii as _str

from gateway.context import RequestContext
from gateway.observability import jsonlog

log = logging.getLogger("gateway.access")


def access_record(ctx: RequestContext, now: float | None = None) -> dict[str, object]:
    """The line's fields (``now``: its unix time; None: the clock's)."""
    caller = ctx.caller
    elapsed, overhead, upstream = ctx.durations()
    return {
        "time": round(time.time() if now is None else now, 3),
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
        "duration_ms": round(elapsed * 1000, 3),
        "overhead_ms": round(overhead * 1000, 3),
        "upstream_ms": round(upstream * 1000, 3),
        "stages_ms": {k: round(v * 1000, 3) for k, v in ctx.stages.items()},
        "upstream_request_id": ctx.upstream_request_id,
    }


def access_line(ctx: RequestContext, now: float) -> str | None:
    """The access line's JSON text as ``jsonlog.JsonFormatter`` writes it for
    ``access_record(ctx, now)``, byte for byte, built from the context without the two dicts
    and the general encoder. None when a value is not of its field's plain type (``str`` or
    None, ``int``, ``bool``, a finite ``float``, a ``str``-keyed stage): the general encoder
    writes that line. ``ctx.ended`` set: the same durations as ``access_record``'s."""
    caller = ctx.caller
    if caller is None:
        cid = tenant = profile = None
    else:
        cid, tenant, profile = caller.id, caller.tenant, caller.profile
    status, stream, cut, gone = ctx.status, ctx.stream, ctx.stream_cut, ctx.client_disconnected
    elapsed, overhead, upstream = ctx.durations()
    at, duration = round(now, 3), round(elapsed * 1000, 3)
    overhead, upstream = round(overhead * 1000, 3), round(upstream * 1000, 3)
    first = ctx.first_event_s
    first_ms = None if first is None else round(first * 1000, 3)
    if (
        type(status) is not int
        or type(stream) is not bool
        or type(cut) is not bool
        or type(gone) is not bool
        or type(at) is not float
        or type(duration) is not float
        or type(overhead) is not float
        or type(upstream) is not float
        or (first_ms is not None and type(first_ms) is not float)
    ):
        return None
    # The encoder writes NaN and infinities as NaN, Infinity, -Infinity (repr: nan, inf).
    total = at + duration + overhead + upstream + (first_ms or 0.0)
    stages = []
    v: str | None  # each str-or-None field in turn, below
    try:
        for key, seconds in ctx.stages.items():
            ms = round(seconds * 1000, 3)
            if type(ms) is not float:
                return None
            total += ms
            stages.append(f"{_str(key)}:{ms!r}")
        if total - total != 0.0:
            return None
        return (
            f'{{"time":{at!r},"level":{_str(logging.getLevelName(logging.INFO))},'
            f'"logger":{_str(log.name)},"message":"access",'
            f'"request_id":{"null" if (v := ctx.request_id) is None else _str(v)},'
            f'"method":{"null" if (v := ctx.method) is None else _str(v)},'
            f'"operation":{"null" if (v := ctx.operation) is None else _str(v)},'
            f'"status":{status!r},'
            f'"reason":{"null" if (v := ctx.reason) is None else _str(v)},'
            f'"ratelimit_rule":{"null" if (v := ctx.ratelimit_rule) is None else _str(v)},'
            f'"caller":{"null" if cid is None else _str(cid)},'
            f'"tenant":{"null" if tenant is None else _str(tenant)},'
            f'"profile":{"null" if profile is None else _str(profile)},'
            f'"stream":{"true" if stream else "false"},'
            f'"stream_cut":{"true" if cut else "false"},'
            f'"client_disconnected":{"true" if gone else "false"},'
            f'"first_event_ms":{"null" if first_ms is None else repr(first_ms)},'
            f'"duration_ms":{duration!r},"overhead_ms":{overhead!r},'
            f'"upstream_ms":{upstream!r},"stages_ms":{{{",".join(stages)}}},'
            f'"upstream_request_id":'
            f"{'null' if (v := ctx.upstream_request_id) is None else _str(v)}}}"
        )
    except TypeError:  # a str field or a stage's key of another type
        return None


class AccessLog:
    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled

    def request_started(self, ctx: RequestContext) -> None:
        return None

    def response_started(self, ctx: RequestContext) -> None:
        return None

    def request_finished(self, ctx: RequestContext) -> None:
        if not (self.enabled and log.isEnabledFor(logging.INFO)):
            return
        now = time.time()
        handler = jsonlog.direct_handler(log, logging.INFO)
        text = access_line(ctx, now) if handler is not None else None
        if handler is None or text is None:
            jsonlog.write_fields(log, logging.INFO, "access", access_record(ctx, now))
        else:
            jsonlog.write_text(
                handler, log, logging.INFO, "access", text, lambda: access_record(ctx, now)
            )
