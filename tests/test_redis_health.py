"""Readiness checks of the Redis dependencies: a probe's result as a check value (pure)."""

from __future__ import annotations

import pytest

from gateway.redisconn.health import check_value


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("ok", "ok"),
        ("refused", "refused"),
        ("deadline", "slow"),
        ("timeout", "unavailable"),
        ("connection", "unavailable"),
        ("response", "unavailable"),
        ("other", "unavailable"),
    ],
)
def test_probe_results_as_checks(kind: str, check: str) -> None:
    assert check_value(kind) == check
