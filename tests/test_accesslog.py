"""The JSON access log: one line per request, with ids, decisions and durations, no secrets."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth.caller import Caller
from gateway.auth.tokens import AUTH_REASONS
from gateway.context import RequestContext, current_request_id
from gateway.observability import jsonlog
from gateway.observability.accesslog import AccessLog, access_line, access_record
from gateway.observability.jsonlog import JsonFormatter
from tests.stack import V2, Stack, running_stack

FIELDS = {
    "time",
    "request_id",
    "method",
    "operation",
    "status",
    "reason",
    "ratelimit_rule",
    "caller",
    "tenant",
    "profile",
    "stream",
    "stream_cut",
    "client_disconnected",
    "first_event_ms",
    "duration_ms",
    "overhead_ms",
    "upstream_ms",
    "stages_ms",
    "upstream_request_id",
}
#: Every log line's own keys (``gateway.jsonlog``), beside the access record's.
LINE = {"level", "logger", "message"}


@pytest.fixture
def logged_stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as stack:
        yield stack


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """The access lines as ``gateway serve`` writes them (its JSON formatter)."""
    fmt = JsonFormatter()
    return [json.loads(fmt.format(r)) for r in caplog.records if r.name == "gateway.access"]


def test_one_line_per_request_without_any_secret(
    logged_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    gw = logged_stack
    caplog.set_level(logging.DEBUG)  # every logger, every level, every thread
    token = gw.token()
    caller_key = "caller-supplied-api-key-0123456789"
    secret_value = "metadata-value-ZX81-do-not-log"
    secret_key = "metadatakeyQL7"
    content = "message content that must never be logged 31337"
    headers = {
        "Authorization": f"Bearer {token}",
        "api-key": caller_key,
        "x-request-id": "req-accesslog-1",
    }
    q = {"api-version": V2}
    with httpx.Client(base_url=gw.url, headers=headers) as c:
        thread = c.post("/openai/threads", params=q, json={"metadata": {secret_key: secret_value}})
        assert thread.status_code == 200
        message = c.post(
            f"/openai/threads/{thread.json()['id']}/messages",
            params=q,
            json={"role": "user", "content": content, "metadata": {secret_key: secret_value}},
        )
        assert message.status_code == 200
        refused = c.post(
            f"/openai/threads/{thread.json()['id']}/messages",
            params=q,
            json={"role": "user", "content": content, "metadata": {secret_key: "x" * 600}},
        )
        assert refused.status_code == 400
        c.get("/openai/threads", params=q, headers={"Authorization": f"Bearer {token}x"})

    lines = access_lines(caplog)
    assert len(lines) == 4
    assert all(set(line) == FIELDS | LINE for line in lines)
    assert {line["message"] for line in lines} == {"access"}
    created = lines[0]
    assert created["request_id"] == "req-accesslog-1"
    assert created["operation"] == "threads.create" and created["status"] == 200
    assert created["caller"] == "team-a/app" and created["profile"] == "writer"
    assert created["reason"] is None
    assert created["upstream_request_id"] == thread.headers["x-upstream-request-id"]
    assert isinstance(created["duration_ms"], float) and isinstance(created["stages_ms"], dict)
    assert {"auth", "policy", "upstream_ttfb"} <= set(created["stages_ms"])
    assert lines[2]["reason"] == "metadata_value_too_long" and lines[2]["status"] == 400
    assert lines[3]["status"] == 401 and lines[3]["reason"] in AUTH_REASONS
    assert lines[3]["caller"] is None

    everything = "\n".join(
        [r.getMessage() for r in caplog.records]
        + [repr(r.__dict__) for r in caplog.records]
        + [caplog.text]
    )
    token_parts = token.split(".")
    for secret in (
        token,
        token_parts[1],
        token_parts[2],
        caller_key,
        secret_value,
        secret_key,
        content,
        gw.api_key,
    ):
        assert secret not in everything, f"{secret[:12]}… reached the logs"


def test_access_log_can_be_switched_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    with running_stack(tmp_path, overrides={"server": {"access_log": False}}) as gw:
        httpx.get(f"{gw.url}/openai/threads", params={"api-version": V2})
    assert access_lines(caplog) == []


def test_record_is_built_from_named_fields_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    ctx = RequestContext(
        request_id="r-9",
        method="POST",
        operation="runs.create",
        status=429,
        reason="rate_limit_exceeded",
        ratelimit_rule="tenant-write",
    )
    ctx.caller = Caller(
        id="ns/sa",
        tenant="ns",
        issuer="https://i",
        subject="sub-secret",
        profile="writer",
        claims=MappingProxyType({"email": "someone@example.com"}),
    )
    record = access_record(ctx)
    assert set(record) == FIELDS
    assert record["ratelimit_rule"] == "tenant-write"
    assert record["first_event_ms"] is None
    ctx.stream, ctx.first_event_s = True, 0.0421
    assert access_record(ctx)["first_event_ms"] == 42.1
    assert "sub-secret" not in json.dumps(record) and "someone@" not in json.dumps(record)
    AccessLog().request_finished(ctx)
    assert access_lines(caplog)[0]["request_id"] == "r-9"


@contextlib.contextmanager
def json_root() -> Iterator[tuple[logging.Handler, io.StringIO]]:
    """The root logger as ``gateway serve`` has it (``jsonlog.configure``'s one handler, on a
    StringIO), pytest's own handlers set aside meanwhile; then everything restored."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, sys.excepthook, threading.excepthook)
    saved_hooks = (sys.unraisablehook, logging.getLogRecordFactory())
    stream = io.StringIO()
    try:
        jsonlog.configure("INFO", stream)
        [handler] = root.handlers
        yield handler, stream
    finally:
        logging.captureWarnings(False)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        sys.excepthook, threading.excepthook = saved[2], saved[3]
        sys.unraisablehook = saved_hooks[0]
        logging.setLogRecordFactory(saved_hooks[1])


class Seen(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def served_ctx() -> RequestContext:
    ctx = RequestContext(
        request_id="r-direct", method="POST", operation="messages.create", status=200
    )
    ctx.caller = Caller(id="ns/sa", tenant="d:ns", issuer="https://i", subject="s", profile="w")
    ctx.stages.update(auth=0.0001234, ratelimit=0.0005, upstream_ttfb=0.002)
    ctx.upstream_started, ctx.upstream_finished = ctx.started + 0.001, ctx.started + 0.004
    ctx.upstream_request_id = "azure-1"
    return ctx


def test_the_direct_access_line_is_the_logging_line() -> None:
    """With only ``configure``'s handler, the access line is written without a LogRecord;
    it is the line the logging path writes for the same fields, byte for byte."""
    with json_root() as (_, stream):
        lines_of_both_paths(stream)


def lines_of_both_paths(stream: io.StringIO) -> None:
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record)
        return record

    logging.setLogRecordFactory(counting)
    access = logging.getLogger("gateway.access")
    fields = access_record(served_ctx())
    token = current_request_id.set("another-request")  # the record's own id wins on both
    try:
        jsonlog.write_fields(access, logging.INFO, "access", fields)
        assert made == []  # no record: written straight to the handler's stream
        direct = stream.getvalue()
        beside = Seen()
        logging.getLogger().addHandler(beside)  # a second handler: the logging path
        jsonlog.write_fields(access, logging.INFO, "access", fields)
        logging.getLogger().removeHandler(beside)
    finally:
        current_request_id.reset(token)
    assert len(made) == 1 and beside.records == made
    assert stream.getvalue() == direct + direct
    assert direct == JsonFormatter().format(made[0]) + "\n"
    line = json.loads(direct)
    assert list(line) == ["time", "level", "logger", "message", *[f for f in fields if f != "time"]]
    assert (line["level"], line["logger"], line["message"]) == ("INFO", "gateway.access", "access")
    assert line["request_id"] == "r-direct" and line["time"] == fields["time"]


def test_the_direct_access_line_honours_levels_and_a_swapped_stream() -> None:
    with json_root() as (handler, stream):
        levels_and_swapped_stream(handler, stream)


def levels_and_swapped_stream(handler: logging.Handler, stream: io.StringIO) -> None:
    ctx = served_ctx()
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    AccessLog().request_finished(ctx)
    root.setLevel(logging.INFO)
    handler.setLevel(logging.WARNING)
    AccessLog().request_finished(ctx)
    handler.setLevel(logging.NOTSET)
    handler.addFilter(lambda record: False)
    AccessLog().request_finished(ctx)
    handler.filters.clear()
    AccessLog(enabled=False).request_finished(ctx)
    assert stream.getvalue() == ""
    swapped = io.StringIO()
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(swapped)
    AccessLog().request_finished(ctx)
    [line] = [json.loads(raw) for raw in swapped.getvalue().splitlines()]
    assert line["request_id"] == "r-direct" and stream.getvalue() == ""


# -- the access line's own encoder (``access_line``): the formatter's line, byte for byte

TEXT = st.text(max_size=12) | st.sampled_from(
    ["", "é", "日本", "\u2028", '"\\\n\t', "\ud800", "\x00"]
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1e-7, 0.0004999, 0.0015, 1e15, 1e16, 1e300, 5e-324]
)
FINITE = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


def contexts(seconds: st.SearchStrategy[float]) -> st.SearchStrategy[RequestContext]:
    callers = st.none() | st.builds(
        Caller,
        id=TEXT,
        tenant=TEXT,
        issuer=st.just("https://i"),
        subject=TEXT,
        profile=st.none() | TEXT,
    )
    return st.builds(
        RequestContext,
        request_id=TEXT,
        method=TEXT,
        started=seconds,
        operation=TEXT,
        caller=callers,
        status=st.integers(min_value=-(10**20), max_value=10**20),
        reason=st.none() | TEXT,
        stream=st.booleans(),
        first_event_s=st.none() | seconds,
        upstream_request_id=st.none() | TEXT,
        stages=st.dictionaries(TEXT, seconds, max_size=6),
        upstream_started=st.none() | seconds,
        upstream_finished=st.none() | seconds,
        ended=seconds,
        stream_cut=st.booleans(),
        client_disconnected=st.booleans(),
        ratelimit_rule=st.none() | TEXT,
    )


def formatter_line(ctx: RequestContext, now: float) -> str:
    """What ``JsonFormatter`` writes for the record ``AccessLog`` would log."""
    record = logging.getLogger("gateway.access").makeRecord(
        "gateway.access", logging.INFO, "", 0, "access", (), None,
        extra={"fields": access_record(ctx, now)},
    )  # fmt: skip
    return JsonFormatter().format(record)


@settings(max_examples=400, deadline=None)
@given(ctx=contexts(FINITE), now=FINITE)
def test_the_access_line_is_the_formatters_line(ctx: RequestContext, now: float) -> None:
    text = access_line(ctx, now)
    assert text is not None  # plain values: never the general encoder
    assert text == formatter_line(ctx, now)


@settings(max_examples=300, deadline=None)
@given(ctx=contexts(FLOATS), now=FLOATS)
def test_the_access_line_of_any_float_is_the_formatters_or_none(
    ctx: RequestContext, now: float
) -> None:
    """NaN and infinities (which the encoder writes ``NaN``, ``Infinity``) are left to the
    general encoder: None; every other line is the formatter's."""
    text = access_line(ctx, now)
    expected = formatter_line(ctx, now)
    if text is None:
        assert any(word in expected for word in ("NaN", "Infinity"))
    else:
        assert text == expected


class Name(str):
    pass


@pytest.mark.parametrize(
    "odd",
    [
        {"status": True},
        {"status": 200.0},
        {"stream": 1},
        {"request_id": 7},
        {"caller": Caller(id=None, tenant="t", issuer="i", subject="s", profile=3)},  # type: ignore[arg-type]
        {"stages": {1: 0.5}},
        {"stages": {"auth": 1}},
        {"stages": {None: 0.25, True: 0.5}},
        {"first_event_s": 2},
        {"started": 1, "ended": 3, "upstream_started": 2, "upstream_finished": 2},
        {"operation": Name("named"), "stages": {Name("k"): 0.5}},
        {"first_event_s": float("nan"), "stages": {"a": float("inf")}},
    ],
    ids=repr,
)
def test_an_odd_value_is_written_as_the_formatter_writes_it(odd: dict[str, Any]) -> None:
    """A value not of its field's plain type: None (the general encoder), or the same text;
    and ``AccessLog`` writes the formatter's line either way."""
    ctx = served_ctx()
    ctx.ended = ctx.started + 0.005
    for name, value in odd.items():
        setattr(ctx, name, value)
    text = access_line(ctx, 1764651835.5)
    expected = formatter_line(ctx, 1764651835.5)
    assert text is None or text == expected
    with json_root() as (_, stream):
        AccessLog().request_finished(ctx)
    written = json.loads(stream.getvalue())
    del written["time"]
    assert written == {k: v for k, v in json.loads(expected).items() if k != "time"}


def test_the_written_line_is_the_formatters_line() -> None:
    ctx = served_ctx()
    ctx.ended = ctx.started + 0.0051234
    with json_root() as (_, stream):
        AccessLog().request_finished(ctx)
    [raw] = stream.getvalue().splitlines()
    now = json.loads(raw)["time"]
    assert raw == formatter_line(ctx, now) == access_line(ctx, now)
    assert json.loads(raw)["duration_ms"] == 5.123  # ctx.ended: the end, however late read


@settings(max_examples=200, deadline=None)
@given(ctx=contexts(FINITE))
def test_durations_are_the_three_readings_at_the_end(ctx: RequestContext) -> None:
    assert ctx.durations() == (ctx.elapsed(), ctx.overhead_seconds(), ctx.upstream_seconds())


def test_durations_before_the_end_read_the_clock_once() -> None:
    ctx = RequestContext(request_id="r", method="GET")
    ctx.upstream_started = ctx.started
    elapsed, overhead, upstream = ctx.durations()
    assert elapsed >= upstream >= 0.0 and overhead == max(0.0, elapsed - upstream)
    assert elapsed <= ctx.elapsed()


class FailingStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("disk full")


def test_a_failed_direct_write_goes_to_handle_error_with_the_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[logging.LogRecord] = []
    with json_root() as (handler, _):
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(FailingStream())
        monkeypatch.setattr(handler, "handleError", seen.append)
        AccessLog().request_finished(served_ctx())
    [record] = seen
    assert record.getMessage() == "access"
    assert record.fields["request_id"] == "r-direct"  # type: ignore[attr-defined]


class NoFlush:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)


def test_a_stream_without_flush_is_written_as_stream_handler_writes_it() -> None:
    with json_root() as (handler, _):
        assert isinstance(handler, logging.StreamHandler)
        target = NoFlush()
        handler.setStream(target)
        AccessLog().request_finished(served_ctx())
    assert json.loads(target.text)["request_id"] == "r-direct"
