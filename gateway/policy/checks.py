"""Payload policy per operation and caller profile (pure; no I/O, no clock).

``check_body(check, version, body, limits)`` (``check``: the checker the operation's row
names) returns a fresh object built only from allowed keys (what the gateway forwards,
serialised with ``jsonbody.dump_json``), or None for operations without a body. A refusal is a
``BadRequestError`` whose ``code`` is one of ``POLICY_REASONS`` and whose ``param`` is a JSON
path (``messages[2].content``).

Azure's request schemas are closed (``additionalProperties: false``), so unknown fields are
refused, and the same message policy applies wherever a message can enter: ``messages.create``,
``threads.create`` ``messages``, ``threads.create_and_run`` ``thread.messages`` and
``runs.create`` ``additional_messages``. ``body`` is expected to come from
``jsonbody.parse_json_object`` (depth, numbers and strings already checked); a body of None on
an operation that takes one is treated as ``{}``.

Modules: ``limits`` (profiles, Azure ceilings, config check), ``fields`` (reason codes, typed
readers, metadata), ``messages``, ``threads``, ``runs``, ``tooling`` (models, tools,
instructions, formats: what a tenant may build with), ``assistants``, ``vectorstores``,
``urls``.
"""

from __future__ import annotations

from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.operations.row import BodyCheck
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
from gateway.policy.threads import (
    check_modify_metadata,
    check_modify_thread,
    check_thread,
)

__all__ = [
    "AZURE_LIMITS",
    "POLICY_REASONS",
    "PolicyLimits",
    "check_body",
    "check_create_message",
    "check_create_run",
    "check_create_thread",
    "check_create_thread_and_run",
    "check_modify_metadata",
    "check_modify_thread",
    "check_submit_tool_outputs",
    "limit_problems",
]


def check_create_thread(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    return check_thread(body, "", version, limits)


def check_create_message(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    return check_message(body, "", version, limits)


def check_body(
    check: BodyCheck | None, version: ApiVersion, body: dict[str, Any] | None, limits: PolicyLimits
) -> dict[str, Any] | None:
    """The validated body to forward (``check`` is the operation row's checker), None for an
    operation without a body, or a 400 refusal. An empty body of one that takes a body is
    checked as ``{}``."""
    if check is None:
        if body is None or body == {}:
            return None
        refuse(BODY_NOT_ALLOWED, "", "This operation does not take a request body.")
    if body is None:
        body = {}
    if not isinstance(body, dict):
        refuse(INVALID_TYPE, "", "The request body must be a JSON object.")
    return check(body, version, effective_limits(limits))
