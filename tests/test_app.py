"""The composition root: a Starlette application whose pipeline is listed once, in the card's
order, and which another Starlette application can mount as it is."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from gateway.app import build
from gateway.auth.middleware import AuthenticationMiddleware
from gateway.config import parse
from gateway.observability.middleware import RequestContextMiddleware
from gateway.operations.middleware import OperationMiddleware
from gateway.ownership.middleware import OwnershipMiddleware
from gateway.policy.middleware import PolicyMiddleware
from gateway.ratelimit.middleware import RateLimitMiddleware
from gateway.server.middleware import AdmissionMiddleware
from gateway.upstream.credentials import ApiKeySource
from gateway.upstream.forwarder import Forwarder
from tests.fakeazure import FakeAzure
from tests.servers import ThreadedUvicorn
from tests.stack import PUBLIC_JWK, V2, Stack, base_config, make_token


def test_the_pipeline_is_listed_once_in_order(gw: Stack) -> None:
    listed: list[object] = [m.cls for m in gw.gateway.pipeline]
    assert listed == [
        RequestContextMiddleware,
        AdmissionMiddleware,
        AuthenticationMiddleware,
        OperationMiddleware,
        RateLimitMiddleware,
        PolicyMiddleware,
        OwnershipMiddleware,
    ]
    assert isinstance(gw.gateway.forwarder, Forwarder)
    assert isinstance(gw.gateway.app, Starlette)


def test_health_and_readiness_are_routes_not_proxied(gw: Stack) -> None:
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gw.url}/readyz").status_code == 200
    # Only GET/HEAD are the probes; any other request is the pipeline's (authenticated first).
    assert httpx.post(f"{gw.url}/healthz").status_code == 401
    # Anything else goes through the pipeline: an unknown path is the gateway's Azure-shaped 404.
    unknown = httpx.get(f"{gw.url}/nowhere", headers=gw.auth())
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "route_not_found"
    assert gw.fake.requests == []


def test_the_pipeline_mounts_in_another_starlette_application(tmp_path: Path) -> None:
    """A team's own Starlette service serves its routes and mounts the gateway's pipeline and
    forwarder under /openai, composing the gateway's lifespan into its own."""
    api_key = secrets.token_urlsafe(16)
    fake = FakeAzure(api_key)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [PUBLIC_JWK]}))

    async def hello(_request: Request) -> Response:
        return PlainTextResponse("hello from the host application")

    with ThreadedUvicorn(fake.app, lifespan="off") as upstream:
        gateway = build(
            parse(base_config(upstream.url, str(jwks), None)), api_key=ApiKeySource(api_key)
        )

        @contextlib.asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            async with gateway.lifespan():
                yield

        host = Starlette(
            routes=[
                Route("/hello", hello),
                Mount("/openai", app=gateway.forwarder, middleware=gateway.pipeline),
            ],
            lifespan=lifespan,
        )
        with ThreadedUvicorn(host) as server:
            assert httpx.get(f"{server.url}/hello").text == "hello from the host application"
            client = openai.AzureOpenAI(
                azure_endpoint=server.url,
                api_version=V2,
                max_retries=0,
                azure_ad_token=make_token(),
            )
            thread = client.beta.threads.create(metadata={"k": "v"})
            message = client.beta.threads.messages.create(thread.id, role="user", content="hi")
            assert client.beta.threads.messages.list(thread.id).data[0].id == message.id
            refused = httpx.post(
                f"{server.url}/openai/threads", params={"api-version": V2}, json={}
            )
            assert refused.status_code == 401  # the pipeline's authentication, in the host
            assert refused.json()["error"]["code"] == "invalid_token"
    assert [r.path for r in fake.requests] == [
        "/openai/threads",
        f"/openai/threads/{thread.id}/messages",
        f"/openai/threads/{thread.id}/messages",
    ]
    assert all(dict(r.headers)["api-key"] == api_key for r in fake.requests)
