"""The one adapter to Azure: an httpx client and the streaming forward.

* One transport (connection pool) per process, built by the composition root and closed at
  shutdown. Requests go straight to the transport as ``httpx.Request``s: no ``AsyncClient``
  in between, so there is no client cookie jar to replay one caller's upstream cookies to
  another, no redirect following, no auth flow and no default headers — and none of their
  per-request cost (about a tenth of the gateway's CPU in a profile).
* Its transport is configurable (``upstream.transport``): ``aiohttp`` (default; httpx-aiohttp's
  ``AiohttpTransport`` over one ``aiohttp.ClientSession``) or ``httpx`` (httpcore's pool, about
  four times the CPU per request, see the README's performance section). Both are built here,
  with the same properties; nothing outside this module sees which one runs.
* ``trust_env=False`` (no proxy/netrc/SSL settings from the environment), no redirects, no
  cookie jar, every timeout phase explicit, no retries.
* Bodies pass through ``aiter_raw()``: bytes as Azure sent them, never decompressed (the
  aiohttp session is built with ``auto_decompress=False`` and a ``DummyCookieJar``).
* The URL is the configured endpoint plus a target built by ``operations/table.py``; the
  request httpx is about to send is checked against it, so no normalisation can change what
  is sent.
* httpx's (and, under it, aiohttp's) exceptions are translated into the gateway's error tree
  here and only here.

Timeouts under aiohttp: ``connect_timeout_s`` bounds the TCP/TLS connect (``sock_connect``),
``read_timeout_s``/``stream_read_timeout_s`` every read (``sock_read``), and
``pool_timeout_s + connect_timeout_s`` the wait for a pooled connection plus the connect
(``connect``); aiohttp has no write timeout: a body Azure does not read is bounded by the read
timeout of the answer that does not come.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from types import TracebackType

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from gateway.config import UpstreamConfig
from gateway.errors import (
    BadGatewayError,
    GatewayError,
    GatewayTimeoutError,
    ServiceUnavailableError,
)

log = logging.getLogger("gateway.upstream")


class UpstreamBrokenError(Exception):
    """The upstream response body ended abnormally after the response had started."""


def _pool_exhausted() -> GatewayError:
    return ServiceUnavailableError(
        "The gateway is at its upstream connection limit; retry shortly.",
        code="upstream_pool_exhausted",
        headers={"Retry-After": "1"},
    )


def _timed_out() -> GatewayError:
    return GatewayTimeoutError("The upstream service did not answer in time.")


def _unreachable() -> GatewayError:
    return BadGatewayError(
        "The upstream service could not be reached.", code="upstream_unreachable"
    )


def translate(exc: Exception, *, pool_full: bool = False) -> GatewayError:
    """httpx or aiohttp exception → gateway error (the only place this mapping lives).

    httpx-aiohttp re-raises aiohttp's errors as httpx ones with a coarse map (any dropped
    connection becomes ``ConnectTimeout``), so the aiohttp cause decides when there is one.
    aiohttp reports a slow pool and a slow connect alike: ``pool_full`` tells them apart.
    """
    cause = exc if isinstance(exc, aiohttp.ClientError) else exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        if isinstance(cause, aiohttp.ConnectionTimeoutError):
            return _pool_exhausted() if pool_full else _timed_out()
        if isinstance(cause, aiohttp.ServerTimeoutError):
            return _timed_out()
        if isinstance(cause, aiohttp.ClientConnectorError):
            return _unreachable()
        return BadGatewayError("The upstream service failed to answer.")
    if isinstance(exc, httpx.PoolTimeout):
        return _pool_exhausted()
    if isinstance(exc, httpx.TimeoutException):
        return _timed_out()
    if isinstance(exc, httpx.ConnectError):
        return _unreachable()
    return BadGatewayError("The upstream service failed to answer.")


#: What either transport raises (httpx-aiohttp lets aiohttp errors it does not map through).
_ERRORS = (httpx.HTTPError, aiohttp.ClientError)


def _aiohttp_session(config: UpstreamConfig) -> aiohttp.ClientSession:
    """The aiohttp session under the httpx API (built lazily, inside the running loop)."""
    connector = aiohttp.TCPConnector(
        limit=config.max_connections,
        limit_per_host=0,
        keepalive_timeout=30.0,
        ttl_dns_cache=10,
        ssl=httpx.create_ssl_context(trust_env=False),
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),  # never store, never replay upstream cookies
        auto_decompress=False,  # relay Azure's bytes as sent
        trust_env=False,
        raise_for_status=False,
        requote_redirect_url=False,
        timeout=aiohttp.ClientTimeout(total=None),  # per request, from the httpx timeouts
    )


class UpstreamResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: list[tuple[bytes, bytes]] = list(response.headers.raw)
        self._chunks: AsyncIterator[bytes] | None = None

    @property
    def has_length(self) -> bool:
        """Azure declared the body's length (a bounded JSON answer, not a stream)."""
        return "content-length" in self._response.headers

    @property
    def is_event_stream(self) -> bool:
        return "text/event-stream" in self.content_type

    @property
    def content_type(self) -> str:
        return str(self._response.headers.get("content-type", ""))

    async def _raw(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except _ERRORS as exc:
            raise UpstreamBrokenError(type(exc).__name__) from exc

    def iter_raw(self) -> AsyncIterator[bytes]:
        """The body's remaining raw bytes (one iterator, shared with ``read_until``)."""
        if self._chunks is None:
            self._chunks = self._raw()
        return self._chunks

    async def read_until(self, done: Callable[[bytes], bool], limit: int) -> bytes:
        """Read chunks until ``done(prefix)``, the end of the body, or ``limit`` bytes; the
        rest stays available from ``iter_raw()``."""
        prefix = bytearray()
        chunks = self.iter_raw()
        while len(prefix) < limit and not done(bytes(prefix)):
            try:
                prefix += await anext(chunks)
            except StopAsyncIteration:
                break
        return bytes(prefix)

    async def aclose(self) -> None:
        await self._response.aclose()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class UpstreamClient:
    def __init__(
        self,
        config: UpstreamConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        upload_read_timeout_s: float = 900.0,
    ) -> None:
        """``upload_read_timeout_s`` (at least ``read_timeout_s``) bounds each read of the
        answer to a streamed upload: Azure stores the whole file before it answers. Neither
        transport runs a read timeout while the body is still being sent."""
        self.config = config
        self.base = httpx.URL(config.endpoint)
        aiohttp_default = transport is None and config.transport == "aiohttp"
        # aiohttp's ``connect`` covers the pool wait and the connect: give it both budgets.
        pool = config.pool_timeout_s + (config.connect_timeout_s if aiohttp_default else 0.0)

        def phases(read: float) -> httpx.Timeout:
            return httpx.Timeout(
                connect=config.connect_timeout_s, read=read, write=config.write_timeout_s, pool=pool
            )

        self.timeout = phases(config.read_timeout_s)
        self.stream_timeout = phases(config.stream_read_timeout_s)
        self._upload_timeout = phases(max(config.read_timeout_s, upload_read_timeout_s)).as_dict()
        self._session: aiohttp.ClientSession | None = None
        if aiohttp_default:
            transport = AiohttpTransport(client=self._new_session, trust_env=False)
        elif transport is None:
            limits = httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_keepalive,
                keepalive_expiry=30.0,
            )
            transport = httpx.AsyncHTTPTransport(limits=limits, retries=0, trust_env=False)
        self.transport = transport
        self._timeouts = {False: self.timeout.as_dict(), True: self.stream_timeout.as_dict()}
        self._base_path = self.base.raw_path.rstrip(b"/").decode("ascii")

    async def send(
        self,
        method: str,
        path: str,
        query: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None,
        *,
        stream: bool,
    ) -> UpstreamResponse:
        """Send one request; a body given as an async iterable is streamed (``Content-Length``
        when the headers carry one, else chunked)."""
        # An empty query (the v1 API without its optional api-version) is sent without ``?``.
        target = f"{self._base_path}{path}?{query}" if query else f"{self._base_path}{path}"
        expected = target.encode("ascii")
        streamed = body is not None and not isinstance(body, bytes)
        request = httpx.Request(
            method,
            self.base.copy_with(raw_path=expected),
            headers=list(headers),
            content=body,
            extensions={"timeout": self._upload_timeout if streamed else self._timeouts[stream]},
        )
        if (
            request.url.raw_path != expected
            or request.url.host != self.base.host
            or (request.url.port != self.base.port or request.url.scheme != self.base.scheme)
        ):
            raise BadGatewayError(
                "Refusing to send a request off its route.", code="upstream_target_mismatch"
            )
        try:
            response = await self.transport.handle_async_request(request)
        except _ERRORS as exc:
            cause = exc.__cause__ if isinstance(exc, httpx.HTTPError) else exc
            log.warning("upstream request failed: %s", type(cause or exc).__name__)
            raise translate(exc, pool_full=self._pool_full()) from None
        response.request = request
        return UpstreamResponse(response)

    def _new_session(self) -> aiohttp.ClientSession:
        self._session = _aiohttp_session(self.config)
        return self._session

    def _pool_full(self) -> bool:
        connector = self._session.connector if self._session is not None else None
        acquired = getattr(connector, "_acquired", ())
        return connector is not None and len(acquired) >= connector.limit > 0

    def pool_connections(self) -> int:
        """Connections the pool holds now (for metrics and leak tests)."""
        if self._session is not None:
            connector = self._session.connector
            idle = getattr(connector, "_conns", {})
            return len(getattr(connector, "_acquired", ())) + sum(len(v) for v in idle.values())
        pool = getattr(self.transport, "_pool", None)
        return len(getattr(pool, "connections", ()))

    async def aclose(self) -> None:
        await self.transport.aclose()
