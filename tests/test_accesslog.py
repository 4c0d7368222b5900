"""The JSON access log: one line per request, with ids, decisions and durations, no secrets."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import httpx
import pytest

from gateway.auth.caller import Caller
from gateway.auth.tokens import AUTH_REASONS
from gateway.context import RequestContext
from gateway.observability.accesslog import AccessLog, access_record
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
