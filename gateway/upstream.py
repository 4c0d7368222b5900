"""The one adapter to Azure: an httpx client and the streaming forward.

* One ``AsyncClient`` per process, built by the composition root and closed at shutdown.
* ``trust_env=False`` (no proxy/netrc/SSL settings from the environment), no redirects, a
  cookie jar that refuses every cookie (a shared client must never replay one caller's
  upstream cookies to another), every timeout phase explicit, no retries.
* Bodies pass through ``aiter_raw()``: bytes as Azure sent them, never decompressed.
* The URL is the configured endpoint plus a target built by ``routes.py``; the request httpx
  is about to send is checked against it, so no normalisation can change what is sent.
* httpx's exceptions are translated into the gateway's error tree here and only here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType

import httpx

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


def _refusing_cookie_jar() -> CookieJar:
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def translate(exc: httpx.HTTPError) -> GatewayError:
    """httpx exception → gateway error (the only place this mapping lives)."""
    if isinstance(exc, httpx.PoolTimeout):
        return ServiceUnavailableError(
            "The gateway is at its upstream connection limit; retry shortly.",
            code="upstream_pool_exhausted", headers={"Retry-After": "1"},
        )
    if isinstance(exc, httpx.TimeoutException):
        return GatewayTimeoutError("The upstream service did not answer in time.")
    if isinstance(exc, httpx.ConnectError):
        return BadGatewayError("The upstream service could not be reached.",
                               code="upstream_unreachable")
    return BadGatewayError("The upstream service failed to answer.")


class UpstreamResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: list[tuple[bytes, bytes]] = list(response.headers.raw)
        self._chunks: AsyncIterator[bytes] | None = None

    @property
    def content_type(self) -> str:
        return str(self._response.headers.get("content-type", ""))

    async def _raw(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
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

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


class UpstreamClient:
    def __init__(
        self, config: UpstreamConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self.base = httpx.URL(config.endpoint)
        self.timeout = httpx.Timeout(
            connect=config.connect_timeout_s, read=config.read_timeout_s,
            write=config.write_timeout_s, pool=config.pool_timeout_s,
        )
        self.stream_timeout = httpx.Timeout(
            connect=config.connect_timeout_s, read=config.stream_read_timeout_s,
            write=config.write_timeout_s, pool=config.pool_timeout_s,
        )
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_keepalive,
            keepalive_expiry=30.0,
        )
        self.client = httpx.AsyncClient(
            transport=transport or httpx.AsyncHTTPTransport(limits=limits, retries=0),
            limits=limits,
            timeout=self.timeout,
            trust_env=False,
            follow_redirects=False,
            cookies=_refusing_cookie_jar(),
        )

    async def send(
        self,
        method: str,
        path: str,
        query: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | None,
        *,
        stream: bool,
    ) -> UpstreamResponse:
        base_path = self.base.raw_path.rstrip(b"/").decode("ascii")
        request = self.client.build_request(
            method,
            self.base.copy_with(raw_path=f"{base_path}{path}?{query}".encode("ascii")),
            headers=list(headers),
            content=body,
            timeout=self.stream_timeout if stream else self.timeout,
        )
        expected = f"{base_path}{path}?{query}".encode("ascii")
        if request.url.raw_path != expected or request.url.host != self.base.host or (
            request.url.port != self.base.port or request.url.scheme != self.base.scheme
        ):
            raise BadGatewayError("Refusing to send a request off its route.",
                                  code="upstream_target_mismatch")
        try:
            response = await self.client.send(request, stream=True, follow_redirects=False)
        except httpx.HTTPError as exc:
            log.warning("upstream request failed: %s", type(exc).__name__)
            raise translate(exc) from None
        return UpstreamResponse(response)

    def pool_connections(self) -> int:
        """Connections the pool holds now (for metrics and leak tests)."""
        transport = self.client._transport
        pool = getattr(transport, "_pool", None)
        return len(getattr(pool, "connections", ()))

    async def aclose(self) -> None:
        await self.client.aclose()
