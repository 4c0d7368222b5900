"""`gateway serve` as production runs it (uvicorn settings from cli.uvicorn_config)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import httpx

from tests.gatewayproc import served
from tests.stack import V2, make_token


def test_connection_flood_is_answered_503_not_queued(tmp_path: Path, redis_url: str) -> None:
    with served(tmp_path, redis_url, max_concurrent_connections=16) as (fake, proc):
        with contextlib.ExitStack() as stack:
            for _ in range(20):  # slow clients that connect and send nothing
                stack.enter_context(socket.create_connection(("127.0.0.1", proc.port)))
            flooded = httpx.post(f"{proc.url}/openai/threads", params={"api-version": V2},
                                 json={}, headers={"Authorization": f"Bearer {make_token()}"},
                                 timeout=5)
            assert flooded.status_code == 503
        # With the slow clients gone, service resumes.
        resumed = httpx.post(f"{proc.url}/openai/threads", params={"api-version": V2}, json={},
                             headers={"Authorization": f"Bearer {make_token()}"}, timeout=5)
        assert resumed.status_code == 200
        assert len(fake.requests) == 1
