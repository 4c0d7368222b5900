"""Bounded metric label values (pure): every label value comes from a fixed or configured set.

Rules (Prometheus: "do not use labels to store dimensions with high cardinality"):

* ``operation``: a route-table operation name, or ``unmatched`` (no route matched); anything
  else is ``other``. Never a path, an id or a query.
* ``method``: one of the standard HTTP methods, else ``other`` (the method is client text).
* ``status_class``: ``1xx`` … ``5xx``, else ``other``.
* ``profile``: a configured profile name; ``none`` when no caller was established; ``other``
  for anything else. Never a caller id, subject, tenant or namespace.
* ``reason``: a code from the fixed sets below (``AUTH_REASONS``, ``POLICY_REASONS``,
  ``RATELIMIT_REASONS``, route and intake codes); anything unknown is ``other``.

No I/O, no clock, no prometheus-client: ``metrics.py`` is the adapter.
"""

from __future__ import annotations

from collections.abc import Set

from gateway.auth.tokens import AUTH_REASONS
from gateway.operations.row import ALL_KINDS
from gateway.ownership.rules import REFERENCE_NOT_FOUND
from gateway.policy.checks import POLICY_REASONS
from gateway.policy.jsonbody import JSON_REASONS
from gateway.ratelimit.gcra import RATELIMIT_REASONS

OTHER = "other"
NONE = "none"
UNMATCHED = "unmatched"

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

#: Route allow-list refusals (``routes.py``).
ROUTE_REASONS: frozenset[str] = frozenset(
    {
        "route_not_found",
        "method_not_allowed",
        "missing_api_version",
        "unsupported_api_version",
        "operation_not_in_api_version",
        "duplicate_query_parameter",
        "unknown_query_parameter",
        "invalid_query_parameter",
        "invalid_query_string",
    }
)
#: Header and body intake refusals (``proxy.py``, ``bodyread.py``, ``jsonbody.py``, errors).
INTAKE_REASONS: frozenset[str] = JSON_REASONS | frozenset(
    {
        "request_too_large",
        "request_body_timeout",
        "request_header_too_large",
        "invalid_content_length",
        "invalid_header",
        "upgrade_refused",
        "invalid_body",
        "invalid_transfer_encoding",
        "request_header_timeout",
    }
)
#: 403 codes raised outside ``AUTH_REASONS`` (the caller matches no profile rule).
PERMISSION_REASONS: frozenset[str] = frozenset({"caller_not_allowed"})
#: Ownership refusals (``ownership``): an unknown or foreign object reads as its kind's 404
#: (``thread_not_found``, ``response_not_found`` ...), a body reference to one as 400
#: ``reference_not_found``.
OWNERSHIP_REASONS: frozenset[str] = frozenset(
    {kind.not_found_code for kind in ALL_KINDS} | {REFERENCE_NOT_FOUND, "references_span_backends"}
)
#: The 429's error codes (``ratelimit.refusal_error``); the rule is ``ctx.ratelimit_rule``.
RATELIMIT_CODES: frozenset[str] = frozenset({"rate_limit_exceeded", "concurrency_limit_exceeded"})

REFUSAL_STAGES = ("auth", "route", "intake", "policy", "ownership", "ratelimit", OTHER)

#: Gateway error code → upstream error kind.
UPSTREAM_ERROR_CODES: dict[str, str] = {
    "upstream_unreachable": "unreachable",
    "upstream_timeout": "timeout",
    "upstream_pool_exhausted": "pool_exhausted",
    "upstream_auth_failed": "auth_failed",
    "upstream_error": "bad_response",
    "upstream_target_mismatch": "target_mismatch",
    # Every backend out of rotation for new objects (``upstream.backends``).
    "no_upstream_available": "no_backend",
}
UPSTREAM_ERROR_KINDS: tuple[str, ...] = (
    *UPSTREAM_ERROR_CODES.values(),
    "response_5xx",
    "throttled",
    "stream_cut",
    "client_disconnect",
)

#: Stages the proxy times (``RequestContext.stages`` keys) plus ``upstream`` (total).
STAGES = ("auth", "ownership", "policy", "ratelimit", "upstream_ttfb", "upstream")

#: Redis error kinds (``ratelimit_redis.error_kind``) and limiter decision results.
REDIS_ERROR_KINDS = ("refused", "timeout", "connection", "response", OTHER)
DECISION_RESULTS = ("allowed", "limited", "degraded", "shadow")
#: ``jwks.REFRESH_RESULTS``.
JWKS_RESULTS = ("ok", "error", "rejected_key")
#: Entra token fetch results (``upstream.entra``).
TOKEN_RESULTS = ("ok", "error")


#: Why an answer (or its absence) counts against a backend's breaker.
BACKEND_ERROR_REASONS = ("throttled", "server_error", "timeout", "unreachable")


def backend_error_reason(status: int | None, failure: str | None) -> str | None:
    if failure is not None:
        return failure if failure in BACKEND_ERROR_REASONS else OTHER
    if status == 429:
        return "throttled"
    if status is not None and status >= 500:
        return "server_error"
    return None


def status_class(status: int) -> str:
    return STATUS_CLASSES[status // 100 - 1] if 100 <= status <= 599 else OTHER


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


def bounded(value: str | None, allowed: Set[str], *, missing: str = NONE) -> str:
    """``value`` if it is one of ``allowed``; ``missing`` when None; else ``other``."""
    if value is None:
        return missing
    return value if value in allowed else OTHER


def refusal(status: int, reason: str | None, ratelimit_rule: str | None) -> tuple[str, str] | None:
    """``(stage, reason)`` for a request the gateway refused itself, else None.

    Errors that are not the caller's doing (upstream failures, our own outages other than
    the key set, internal errors) are not refusals: they have their own metrics.
    """
    if reason is None:
        return None
    if reason in RATELIMIT_CODES or reason in RATELIMIT_REASONS:
        rule = ratelimit_rule if ratelimit_rule is not None else reason
        if rule in RATELIMIT_REASONS:
            return "ratelimit", rule
        return "ratelimit", "concurrency" if reason == "concurrency_limit_exceeded" else OTHER
    for stage, codes in (
        ("auth", AUTH_REASONS),
        ("auth", PERMISSION_REASONS),
        ("policy", POLICY_REASONS),
        ("ownership", OWNERSHIP_REASONS),
        ("route", ROUTE_REASONS),
        ("intake", INTAKE_REASONS),
    ):
        if reason in codes:
            return stage, reason
    if 400 <= status < 500:
        return OTHER, OTHER
    return None


def upstream_errors(
    status: int,
    reason: str | None,
    *,
    reached_upstream: bool,
    stream_cut: bool,
    client_disconnected: bool,
) -> tuple[str, ...]:
    """The upstream error kinds one finished request counts towards (usually none)."""
    if reason is None and not (stream_cut or client_disconnected):
        if reached_upstream and (status >= 500 or status == 429):
            return ("response_5xx",) if status >= 500 else ("throttled",)
        return ()  # the common case: an answer that is no error of Azure's
    kinds: list[str] = []
    if reason is not None and reason in UPSTREAM_ERROR_CODES:
        kinds.append(UPSTREAM_ERROR_CODES[reason])
    elif reason is None and reached_upstream and status >= 500:
        kinds.append("response_5xx")
    elif reason is None and reached_upstream and status == 429:
        kinds.append("throttled")
    if stream_cut:
        kinds.append("stream_cut")
    if client_disconnected:
        kinds.append("client_disconnect")
    return tuple(kinds)
