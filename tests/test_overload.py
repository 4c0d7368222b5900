"""Overload never switches the limits off (issue 12, item 1).

A real ``gateway serve`` child in front of the recording fake Azure, with a real Redis. One
caller limited to a burst of 5 sends 1,200 writes at once over raw sockets: what reaches
Azure is at most the burst plus what refilled during the test, and everything else is
answered 429 or 503 with ``Retry-After``, whatever ``fail_mode`` says about Redis failures
(a deadline that expires because our own event loop is saturated is not one).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakeazure import FakeAzure
from tests.flood import Answer, flood
from tests.gatewayproc import GatewayProcess, write_config
from tests.rawhttp import build_request
from tests.servers import ThreadedUvicorn
from tests.stack import PUBLIC_JWK, V2, base_config, deep_merge, make_token

THREADS = "/openai/threads"
BURST = 5
REFILL_S = 30.0  # one request every 30 s after the burst
FLOOD = 1200


def limited(namespace: str, **rate_limit: Any) -> dict[str, Any]:
    """Overrides giving ``namespace`` a profile with this ``rate_limit`` table."""
    return {
        "auth": {"callers": [{"profile": "limited", "namespaces": [namespace]}]},
        "profiles": {"limited": {"operations": ["*"], "rate_limit": rate_limit}},
    }


@contextlib.contextmanager
def gateway_child(
    tmp: Path, redis_url: str, overrides: dict[str, Any]
) -> Iterator[tuple[FakeAzure, GatewayProcess]]:
    fake = FakeAzure("azure-key")
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    with ThreadedUvicorn(fake.app, lifespan="off") as upstream:
        config = deep_merge(base_config(upstream.url, str(jwks), redis_url), overrides)
        proc = GatewayProcess(
            write_config(config, tmp / "gateway.toml"), api_key="azure-key", redis_url=redis_url
        )
        proc.start()
        try:
            proc.wait_ready()
            yield fake, proc
        finally:
            proc.stop()


def created(fake: FakeAzure) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path == THREADS)


def assert_refused_with_retry_after(answers: list[Answer]) -> None:
    for answer in answers:
        assert answer.status in (429, 503), (answer.status, answer.body[:200])
        retry = answer.header("retry-after")
        assert retry is not None and retry.isdigit() and int(retry) >= 1, answer.headers
        error = json.loads(answer.body)["error"]
        assert set(error) == {"code", "message", "param", "type"}


@pytest.mark.parametrize("fail_mode", ["open", "local"])
def test_a_1200_request_burst_admits_at_most_burst_plus_refill(
    tmp_path: Path, redis_url: str, fail_mode: str
) -> None:
    overrides = deep_merge(
        limited(
            "flood", per_caller={"write": {"requests": 1, "per_seconds": REFILL_S, "burst": BURST}}
        ),
        {
            "rate_limit": {"fail_mode": fail_mode},
        },
    )
    token = make_token("flood", "app")
    request = build_request(
        "POST",
        f"{THREADS}?api-version={V2}",
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        b"{}",
    )
    with gateway_child(tmp_path, redis_url, overrides) as (fake, proc):
        answers, elapsed = flood(proc.url, request, FLOOD, timeout=45)
        admitted_at_azure = created(fake)
    statuses = Counter(a.status for a in answers)
    allowed = BURST + int(elapsed // REFILL_S)
    assert admitted_at_azure <= allowed, (statuses, elapsed)
    assert statuses[200] == admitted_at_azure, statuses
    assert statuses[200] >= 1, statuses  # the limiter admitted the burst's first request
    assert_refused_with_retry_after([a for a in answers if a.status != 200])
    assert elapsed < 45
