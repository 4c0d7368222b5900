"""The "backend out of rotation" alert against a real Prometheus (``tests/test_prometheus``'s
private process, the repository's rule file): two fake Azures behind a real gateway, A's
breaker opened by a 429 with ``Retry-After``; Prometheus scrapes the gateway's metrics
listener and the alert becomes active for A, and only for A, with the target's namespace
and job. (Its ``for: 1m`` keeps it
pending for a minute: being active is what the expression decides; the test does not wait.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakeazure import ScriptedResponse
from tests.servers import ThreadedUvicorn
from tests.test_e2e_backends import two_backends
from tests.test_prometheus import JOB, TARGET_LABELS, Prometheus, binaries

pytestmark = pytest.mark.timeout(90)


def test_backend_out_of_rotation_alert_on_real_prometheus(tmp_path: Path, redis_url: str) -> None:
    prometheus_bin, _ = binaries()
    (tmp_path / "stack").mkdir()
    (tmp_path / "prom").mkdir()
    with two_backends(tmp_path / "stack", redis_url, b={"priority": 1}) as s:
        assert s.gateway.metrics_app is not None
        with ThreadedUvicorn(s.gateway.metrics_app, lifespan="off") as metrics:
            prom = Prometheus(prometheus_bin, tmp_path / "prom", f"127.0.0.1:{metrics.port}")
            try:
                prom.wait(
                    "first scrape",
                    lambda: any(r["value"][1] == "1" for r in prom.query(f'up{{job="{JOB}"}}')),
                )
                thread_id = s.thread()
                assert len(s.b.requests) == 0
                s.a.script(
                    ScriptedResponse(429, (("retry-after", "120"),), (b"{}",)),
                    path_prefix=f"/openai/threads/{thread_id}",
                )
                assert s.get(f"threads/{thread_id}").status_code == 429

                def active() -> list[dict[str, Any]]:
                    got = httpx.get(f"{prom.url}/api/v1/alerts", timeout=5).json()
                    return [
                        a
                        for a in got["data"]["alerts"]
                        if a["labels"]["alertname"] == "GatewayBackendOutOfRotation"
                    ]

                prom.wait("the alert active", lambda: bool(active()), timeout=20)
                alerts = active()
                assert [a["labels"]["backend"] for a in alerts] == ["a"]
                assert alerts[0]["labels"]["namespace"] == TARGET_LABELS["namespace"]
                assert alerts[0]["labels"]["job"] == JOB
                assert alerts[0]["state"] in ("pending", "firing")
                throttled = prom.query(
                    'gateway_upstream_backend_errors_total{backend="a",reason="throttled"}'
                )
                assert [r["value"][1] for r in throttled] == ["1"]
                state_b = prom.query('gateway_upstream_backend_state{backend="b"}')
                assert [r["value"][1] for r in state_b] == ["0"]
            finally:
                prom.stop()
