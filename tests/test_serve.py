"""`gateway serve` as production runs it (uvicorn settings from cli.uvicorn_config)."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

import httpx

from gateway.fakeazure import FakeAzure
from tests.gatewayproc import GatewayProcess, write_config
from tests.servers import ThreadedUvicorn
from tests.stack import PUBLIC_JWK, V2, base_config, make_token


def test_connection_flood_is_answered_503_not_queued(tmp_path: Path, redis_url: str) -> None:
    fake = FakeAzure("azure-key")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    with ThreadedUvicorn(fake.app, lifespan="off") as upstream:
        config = base_config(upstream.url, str(jwks), redis_url)
        config["server"] = {**config["server"], "max_concurrent_connections": 16}
        proc = GatewayProcess(write_config(config, tmp_path / "gateway.toml"),
                              api_key="azure-key", redis_url=redis_url)
        proc.start()
        held: list[socket.socket] = []
        try:
            proc.wait_ready()
            with contextlib.ExitStack() as stack:
                for _ in range(20):  # slow clients that connect and send nothing
                    held.append(stack.enter_context(
                        socket.create_connection(("127.0.0.1", proc.port))))
                flooded = httpx.post(f"{proc.url}/openai/threads", params={"api-version": V2},
                                     json={}, headers={"Authorization":
                                                       f"Bearer {make_token()}"}, timeout=5)
                assert flooded.status_code == 503
            # With the slow clients gone, service resumes.
            resumed = httpx.post(f"{proc.url}/openai/threads", params={"api-version": V2},
                                 json={}, headers={"Authorization": f"Bearer {make_token()}"},
                                 timeout=5)
            assert resumed.status_code == 200
            assert len(fake.requests) == 1
        finally:
            proc.stop()
