"""Policy by operation name, for the policy tests: the checker of the operation's row."""

from __future__ import annotations

from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.operations.table import BY_NAME
from gateway.policy.checks import PolicyLimits, check_body


def check_request(
    operation: str, version: ApiVersion, body: Any, limits: PolicyLimits
) -> dict[str, Any] | None:
    """``check_body`` with the checker of the row named ``operation``."""
    row = BY_NAME.get(operation)
    if row is None:
        raise ValueError(f"unknown operation: {operation!r}")
    return check_body(row.body, version, body, limits)
