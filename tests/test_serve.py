"""`gateway serve` as production runs it (uvicorn settings from cli.uvicorn_config).

``server.max_concurrent_connections`` caps requests in flight: beyond it the server answers
503 at once, before the gateway's code runs. Connections waiting for a request (idle or slow)
do not count: tests/test_slow_clients.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from tests.fakeazure import ScriptedResponse
from tests.gatewayproc import served
from tests.stack import V2, make_token


def test_requests_in_flight_beyond_the_cap_are_answered_503(tmp_path: Path, redis_url: str) -> None:
    with served(tmp_path, redis_url, max_concurrent_connections=16) as (fake, proc):
        fake.script(ScriptedResponse(delay_headers_s=3.0, chunks=(b"{}",)), count=16)
        token = make_token()
        holders = [
            threading.Thread(
                target=httpx.get,
                args=(f"{proc.url}/openai/threads/thread_abc123/messages",),
                kwargs={
                    "params": {"api-version": V2},
                    "timeout": 10,
                    "headers": {"Authorization": f"Bearer {token}"},
                },
            )
            for _ in range(16)
        ]
        for t in holders:
            t.start()
        assert fake.wait_for_requests(16, timeout=10)
        refused = httpx.post(
            f"{proc.url}/openai/threads",
            params={"api-version": V2},
            json={},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "service_unavailable"  # Azure's shape
        assert refused.headers["retry-after"] == "1"
        assert len(fake.requests) == 16  # the refused request reached nothing
        for t in holders:
            t.join(15)
        resumed = httpx.post(
            f"{proc.url}/openai/threads",
            params={"api-version": V2},
            json={},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert resumed.status_code == 200
