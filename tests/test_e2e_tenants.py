"""Tenants are qualified by their issuer: namespace ``team-a`` of the cluster and tenant
``team-a`` of an IdP are two tenants (threads, limits, logs), unless the config maps both
issuers onto one tenant domain; ownership records written before tenants were qualified keep
working for the issuer ``auth.legacy_tenant_issuer`` names. Real gateway, real Redis, the
recording fake Azure."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis

from gateway.operations.row import Operation
from gateway.operations.table import OPERATIONS
from gateway.ownership.rules import owner_key, tenant_digest
from tests.servers import RedisServer
from tests.stack import AUDIENCE, ISSUER, KID, PRIVATE_PEM, V1, V2, Stack, running_stack

IDP = "https://idp.test.invalid"
BODIES: dict[str, dict[str, Any]] = {
    "messages.create": {"role": "user", "content": "hi"},
    "runs.create": {"assistant_id": "asst_abc123"},
    "runs.submit_tool_outputs": {"tool_outputs": []},
}


def idp_token(tenant: str, sub: str = "svc-1") -> str:
    now = int(time.time())
    return jwt.encode(
        {"iss": IDP, "aud": AUDIENCE, "sub": sub, "tenant": tenant, "iat": now, "exp": now + 600},
        PRIVATE_PEM,
        algorithm="RS256",
        headers={"kid": KID},
    )


def two_issuers(tmp: Path, **extra: Any) -> dict[str, Any]:
    """The cluster issuer (the stack's) plus an IdP whose ``tenant`` claim names the tenant,
    both verified with the stack's test key set."""
    jwks = str(tmp / "jwks.json")  # written by running_stack
    cluster = {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "kubernetes": True,
        "jwks_file": jwks,
        **extra.get("cluster", {}),
    }
    idp = {
        "issuer": IDP,
        "audiences": [AUDIENCE],
        "tenant_claim": "tenant",
        "jwks_file": jwks,
        **extra.get("idp", {}),
    }
    auth: dict[str, Any] = {"issuers": [cluster, idp], "default_profile": "writer"}
    if "legacy" in extra:
        auth["legacy_tenant_issuer"] = extra["legacy"]
    return {"auth": auth, "threads": {"ownership": True, "unknown": "deny"}}


def redis_url(server: RedisServer) -> str:
    return os.environ.get("GATEWAY_TEST_REDIS_URL") or server.url


@pytest.fixture(scope="module")
def separate(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("tenants")
    overrides = two_issuers(tmp)
    with running_stack(tmp, redis_url=redis_url(redis_server), overrides=overrides) as stack:
        yield stack


def thread_routes() -> list[tuple[Operation, str]]:
    """Every route that names a thread, once per api-version generation it exists in."""
    out = []
    for route in OPERATIONS:
        if "{thread_id}" in route.template:
            out += [
                (route, version)
                for gen, version in (("v1", V1), ("v2", V2))
                if gen in route.generations
            ]
    return out


def test_an_idp_tenant_cannot_reach_the_namespace_of_the_same_name(separate: Stack) -> None:
    s = separate
    kube = {"Authorization": f"Bearer {s.token(namespace='team-a')}"}
    with httpx.Client(base_url=s.url) as h:
        created = h.post("/openai/threads", params={"api-version": V2}, json={}, headers=kube)
        assert created.status_code == 200, created.text
        thread = created.json()["id"]
        idp = {"Authorization": f"Bearer {idp_token('team-a')}"}
        before = len(s.fake.requests)
        routes = thread_routes()
        assert len(routes) >= 20
        for route, version in routes:
            path = route.template.format(
                thread_id=thread,
                message_id="msg_abc123",
                run_id="run_abc123",
                step_id="step_abc123",
                file_id="file-abc123",
            )
            body = BODIES.get(route.name, {"metadata": {"k": "v"}}) if route.has_body else None
            answer = h.request(
                route.method, path, params={"api-version": version}, json=body, headers=idp
            )
            assert answer.status_code == 404, (route.name, version, answer.text)
            assert answer.json()["error"]["code"] == "thread_not_found", route.name
        assert len(s.fake.requests) == before  # nothing reached Azure
        # The namespace itself still works on its own thread.
        assert (
            h.get(f"/openai/threads/{thread}", params={"api-version": V2}, headers=kube).status_code
            == 200
        )


def test_limits_of_equal_tenant_names_from_two_issuers_are_separate(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    overrides = two_issuers(tmp_path)
    overrides["profiles"] = {
        "writer": {
            "rate_limit": {
                "per_tenant": {"write": {"requests": 1, "per_seconds": 3600, "burst": 3}}
            }
        }
    }
    with (
        running_stack(tmp_path, redis_url=redis_url(redis_server), overrides=overrides) as s,
        httpx.Client(base_url=s.url) as h,
    ):

        def create(headers: dict[str, str]) -> int:
            return h.post(
                "/openai/threads", params={"api-version": V2}, json={}, headers=headers
            ).status_code

        kube = {"Authorization": f"Bearer {s.token(namespace='team-b')}"}
        statuses = [create(kube) for _ in range(4)]
        assert statuses[:3] == [200, 200, 200] and statuses[3] == 429, statuses
        # The IdP's tenant "team-b" has its own budget.
        idp = {"Authorization": f"Bearer {idp_token('team-b')}"}
        assert create(idp) == 200


def legacy_record(server: RedisServer, stack: Stack) -> str:
    """A thread on Azure and the record the gateway wrote for it before tenants were
    qualified: the digest of the bare namespace."""
    thread = stack.fake.store.create_thread({}, "v2")
    client = redis.Redis.from_url(redis_url(server))
    try:
        client.set(owner_key(thread.id), tenant_digest("team-a"))
    finally:
        client.close()
    return thread.id


@pytest.mark.parametrize("legacy", [True, False], ids=["named", "not-named"])
def test_legacy_records_belong_to_the_legacy_issuer_only(
    tmp_path: Path, redis_server: RedisServer, legacy: bool
) -> None:
    overrides = two_issuers(tmp_path, **({"legacy": ISSUER} if legacy else {}))
    with (
        running_stack(tmp_path, redis_url=redis_url(redis_server), overrides=overrides) as s,
        httpx.Client(base_url=s.url) as h,
    ):
        thread = legacy_record(redis_server, s)
        url, params = f"/openai/threads/{thread}", {"api-version": V2}
        idp = h.get(url, params=params, headers={"Authorization": f"Bearer {idp_token('team-a')}"})
        assert idp.status_code == 404
        assert idp.json()["error"]["code"] == "thread_not_found"
        assert s.fake.requests == []
        other = h.get(
            url, params=params, headers={"Authorization": f"Bearer {s.token(namespace='team-b')}"}
        )
        assert other.status_code == 404
        kube = h.get(
            url, params=params, headers={"Authorization": f"Bearer {s.token(namespace='team-a')}"}
        )
        if legacy:  # the old record is the cluster's namespace team-a's
            assert kube.status_code == 200, kube.text
            assert kube.json()["id"] == thread
        else:  # with two issuers and none named, an old record is nobody's (fails closed)
            assert kube.status_code == 404
            assert s.fake.requests == []


def test_with_one_issuer_old_records_keep_working_without_config(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with (
        running_stack(
            tmp_path,
            redis_url=redis_url(redis_server),
            overrides={"threads": {"ownership": True, "unknown": "deny"}},
        ) as s,
        httpx.Client(base_url=s.url) as h,
    ):
        thread = legacy_record(redis_server, s)
        kube = h.get(
            f"/openai/threads/{thread}",
            params={"api-version": V2},
            headers={"Authorization": f"Bearer {s.token(namespace='team-a')}"},
        )
        assert kube.status_code == 200, kube.text


def test_issuers_share_tenants_only_when_the_config_says_so(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    overrides = two_issuers(
        tmp_path, cluster={"tenant_domain": "corp"}, idp={"tenant_domain": "corp"}
    )
    with (
        running_stack(tmp_path, redis_url=redis_url(redis_server), overrides=overrides) as s,
        httpx.Client(base_url=s.url) as h,
    ):
        kube = {"Authorization": f"Bearer {s.token(namespace='team-a')}"}
        thread = h.post(
            "/openai/threads", params={"api-version": V2}, json={}, headers=kube
        ).json()["id"]
        shared = h.get(
            f"/openai/threads/{thread}",
            params={"api-version": V2},
            headers={"Authorization": f"Bearer {idp_token('team-a')}"},
        )
        assert shared.status_code == 200  # one tenant "corp:team-a", by explicit mapping
        foreign = h.get(
            f"/openai/threads/{thread}",
            params={"api-version": V2},
            headers={"Authorization": f"Bearer {idp_token('team-b')}"},
        )
        assert foreign.status_code == 404


def test_tenant_domains_are_validated() -> None:
    from gateway.config import ConfigError, parse

    base: dict[str, Any] = {
        "upstream": {"endpoint": "https://example.openai.azure.com"},
        "profiles": {"p": {}},
        "auth": {
            "issuers": [
                {
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "jwks_file": "/x",
                    "tenant_domain": "bad:domain",
                },
                {"issuer": IDP, "audiences": [AUDIENCE], "jwks_file": "/x"},
            ],
            "legacy_tenant_issuer": "https://nobody.invalid",
        },
    }
    with pytest.raises(ConfigError) as err:
        parse(base)
    text = "\n".join(err.value.problems)
    assert "auth.issuers[0].tenant_domain" in text
    assert "auth.legacy_tenant_issuer: not a configured issuer" in text
