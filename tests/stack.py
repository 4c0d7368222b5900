"""A whole gateway stack for tests: fake Azure + gateway, each on a real uvicorn server.

Tokens are signed by a test key pair whose JWK Set the gateway reads from a file; the Azure
key is a random secret the fake Azure checks. Nothing here is mocked: requests go over real
loopback HTTP and the fake Azure records exactly what reached it.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.app import Gateway, build
from gateway.config import Config, parse
from gateway.upstream.credentials import ApiKeySource
from tests.fakeazure import FakeAzure
from tests.servers import ThreadedUvicorn

ISSUER = "https://issuer.test.invalid"
AUDIENCE = "azure-openai-gateway"
KID = "test-key-1"
V1 = "2024-02-15-preview"
V2 = "2024-05-01-preview"

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
PUBLIC_JWK = {
    **jwt.algorithms.RSAAlgorithm.to_jwk(_KEY.public_key(), as_dict=True),
    "kid": KID,
    "alg": "RS256",
    "use": "sig",
}


def claims_for(
    namespace: str = "team-a",
    sa: str = "app",
    *,
    now: float | None = None,
    ttl: int = 600,
    **extra: Any,
) -> dict[str, Any]:
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": [AUDIENCE],
        "sub": f"system:serviceaccount:{namespace}:{sa}",
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": sa, "uid": "u1"}},
    }
    claims.update(extra)
    return claims


def make_token(
    namespace: str = "team-a",
    sa: str = "app",
    *,
    key: Any = None,
    headers: dict[str, Any] | None = None,
    algorithm: str = "RS256",
    **claims: Any,
) -> str:
    return jwt.encode(
        claims_for(namespace, sa, **claims),
        key or PRIVATE_PEM,
        algorithm=algorithm,
        headers={"kid": KID, **(headers or {})},
    )


def base_config(upstream_url: str, jwks_file: str, redis_url: str | None) -> dict[str, Any]:
    return {
        "server": {"metrics_port": 0, "overhead_header": True},
        "upstream": {
            "endpoint": upstream_url,
            "allow_plain_http": True,
            "read_timeout_s": 5,
            "stream_read_timeout_s": 5,
            "connect_timeout_s": 2,
        },
        "redis": {"url": redis_url or "redis://127.0.0.1:1/0"},
        "rate_limit": {"enabled": redis_url is not None},
        # Off unless a test turns it on: with ownership, a thread the gateway has no owner for
        # is first looked up at Azure (whose answer would take a test's scripted response).
        # The ownership tests run their own stacks (tests/test_e2e_ownership.py).
        "threads": {"ownership": False, "unknown": "allow"},
        "auth": {
            "issuers": [
                {
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "algorithms": ["RS256"],
                    "kubernetes": True,
                    "jwks_file": jwks_file,
                }
            ],
            "callers": [
                {"profile": "reader", "namespaces": ["readers"]},
                {"profile": "writer", "namespaces": ["team-a", "team-b"]},
            ],
        },
        "profiles": {
            "writer": {"operations": ["*"]},
            "reader": {"operations": ["*.list", "*.retrieve"]},
        },
    }


@dataclass
class Stack:
    fake: FakeAzure
    gateway: Gateway
    url: str
    upstream_url: str
    api_key: str
    config: Config

    def token(self, namespace: str = "team-a", sa: str = "app", **kw: Any) -> str:
        return make_token(namespace, sa, **kw)

    def auth(self, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**kw)}"}


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@contextmanager
def running_stack(
    tmp: Path, *, redis_url: str | None = None, overrides: dict[str, Any] | None = None
) -> Iterator[Stack]:
    api_key = secrets.token_urlsafe(24)
    fake = FakeAzure(api_key)
    jwks_file = tmp / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    key_file = tmp / "api-key"
    key_file.write_text(api_key)
    with ThreadedUvicorn(fake.app, lifespan="off") as upstream:
        data = base_config(upstream.url, str(jwks_file), redis_url)
        data["upstream"]["api_key_file"] = str(key_file)
        config = parse(deep_merge(data, overrides or {}))
        gateway = build(
            config,
            api_key=ApiKeySource(
                api_key, path=str(key_file), reload_s=config.upstream.api_key_reload_s
            ),
        )
        with ThreadedUvicorn(gateway, http="httptools", server_header=False) as server:
            yield Stack(fake, gateway, server.url, upstream.url, api_key, config)
