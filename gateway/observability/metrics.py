"""Every gateway metric (prometheus-client adapter), registered on an injected registry.

The composition root builds one :class:`GatewayMetrics` on a fresh ``CollectorRegistry`` (never
the global one) and wires it as a proxy observer and as the hooks of the limiter, the key
providers and the Azure key source. :func:`metrics_app` serves the registry on the separate
metrics listener (``server.metrics_host:metrics_port``), never through the proxy port.

The metrics every request moves (requests, durations, stages, refusals, upstream answers and
errors, limiter decisions, per-backend counts) are ``fastmetrics``' lock-free counters and
histograms, updated and scraped on the event loop's thread, with prometheus-client's
exposition; the in-flight and stream gauges read plain counts. The rest (updated rarely)
stay prometheus-client's own.

Names follow the Prometheus rules (``gateway_`` prefix, base units, ``_total`` counters,
``_seconds`` durations). Label values are bounded by construction (``metrics_labels``):
operations, status classes, fixed reason codes and configured profile names only.

    gateway_requests_total{operation,method,status_class}        counter
    gateway_request_duration_seconds{operation,stream}           histogram
    gateway_time_to_first_event_seconds{operation}               histogram  (streamed answers)
    gateway_overhead_seconds                                     histogram  (forwarded requests)
    gateway_stage_duration_seconds{stage}                        histogram
    gateway_requests_in_flight / gateway_streams_in_flight       gauges
    gateway_refusals_total{stage,reason,profile}                 counter
    gateway_upstream_responses_total{status_class}               counter
    gateway_upstream_errors_total{kind}                          counter
    gateway_upstream_pool_connections{backend}                   gauge
    gateway_upstream_pool_max_connections{backend}               gauge  (its size)
    gateway_max_requests_in_flight                               gauge  (the server cap)
    gateway_ratelimit_checks_total{profile}                      counter
    gateway_ratelimit_decisions_total{result}                    counter
    gateway_ratelimit_decision_seconds                           histogram
    gateway_ratelimit_degraded                                   gauge
    gateway_ratelimit_deadlines_total                            counter
    gateway_redis_errors_total{kind}                             counter
    gateway_dependency_up{dependency}                            gauge
    gateway_requests_pending                                     gauge
    gateway_requests_shed_total{reason}                          counter
    gateway_event_loop_lag_seconds                               gauge
    gateway_jwks_refresh_total{issuer,result}                    counter
    gateway_jwks_last_success_timestamp_seconds{issuer}          gauge
    gateway_jwks_keys_ready{issuer}                              gauge
    gateway_azure_key_reloads_total / _reload_failures_total     counters
    gateway_upstream_token_expiry_seconds{backend}               gauge  (Entra credentials)
    gateway_upstream_token_refreshes_total{backend,result}       counter
    gateway_upstream_token_unavailable_total{backend}            counter
    gateway_upstream_backend_requests_total{backend,status_class} counter  (status_class none:
                                                                 no answer)
    gateway_upstream_backend_errors_total{backend,reason}        counter  (throttled, server_error,
                                                                 timeout, unreachable)
    gateway_upstream_backend_state{backend}                      gauge  (0 closed, 1 half-open,
                                                                 2 open: out of rotation)
    gateway_build_info{version,python}                           info
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    make_asgi_app,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.context import RequestContext
from gateway.observability import fastmetrics as fast
from gateway.observability import labels as lbl
from gateway.ratelimit.gcra import Decision

log = logging.getLogger("gateway.metrics")


REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)
STAGE_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    120,
    300,
)
LIMITER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)


class _Degradable(Protocol):
    @property
    def degraded(self) -> bool: ...


class _Dependencies(Protocol):
    @property
    def last(self) -> Mapping[str, str]: ...

    def up(self, dependency: str) -> bool: ...


class _Admission(Protocol):
    @property
    def shed(self) -> Mapping[str, int]: ...

    @property
    def pending(self) -> int: ...


class _Lag(Protocol):
    @property
    def lag_s(self) -> float: ...


class _ShedCollector(Collector):
    """``gateway_requests_shed_total{reason}``, read from the admission gate's own counts."""

    def __init__(self, admission: _Admission) -> None:
        self._admission = admission

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "gateway_requests_shed",
            "Requests refused at once because this process was overloaded, by reason.",
            labels=["reason"],
        )
        for reason, count in self._admission.shed.items():
            family.add_metric([reason], count)
        yield family


def make_registry(*, process_metrics: bool = True) -> CollectorRegistry:
    """A fresh registry, with the process, platform and GC collectors when asked."""
    registry = CollectorRegistry(auto_describe=True)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        if GC_COLLECTOR is not None:
            GCCollector(registry=registry)
    return registry


def _version() -> str:
    try:
        return importlib.metadata.version("assistants-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class GatewayMetrics:
    """The metrics, an ``Observer`` for the proxy, and hooks for the adapters."""

    def __init__(
        self, registry: CollectorRegistry, *, operations: Iterable[str], profiles: Iterable[str]
    ) -> None:
        self.registry = registry
        self._operations = frozenset(operations) | {lbl.UNMATCHED}
        self._profiles = frozenset(profiles)
        r = registry
        self.requests = fast.Counter(
            "gateway_requests",
            "Requests answered, by operation, method and status class.",
            ["operation", "method", "status_class"],
            registry=r,
        )
        self.duration = fast.Histogram(
            "gateway_request_duration_seconds",
            "Time from request arrival to the end of the response.",
            ["operation", "stream"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.first_event = fast.Histogram(
            "gateway_time_to_first_event_seconds",
            "Time from request arrival until a streamed response's first event reaches the "
            "caller (every streamed operation: runs, responses, streamed retrievals).",
            ["operation"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.overhead = fast.Histogram(
            "gateway_overhead_seconds",
            "Gateway time of a forwarded request: total minus time spent on Azure.",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.stage = fast.Histogram(
            "gateway_stage_duration_seconds",
            "Time per pipeline stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("gateway_requests_in_flight", "Requests being handled.", registry=r)
        self.streams = Gauge(
            "gateway_streams_in_flight", "Streamed responses being relayed.", registry=r
        )
        self.refusals = fast.Counter(
            "gateway_refusals",
            "Requests the gateway refused, by stage, reason code and profile.",
            ["stage", "reason", "profile"],
            registry=r,
        )
        self.upstream_responses = fast.Counter(
            "gateway_upstream_responses",
            "Responses from Azure, by status class.",
            ["status_class"],
            registry=r,
        )
        self.upstream_errors = fast.Counter(
            "gateway_upstream_errors",
            "Upstream failures, streams cut mid-way and client disconnects, by kind.",
            ["kind"],
            registry=r,
        )
        self.pool = Gauge(
            "gateway_upstream_pool_connections",
            "Connections in each Azure backend's upstream pool.",
            ["backend"],
            registry=r,
        )
        self.pool_max = Gauge(
            "gateway_upstream_pool_max_connections",
            "Each backend's upstream pool size (upstream.max_connections): the saturation "
            "panels' maximum.",
            ["backend"],
            registry=r,
        )
        self.in_flight_max = Gauge(
            "gateway_max_requests_in_flight",
            "Requests in flight beyond which the server answers 503 at once "
            "(server.max_concurrent_connections).",
            registry=r,
        )
        self.ratelimit_checks = fast.Counter(
            "gateway_ratelimit_checks",
            "Requests checked by the rate limiter, by profile.",
            ["profile"],
            registry=r,
        )
        self.decisions = fast.Counter(
            "gateway_ratelimit_decisions",
            "Rate-limiter decisions, by result.",
            ["result"],
            registry=r,
        )
        self.decision_seconds = fast.Histogram(
            "gateway_ratelimit_decision_seconds",
            "Rate-limiter decision latency (one Redis call).",
            buckets=LIMITER_BUCKETS,
            registry=r,
        )
        self.degraded = Gauge(
            "gateway_ratelimit_degraded",
            "1 while the limiter's Redis is failing (limits are decided by each replica alone).",
            registry=r,
        )
        self.deadlines = Counter(
            "gateway_ratelimit_deadlines",
            "Limiter calls that ran past "
            "the budget while Redis was answering (this process too "
            "busy); decided by this replica alone.",
            registry=r,
        )
        self.dependency_up = Gauge(
            "gateway_dependency_up",
            "0 while a dependency's last calls failed (rate_limiter, ownership_store).",
            ["dependency"],
            registry=r,
        )
        self.loop_lag = Gauge(
            "gateway_event_loop_lag_seconds",
            "How late the event loop ran a timer, last measured.",
            registry=r,
        )
        self.pending = Gauge(
            "gateway_requests_pending",
            "Requests being admitted (arrived, not yet past the rate limiter).",
            registry=r,
        )
        self.redis_errors = Counter(
            "gateway_redis_errors", "Limiter Redis errors, by kind.", ["kind"], registry=r
        )
        self.jwks_refresh = Counter(
            "gateway_jwks_refresh",
            "JWKS refreshes, by issuer and result.",
            ["issuer", "result"],
            registry=r,
        )
        self.jwks_success = Gauge(
            "gateway_jwks_last_success_timestamp_seconds",
            "Unix time of the last good JWKS refresh.",
            ["issuer"],
            registry=r,
        )
        self.keys_ready = Gauge(
            "gateway_jwks_keys_ready",
            "1 when an issuer's verification keys are usable.",
            ["issuer"],
            registry=r,
        )
        self.key_reloads = Counter(
            "gateway_azure_key_reloads",
            "Azure key changes picked up from the key file.",
            registry=r,
        )
        self.key_reload_failures = Counter(
            "gateway_azure_key_reload_failures",
            "Failed reads of the Azure key file (the last good key is kept).",
            registry=r,
        )
        self.token_expiry = Gauge(
            "gateway_upstream_token_expiry_seconds",
            "Seconds until the Entra token held for a backend expires (0: none usable).",
            ["backend"],
            registry=r,
        )
        self.token_refreshes = Counter(
            "gateway_upstream_token_refreshes",
            "Entra token fetches, by backend and result (ok, error).",
            ["backend", "result"],
            registry=r,
        )
        self.token_unavailable = Counter(
            "gateway_upstream_token_unavailable",
            "Requests refused (503 upstream_credential_unavailable) for want of a usable "
            "Entra token, by backend.",
            ["backend"],
            registry=r,
        )
        self.backend_requests = fast.Counter(
            "gateway_upstream_backend_requests",
            "Requests sent to each Azure backend, by the status class of its answer (none: no "
            "answer).",
            ["backend", "status_class"],
            registry=r,
        )
        self.backend_errors = fast.Counter(
            "gateway_upstream_backend_errors",
            "Answers and failures that count against an Azure backend's breaker, by reason "
            "(throttled, server_error, timeout, unreachable).",
            ["backend", "reason"],
            registry=r,
        )
        self.backend_state = Gauge(
            "gateway_upstream_backend_state",
            "Each Azure backend's breaker: 0 closed, 1 half-open (one probe), 2 open (out of "
            "rotation for new objects).",
            ["backend"],
            registry=r,
        )
        Info("gateway_build", "Gateway build information.", registry=r).info(
            {"version": _version(), "python": platform.python_version()}
        )
        # Children looked up once (bounded, fixed sets); the rest cached on first use.
        self._stage = {s: self.stage.labels(s) for s in lbl.STAGES}
        self._upstream_errors = {
            k: self.upstream_errors.labels(k) for k in lbl.UPSTREAM_ERROR_KINDS
        }
        self._decisions = {k: self.decisions.labels(k) for k in lbl.DECISION_RESULTS}
        self._redis_errors = {k: self.redis_errors.labels(k) for k in lbl.REDIS_ERROR_KINDS}
        self._requests: dict[tuple[str, ...], Any] = {}
        self._durations: dict[tuple[str, ...], Any] = {}
        self._first_events: dict[tuple[str, ...], Any] = {}
        self._refusals: dict[tuple[str, ...], Any] = {}
        self._upstream_status: dict[tuple[str, ...], Any] = {}
        self._checks: dict[tuple[str, ...], Any] = {}
        self._backend_requests: dict[tuple[str, ...], Any] = {}
        self._backend_errors: dict[tuple[str, ...], Any] = {}
        self._streaming: set[int] = set()
        # The two gauges the request path moves, read at scrape time (event-loop thread
        # only), not a Gauge's lock per inc and dec: a plain count, the streams being relayed.
        self._in_flight = 0
        self.in_flight.set_function(lambda: self._in_flight)
        self.streams.set_function(lambda: len(self._streaming))

    # -- labels

    def operation(self, ctx: RequestContext) -> str:
        return lbl.bounded(ctx.operation, self._operations, missing=lbl.UNMATCHED)

    def profile(self, ctx: RequestContext) -> str:
        return lbl.bounded(ctx.caller.profile if ctx.caller else None, self._profiles)

    @staticmethod
    def _child(cache: dict[tuple[str, ...], Any], family: Any, *labels: str) -> Any:
        """``family``'s child for ``labels``, made on first use and kept (bounded sets)."""
        child = cache.get(labels)
        if child is None:
            child = cache[labels] = family.labels(*labels)
        return child

    # -- Observer (must not raise)

    def request_started(self, ctx: RequestContext) -> None:
        self._in_flight += 1

    def response_started(self, ctx: RequestContext) -> None:
        if ctx.stream:
            self._streaming.add(id(ctx))

    def request_finished(self, ctx: RequestContext) -> None:
        self._in_flight -= 1
        self._streaming.discard(id(ctx))
        try:
            self._finished(ctx)
        except Exception:
            log.exception("metrics observer failed", extra={"request_id": ctx.request_id})

    def _finished(self, ctx: RequestContext) -> None:
        # The durations are read at one instant (``ctx.ended``: the access line's too).
        op = self.operation(ctx)
        status = ctx.status
        elapsed, overhead, upstream = ctx.durations()
        child = self._child
        child(
            self._requests,
            self.requests,
            op,
            lbl.method_label(ctx.method),
            lbl.status_class(status),
        ).inc()
        stream = "true" if ctx.stream else "false"
        child(self._durations, self.duration, op, stream).observe(elapsed)
        if ctx.first_event_s is not None:
            child(self._first_events, self.first_event, op).observe(ctx.first_event_s)
        stages = ctx.stages
        for stage, seconds in stages.items():
            timed = self._stage.get(stage)
            if timed is not None:
                timed.observe(seconds)
        reached = ctx.upstream_started is not None
        if reached:
            self._stage["upstream"].observe(upstream)
            self.overhead.observe(overhead)
        reason = ctx.reason
        if "upstream_ttfb" in stages:
            cls = "4xx" if reason == "upstream_auth_failed" else lbl.status_class(status)
            child(self._upstream_status, self.upstream_responses, cls).inc()
        profile = self.profile(ctx)
        if "ratelimit" in stages:
            child(self._checks, self.ratelimit_checks, profile).inc()
        refused = lbl.refusal(status, reason, ctx.ratelimit_rule)
        if refused is not None:
            child(self._refusals, self.refusals, *refused, profile).inc()
        for kind in lbl.upstream_errors(
            status,
            reason,
            reached_upstream=reached,
            stream_cut=ctx.stream_cut,
            client_disconnected=ctx.client_disconnected,
        ):
            self._upstream_errors[kind].inc()

    # -- adapter hooks

    def on_ratelimit_decision(self, decision: Decision, seconds: float) -> None:
        if decision.degraded:
            result = "degraded"
        elif decision.shadow:
            result = "shadow"
        else:
            result = "allowed" if decision.allowed else "limited"
        self._decisions[result].inc()
        if not decision.degraded:
            self.decision_seconds.observe(seconds)

    def on_ratelimit_deadline(self) -> None:
        self.deadlines.inc()

    def on_redis_error(self, kind: str) -> None:
        self._redis_errors[kind if kind in self._redis_errors else lbl.OTHER].inc()

    def jwks_refresh_hook(self, issuer: str) -> Callable[[str], None]:
        """An ``on_refresh`` callback for one configured issuer (its series start at 0)."""
        children = {r: self.jwks_refresh.labels(issuer, r) for r in lbl.JWKS_RESULTS}
        success = self.jwks_success.labels(issuer)

        def on_refresh(result: str) -> None:
            children.get(result, children["error"]).inc()
            if result == "ok":
                success.set(time.time())

        return on_refresh

    def on_key_reload(self) -> None:
        self.key_reloads.inc()

    def on_key_reload_error(self) -> None:
        self.key_reload_failures.inc()

    def track_token(self, backend: str, seconds_left: Callable[[], float]) -> None:
        """An Entra credential's series, all present from the start (counters at 0)."""
        self.token_expiry.labels(backend).set_function(seconds_left)
        for result in lbl.TOKEN_RESULTS:
            self.token_refreshes.labels(backend, result)
        self.token_unavailable.labels(backend)

    def on_token_refresh(self, backend: str, result: str) -> None:
        self.token_refreshes.labels(
            backend, result if result in lbl.TOKEN_RESULTS else "error"
        ).inc()

    def on_token_refused(self, backend: str) -> None:
        self.token_unavailable.labels(backend).inc()

    def track_limiter(self, limiter: _Degradable) -> None:
        self.degraded.set_function(lambda: 1.0 if limiter.degraded else 0.0)

    def track_dependencies(self, health: _Dependencies) -> None:
        for dependency in health.last:
            self.dependency_up.labels(dependency).set_function(
                _as_float(functools.partial(health.up, dependency))
            )

    def track_admission(self, admission: _Admission, lag: _Lag) -> None:
        self.registry.register(_ShedCollector(admission))
        self.pending.set_function(lambda: float(admission.pending))
        self.loop_lag.set_function(lambda: lag.lag_s)

    def track_keys(self, ready: Mapping[str, Callable[[], bool]]) -> None:
        for issuer, is_ready in ready.items():
            self.keys_ready.labels(issuer).set_function(_as_float(is_ready))

    def track_pool(self, connections: Mapping[str, Callable[[], int]]) -> None:
        """Each backend's pool (``default`` for the single upstream), read at scrape time."""
        for backend, count in connections.items():
            self.pool.labels(backend).set_function(lambda count=count: float(count()))  # type: ignore[misc]

    def track_backends(self, states: Callable[[], Mapping[str, str]]) -> None:
        """The breaker state gauge of every configured backend (read at scrape time)."""
        values = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
        for name in states():
            self.backend_state.labels(name).set_function(
                lambda name=name: values.get(states().get(name, "closed"), 0.0)  # type: ignore[misc]
            )
            for reason in lbl.BACKEND_ERROR_REASONS:
                self.backend_errors.labels(name, reason)  # every series starts at 0

    def on_backend_answer(self, backend: str, status: int | None, failure: str | None) -> None:
        """One upstream answer of ``backend`` (its status), or none (``failure``)."""
        klass = lbl.NONE if status is None else lbl.status_class(status)
        # configured backends by status class (or reason): bounded
        self._child(self._backend_requests, self.backend_requests, backend, klass).inc()
        reason = lbl.backend_error_reason(status, failure)
        if reason is not None:
            self._child(self._backend_errors, self.backend_errors, backend, reason).inc()

    def set_maxima(self, *, pool_connections: Mapping[str, int], requests_in_flight: int) -> None:
        """The configured caps the saturation panels divide by (constant for a process):
        each backend's pool size, by name, and the server's in-flight cap."""
        for backend, size in pool_connections.items():
            self.pool_max.labels(backend).set(size)
        self.in_flight_max.set(requests_in_flight)


def _as_float(flag: Callable[[], bool]) -> Callable[[], float]:
    return lambda: 1.0 if flag() else 0.0


def metrics_app(registry: CollectorRegistry) -> ASGIApp:
    """The metrics listener's ASGI app: ``GET /metrics`` only, lifespan acknowledged."""
    exposition = make_asgi_app(registry)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"]
                await send({"type": f"{kind}.complete"})
                if kind == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            await exposition(scope, receive, send)
            return
        status = 404 if scope["path"] != "/metrics" else 405
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    return app
