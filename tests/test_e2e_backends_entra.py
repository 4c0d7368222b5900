"""Two Azure backends with different credentials (issue 16, item 3: "key and token rotation
per backend without restart"): backend ``a`` with an API key file, backend ``b`` with an
Entra workload-identity token from the fake token endpoint (TLS, private CA).

Each fake Azure checks its own credential only: A its api-key (no Bearer accepted), B the
unexpired tokens the endpoint issued (its own random api-key is unknown to the gateway). A
real gateway (uvicorn) built from the config alone, as ``gateway serve`` builds it, a
private Redis, new objects on both backends; then B's token is refreshed while A's key file
rotates, both picked up by the same running gateway. And B without a usable token (its
endpoint down, its token expired) takes no new objects: they go to A, while requests on B's
objects still go to B's credential and get its 503.
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
import pytest

from gateway.app import Gateway, build
from gateway.config import parse
from tests.entrastack import CLIENT, TENANT, wait_until
from tests.fakeazure import FakeAzure
from tests.faketoken import FakeTokenEndpoint, TestCA, serving
from tests.servers import ThreadedUvicorn
from tests.stack import PUBLIC_JWK, V2, base_config, deep_merge, make_token
from tests.test_e2e_backends import alternate, creates

pytestmark = pytest.mark.timeout(60)
Q = {"api-version": V2}


@dataclass
class Mixed:
    a: FakeAzure
    b: FakeAzure
    endpoint: FakeTokenEndpoint
    gateway: Gateway
    url: str
    key_file: Path

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token('team-a')}"}

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.url}/openai/{path}", params=Q, json=body or {}, headers=self.auth(), timeout=10
        )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}/openai/{path}", params=Q, headers=self.auth(), timeout=10)

    def sample(self, name: str, **labels: str) -> float | None:
        assert self.gateway.metrics is not None
        return self.gateway.metrics.registry.get_sample_value(name, labels)


@contextmanager
def key_and_entra_backends(
    tmp: Path,
    redis_url: str,
    *,
    lifetime_s: int,
    draw: Callable[[], float] | None = None,
) -> Iterator[Mixed]:
    key = secrets.token_urlsafe(24)
    key_file = tmp / "key-a"
    key_file.write_text(key)
    token_file = tmp / "azure-identity-token"
    token_file.write_text(f"projected-sa-token-{secrets.token_urlsafe(12)}")
    ca = TestCA(tmp)
    endpoint = FakeTokenEndpoint(TENANT, CLIENT, token_file, lifetime_s=lifetime_s)
    fake_a = FakeAzure(key)  # the key only
    fake_b = FakeAzure(secrets.token_urlsafe(24), bearer=endpoint.valid)  # the tokens only
    jwks_file = tmp / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    with (
        serving(endpoint, ca) as authority,
        ThreadedUvicorn(fake_a.app, lifespan="off") as server_a,
        ThreadedUvicorn(fake_b.app, lifespan="off") as server_b,
    ):
        data = base_config(server_a.url, str(jwks_file), redis_url)
        del data["upstream"]["endpoint"]
        data["upstream"]["api_key_reload_s"] = 0.2
        data["upstream"]["backends"] = [
            {"name": "a", "endpoint": server_a.url, "api_key_file": str(key_file)},
            {
                "name": "b",
                "endpoint": server_b.url,
                "credential": "entra",
                "entra": {
                    "client_id": CLIENT,
                    "tenant_id": TENANT,
                    "authority_host": authority,
                    "token_file": str(token_file),
                    "ca_file": str(ca.ca_file),
                    "refresh_margin_s": 10,
                },
            },
        ]
        data = deep_merge(
            data,
            {"threads": {"ownership": True, "unknown": "deny"}, "rate_limit": {"enabled": False}},
        )
        # Built from the config alone (every credential by make_credential), as served.
        gateway = build(parse(data), environ={}, draw=draw or alternate())
        with ThreadedUvicorn(gateway, http="httptools", server_header=False) as server:
            yield Mixed(fake_a, fake_b, endpoint, gateway, server.url, key_file)


def test_a_key_backend_and_an_entra_backend_each_rotate_without_restart(
    tmp_path: Path, redis_url: str
) -> None:
    with key_and_entra_backends(tmp_path, redis_url, lifetime_s=4) as s:
        # Ready only once every backend's credential is (B's first token fetched).
        wait_until("ready", lambda: httpx.get(f"{s.url}/readyz", timeout=5).status_code == 200)
        checks = httpx.get(f"{s.url}/readyz", timeout=5).json()["checks"]
        assert checks["upstream_credential:a"] == "ok"
        assert checks["upstream_credential:b"] == "ok"
        assert checks["upstream_credential"] == "ok"

        # New objects on both (alternate draws: A, then B), each with its own credential.
        a_thread, b_thread = s.post("threads"), s.post("threads")
        assert a_thread.status_code == 200, a_thread.text
        assert b_thread.status_code == 200, b_thread.text
        assert (creates(s.a), creates(s.b)) == (1, 1)
        sent_a, sent_b = s.a.requests[-1], s.b.requests[-1]
        assert sent_a.header_values("api-key") == [s.a.api_key]
        assert sent_a.header_values("authorization") == []
        first_token = s.endpoint.good_calls()[-1].issued
        assert sent_b.header_values("authorization") == [f"Bearer {first_token}"]
        assert sent_b.header_values("api-key") == []
        a_id, b_id = a_thread.json()["id"], b_thread.json()["id"]
        message = {"role": "user", "content": "hi"}
        assert s.post(f"threads/{a_id}/messages", message).status_code == 200
        assert s.post(f"threads/{b_id}/messages", message).status_code == 200
        assert s.a.requests[-1].path.endswith(f"{a_id}/messages")
        assert s.b.requests[-1].path.endswith(f"{b_id}/messages")

        # A's key rotates (at Azure, then in its mounted file) while B's token is refreshed.
        new_key = secrets.token_urlsafe(24)
        s.a.api_key = new_key
        s.key_file.write_text(new_key)
        wait_until("B's token refreshed", lambda: len(s.endpoint.good_calls()) >= 2)
        deadline = time.monotonic() + 5
        while s.get(f"threads/{a_id}").status_code != 200:
            assert time.monotonic() < deadline, "A's new key was not picked up"
            time.sleep(0.1)
        assert s.a.requests[-1].header_values("api-key") == [new_key]
        assert s.get(f"threads/{b_id}").status_code == 200
        latest = s.endpoint.good_calls()[-1].issued
        assert latest != first_token
        assert s.b.requests[-1].header_values("authorization") == [f"Bearer {latest}"]
        assert all(r.header_values("authorization") == [] for r in s.a.requests)
        assert all(r.header_values("api-key") == [] for r in s.b.requests)

        # The token metrics carry B's name (none for the key backend); a pool gauge each.
        assert (
            s.sample("gateway_upstream_token_refreshes_total", backend="b", result="ok") or 0
        ) >= 2
        assert (s.sample("gateway_upstream_token_expiry_seconds", backend="b") or 0) > 0
        assert s.sample("gateway_upstream_token_expiry_seconds", backend="a") is None
        assert s.sample("gateway_upstream_token_expiry_seconds", backend="default") is None
        assert s.sample("gateway_azure_key_reloads_total") == 1
        for name in ("a", "b"):
            assert s.sample("gateway_upstream_pool_connections", backend=name) is not None
            assert (
                s.sample("gateway_upstream_pool_max_connections", backend=name)
                == s.gateway.config.upstream.max_connections
            )


def test_an_entra_backend_without_a_usable_token_takes_no_new_objects(
    tmp_path: Path, redis_url: str
) -> None:
    """Every draw picks B (the second of two equal weights). With its token usable, new threads
    go to B; once its token endpoint is down and its token expired, new threads go to A (not
    503, not created nowhere); a request on B's thread is still B's: 503
    upstream_credential_unavailable with nothing sent to B; when a token is held again, B takes
    new threads again. Without the routing's credential check every new thread would get
    that 503."""
    with key_and_entra_backends(tmp_path, redis_url, lifetime_s=4, draw=lambda: 0.99) as s:
        wait_until("ready", lambda: httpx.get(f"{s.url}/readyz", timeout=5).status_code == 200)
        on_b = s.post("threads")
        assert on_b.status_code == 200, on_b.text
        assert (creates(s.a), creates(s.b)) == (0, 1)
        b_id = on_b.json()["id"]

        s.endpoint.fail_status = 503
        wait_until(
            "B's token expired",
            lambda: s.sample("gateway_upstream_token_expiry_seconds", backend="b") == 0,
            timeout=15,
        )
        sent_to_b = len(s.b.requests)
        new = [s.post("threads") for _ in range(3)]
        assert [r.status_code for r in new] == [200, 200, 200], [r.text for r in new]
        assert (creates(s.a), creates(s.b)) == (3, 1)
        assert all(r.header_values("api-key") == [s.a.api_key] for r in s.a.requests)
        for r in new:  # each is A's: its messages go to A
            t_id = r.json()["id"]
            assert s.post(f"threads/{t_id}/messages", {"role": "user", "content": "x"}).is_success
            assert s.a.requests[-1].path.endswith(f"{t_id}/messages")
        on_b_now = s.get(f"threads/{b_id}")
        assert on_b_now.status_code == 503
        assert on_b_now.json()["error"]["code"] == "upstream_credential_unavailable"
        assert on_b_now.headers["retry-after"].isdigit()
        assert len(s.b.requests) == sent_to_b  # nothing reached B

        s.endpoint.fail_status = None
        wait_until(
            "a token again",
            lambda: (s.sample("gateway_upstream_token_expiry_seconds", backend="b") or 0) > 0,
            timeout=15,
        )
        again = s.post("threads")
        assert again.status_code == 200, again.text
        assert (creates(s.a), creates(s.b)) == (3, 2)
        assert s.get(f"threads/{b_id}").status_code == 200
