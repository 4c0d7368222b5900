"""The Entra token's refresh schedule (pure core, table-driven), the credential's single flight
over a typed fake token source, ``make_credential``'s config problems, and routing's use of
``usable()`` (no new object on a backend without a token)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.config import ConfigError, EntraConfig, parse
from gateway.errors import ServiceUnavailableError
from gateway.upstream.backends import Backend, Backends
from gateway.upstream.breaker import BreakerPolicy
from gateway.upstream.client import UpstreamClient
from gateway.upstream.credentials import ApiKeySource, make_credential
from gateway.upstream.entra import EntraCredential, TokenFetchError
from gateway.upstream.tokenrefresh import FORCE_INTERVAL_S, JITTER, Schedule, Token
from tests.stack import V2, base_config

T0 = 1_000_000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def held(lifetime: float = 3600, *, margin: float = 300, jitter: float = 0.0) -> Schedule:
    token = Token("t", expires_on=T0 + lifetime, obtained_on=T0)
    return Schedule(margin).started(T0).succeeded(token, jitter)


@pytest.mark.parametrize(
    ("schedule", "now", "due"),
    [
        (Schedule(300), T0, True),  # no token: due at once
        (held(), T0 + 3600 - 301, False),
        (held(), T0 + 3600 - 300, True),  # margin reached
        (held(jitter=0.99), T0 + 3600 - 300 * (1 + JITTER * 0.99) - 1, False),
        (held(jitter=0.99), T0 + 3600 - 300 * (1 + JITTER * 0.99), True),  # jitter: earlier
        (held(60, margin=300), T0 + 29, False),  # shorter than the margin: half its life
        (held(60, margin=300), T0 + 30, True),
    ],
)
def test_refresh_is_due_margin_ahead_with_jitter_never_before_half_life(
    schedule: Schedule, now: float, due: bool
) -> None:
    assert schedule.due(now) is due


def test_the_servers_refresh_on_wins_when_sooner() -> None:
    token = Token("t", expires_on=T0 + 7200, obtained_on=T0, refresh_on=T0 + 3600)
    schedule = Schedule(300).started(T0).succeeded(token, 0.0)
    assert not schedule.due(T0 + 3599)
    assert schedule.due(T0 + 3600)


@pytest.mark.parametrize(
    ("failures", "wait"), [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (20, 30.0)]
)
def test_failed_fetches_back_off_doubling_to_a_cap(failures: int, wait: float) -> None:
    schedule = held()
    for _ in range(failures):
        schedule = schedule.started(T0 + 100).failed(0.0)
    assert not schedule.due(T0 + 100 + wait - 0.01)
    assert schedule.due(T0 + 100 + wait)
    assert schedule.retry_after_s(T0 + 100) == math.ceil(wait)


def test_a_good_fetch_ends_the_backoff() -> None:
    schedule = held().started(T0 + 10).failed(0.0).failed(0.0)
    token = Token("u", expires_on=T0 + 3610, obtained_on=T0 + 10)
    assert schedule.succeeded(token, 0.0).due_at() == T0 + 3610 - 300


def test_usable_until_expiry_whatever_the_failures() -> None:
    schedule = held(60).started(T0 + 30).failed(0.0)
    assert schedule.token is not None
    assert schedule.token.usable(T0 + 59.99)
    assert not schedule.token.usable(T0 + 60)
    assert schedule.token.seconds_left(T0 + 70) == 0.0


def test_a_forced_refresh_waits_for_the_interval_since_the_last_fetch() -> None:
    forced = held().started(T0 + 1).force()
    assert not forced.due(T0 + 1 + FORCE_INTERVAL_S - 0.01)
    assert forced.due(T0 + 1 + FORCE_INTERVAL_S)
    assert not forced.started(T0 + 10).due(T0 + 20)  # the fetch answered it


def test_retry_after_is_at_least_one_second() -> None:
    assert Schedule(300).retry_after_s(T0) == 1
    assert held().retry_after_s(T0) == 3300


@dataclass
class FakeTokens:
    """A typed fake of the ``TokenSource`` port: counts fetches, can be slow or fail."""

    clock: list[float]
    lifetime: float = 3600
    delay_s: float = 0.0
    fail: bool = False
    #: Raise something no adapter translated (a bug): still a failed fetch, never a loop.
    crash: bool = False
    fetches: int = 0
    closed: bool = False
    issued: list[str] = field(default_factory=list)

    async def fetch(self) -> Token:
        self.fetches += 1
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise TokenFetchError("ClientAuthenticationError")
        if self.crash:
            raise RuntimeError("unforeseen")
        value = f"tok-{self.fetches}"
        self.issued.append(value)
        now = self.clock[0]
        return Token(value, expires_on=now + self.lifetime, obtained_on=now)

    async def aclose(self) -> None:
        self.closed = True


def credential(tokens: FakeTokens, events: list[str]) -> EntraCredential:
    return EntraCredential(
        tokens,
        margin_s=300,
        clock=lambda: tokens.clock[0],
        rand=lambda: 0.0,
        on_refresh=events.append,
        on_refused=lambda: events.append("refused"),
    )


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_concurrent_requests_share_one_fetch() -> None:
    tokens = FakeTokens([T0], delay_s=0.05)
    events: list[str] = []
    cred = credential(tokens, events)
    headers = await asyncio.gather(*(cred.header() for _ in range(50)))
    assert tokens.fetches == 1
    assert set(headers) == {(b"authorization", b"Bearer tok-1")}
    # Due for refresh: fifty requests are served with the held token and start one fetch.
    tokens.clock[0] = T0 + 3600 - 299
    headers = await asyncio.gather(*(cred.header() for _ in range(50)))
    assert set(headers) == {(b"authorization", b"Bearer tok-1")}
    await asyncio.sleep(0.1)
    assert tokens.fetches == 2
    assert await cred.header() == (b"authorization", b"Bearer tok-2")
    assert events == ["ok", "ok"]
    await cred.aclose()
    assert tokens.closed


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_no_usable_token_is_503_with_retry_after_and_no_fetch_storm() -> None:
    tokens = FakeTokens([T0], fail=True)
    events: list[str] = []
    cred = credential(tokens, events)
    with pytest.raises(ServiceUnavailableError) as refused:
        await cred.header()
    assert refused.value.code == "upstream_credential_unavailable"
    assert refused.value.headers == {"Retry-After": "1"}
    for _ in range(20):  # within the backoff: refused at once, no new fetch
        with pytest.raises(ServiceUnavailableError):
            await cred.header()
    assert tokens.fetches == 1
    assert events == ["error"] + ["refused"] * 21
    assert not cred.ready()
    tokens.fail = False
    tokens.clock[0] = T0 + 1
    assert await cred.header() == (b"authorization", b"Bearer tok-2")
    assert cred.ready()
    assert cred.seconds_left() == 3600


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_an_unforeseen_error_is_a_failed_fetch_with_backoff() -> None:
    tokens = FakeTokens([T0], crash=True)
    events: list[str] = []
    cred = credential(tokens, events)
    cred.start()
    await asyncio.sleep(0.2)
    with pytest.raises(ServiceUnavailableError):
        await cred.header()
    assert tokens.fetches == 1  # the loop waits out the backoff (the clock stands still)
    assert events == ["error", "refused"]
    assert cred.last_error == "RuntimeError"
    await cred.aclose()


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_the_background_loop_fetches_at_start_and_before_expiry() -> None:
    tokens = FakeTokens([T0], lifetime=0.4)
    cred = EntraCredential(tokens, margin_s=300, rand=lambda: 0.0)  # the real clock
    tokens.clock[0] = time.time()
    cred.start()
    await asyncio.sleep(0.05)
    assert tokens.fetches == 1 and cred.ready()
    tokens.clock[0] += 0.25  # past half its life
    await asyncio.sleep(0.5)
    assert tokens.fetches >= 2
    await cred.aclose()


def test_make_credential_reports_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        make_credential("entra", api_key_file=None, entra=EntraConfig(), reload_s=10, environ={})
    assert missing.value.problems == [
        "upstream.entra.client_id: not set (nor AZURE_CLIENT_ID in the environment)",
        "upstream.entra.tenant_id: not set (nor AZURE_TENANT_ID in the environment)",
        "upstream.entra.token_file: not set (nor AZURE_FEDERATED_TOKEN_FILE in the environment)",
    ]
    webhook = {
        "AZURE_CLIENT_ID": "c",
        "AZURE_TENANT_ID": "t",
        "AZURE_FEDERATED_TOKEN_FILE": str(tmp_path / "token"),
        "AZURE_AUTHORITY_HOST": "http://login.example",
    }
    with pytest.raises(ConfigError) as plain:
        make_credential(
            "entra",
            api_key_file=None,
            entra=EntraConfig(),
            reload_s=10,
            environ=webhook,
            where="upstream.backends[1]",
        )
    assert plain.value.problems == [
        "upstream.backends[1].entra.authority_host: must be an https URL"
    ]
    built = make_credential(
        "entra",
        api_key_file=None,
        entra=EntraConfig(),
        reload_s=10,
        environ={**webhook, "AZURE_AUTHORITY_HOST": "https://login.example/"},
    )
    assert isinstance(built, EntraCredential)
    assert built.tokens.authority_host == "https://login.example"  # type: ignore[attr-defined]
    key_file = tmp_path / "key"
    key_file.write_text("k1\n")
    key = make_credential(
        "api_key", api_key_file=str(key_file), entra=EntraConfig(), reload_s=10, environ={}
    )
    assert isinstance(key, ApiKeySource) and key.current() == "k1" and key.ready()


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_routing_skips_a_backend_without_a_usable_token() -> None:
    """``Backends.choose`` (new objects) and ``preferred`` (lists) leave out a backend whose
    credential cannot give a header now; a key is always usable. With none usable, the
    breakers alone decide, and the credential gives its own 503 (not no_upstream_available)."""
    config = parse(base_config("http://127.0.0.1:9", "/nonexistent/jwks.json", None))
    clock = [T0]
    down, up = FakeTokens(clock, fail=True), FakeTokens(clock, lifetime=60)
    events: list[str] = []
    a_cred, b_cred = credential(down, events), credential(up, events)
    await b_cred.header()  # B holds a token; A's endpoint is down: none
    assert (a_cred.usable(), b_cred.usable()) == (False, True)
    assert ApiKeySource("k").usable()
    client = UpstreamClient(config.upstream)
    backends = Backends(
        [Backend("a", client, a_cred), Backend("b", client, b_cred)],
        policy=BreakerPolicy(),
        clock=lambda: clock[0],
        draw=lambda: 0.0,  # would pick A (the first of equal weights)
    )
    try:
        assert backends.choose(V2)[0].name == "b"
        assert backends.preferred(V2).name == "b"
        clock[0] += 61  # B's token expired too
        assert not b_cred.usable()
        picked, _ = backends.choose(V2)
        assert picked.name == "a"
        with pytest.raises(ServiceUnavailableError) as refused:
            await picked.credential.header()
        assert refused.value.code == "upstream_credential_unavailable"
    finally:
        await a_cred.aclose()
        await b_cred.aclose()
        await client.aclose()
