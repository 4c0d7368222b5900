"""The Entra form of the ``UpstreamCredential`` port: workload identity (azure-identity adapter).

The pod's projected service-account token (``AZURE_FEDERATED_TOKEN_FILE``) is exchanged at the
Entra authority for an access token to Azure OpenAI, sent as ``Authorization: Bearer``.

* **Schedule** (``tokenrefresh``, pure): the token is cached and fetched again ahead of its
  expiry by ``refresh_margin_s`` with jitter, in the background, one fetch at a time (single
  flight: concurrent requests never cause two fetches); a failed fetch is retried with a
  capped backoff.
* **Endpoint down**: the cached token serves until it expires; then requests get 503
  ``upstream_credential_unavailable`` with ``Retry-After`` and nothing is forwarded. A request
  with no usable token joins a fetch in flight, or starts one when one is due.
* **Azure 401/403** (``reload``): a fetch at once, or ``tokenrefresh.FORCE_INTERVAL_S`` after
  the last one started (a refused token cannot make every request a fetch).
* **Routing** (several backends): ``usable()`` is false while no unexpired token is held;
  such a backend takes no new objects (``Backends.choose``); requests on its objects still
  go to it and get the 503 above.
* **Start-up**: the first fetch starts with the gateway; ``ready()`` (readiness) is false until
  a token has been held once. Afterwards an expired token does not fail readiness: every
  replica shares the authority's outage, which the 503 code, the metrics and the alert report.

Why one ``WorkloadIdentityCredential`` per fetch: the library keeps its own token cache (and
refreshes 5 minutes before expiry, swallowing a failure) and re-reads the token file only every
10 minutes. The gateway owns the schedule, so each fetch uses a fresh credential: an empty
cache means exactly one token request, and the token file is read for that request (a rotated
projected token is used at the next fetch). All fetches share one aiohttp session: no proxy
or CA settings from the environment (as for the Azure endpoint), the system-independent
``certifi`` bundle or ``ca_file``, no cookies, azure-core's retries off (the schedule retries).
Library exceptions are translated here, once, into ``TokenFetchError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from typing import Protocol

import aiohttp
import certifi
from azure.core.exceptions import AzureError
from azure.core.pipeline.transport import AioHttpTransport
from azure.identity.aio import WorkloadIdentityCredential

from gateway.errors import ServiceUnavailableError
from gateway.upstream.tokenrefresh import Schedule, Token

log = logging.getLogger("gateway.entra")

UNAVAILABLE = "upstream_credential_unavailable"
#: The longest one token fetch may take (connect + response), then it counts as failed.
FETCH_TIMEOUT_S = 10.0


class TokenFetchError(Exception):
    """A fetch failed; ``reason`` is the library's exception name (for the log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenSource(Protocol):
    async def fetch(self) -> Token: ...

    async def aclose(self) -> None: ...


class WorkloadIdentityTokens:
    """One access token per call, from the Entra authority (azure-identity)."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        token_file: str,
        authority_host: str,
        scope: str,
        ca_file: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.token_file = token_file
        self.authority_host = authority_host
        self.scope = scope
        self.ca_file = ca_file
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            context = ssl.create_default_context(cafile=self.ca_file or certifi.where())
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context, limit=2),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )
        return self._session

    async def fetch(self) -> Token:
        transport = AioHttpTransport(
            session=self._open(),
            session_owner=False,
            connection_timeout=FETCH_TIMEOUT_S / 2,
            read_timeout=FETCH_TIMEOUT_S,
        )
        credential = WorkloadIdentityCredential(
            tenant_id=self.tenant_id,
            client_id=self.client_id,
            token_file_path=self.token_file,
            authority=self.authority_host,
            transport=transport,
            retry_total=0,
        )
        started = self._clock()
        try:
            async with credential:
                info = await credential.get_token_info(self.scope)
        except (AzureError, OSError, ValueError, aiohttp.ClientError) as exc:
            raise TokenFetchError(type(exc).__name__) from None
        if not info.token or not info.token.isascii() or not info.token.isprintable():
            raise TokenFetchError("malformed_token")
        return Token(
            info.token,
            expires_on=float(info.expires_on),
            obtained_on=started,
            refresh_on=None if info.refresh_on is None else float(info.refresh_on),
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class EntraCredential:
    """The cached token, its refresh schedule and the header it sends."""

    def __init__(
        self,
        tokens: TokenSource,
        *,
        margin_s: float,
        fetch_timeout_s: float = FETCH_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        on_refresh: Callable[[str], None] | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.tokens = tokens
        self.fetch_timeout_s = fetch_timeout_s
        self.on_refresh = on_refresh
        self.on_refused = on_refused
        self.schedule = Schedule(margin_s)
        #: Fetches started (each is one token request).
        self.fetches = 0
        self.last_error: str | None = None
        self._clock = clock
        self._rand = rand
        self._inflight: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- the port

    async def header(self) -> tuple[bytes, bytes]:
        now = self._clock()
        token = self.schedule.token
        if token is not None and token.usable(now):
            if self.schedule.due(now):
                self._start_fetch()
            return _bearer(token)
        if self._inflight is None and self.schedule.due(now):
            self._start_fetch()
        inflight = self._inflight
        if inflight is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(inflight), self.fetch_timeout_s)
            now = self._clock()
            token = self.schedule.token
            if token is not None and token.usable(now):
                return _bearer(token)
        if self.on_refused is not None:
            self.on_refused()
        raise ServiceUnavailableError(
            "The gateway holds no valid credential for the upstream service. Retry later.",
            code=UNAVAILABLE,
            headers={"Retry-After": str(self.schedule.retry_after_s(now))},
        )

    def reload(self) -> bool:
        """Azure refused the token: fetch a new one as soon as allowed (True: started now)."""
        if self._inflight is not None:
            return False  # the fetch in flight brings the new token
        self.schedule = self.schedule.force()
        self._wake.set()
        if self.schedule.due(self._clock()):
            self._start_fetch()
            return True
        return False

    def ready(self) -> bool:
        """True once a token has been held (see the module docstring)."""
        return self.schedule.token is not None

    def usable(self) -> bool:
        """An unexpired token is held: ``header()`` answers at once (routing's question)."""
        token = self.schedule.token
        return token is not None and token.usable(self._clock())

    def seconds_left(self) -> float:
        """Seconds until the held token expires (0 with none, or an expired one)."""
        token = self.schedule.token
        return 0.0 if token is None else token.seconds_left(self._clock())

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run(), name="entra-token-refresh")

    async def aclose(self) -> None:
        for task in (self._loop_task, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loop_task = self._inflight = None
        await self.tokens.aclose()

    # -- the schedule

    async def _run(self) -> None:
        while True:
            now = self._clock()
            if self._inflight is None and self.schedule.due(now):
                self._start_fetch()
            inflight = self._inflight
            if inflight is not None:
                await asyncio.shield(inflight)
                continue
            delay = min(3600.0, self.schedule.due_at() - now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, delay))

    def _start_fetch(self) -> None:
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._fetch(), name="entra-token-fetch")

    async def _fetch(self) -> None:
        self.schedule = self.schedule.started(self._clock())
        self.fetches += 1
        try:
            token = await asyncio.wait_for(self.tokens.fetch(), self.fetch_timeout_s)
        except Exception as exc:  # anything unforeseen is a failed fetch too (never a loop)
            if isinstance(exc, TokenFetchError):
                reason = exc.reason
            elif isinstance(exc, TimeoutError):
                reason = "timeout"
            else:
                reason = type(exc).__name__
                log.error("unexpected error in the Entra token fetch", exc_info=True)
            self.last_error = reason
            self.schedule = self.schedule.failed(self._rand())
            held = self.schedule.token
            left = held.seconds_left(self._clock()) if held is not None else 0.0
            log.error(
                "Entra token fetch failed (%s); the cached token serves for %.0f s more",
                reason,
                left,
            )
            self._notify("error")
        else:
            self.last_error = None
            self.schedule = self.schedule.succeeded(token, self._rand())
            log.info(
                "Entra token obtained; it expires in %.0f s",
                token.seconds_left(self._clock()),
            )
            self._notify("ok")
        finally:
            self._inflight = None
            self._wake.set()

    def _notify(self, result: str) -> None:
        if self.on_refresh is not None:
            try:
                self.on_refresh(result)
            except Exception:
                log.exception("token refresh hook failed")


def _bearer(token: Token) -> tuple[bytes, bytes]:
    return (b"authorization", b"Bearer " + token.value.encode("ascii"))
