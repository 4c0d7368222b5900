"""Payload policy per operation and caller profile (pure; no I/O, no clock).

``check_request(operation, version, body, limits)`` returns a fresh object built only from
allowed keys (what the gateway forwards, serialised with ``jsonbody.dump_json``), or None for
operations without a body. A refusal is a ``BadRequestError`` whose ``code`` is one of
``POLICY_REASONS`` and whose ``param`` is a JSON path (``messages[2].content``).

Azure's request schemas are closed (``additionalProperties: false``), so unknown fields are
refused, and the same message policy applies wherever a message can enter: ``messages.create``,
``threads.create`` ``messages``, ``threads.create_and_run`` ``thread.messages`` and
``runs.create`` ``additional_messages``. ``body`` is expected to come from
``jsonbody.parse_json_object`` (depth, numbers and strings already checked); a body of None on
an operation that takes one is treated as ``{}``.

Modules: ``policy_limits`` (profiles, Azure ceilings, config check), ``policy_fields`` (reason
codes, typed readers, metadata), ``policy_messages``, ``policy_threads``, ``policy_runs``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.policy.fields import (
    BODY_NOT_ALLOWED,
    INVALID_TYPE,
    POLICY_REASONS,
    refuse,
)
from gateway.policy.limits import AZURE_LIMITS, PolicyLimits, effective_limits, limit_problems
from gateway.policy.messages import check_message
from gateway.policy.runs import (
    check_create_run,
    check_create_thread_and_run,
    check_submit_tool_outputs,
)
from gateway.policy.threads import check_modify_metadata, check_modify_thread, check_thread

__all__ = [
    "AZURE_LIMITS",
    "BODYLESS_OPERATIONS",
    "BODY_OPERATIONS",
    "POLICY_REASONS",
    "PolicyLimits",
    "check_request",
    "limit_problems",
]

_Check = Callable[[dict[str, Any], ApiVersion, PolicyLimits], dict[str, Any]]

_CHECKS: dict[str, _Check] = {
    "threads.create": lambda body, version, limits: check_thread(body, "", version, limits),
    "threads.modify": check_modify_thread,
    "messages.create": lambda body, version, limits: check_message(body, "", version, limits),
    "messages.modify": check_modify_metadata,
    "runs.create": check_create_run,
    "threads.create_and_run": check_create_thread_and_run,
    "runs.modify": check_modify_metadata,
    "runs.submit_tool_outputs": check_submit_tool_outputs,
}

BODY_OPERATIONS: frozenset[str] = frozenset(_CHECKS)
BODYLESS_OPERATIONS: frozenset[str] = frozenset(
    {
        "threads.retrieve",
        "threads.delete",
        "messages.list",
        "messages.retrieve",
        "messages.delete",
        "messages.files.list",
        "messages.files.retrieve",
        "runs.list",
        "runs.retrieve",
        "runs.cancel",
        "runs.steps.list",
        "runs.steps.retrieve",
    }
)


def check_request(
    operation: str, version: ApiVersion, body: dict[str, Any] | None, limits: PolicyLimits
) -> dict[str, Any] | None:
    """The validated body to forward, None for bodiless operations, or a 400 refusal.

    Raises ``ValueError`` for an operation name the route table should never produce.
    """
    if operation in BODYLESS_OPERATIONS:
        if body is None or body == {}:
            return None
        refuse(BODY_NOT_ALLOWED, "", "This operation does not take a request body.")
    check = _CHECKS.get(operation)
    if check is None:
        raise ValueError(f"unknown operation: {operation!r}")
    if body is None:
        body = {}
    if not isinstance(body, dict):
        refuse(INVALID_TYPE, "", "The request body must be a JSON object.")
    return check(body, version, effective_limits(limits))
