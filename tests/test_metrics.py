"""Metrics: bounded labels (pure mapping), the observer, the adapter hooks, the listener.

The end-to-end proof against a real Prometheus is ``test_prometheus.py``.
"""

from __future__ import annotations

import ast
import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import REGISTRY, CollectorRegistry

from gateway.asgi import Receive, Scope, Send
from gateway.auth.caller import Caller
from gateway.auth.tokens import AUTH_REASONS
from gateway.context import CONTEXT, RequestContext
from gateway.observability import labels as lbl
from gateway.observability.metrics import GatewayMetrics, make_registry
from gateway.observability.middleware import InFlight, Observers, RequestContextMiddleware
from gateway.operations.table import OPERATIONS as ROUTES
from gateway.policy.checks import POLICY_REASONS
from gateway.ratelimit.gcra import RATELIMIT_REASONS, Decision
from tests.gatewayproc import GatewayProcess, write_config
from tests.servers import ThreadedUvicorn, free_port
from tests.stack import PRIVATE_PEM, PUBLIC_JWK, V2, Stack, base_config, running_stack

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = frozenset(r.name for r in ROUTES)
PROFILES = ("reader", "writer")
#: Parsed once: signing from the PEM re-parses (and re-checks) the RSA key every time.
SIGNING_KEY = serialization.load_pem_private_key(PRIVATE_PEM, None)


def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every distinct (sample name, label set) the registry exposes."""
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for family in registry.collect()
        for s in family.samples
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def fresh() -> GatewayMetrics:
    return GatewayMetrics(
        make_registry(process_metrics=False), operations=OPERATIONS, profiles=PROFILES
    )


def ctx_for(
    status: int,
    reason: str | None = None,
    *,
    profile: str | None = "writer",
    operation: str = "threads.create",
    **fields: Any,
) -> RequestContext:
    ctx = RequestContext(
        request_id="r1", method="POST", operation=operation, status=status, reason=reason
    )
    if profile is not None:
        ctx.caller = Caller(id="ns/sa", tenant="ns", issuer="i", subject="s", profile=profile)
    for name, field_value in fields.items():
        setattr(ctx, name, field_value)
    return ctx


# -- the pure label mapping


@pytest.mark.parametrize(
    ("status", "reason", "rule", "expected"),
    [
        (401, "bad_signature", None, ("auth", "bad_signature")),
        (401, "something_new", None, ("other", "other")),
        (403, "operation_not_allowed", None, ("auth", "operation_not_allowed")),
        (403, "caller_not_allowed", None, ("auth", "caller_not_allowed")),
        (503, "jwks_unavailable", None, ("auth", "jwks_unavailable")),
        (400, "role_not_allowed", None, ("policy", "role_not_allowed")),
        (400, "invalid_json", None, ("intake", "invalid_json")),
        (413, "request_too_large", None, ("intake", "request_too_large")),
        (404, "route_not_found", None, ("route", "route_not_found")),
        (405, "method_not_allowed", None, ("route", "method_not_allowed")),
        (400, "unsupported_api_version", None, ("route", "unsupported_api_version")),
        (404, "thread_not_found", None, ("ownership", "thread_not_found")),
        (404, "response_not_found", None, ("ownership", "response_not_found")),
        (404, "conversation_not_found", None, ("ownership", "conversation_not_found")),
        (404, "file_not_found", None, ("ownership", "file_not_found")),
        (400, "reference_not_found", None, ("ownership", "reference_not_found")),
        (429, "rate_limit_exceeded", "caller-write", ("ratelimit", "caller-write")),
        (429, "rate_limit_exceeded", None, ("ratelimit", "other")),
        (429, "concurrency_limit_exceeded", None, ("ratelimit", "concurrency")),
        (429, "tenant-read", None, ("ratelimit", "tenant-read")),
        (429, "rate_limit_exceeded", "/threads/thread_abc", ("ratelimit", "other")),
        (502, "upstream_unreachable", None, None),
        (503, "rate_limiter_unavailable", None, None),
        (500, "internal_error", None, None),
        (200, None, None, None),
        (200, "ownership_not_recorded", None, None),
        (404, None, None, None),  # Azure's own 404, relayed
    ],
)
def test_refusal_stage_and_reason(
    status: int, reason: str | None, rule: str | None, expected: tuple[str, str] | None
) -> None:
    assert lbl.refusal(status, reason, rule) == expected


@pytest.mark.parametrize(
    ("status", "reason", "reached", "cut", "gone", "expected"),
    [
        (502, "upstream_unreachable", True, False, False, ("unreachable",)),
        (504, "upstream_timeout", True, False, False, ("timeout",)),
        (503, "upstream_pool_exhausted", True, False, False, ("pool_exhausted",)),
        (502, "upstream_auth_failed", True, False, False, ("auth_failed",)),
        (502, "upstream_error", True, False, False, ("bad_response",)),
        (500, None, True, False, False, ("response_5xx",)),
        (429, None, True, False, False, ("throttled",)),
        (200, None, True, True, False, ("stream_cut",)),
        (200, None, True, False, True, ("client_disconnect",)),
        (499, None, True, False, True, ("client_disconnect",)),
        (500, "internal_error", False, False, False, ()),
        (404, None, True, False, False, ()),
        (200, None, True, False, False, ()),
        # Not reached: no answer of Azure's to count; with a cut or a gone caller, both kinds.
        (500, None, False, False, False, ()),
        (429, None, False, False, False, ()),
        (503, None, True, True, True, ("response_5xx", "stream_cut", "client_disconnect")),
        (429, None, True, False, True, ("throttled", "client_disconnect")),
        (504, "upstream_timeout", True, True, False, ("timeout", "stream_cut")),
    ],
)
def test_upstream_error_kinds(
    status: int, reason: str | None, reached: bool, cut: bool, gone: bool, expected: tuple[str, ...]
) -> None:
    assert (
        lbl.upstream_errors(
            status, reason, reached_upstream=reached, stream_cut=cut, client_disconnected=gone
        )
        == expected
    )


def test_small_labels_are_bounded() -> None:
    assert [lbl.status_class(s) for s in (0, 101, 204, 302, 429, 503, 999)] == [
        "other",
        "1xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "other",
    ]
    assert lbl.method_label("GET") == "GET" and lbl.method_label("BREW") == "other"
    assert lbl.bounded("writer", {"writer"}) == "writer"
    assert lbl.bounded("team-a/app", {"writer"}) == "other"
    assert lbl.bounded(None, {"writer"}) == "none"


def _emitted_codes() -> set[str]:
    """Every literal error code the gateway package can raise (``code="..."`` arguments)."""
    codes: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        if "fakeazure" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "code":
                for sub in ast.walk(node.value):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        codes.add(sub.value)
    return codes


#: Codes that are not the caller's doing: our own outages and failures have their own metrics.
NOT_REFUSALS = {
    "rate_limiter_unavailable",
    "ownership_unavailable",
    "ownership_not_recorded",
    "internal_error",
    "invalid_token",
    "server_overloaded",
} | set(lbl.UPSTREAM_ERROR_CODES)


def test_every_code_the_gateway_raises_has_a_label() -> None:
    """A new error code must be added to a bounded set in ``metrics_labels`` (else: other)."""
    codes = _emitted_codes()
    assert {"route_not_found", "upstream_unreachable", "operation_not_allowed"} <= codes
    unclassified = {
        c for c in codes - NOT_REFUSALS if lbl.refusal(400, c, None) in (None, ("other", "other"))
    }
    assert unclassified == set()
    assert AUTH_REASONS | POLICY_REASONS | RATELIMIT_REASONS  # the fixed sets are importable


# -- the observer


def test_observer_counts_one_forwarded_request() -> None:
    m = fresh()
    ctx = ctx_for(201, stages={"auth": 0.001, "policy": 0.002, "upstream_ttfb": 0.05})
    ctx.upstream_started, ctx.upstream_finished = ctx.started + 0.01, ctx.started + 0.06
    m.request_started(ctx)
    assert value(m.registry, "gateway_requests_in_flight") == 1
    m.request_finished(ctx)
    r = m.registry
    assert value(r, "gateway_requests_in_flight") == 0
    assert (
        value(
            r,
            "gateway_requests_total",
            operation="threads.create",
            method="POST",
            status_class="2xx",
        )
        == 1
    )
    assert (
        value(
            r, "gateway_request_duration_seconds_count", operation="threads.create", stream="false"
        )
        == 1
    )
    for stage in ("auth", "policy", "upstream_ttfb", "upstream"):
        assert value(r, "gateway_stage_duration_seconds_count", stage=stage) == 1
    assert value(r, "gateway_stage_duration_seconds_count", stage="ratelimit") == 0
    assert value(r, "gateway_overhead_seconds_count") == 1
    assert value(r, "gateway_upstream_responses_total", status_class="2xx") == 1


def test_observer_refusals_errors_and_streams() -> None:
    m = fresh()
    r = m.registry
    limited = ctx_for(
        429,
        "rate_limit_exceeded",
        ratelimit_rule="caller-write",
        stages={"auth": 0.001, "ratelimit": 0.001},
    )
    denied = ctx_for(401, "expired", profile=None)
    stranger = ctx_for(400, "role_not_allowed", profile="hacker-profile")
    azure_500 = ctx_for(500, None, stages={"upstream_ttfb": 0.1})
    azure_500.upstream_started = azure_500.started
    stream = ctx_for(200, None, operation="runs.create", stream=True, stages={"upstream_ttfb": 0.1})
    stream.upstream_started = stream.started
    for ctx in (limited, denied, stranger, azure_500):
        m.request_started(ctx)
        m.request_finished(ctx)
    m.request_started(stream)
    m.response_started(stream)
    assert value(r, "gateway_streams_in_flight") == 1
    stream.stream_cut = True
    m.request_finished(stream)
    assert value(r, "gateway_streams_in_flight") == 0
    assert (
        value(
            r, "gateway_refusals_total", stage="ratelimit", reason="caller-write", profile="writer"
        )
        == 1
    )
    assert value(r, "gateway_ratelimit_checks_total", profile="writer") == 1
    assert value(r, "gateway_refusals_total", stage="auth", reason="expired", profile="none") == 1
    assert (
        value(
            r, "gateway_refusals_total", stage="policy", reason="role_not_allowed", profile="other"
        )
        == 1
    )
    assert value(r, "gateway_upstream_errors_total", kind="response_5xx") == 1
    assert value(r, "gateway_upstream_errors_total", kind="stream_cut") == 1
    assert (
        value(r, "gateway_request_duration_seconds_count", operation="runs.create", stream="true")
        == 1
    )


def test_time_to_first_event_is_observed_for_streamed_answers_only() -> None:
    m = fresh()
    r = m.registry
    streamed = ctx_for(200, operation="threads.create_and_run", stream=True, first_event_s=0.3)
    plain = ctx_for(200, operation="threads.create")
    nothing_sent = ctx_for(200, operation="runs.create", stream=True)  # cut before any event
    for ctx in (streamed, plain, nothing_sent):
        m.request_started(ctx)
        m.request_finished(ctx)
    name = "gateway_time_to_first_event_seconds"
    assert value(r, f"{name}_count", operation="threads.create_and_run") == 1
    assert value(r, f"{name}_sum", operation="threads.create_and_run") == pytest.approx(0.3)
    assert value(r, f"{name}_bucket", operation="threads.create_and_run", le="0.25") == 0
    assert value(r, f"{name}_bucket", operation="threads.create_and_run", le="0.5") == 1
    assert value(r, f"{name}_count", operation="threads.create") == 0
    assert value(r, f"{name}_count", operation="runs.create") == 0
    # The operation label is bounded like every other: an unknown name is "other".
    odd = ctx_for(200, operation="/openai/v1/responses/resp_1", stream=True, first_event_s=0.1)
    m.request_started(odd)
    m.request_finished(odd)
    assert value(r, f"{name}_count", operation="other") == 1


def test_the_first_event_is_timed_when_it_is_sent() -> None:
    """The request-context middleware stamps ``first_event_s`` on the first non-empty body
    message of a stream, not on its start, and never on a non-streamed answer."""
    seen: dict[str, float | None] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[CONTEXT]
        ctx.stream = scope["path"] == "/stream"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        seen["after_start"] = ctx.first_event_s
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        seen["after_empty"] = ctx.first_event_s
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        seen["first"] = ctx.first_event_s
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": False})
        seen["last"] = ctx.first_event_s

    async def run(path: str) -> dict[str, float | None]:
        seen.clear()
        middleware = RequestContextMiddleware(app, observer=InFlight())

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(_message: Any) -> None:
            return None

        scope = {"type": "http", "method": "POST", "path": path, "headers": []}
        await middleware(scope, receive, send)
        return dict(seen)

    streamed = asyncio.run(run("/stream"))
    assert streamed["after_start"] is None and streamed["after_empty"] is None
    first = streamed["first"]
    assert first is not None and first >= 0.05
    assert streamed["last"] == first  # the first event's time, not the last's
    assert all(v is None for v in asyncio.run(run("/json")).values())


def test_observer_survives_a_broken_context() -> None:
    m = fresh()
    ctx = ctx_for(200)
    ctx.stages = None  # type: ignore[assignment]
    m.request_started(ctx)
    m.request_finished(ctx)  # logged, never raised
    assert value(m.registry, "gateway_requests_in_flight") == 0


def test_adapter_hooks() -> None:
    m = fresh()
    r = m.registry
    m.on_ratelimit_decision(Decision(True), 0.002)
    m.on_ratelimit_decision(Decision(False, "caller-write", 100), 0.003)
    m.on_ratelimit_decision(Decision(True, degraded=True), 0.25)
    m.on_redis_error("timeout")
    m.on_redis_error("weird")
    hook = m.jwks_refresh_hook("https://issuer")
    assert value(r, "gateway_jwks_refresh_total", issuer="https://issuer", result="error") == 0
    hook("ok")
    hook("rejected_key")
    hook("unexpected")
    m.on_key_reload_error()
    ready = {"flag": False}
    m.track_keys({"https://issuer": lambda: ready["flag"]})
    assert value(r, "gateway_jwks_keys_ready", issuer="https://issuer") == 0
    ready["flag"] = True
    assert value(r, "gateway_jwks_keys_ready", issuer="https://issuer") == 1
    assert value(r, "gateway_ratelimit_decisions_total", result="allowed") == 1
    assert value(r, "gateway_ratelimit_decisions_total", result="limited") == 1
    assert value(r, "gateway_ratelimit_decisions_total", result="degraded") == 1
    assert value(r, "gateway_ratelimit_decision_seconds_count") == 2
    assert value(r, "gateway_redis_errors_total", kind="timeout") == 1
    assert value(r, "gateway_redis_errors_total", kind="other") == 1
    assert value(r, "gateway_jwks_refresh_total", issuer="https://issuer", result="ok") == 1
    assert (
        value(r, "gateway_jwks_refresh_total", issuer="https://issuer", result="rejected_key") == 1
    )
    assert value(r, "gateway_jwks_refresh_total", issuer="https://issuer", result="error") == 1
    assert value(r, "gateway_jwks_last_success_timestamp_seconds", issuer="https://issuer") > 0
    assert value(r, "gateway_azure_key_reload_failures_total") == 1
    build = [s for f in r.collect() for s in f.samples if s.name == "gateway_build_info"]
    assert len(build) == 1 and build[0].value == 1 and set(build[0].labels) == {"version", "python"}


def test_backend_answers_are_counted_per_backend_and_class() -> None:
    m = fresh()
    r = m.registry
    for backend, status, failure in [
        ("a", 201, None),
        ("a", 200, None),
        ("b", 200, None),
        ("a", 429, None),
        ("a", None, "timeout"),
        ("a", 503, None),
        ("a", 502, None),
    ]:
        m.on_backend_answer(backend, status, failure)
    requests = "gateway_upstream_backend_requests_total"
    assert value(r, requests, backend="a", status_class="2xx") == 2
    assert value(r, requests, backend="b", status_class="2xx") == 1
    assert value(r, requests, backend="a", status_class="4xx") == 1
    assert value(r, requests, backend="a", status_class="5xx") == 2
    assert value(r, requests, backend="a", status_class="none") == 1
    errors = "gateway_upstream_backend_errors_total"
    assert value(r, errors, backend="a", reason="throttled") == 1
    assert value(r, errors, backend="a", reason="timeout") == 1
    assert value(r, errors, backend="a", reason="server_error") == 2


# -- wired into the real gateway


@pytest.fixture
def limited_stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    """Every namespace is a caller (default profile); writes limited to 1 per minute."""
    overrides = {
        "auth": {"default_profile": "writer"},
        "threads": {"ownership": True},
        "profiles": {
            "writer": {
                "operations": ["*"],
                "rate_limit": {
                    "per_caller": {"write": {"requests": 1, "per_seconds": 60, "burst": 1}}
                },
            }
        },
    }
    with running_stack(tmp_path, redis_url=redis_url, overrides=overrides) as stack:
        yield stack


def test_building_twice_never_touches_the_global_registry(tmp_path: Path) -> None:
    before = samples(REGISTRY)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_stack(tmp_path / "a") as one, running_stack(tmp_path / "b") as two:
        assert one.gateway.metrics is not None and two.gateway.metrics is not None
        assert one.gateway.metrics.registry is not two.gateway.metrics.registry
        httpx.get(
            f"{one.url}/openai/threads/thread_abc", params={"api-version": V2}, headers=one.auth()
        )
    assert samples(REGISTRY) == before


def test_cardinality_is_bounded_by_configuration(limited_stack: Stack) -> None:
    """1,000 distinct callers, ids and bad paths add no label value beyond the bounds."""
    gw = limited_stack
    assert gw.gateway.metrics is not None
    registry = gw.gateway.metrics.registry

    def burst(client: httpx.Client, tag: str, n: int) -> None:
        for i in range(n):
            auth = gw.auth(namespace=f"ns-{tag}-{i}", sa=f"sa-{i}", key=SIGNING_KEY)
            kind = i % 4
            if kind == 0:
                client.get(
                    f"/openai/threads/thread_{secrets.token_hex(12)}",
                    params={"api-version": V2},
                    headers=auth,
                )
            elif kind == 1:
                client.get(
                    f"/openai/threads/x{i}/%2e%2e/{secrets.token_hex(4)}",
                    params={"api-version": V2},
                    headers=auth,
                )
            elif kind == 2:  # first write per caller is admitted; a second is limited
                for _ in range(2):
                    client.post(
                        "/openai/threads",
                        params={"api-version": V2},
                        headers=auth,
                        json={"metadata": {f"k{i}": f"v{i}"}},
                    )
            else:
                client.get(
                    f"/openai/threads/thread_{i}/messages",
                    params={"api-version": V2, f"p{i}": "1"},
                    headers={"Authorization": f"Bearer not-a-token-{i}"},
                )

    with httpx.Client(base_url=gw.url, timeout=10) as client:
        burst(client, "warm", 8)
        before = samples(registry)
        burst(client, "many", 1000)
        after = samples(registry)
    assert after == before, sorted(after - before)[:20]
    allowed: dict[str, set[str]] = {
        "operation": set(OPERATIONS) | {"unmatched"},
        "profile": {"reader", "writer", "none", "other"},
        "method": set(lbl.METHODS) | {"other"},
        "status_class": {*lbl.STATUS_CLASSES, "other"},
    }
    for _, labels in after:
        for key, label_value in labels:
            assert label_value in allowed.get(key, {label_value}), (key, label_value)
            assert "ns-" not in label_value
            assert "thread_" not in label_value or label_value in lbl.OWNERSHIP_REASONS
    assert (
        value(
            registry, "gateway_refusals_total", stage="ratelimit", reason="other", profile="writer"
        )
        + value(
            registry,
            "gateway_refusals_total",
            stage="ratelimit",
            reason="caller-write",
            profile="writer",
        )
        >= 250
    )


def test_metrics_are_not_served_on_the_proxy_port(tmp_path: Path) -> None:
    with running_stack(tmp_path) as gw:
        assert gw.gateway.metrics_app is not None
        for headers in ({}, gw.auth()):
            got = httpx.get(f"{gw.url}/metrics", headers=headers)
            assert got.status_code in (401, 404) and "gateway_requests" not in got.text
        assert httpx.get(f"{gw.url}/metrics", headers=gw.auth()).status_code == 404
        assert gw.fake.requests == []
        with ThreadedUvicorn(gw.gateway.metrics_app, lifespan="on") as metrics:
            scraped = httpx.get(f"{metrics.url}/metrics")
            assert scraped.status_code == 200
            assert "gateway_requests_total" in scraped.text
            assert 'gateway_refusals_total{profile="none",reason="missing_token"' in scraped.text
            assert httpx.get(f"{metrics.url}/openai/threads").status_code == 404
            assert httpx.post(f"{metrics.url}/metrics").status_code == 405


def test_redis_outage_shows_as_degraded(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    overrides = {
        "rate_limit": {"enabled": True, "fail_mode": "open"},
        "redis": {"url": dead, "socket_timeout_s": 0.1, "connect_timeout_s": 0.1},
        "threads": {"ownership": False},
        "profiles": {
            "writer": {
                "operations": ["*"],
                "rate_limit": {
                    "per_caller": {"write": {"requests": 5, "per_seconds": 1, "burst": 5}}
                },
            }
        },
    }
    with running_stack(tmp_path, overrides=overrides) as gw:
        assert gw.gateway.metrics is not None
        r = gw.gateway.metrics.registry
        got = httpx.post(
            f"{gw.url}/openai/threads", params={"api-version": V2}, json={}, headers=gw.auth()
        )
        assert got.status_code == 200
        assert value(r, "gateway_ratelimit_degraded") == 1
        assert value(r, "gateway_redis_errors_total", kind="connection") >= 1
        assert value(r, "gateway_ratelimit_decisions_total", result="degraded") == 1


def test_key_providers_and_key_file_are_reported(tmp_path: Path) -> None:
    with running_stack(tmp_path) as gw:
        assert gw.gateway.metrics is not None
        r = gw.gateway.metrics.registry
        issuer = gw.config.auth.issuers[0].policy.issuer
        assert value(r, "gateway_jwks_refresh_total", issuer=issuer, result="ok") == 1
        assert value(r, "gateway_jwks_keys_ready", issuer=issuer) == 1
        (tmp_path / "api-key").write_text("")
        gw.gateway.credential.reload()
        assert value(r, "gateway_azure_key_reload_failures_total") == 1
        (tmp_path / "api-key").write_text("rotated-key")
        gw.gateway.credential.reload()
        assert value(r, "gateway_azure_key_reloads_total") == 1


def test_gateway_serve_runs_the_metrics_listener(tmp_path: Path, redis_url: str) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    config = base_config("http://127.0.0.1:9", str(tmp_path / "jwks.json"), redis_url)
    metrics_port = free_port()
    proc = GatewayProcess(
        write_config(config, tmp_path / "gateway.toml"), api_key="k" * 32, redis_url=redis_url
    )
    proc.env["GATEWAY_METRICS_PORT"] = str(metrics_port)
    proc.start()
    try:
        proc.wait_ready()
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert scraped.status_code == 200 and "gateway_build_info" in scraped.text
        assert httpx.get(f"{proc.url}/metrics").status_code in (401, 404)
    finally:
        proc.stop()
    assert proc.proc is not None and proc.proc.returncode == 0, proc.log()


def test_every_observer_reads_the_same_end() -> None:
    """The middleware stamps ``ctx.ended`` before ``request_finished``: the metrics' duration,
    overhead and upstream time and the access line's are one reading; the observers' hooks
    run in the order given, each once."""
    calls: list[tuple[str, str]] = []

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        def request_started(self, ctx: RequestContext) -> None:
            calls.append((self.name, "started"))

        def response_started(self, ctx: RequestContext) -> None:
            calls.append((self.name, "response"))

        def request_finished(self, ctx: RequestContext) -> None:
            assert ctx.ended is not None
            calls.append((self.name, "finished"))
            seen["durations"] = ctx.durations()
            seen["elapsed"] = ctx.elapsed()

    seen: dict[str, Any] = {}
    m = fresh()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[CONTEXT]
        ctx.operation = "threads.create"
        ctx.upstream_started = ctx.started
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: Any) -> None:
        return None

    observer = Observers(Recorder("a"), m, Recorder("b"))
    middleware = RequestContextMiddleware(app, observer=observer)
    asyncio.run(middleware({"type": "http", "method": "POST", "headers": []}, receive, send))
    assert calls == [
        ("a", "started"),
        ("b", "started"),
        ("a", "response"),
        ("b", "response"),
        ("a", "finished"),
        ("b", "finished"),
    ]
    elapsed, overhead, upstream = seen["durations"]
    assert seen["elapsed"] == elapsed  # frozen at the end: the same value on every read
    r = m.registry
    labels = {"operation": "threads.create", "stream": "false"}
    assert value(r, "gateway_request_duration_seconds_sum", **labels) == elapsed
    assert value(r, "gateway_stage_duration_seconds_sum", stage="upstream") == upstream
    assert value(r, "gateway_overhead_seconds_sum") == overhead
