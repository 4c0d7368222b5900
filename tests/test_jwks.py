"""Key providers against a real JWKS server (Starlette under uvicorn in a thread).

Time is an injected clock wherever the provider reads it; refreshes are triggered with
``provider.refresh()`` instead of sleeping through a TTL, so the file stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.auth.authenticator import Authenticator
from gateway.auth.jwks import (
    NEGATIVE_CACHE_SIZE,
    JwksKeyProvider,
    JwksSource,
    KeySetError,
    StaticKeyProvider,
    make_jwks_http_client,
)
from gateway.errors import AuthenticationError, ServiceUnavailableError
from tests.servers import ThreadedUvicorn, free_port, run_app
from tests.test_auth import ISS, NOW, POLICY, RSA_KEY, RULES, bearer, sign

# ---------------------------------------------------------------- keys


def _rsa(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


RSA_A = _rsa()
RSA_B = _rsa()
RSA_WEAK = _rsa(1024)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
ALG = {"rsa": "RS256", "ec": "ES256", "ed": "EdDSA"}


def jwk(private: Any, kid: str | None, alg: str, **extra: Any) -> dict[str, Any]:
    doc = dict(jwt.get_algorithm_by_name(alg).to_jwk(private.public_key(), as_dict=True))
    doc.update({"alg": alg, "use": "sig"} | ({"kid": kid} if kid else {}) | extra)
    return doc


def token(private: Any, kid: str | None, alg: str) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode({"sub": "caller"}, private, algorithm=alg, headers=headers)


def verifies(key: jwt.PyJWK, private: Any, alg: str) -> bool:
    claims = jwt.decode(token(private, key.key_id, alg), key, algorithms=[alg])
    return bool(claims["sub"] == "caller")


A = jwk(RSA_A, "a", "RS256")
B = jwk(RSA_B, "b", "RS256")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ---------------------------------------------------------------- the JWKS server


async def _big_body() -> AsyncIterator[bytes]:
    yield b'{"keys": [], "pad": "'
    for _ in range(40):
        yield b"x" * 65536
    yield b'"}'


class JwksServer:
    """A JWKS endpoint the tests steer: key set, failure mode, delay; it counts and records."""

    def __init__(self) -> None:
        self.url = ""
        self.reset()

    def reset(self) -> None:
        self.keys: list[Any] = [A]
        self.mode = "ok"
        self.delay = 0.0
        self.hits: Counter[str] = Counter()
        self.auth: list[str | None] = []
        self.jwks_uri: str | None = None

    async def jwks(self, request: Request) -> Response:
        self.hits[request.url.path] += 1
        self.auth.append(request.headers.get("authorization"))
        if self.delay:
            await asyncio.sleep(self.delay)
        mode = self.mode
        if mode == "500":
            return JSONResponse({"error": "boom"}, status_code=500)
        if mode == "nonjson":
            return Response("<html>maintenance</html>", media_type="text/html")
        if mode == "empty":
            return JSONResponse({"keys": []})
        if mode == "not_object":
            return JSONResponse([A])
        if mode == "nan":
            return Response('{"keys": [], "x": NaN}', media_type="application/json")
        if mode == "too_large":
            return JSONResponse({"keys": [A], "pad": "x" * (2 * 1024 * 1024)})
        if mode == "too_large_chunked":  # no Content-Length: the streaming cap must stop it
            return StreamingResponse(_big_body(), media_type="application/json")
        if mode == "gzip":
            body = gzip.compress(json.dumps({"keys": self.keys}).encode())
            return Response(
                body, media_type="application/json", headers={"Content-Encoding": "gzip"}
            )
        if mode == "redirect":
            return RedirectResponse(f"{self.url}/elsewhere", status_code=302)
        response = JSONResponse({"keys": self.keys})
        response.set_cookie("tracking", "1")
        return response

    async def discovery(self, request: Request) -> Response:
        self.hits[request.url.path] += 1
        self.auth.append(request.headers.get("authorization"))
        uri = self.jwks_uri or f"{self.url}/discovered/jwks"
        return JSONResponse({"issuer": self.url, "jwks_uri": uri})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/jwks", self.jwks),
                Route("/discovered/jwks", self.jwks),
                Route("/elsewhere", self.jwks),
                Route("/.well-known/openid-configuration", self.discovery),
            ]
        )


@pytest.fixture(scope="module")
def jwks_server_running() -> Iterator[tuple[JwksServer, ThreadedUvicorn]]:
    state = JwksServer()
    with run_app(state.app()) as server:
        state.url = server.url
        yield state, server


@pytest.fixture
def server(jwks_server_running: tuple[JwksServer, ThreadedUvicorn]) -> JwksServer:
    state, _ = jwks_server_running
    state.reset()
    return state


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def provider(
    source: JwksSource,
    *,
    start: bool = True,
    http: httpx.AsyncClient | None = None,
    **options: Any,
) -> AsyncIterator[tuple[JwksKeyProvider, list[str]]]:
    results: list[str] = []
    client = http or make_jwks_http_client(timeout_s=2.0)
    options.setdefault("clock", FakeClock())
    p = JwksKeyProvider(source, client, on_refresh=results.append, **options)
    try:
        if start:
            await p.start()
        yield p, results
    finally:
        await p.aclose()
        await client.aclose()


async def reason_of(p: JwksKeyProvider, kid: str | None) -> str:
    with pytest.raises(AuthenticationError) as info:
        await p.get_key(kid)
    return info.value.reason


pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


# ---------------------------------------------------------------- happy path, kid None


async def test_fetches_rsa_ec_ed25519_and_verifies_tokens(server: JwksServer) -> None:
    server.keys = [A, jwk(EC_KEY, "e", "ES256"), jwk(ED_KEY, "d", "EdDSA")]
    async with provider(JwksSource(url=f"{server.url}/jwks")) as (p, results):
        assert p.ready()
        assert verifies(await p.get_key("a"), RSA_A, "RS256")
        assert verifies(await p.get_key("e"), EC_KEY, "ES256")
        assert verifies(await p.get_key("d"), ED_KEY, "EdDSA")
        assert results == ["ok"]
        assert server.hits["/jwks"] == 1


async def test_kid_none_only_with_a_single_key(server: JwksServer) -> None:
    async with provider(JwksSource(url=f"{server.url}/jwks")) as (p, _):
        assert (await p.get_key(None)).key_id == "a"
    server.keys = [A, B]
    async with provider(JwksSource(url=f"{server.url}/jwks")) as (p, _):
        assert await reason_of(p, None) == "unknown_kid"
    assert server.hits["/jwks"] == 2  # kid None never triggers a refresh


async def test_odd_kids_are_unknown_without_a_fetch(server: JwksServer) -> None:
    clock = FakeClock()
    async with provider(JwksSource(url=f"{server.url}/jwks"), clock=clock) as (p, _):
        clock.advance(3600)  # cooldown long over; still no fetch for these
        for kid in ("", "k" * 10_000, 7, ["x"]):
            assert await reason_of(p, kid) == "unknown_kid"  # type: ignore[arg-type]
        assert server.hits["/jwks"] == 1


async def test_cookies_from_the_jwks_server_are_not_kept(server: JwksServer) -> None:
    client = make_jwks_http_client(timeout_s=3.0)
    assert client.follow_redirects is False
    assert client.trust_env is False
    timeout = client.timeout
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (3.0, 3.0, 3.0, 3.0)
    async with provider(JwksSource(url=f"{server.url}/jwks"), http=client):
        assert len(client.cookies.jar) == 0


# ---------------------------------------------------------------- rotation


async def test_new_kid_is_accepted_within_the_cooldown(server: JwksServer) -> None:
    clock = FakeClock()
    source = JwksSource(url=f"{server.url}/jwks")
    async with provider(source, clock=clock, cooldown_s=30) as (p, _):
        server.keys = [A, B]
        clock.advance(10)  # inside the cooldown of the start-up fetch: no fetch yet
        assert await reason_of(p, "b") == "unknown_kid"
        assert server.hits["/jwks"] == 1
        clock.advance(20)  # the cooldown is over: the next miss refreshes
        assert verifies(await p.get_key("b"), RSA_B, "RS256")
        assert server.hits["/jwks"] == 2


async def test_removed_key_is_refused_after_the_ttl_refresh(server: JwksServer) -> None:
    server.keys = [A, B]
    async with provider(JwksSource(url=f"{server.url}/jwks")) as (p, results):
        server.keys = [B]
        assert (await p.get_key("a")).key_id == "a"  # until the next refresh
        assert await p.refresh()  # what the TTL timer does
        assert await reason_of(p, "a") == "unknown_kid"
        assert results == ["ok", "ok"]


async def test_background_loop_refreshes_every_ttl(server: JwksServer) -> None:
    source = JwksSource(url=f"{server.url}/jwks")
    async with provider(source, clock=time.monotonic, ttl_s=0.2, cooldown_s=0.1) as (p, _):
        server.keys = [B]
        deadline = time.monotonic() + 3
        while server.hits["/jwks"] < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        assert await reason_of(p, "a") == "unknown_kid"
        assert (await p.get_key("b")).key_id == "b"
        await p.aclose()
        hits = server.hits["/jwks"]
        await asyncio.sleep(0.3)
        assert server.hits["/jwks"] == hits  # aclose stopped the loop


# ---------------------------------------------------------------- outage


@pytest.mark.parametrize(
    "mode",
    [
        "500",
        "nonjson",
        "empty",
        "not_object",
        "nan",
        "too_large",
        "too_large_chunked",
        "gzip",
        "redirect",
    ],
)
async def test_failed_refresh_keeps_the_last_good_keys(server: JwksServer, mode: str) -> None:
    async with provider(JwksSource(url=f"{server.url}/jwks")) as (p, results):
        server.mode = mode
        assert not await p.refresh()
        assert results == ["ok", "error"]
        assert (await p.get_key("a")).key_id == "a"
        assert p.ready()


async def test_stale_keys_serve_until_stale_period_then_503(server: JwksServer) -> None:
    clock = FakeClock()
    source = JwksSource(url=f"{server.url}/jwks")
    async with provider(source, clock=clock, ttl_s=10, cooldown_s=5, stale_s=60) as (p, _):
        server.mode = "500"
        clock.advance(30)
        assert not await p.refresh()
        clock.advance(30)  # exactly stale_s since the good fetch: still served
        assert (await p.get_key("a")).key_id == "a"
        assert p.ready()
        clock.advance(1)
        assert not p.ready()
        with pytest.raises(ServiceUnavailableError) as info:
            await p.get_key("a")  # cooldown over: one more try, fails, 503
        err = info.value
        assert (err.status, err.code) == (503, "jwks_unavailable")
        assert int(err.headers["Retry-After"]) >= 1
        hits = server.hits["/jwks"]
        with pytest.raises(ServiceUnavailableError):
            await p.get_key("a")  # within the cooldown: 503 without a fetch
        assert server.hits["/jwks"] == hits
        server.mode = "ok"  # recovery
        clock.advance(5)
        assert (await p.get_key("a")).key_id == "a"
        assert p.ready()


async def test_start_failure_leaves_provider_not_ready(server: JwksServer) -> None:
    clock = FakeClock()
    server.mode = "500"
    async with provider(JwksSource(url=f"{server.url}/jwks"), clock=clock) as (p, results):
        assert not p.ready()
        assert results == ["error"]
        with pytest.raises(ServiceUnavailableError):
            await p.get_key("a")
        server.mode = "ok"
        clock.advance(30)
        assert (await p.get_key("a")).key_id == "a"
        assert p.ready()


async def test_unreachable_endpoint_is_a_failed_fetch_logged_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    source = JwksSource(url=f"http://user:hunter2@127.0.0.1:{port}/jwks?sig=s3cr3t")
    async with provider(source) as (p, results):
        assert not p.ready()
        assert results == ["error"]
    assert f"127.0.0.1:{port}/jwks" in caplog.text
    assert "hunter2" not in caplog.text
    assert "s3cr3t" not in caplog.text


async def test_failed_fetch_starts_the_cooldown(server: JwksServer) -> None:
    clock = FakeClock()
    async with provider(JwksSource(url=f"{server.url}/jwks"), clock=clock) as (p, _):
        server.mode = "500"
        clock.advance(30)
        assert await reason_of(p, "x1") == "unknown_kid"
        assert server.hits["/jwks"] == 2
        clock.advance(1)
        assert await reason_of(p, "x2") == "unknown_kid"
        assert server.hits["/jwks"] == 2  # the failure started a cooldown
        clock.advance(30)
        assert await reason_of(p, "x3") == "unknown_kid"
        assert server.hits["/jwks"] == 3


# ---------------------------------------------------------------- slow endpoint, floods


async def test_known_kid_is_not_blocked_by_a_slow_refresh(server: JwksServer) -> None:
    clock = FakeClock()
    async with provider(JwksSource(url=f"{server.url}/jwks"), clock=clock) as (p, _):
        server.delay = 0.6
        clock.advance(30)
        misses = [asyncio.create_task(p.get_key(f"new-{i}")) for i in range(50)]
        deadline = time.monotonic() + 3
        while server.hits["/jwks"] < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert server.hits["/jwks"] == 2  # the refresh is in flight now
        started = time.perf_counter()
        key = await p.get_key("a")
        elapsed = time.perf_counter() - started
        assert key.key_id == "a"
        assert elapsed < 0.05, elapsed
        outcomes = await asyncio.gather(*misses, return_exceptions=True)
        assert all(isinstance(o, AuthenticationError) for o in outcomes)
        assert server.hits["/jwks"] == 2  # single flight: 50 misses, one fetch


async def test_slower_than_fetch_timeout_is_a_failed_fetch(server: JwksServer) -> None:
    source = JwksSource(url=f"{server.url}/jwks")
    async with provider(source, fetch_timeout_s=0.2) as (p, results):
        server.delay = 0.8
        started = time.perf_counter()
        assert not await p.refresh()
        assert time.perf_counter() - started < 0.6
        assert results == ["ok", "error"]
        assert (await p.get_key("a")).key_id == "a"
        server.delay = 0
    await asyncio.sleep(0.7)  # let the server finish the abandoned request


async def test_random_kid_flood_costs_one_fetch_per_cooldown(server: JwksServer) -> None:
    clock = FakeClock()
    async with provider(JwksSource(url=f"{server.url}/jwks"), clock=clock) as (p, _):
        for window in range(3):
            clock.advance(30)
            kids = [secrets.token_urlsafe(12) for _ in range(1000)]
            outcomes = await asyncio.gather(*(p.get_key(k) for k in kids), return_exceptions=True)
            assert all(
                isinstance(o, AuthenticationError) and o.reason == "unknown_kid" for o in outcomes
            )
            assert (await p.get_key("a")).key_id == "a"
            assert server.hits["/jwks"] == 2 + window  # one per cooldown window
            clock.advance(1)  # same window: a second flood costs nothing
            await asyncio.gather(*(p.get_key(k) for k in kids[:100]), return_exceptions=True)
            assert server.hits["/jwks"] == 2 + window
        assert len(p._unknown) <= NEGATIVE_CACHE_SIZE


# ---------------------------------------------------------------- key filtering


async def test_weak_symmetric_and_odd_keys_are_skipped(server: JwksServer) -> None:
    rsa_as_none = dict(A, kid="none", alg="none")
    private_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_B))
    server.keys = [
        A,
        jwk(RSA_WEAK, "weak", "RS256"),
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256"},
        {"kty": "oct", "kid": "hmac2", "k": "c2VjcmV0"},
        dict(B, kid="enc", use="enc"),
        dict(B, kid="ops", key_ops=["encrypt"]),
        dict(private_jwk, kid="private"),
        rsa_as_none,
        dict(jwk(EC_KEY, "mismatch", "ES256"), alg="RS256"),
        {"kty": "XYZ", "kid": "xyz"},
        "not an object",
    ]
    async with provider(JwksSource(url=f"{server.url}/jwks"), min_rsa_bits=2048) as (p, results):
        assert (await p.get_key("a")).key_id == "a"
        for kid in ("weak", "hmac", "hmac2", "enc", "ops", "private", "none", "mismatch", "xyz"):
            assert await reason_of(p, kid) == "unknown_kid", kid
        assert results.count("rejected_key") == 10
        assert results[-1] == "ok"


async def test_a_set_of_only_unusable_keys_is_a_failed_fetch(server: JwksServer) -> None:
    server.keys = [jwk(RSA_WEAK, "weak", "RS256"), {"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]
    async with provider(JwksSource(url=f"{server.url}/jwks")) as (p, results):
        assert not p.ready()
        assert results == ["error"]


# ---------------------------------------------------------------- discovery, bearer token


async def test_discovery_follows_and_caches_jwks_uri(server: JwksServer) -> None:
    source = JwksSource(discovery_url=f"{server.url}/.well-known/openid-configuration")
    async with provider(source) as (p, _):
        assert (await p.get_key("a")).key_id == "a"
        assert await p.refresh()
        assert server.hits["/.well-known/openid-configuration"] == 1
        assert server.hits["/discovered/jwks"] == 2
        server.mode = "500"  # a failure drops the cached jwks_uri ...
        assert not await p.refresh()
        server.mode = "ok"
        assert await p.refresh()  # ... so the next refresh discovers again
        assert server.hits["/.well-known/openid-configuration"] == 2
        assert server.hits["/jwks"] == 0


@pytest.mark.parametrize("uri", ["file:///etc/passwd", "ftp://127.0.0.1/jwks", "/relative"])
async def test_discovery_refuses_non_http_jwks_uri(server: JwksServer, uri: str) -> None:
    server.jwks_uri = uri
    source = JwksSource(discovery_url=f"{server.url}/.well-known/openid-configuration")
    async with provider(source) as (p, results):
        assert not p.ready()
        assert results == ["error"]


async def test_bearer_token_file_is_reread_on_every_fetch(
    server: JwksServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "token"
    token_file.write_text("token-one\n")
    source = JwksSource(
        discovery_url=f"{server.url}/.well-known/openid-configuration",
        bearer_token_file=str(token_file),
    )
    async with provider(source) as (p, _):
        token_file.write_text("token-two")
        assert await p.refresh()
        server.mode = "500"
        assert not await p.refresh()
        token_file.unlink()
        assert not await p.refresh()  # no token: no request at all
    assert server.auth == [
        "Bearer token-one",
        "Bearer token-one",
        "Bearer token-two",
        "Bearer token-two",
    ]
    logged = caplog.text
    assert "token-one" not in logged
    assert "token-two" not in logged
    assert "jwks refresh from" in logged


async def test_redirect_is_refused_even_by_a_redirect_following_client(
    server: JwksServer,
) -> None:
    server.mode = "redirect"
    client = httpx.AsyncClient(follow_redirects=True, trust_env=False)
    async with provider(JwksSource(url=f"{server.url}/jwks"), http=client) as (p, results):
        assert not p.ready()
        assert results == ["error"]
    assert server.hits["/jwks"] == 1
    assert server.hits["/elsewhere"] == 0


# ---------------------------------------------------------------- file source, hooks, config


async def test_file_source_is_reread_on_refresh(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [A]}))
    async with provider(JwksSource(file=str(path))) as (p, _):
        assert (await p.get_key("a")).key_id == "a"
        path.write_text(json.dumps({"keys": [B]}))
        assert await p.refresh()
        assert (await p.get_key("b")).key_id == "b"
        assert await reason_of(p, "a") == "unknown_kid"


async def test_a_failing_on_refresh_hook_does_not_break_refresh(server: JwksServer) -> None:
    def hook(result: str) -> None:
        raise RuntimeError("metrics broke")

    client = make_jwks_http_client()
    p = JwksKeyProvider(JwksSource(url=f"{server.url}/jwks"), client, on_refresh=hook)
    try:
        assert await p.refresh()
        assert p.ready()
    finally:
        await p.aclose()
        await client.aclose()


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"url": "http://x/jwks", "file": "/tmp/j"},
        {"url": "ftp://x/jwks"},
        {"discovery_url": "not a url"},
        {"file": "/tmp/j", "bearer_token_file": "/tmp/t"},
    ],
)
def test_jwks_source_is_validated(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="JwksSource"):
        JwksSource(**fields)


def test_provider_options_are_validated() -> None:
    source = JwksSource(url="http://127.0.0.1/jwks")
    client = httpx.AsyncClient()
    with pytest.raises(ValueError, match="cooldown_s"):
        JwksKeyProvider(source, client, ttl_s=10, cooldown_s=20)
    with pytest.raises(ValueError, match="stale_s"):
        JwksKeyProvider(source, client, ttl_s=10, stale_s=5)


# ---------------------------------------------------------------- static keys


def _pem(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


async def test_static_from_pem_answers_any_kid(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(_pem(RSA_A.public_key()))
    p = StaticKeyProvider.from_pem(path, "RS256")
    assert p.ready()
    assert verifies(await p.get_key(None), RSA_A, "RS256")
    assert verifies(await p.get_key("whatever"), RSA_A, "RS256")
    path.write_bytes(_pem(ED_KEY.public_key()))
    assert verifies(await StaticKeyProvider.from_pem(path, "EdDSA").get_key(None), ED_KEY, "EdDSA")


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (RSA_WEAK.public_key(), "RS256"),
        (RSA_A.public_key(), "HS256"),
        (RSA_A.public_key(), "ES256"),
        (EC_KEY.public_key(), "none"),
    ],
)
def test_static_from_pem_refuses_bad_keys(tmp_path: Path, key: Any, alg: str) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(_pem(key))
    with pytest.raises(KeySetError):
        StaticKeyProvider.from_pem(path, alg)


def test_static_from_pem_refuses_private_keys_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(
        RSA_A.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeySetError):
        StaticKeyProvider.from_pem(path, "RS256")
    with pytest.raises(KeySetError):
        StaticKeyProvider.from_pem(tmp_path / "missing.pem", "RS256")


async def test_static_from_jwks_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    weak = jwk(RSA_WEAK, "weak", "RS256")
    path.write_text(json.dumps({"keys": [A, jwk(EC_KEY, "e", "ES256"), weak]}))
    p = StaticKeyProvider.from_jwks_file(path)
    assert verifies(await p.get_key("a"), RSA_A, "RS256")
    assert verifies(await p.get_key("e"), EC_KEY, "ES256")
    for kid in (None, "weak", "other"):
        assert (await _static_reason(p, kid)) == "unknown_kid"
    path.write_text(json.dumps({"keys": [A]}))
    assert (await StaticKeyProvider.from_jwks_file(path).get_key(None)).key_id == "a"


async def _static_reason(p: StaticKeyProvider, kid: str | None) -> str:
    with pytest.raises(AuthenticationError) as info:
        await p.get_key(kid)
    return info.value.reason


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"keys": []}',
        b'{"keys": {}}',
        b'{"keys": [], "keys": []}',
        json.dumps({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}).encode(),
    ],
)
def test_static_from_jwks_json_refuses_unusable_sets(data: bytes) -> None:
    with pytest.raises(KeySetError):
        StaticKeyProvider.from_jwks_json(data)


async def test_static_from_public_keys() -> None:
    p = StaticKeyProvider.from_public_keys(
        {"r": RSA_A.public_key(), "e": EC_KEY.public_key(), "d": ED_KEY.public_key()}
    )
    assert verifies(await p.get_key("r"), RSA_A, "RS256")
    assert verifies(await p.get_key("e"), EC_KEY, "ES256")
    assert verifies(await p.get_key("d"), ED_KEY, "EdDSA")
    with pytest.raises(KeySetError):
        StaticKeyProvider.from_public_keys({None: RSA_A.public_key(), "e": EC_KEY.public_key()})
    with pytest.raises(KeySetError):
        StaticKeyProvider.from_public_keys({"w": RSA_WEAK.public_key()})


# ---------------------------------------------------------------- key_now (no I/O)


async def test_key_now_is_what_get_key_gives_without_a_refresh(server: JwksServer) -> None:
    """``key_now`` (the cached-token check's fast path) answers only what ``get_key`` would
    give at once; a miss, a malformed kid, no key set yet or a stale one is None, and it never
    fetches."""
    clock = FakeClock()
    source = JwksSource(url=f"{server.url}/jwks")
    async with provider(source, clock=clock, start=False, stale_s=600) as (p, _):
        assert p.key_now("a") is None  # nothing fetched yet
        assert server.hits["/jwks"] == 0
        await p.start()
        assert p.key_now("a") is await p.get_key("a")
        assert p.key_now(None) is await p.get_key(None)  # the only key
        for kid in ("b", "", "k" * 10_000, 7):
            assert p.key_now(kid) is None  # type: ignore[arg-type]
        assert server.hits["/jwks"] == 1
        clock.advance(601)  # past stale: only get_key (a refresh) can tell
        assert p.key_now("a") is None
        assert server.hits["/jwks"] == 1


async def test_a_cached_token_stops_when_its_key_is_no_longer_served(server: JwksServer) -> None:
    """The token cache's fast key check: a hit is served while the verifying key is the one
    the issuer serves, and verified again (here: refused) once it is not."""
    server.keys = [jwk(RSA_KEY, "k1", "RS256")]
    async with provider(JwksSource(url=f"{server.url}/jwks")) as (p, _):
        auth = Authenticator(
            {ISS: (POLICY, p)},
            rules=RULES,
            default_profile=None,
            max_token_bytes=8192,
            cache_size=10,
            clock=lambda: NOW,
        )
        header = bearer(sign())
        first = await auth.authenticate([header])
        assert await auth.authenticate([header]) is first  # from the cache
        server.keys = [B]
        assert await p.refresh()  # k1 is gone
        with pytest.raises(AuthenticationError) as info:
            await auth.authenticate([header])
        assert info.value.reason == "unknown_kid"
        assert len(auth.cache) == 0


def test_static_key_now_matches_get_key() -> None:
    keys = StaticKeyProvider.from_public_keys({"a": RSA_A.public_key()}, algorithm="RS256")
    assert keys.key_now("a") is asyncio.run(keys.get_key("a"))
    assert keys.key_now(None) is keys.key_now("a")
    assert keys.key_now("b") is None
    lone = StaticKeyProvider.from_public_keys({None: RSA_A.public_key()}, algorithm="RS256")
    assert lone.key_now("anything") is asyncio.run(lone.get_key("anything"))
