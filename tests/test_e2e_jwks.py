"""The gateway against a live JWKS endpoint it fetches over HTTP: rotation, outage (503, not
401), unknown-kid floods, and the gateway's own bearer token on the fetch."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.app import build
from gateway.config import Config, parse
from gateway.upstream.credentials import ApiKeySource
from tests.fakeazure import FakeAzure
from tests.servers import ThreadedUvicorn
from tests.stack import AUDIENCE, ISSUER, V2, claims_for


@dataclass
class KeyServer:
    keys: dict[str, Any] = field(default_factory=dict)
    fail: bool = False
    fetches: int = 0
    bearer: list[str | None] = field(default_factory=list)

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            out.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return {"keys": out}

    async def endpoint(self, request: Request) -> Response:
        self.fetches += 1
        self.bearer.append(request.headers.get("authorization"))
        if self.fail:
            return Response("down", status_code=500)
        return JSONResponse(self.jwks())


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(key: rsa.RSAPrivateKey, kid: str) -> str:
    return jwt.encode(claims_for(), key, algorithm="RS256", headers={"kid": kid})


def gateway_config(upstream_url: str, jwks_url: str, **issuer: Any) -> Config:
    """A gateway that trusts one issuer whose keys it fetches from ``jwks_url``."""
    return parse(
        {
            "upstream": {"endpoint": upstream_url, "allow_plain_http": True},
            "rate_limit": {"enabled": False},
            "threads": {"ownership": False},
            "auth": {
                "token_cache_size": 0,
                "issuers": [
                    {
                        "issuer": ISSUER,
                        "audiences": [AUDIENCE],
                        "kubernetes": True,
                        "jwks_url": jwks_url,
                        **issuer,
                    }
                ],
                "callers": [{"profile": "all", "namespaces": ["team-a"]}],
            },
            "profiles": {"all": {}},
        }
    )


@dataclass
class JwksStack:
    url: str
    server: KeyServer
    fake: FakeAzure
    token_file: Path

    def get(self, bearer: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}/openai/threads",
            params={"api-version": V2},
            headers={"Authorization": f"Bearer {bearer}"},
            json={},
        )


@pytest.fixture
def jwks_stack(tmp_path: Path) -> Iterator[JwksStack]:
    server = KeyServer()
    server.keys["k1"] = new_key()
    api_key = secrets.token_urlsafe(16)
    fake = FakeAzure(api_key)
    token_file = tmp_path / "gateway-token"
    token_file.write_text("gateway-own-token-1")
    keys_app = Starlette(routes=[Route("/jwks", server.endpoint)])
    with (
        ThreadedUvicorn(keys_app, lifespan="off") as keys,
        ThreadedUvicorn(fake.app, lifespan="off") as upstream,
    ):
        config = gateway_config(
            upstream.url,
            f"{keys.url}/jwks",
            bearer_token_file=str(token_file),
            jwks_ttl_s=60,
            jwks_cooldown_s=0.5,
            jwks_stale_s=60,
        )
        gateway = build(config, api_key=ApiKeySource(api_key))
        with ThreadedUvicorn(gateway) as gw:
            yield JwksStack(gw.url, server, fake, token_file)


def test_rotation_kid_flood_and_own_token(jwks_stack: JwksStack) -> None:
    s = jwks_stack
    k1 = s.server.keys["k1"]
    assert s.get(token(k1, "k1")).status_code == 200
    assert s.server.bearer == ["Bearer gateway-own-token-1"]
    # A new key appears at the issuer: its first token triggers one refresh.
    s.token_file.write_text("gateway-own-token-2")  # projected tokens rotate
    time.sleep(0.6)  # past the cooldown since the start-up fetch
    s.server.keys["k2"] = new_key()
    assert s.get(token(s.server.keys["k2"], "k2")).status_code == 200
    assert s.server.fetches == 2
    assert s.server.bearer[-1] == "Bearer gateway-own-token-2"
    # A flood of unknown kids costs at most one fetch per cooldown and valid tokens still pass.
    before = s.server.fetches
    started = time.monotonic()
    for _ in range(200):
        assert s.get(token(k1, f"random-{secrets.token_hex(4)}")).status_code == 401
    assert s.server.fetches - before <= 1 + (time.monotonic() - started) / 0.5
    assert s.get(token(k1, "k1")).status_code == 200
    # Removed at the issuer: refused once the gateway has refreshed.
    del s.server.keys["k1"]
    time.sleep(0.6)
    assert s.get(token(s.server.keys["k2"], "k3-unknown")).status_code == 401  # refresh
    assert s.get(token(k1, "k1")).status_code == 401


def test_outage_keeps_known_keys_then_503(tmp_path: Path) -> None:
    server = KeyServer()
    key = new_key()
    server.keys["k1"] = key
    fake = FakeAzure("azure-key")
    keys_app = Starlette(routes=[Route("/jwks", server.endpoint)])
    with (
        ThreadedUvicorn(keys_app, lifespan="off") as keys,
        ThreadedUvicorn(fake.app, lifespan="off") as upstream,
    ):
        config = gateway_config(
            upstream.url, f"{keys.url}/jwks", jwks_ttl_s=0.5, jwks_cooldown_s=0.25, jwks_stale_s=3.0
        )
        gateway = build(config, api_key=ApiKeySource("azure-key"))
        with ThreadedUvicorn(gateway) as gw:

            def call() -> httpx.Response:
                return httpx.post(
                    f"{gw.url}/openai/threads",
                    params={"api-version": V2},
                    headers={"Authorization": f"Bearer {token(key, 'k1')}"},
                    json={},
                )

            def wait_status(status: int, timeout: float) -> httpx.Response:
                deadline = time.monotonic() + timeout
                while True:
                    response = call()
                    if response.status_code == status or time.monotonic() > deadline:
                        return response
                    time.sleep(0.1)

            assert call().status_code == 200
            server.fail = True
            failed_at = time.monotonic()
            time.sleep(0.8)  # refreshes now fail; the last good set is younger than stale_s
            assert call().status_code == 200
            assert httpx.get(f"{gw.url}/readyz").status_code == 200
            down = wait_status(503, timeout=8)  # past the stale period
            assert down.status_code == 503
            assert time.monotonic() - failed_at > 2.0  # not before the stale period
            assert down.json()["error"]["code"] == "jwks_unavailable"
            assert "retry-after" in down.headers
            assert httpx.get(f"{gw.url}/readyz").status_code == 503
            server.fail = False
            assert wait_status(200, timeout=5).status_code == 200
    assert json.loads(fake.requests[0].body) == {}


IDP = "https://idp.test.invalid"


def idp_token(key: rsa.RSAPrivateKey, kid: str, tenant: str = "team-a") -> str:
    now = int(time.time())
    return jwt.encode(
        {
            "iss": IDP,
            "aud": AUDIENCE,
            "sub": "svc-1",
            "tenant": tenant,
            "iat": now,
            "exp": now + 600,
        },
        key,
        algorithm="RS256",
        headers={"kid": kid},
    )


def test_one_issuer_past_stale_does_not_take_the_replica_out(tmp_path: Path) -> None:
    """Readiness means "this replica can serve": Kubernetes callers are still served while the
    IdP's JWKS is down past its stale period, so /readyz stays 200; the IdP's callers get 503
    jwks_unavailable and the per-issuer gauge says which issuer is down."""
    cluster, idp = KeyServer(), KeyServer()
    cluster.keys["c1"], idp.keys["i1"] = new_key(), new_key()
    fake = FakeAzure("azure-key")
    with (
        ThreadedUvicorn(
            Starlette(routes=[Route("/jwks", cluster.endpoint)]), lifespan="off"
        ) as cluster_keys,
        ThreadedUvicorn(
            Starlette(routes=[Route("/jwks", idp.endpoint)]), lifespan="off"
        ) as idp_keys,
        ThreadedUvicorn(fake.app, lifespan="off") as upstream,
    ):
        fast = {"jwks_ttl_s": 0.5, "jwks_cooldown_s": 0.25, "jwks_stale_s": 2.0}
        config = parse(
            {
                "upstream": {"endpoint": upstream.url, "allow_plain_http": True},
                "rate_limit": {"enabled": False},
                "threads": {"ownership": False},
                "auth": {
                    "token_cache_size": 0,
                    "issuers": [
                        {
                            "issuer": ISSUER,
                            "audiences": [AUDIENCE],
                            "kubernetes": True,
                            "jwks_url": f"{cluster_keys.url}/jwks",
                            **fast,
                        },
                        {
                            "issuer": IDP,
                            "audiences": [AUDIENCE],
                            "tenant_claim": "tenant",
                            "jwks_url": f"{idp_keys.url}/jwks",
                            **fast,
                        },
                    ],
                    "default_profile": "all",
                },
                "profiles": {"all": {}},
            }
        )
        gateway = build(config, api_key=ApiKeySource("azure-key"))
        with ThreadedUvicorn(gateway) as gw:

            def call(bearer: str) -> httpx.Response:
                return httpx.post(
                    f"{gw.url}/openai/threads",
                    params={"api-version": V2},
                    headers={"Authorization": f"Bearer {bearer}"},
                    json={},
                )

            kube = jwt.encode(
                claims_for(), cluster.keys["c1"], algorithm="RS256", headers={"kid": "c1"}
            )
            assert call(kube).status_code == 200
            assert call(idp_token(idp.keys["i1"], "i1")).status_code == 200
            idp.fail = True
            deadline = time.monotonic() + 10
            while call(idp_token(idp.keys["i1"], "i1")).status_code != 503:
                assert time.monotonic() < deadline, "the IdP's keys never went stale"
                time.sleep(0.1)
            down = call(idp_token(idp.keys["i1"], "i1"))
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "jwks_unavailable"
            ready = httpx.get(f"{gw.url}/readyz")
            assert ready.status_code == 200, ready.text
            checks = ready.json()["checks"]
            assert checks[f"keys:{IDP}"] == "unavailable"
            assert checks[f"keys:{ISSUER}"] == "ok"
            assert checks["keys"] == "degraded"
            assert call(kube).status_code == 200  # Kubernetes callers are still served
            metrics = gateway.metrics
            assert metrics is not None
            assert (
                metrics.registry.get_sample_value("gateway_jwks_keys_ready", {"issuer": IDP}) == 0.0
            )
            assert (
                metrics.registry.get_sample_value("gateway_jwks_keys_ready", {"issuer": ISSUER})
                == 1.0
            )
            # Every issuer down: now the replica cannot serve anyone.
            cluster.fail = True
            deadline = time.monotonic() + 10
            while httpx.get(f"{gw.url}/readyz").status_code != 503:
                assert time.monotonic() < deadline, "readiness never failed"
                time.sleep(0.1)
            idp.fail = cluster.fail = False
            deadline = time.monotonic() + 10
            while httpx.get(f"{gw.url}/readyz").status_code != 200:
                assert time.monotonic() < deadline, "readiness never recovered"
                time.sleep(0.1)
