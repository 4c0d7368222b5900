"""A gateway stack whose upstream credential is Entra workload identity.

The fake token endpoint (``tests.faketoken``, TLS with a private CA) issues the tokens; the
fake Azure accepts exactly the unexpired ones it issued as ``Authorization: Bearer`` (its
api-key check unchanged: the gateway has no key here). The gateway is built from the config
alone (``make_credential``), as ``gateway serve`` builds it, and the projected token file is a
real file the test can rotate.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.app import build
from gateway.config import parse
from tests.fakeazure import FakeAzure
from tests.faketoken import FakeTokenEndpoint, TestCA, serving
from tests.servers import ThreadedUvicorn
from tests.stack import PUBLIC_JWK, Stack, base_config, deep_merge

#: The variables the workload-identity webhook injects, by the ``[upstream.entra]`` key each
#: stands for.
WEBHOOK_ENV = {
    "client_id": "AZURE_CLIENT_ID",
    "tenant_id": "AZURE_TENANT_ID",
    "authority_host": "AZURE_AUTHORITY_HOST",
    "token_file": "AZURE_FEDERATED_TOKEN_FILE",
}
TENANT = "72f988bf-0000-4000-8000-000000000001"
CLIENT = "0b1e2c3d-0000-4000-8000-000000000002"


@dataclass
class EntraStack:
    stack: Stack
    endpoint: FakeTokenEndpoint
    authority: str
    token_file: Path

    def rotate_token_file(self) -> str:
        """The kubelet's rotation of the projected token (a new file content)."""
        content = f"projected-sa-token-{secrets.token_urlsafe(12)}"
        self.token_file.write_text(content)
        return content


def wait_until(what: str, ready: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout}s")
        time.sleep(0.02)


def entra_config(
    upstream_url: str,
    jwks_file: str,
    redis_url: str | None,
    *,
    authority: str,
    token_file: Path,
    ca_file: Path,
) -> dict[str, Any]:
    data = base_config(upstream_url, jwks_file, redis_url)
    data["upstream"]["credential"] = "entra"
    data["upstream"]["entra"] = {
        "client_id": CLIENT,
        "tenant_id": TENANT,
        "authority_host": authority,
        "token_file": str(token_file),
        "ca_file": str(ca_file),
        "refresh_margin_s": 10,
    }
    return data


@contextmanager
def running_entra_stack(
    tmp: Path,
    *,
    redis_url: str | None = None,
    overrides: dict[str, Any] | None = None,
    lifetime_s: int = 3600,
    ready: bool = True,
    fail_status: int | None = None,
    delay_s: float = 0.0,
    from_environment: bool = False,
) -> Iterator[EntraStack]:
    """``ready``: wait until the gateway holds its first token. ``fail_status`` and
    ``delay_s`` are the token endpoint's from the start (before the gateway's first fetch).
    ``from_environment``: client, tenant, authority and token file are not in the config but
    in the variables the workload-identity webhook injects (as in the kustomize overlay)."""
    token_file = tmp / "azure-identity-token"
    token_file.write_text(f"projected-sa-token-{secrets.token_urlsafe(12)}")
    ca = TestCA(tmp)
    endpoint = FakeTokenEndpoint(
        TENANT, CLIENT, token_file, lifetime_s=lifetime_s, fail_status=fail_status, delay_s=delay_s
    )
    jwks_file = tmp / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    fake = FakeAzure(secrets.token_urlsafe(24), bearer=endpoint.valid)
    with serving(endpoint, ca) as authority, ThreadedUvicorn(fake.app, lifespan="off") as up:
        data = entra_config(
            up.url,
            str(jwks_file),
            redis_url,
            authority=authority,
            token_file=token_file,
            ca_file=ca.ca_file,
        )
        environ: dict[str, str] = {}
        if from_environment:
            entra = data["upstream"]["entra"]
            for key, variable in WEBHOOK_ENV.items():
                environ[variable] = entra.pop(key)
        config = parse(deep_merge(data, overrides or {}))
        gateway = build(config, environ=environ)
        with ThreadedUvicorn(gateway, http="httptools", server_header=False) as server:
            stack = Stack(fake, gateway, server.url, up.url, fake.api_key, config)
            if ready:
                wait_until(
                    "the gateway holds a token",
                    lambda: httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200,
                )
            yield EntraStack(stack, endpoint, authority, token_file)
