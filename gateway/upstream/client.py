"""The one adapter to Azure: the upstream HTTP client and the streaming forward.

* One connection pool per process, built by the composition root and closed at shutdown.
* Its transport is configurable (``upstream.transport``): ``h1`` (default: the gateway's own
  HTTP/1.1 client, ``upstream/h1.py``: an ``asyncio.Protocol`` over httptools and a small
  pool), ``aiohttp`` (one ``aiohttp.ClientSession`` called directly) or ``httpx`` (httpcore's
  pool; the requests go straight to the transport as ``httpx.Request``s, no
  ``AsyncClient``). The httpx-over-aiohttp layer the default used to run cost about 90 µs of
  CPU per request (its ``Request``/``URL`` models and a second response object), aiohttp's
  client itself about a fifth of the gateway's CPU samples: see the README's performance
  section. All three are built here, with the same properties; nothing outside this module
  sees which one runs.
* ``trust_env=False`` (no proxy/netrc/SSL settings from the environment), no redirects, no
  cookie jar (aiohttp: a ``DummyCookieJar``; httpx: no client; h1: none by construction), no
  auth flow, every timeout phase explicit, no retries.
* Bodies pass through as raw bytes as Azure sent them, never decompressed
  (``auto_decompress=False``; httpx: ``aiter_raw()``; h1 knows no encoding), chunk by chunk
  as they arrive.
* A streamed request body (an async iterable) is sent with the ``Content-Length`` the headers
  carry, else chunked; when the iterable raises, the request is aborted before its end.
* The URL is the configured endpoint plus a target built by ``operations/table.py``, parsed
  as already encoded; the URL about to be sent is checked against it (request target, scheme,
  host, port), so no normalisation can change what is sent: a target that would not go out
  byte for byte (a ``#``, a space or a control byte) is refused, never rewritten. (Through
  httpx-aiohttp the default transport re-parsed the URL after the check: ``/a%2Fb/%2e%2e/c``
  went out as ``/c``.)
* aiohttp's, httpx's and h1's exceptions are translated into the gateway's error tree here
  and only here (``translate``).

Timeouts under aiohttp: ``connect_timeout_s`` bounds the TCP/TLS connect (``sock_connect``),
``read_timeout_s``/``stream_read_timeout_s`` every read (``sock_read``), and
``pool_timeout_s + connect_timeout_s`` the wait for a pooled connection plus the connect
(``connect``); aiohttp has no write timeout: a body Azure does not read is bounded by the read
timeout of the answer that does not come. Under h1: ``connect_timeout_s`` the connect,
``pool_timeout_s`` the wait for a pooled connection, and the read timeout every wait for the
server once the request is sent (a write drain included), reset by each arrival.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType

import aiohttp
import httpx
from yarl import URL

from gateway.config import UpstreamConfig
from gateway.errors import (
    BadGatewayError,
    GatewayError,
    GatewayTimeoutError,
    ServiceUnavailableError,
)
from gateway.upstream import h1

log = logging.getLogger("gateway.upstream")


class UpstreamBrokenError(Exception):
    """The upstream response body ended abnormally after the response had started."""


def _broken(exc: Exception) -> UpstreamBrokenError:
    return UpstreamBrokenError(type(exc).__name__)


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


def _off_route() -> GatewayError:
    return BadGatewayError(
        "Refusing to send a request off its route.", code="upstream_target_mismatch"
    )


def translate(exc: Exception, *, pool_full: bool = False) -> GatewayError:
    """aiohttp, httpx or h1 exception → gateway error (the only place this mapping lives).

    An httpx error caused by an aiohttp one is decided by its cause. aiohttp reports a slow
    pool and a slow connect alike: ``pool_full`` tells them apart. A request h1 would not send
    as given (a header with CR/LF/NUL, a streamed body off its declared length) is refused like
    a target off its route: the gateway's refusal, not the backend's failure.
    """
    if isinstance(exc, h1.H1Error):
        if isinstance(exc, h1.H1PoolTimeout):
            return _pool_exhausted()
        if isinstance(exc, h1.H1ConnectTimeout | h1.H1ReadTimeout):
            return _timed_out()
        if isinstance(exc, h1.H1ConnectError):
            return _unreachable()
        if isinstance(exc, h1.H1RequestError):
            return _off_route()
        return BadGatewayError("The upstream service failed to answer.")
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


#: What the transports raise.
_ERRORS = (httpx.HTTPError, aiohttp.ClientError, h1.H1Error)

#: A request target that goes on the request line as it is: visible ASCII, no fragment.
_TARGET = re.compile(r"/[!-\x22\x24-~]*")

#: aiohttp's read size for a response body (a chunk is relayed as soon as it arrives).
_CHUNK = 16 * 1024


#: aiohttp's automatic request headers, never added (see ``_aiohttp_session``).
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def _aiohttp_session(config: UpstreamConfig) -> aiohttp.ClientSession:
    """The aiohttp session (built lazily, inside the running loop)."""
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
        timeout=aiohttp.ClientTimeout(total=None),  # per request, from the phases
        # Nothing the gateway did not put in the header list reaches Azure: without this,
        # aiohttp adds ``User-Agent: Python/aiohttp``, ``Accept: */*``, ``Accept-Encoding``
        # and, on a POST without a body, ``Content-Type: application/octet-stream``. A header
        # in the list (the caller's allowed ``User-Agent``, the gateway's own) still goes.
        skip_auto_headers=_SKIP_AUTO_HEADERS,
    )


class UpstreamResponse:
    """Azure's answer: status, raw headers, and the body's raw bytes (read once)."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterable[bytes],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self.status = status
        self.headers = headers
        self._body = body
        self._close = close
        self._chunks: AsyncIterator[bytes] | None = None
        self._first: dict[bytes, bytes] | None = None
        self._h1: h1.Body | None = None  # (h1: its body translates its own errors)

    @classmethod
    def _of_httpx(cls, response: httpx.Response) -> UpstreamResponse:
        return cls(
            response.status_code, list(response.headers.raw), response.aiter_raw(), response.aclose
        )

    @classmethod
    def _of_aiohttp(cls, response: aiohttp.ClientResponse) -> UpstreamResponse:
        async def close() -> None:
            response.release()  # a body not read to its end closes the connection
            await response.wait_for_close()

        return cls(
            response.status,
            list(response.raw_headers),
            response.content.iter_chunked(_CHUNK),
            close,
        )

    @classmethod
    def _of_h1(cls, conn: h1.Connection) -> UpstreamResponse:
        body = h1.Body(conn, _broken)
        response = cls(conn.status, conn.headers, body, body.aclose)
        response._h1 = body
        return response

    def header(self, name: bytes) -> bytes | None:
        """The first value of the header ``name`` (lower-case), any case in Azure's answer
        (the names lowered once per response, not once per question)."""
        first = self._first
        if first is None:
            first = self._first = {}
            for key, value in self.headers:
                first.setdefault(key.lower(), value)
        return first.get(name)

    @property
    def has_length(self) -> bool:
        """Azure declared the body's length (a bounded JSON answer, not a stream)."""
        return self.header(b"content-length") is not None

    @property
    def is_event_stream(self) -> bool:
        return "text/event-stream" in self.content_type

    @property
    def content_type(self) -> str:
        return (self.header(b"content-type") or b"").decode("latin-1")

    async def _raw(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._body:
                yield chunk
        except _ERRORS as exc:
            raise UpstreamBrokenError(type(exc).__name__) from exc

    def iter_raw(self) -> AsyncIterator[bytes]:
        """The body's remaining raw bytes (one iterator, shared with ``read_until``)."""
        if self._chunks is None:
            self._chunks = self._h1 if self._h1 is not None else self._raw()
        return self._chunks

    def arrived(self) -> bytes | None:
        """The body's remaining raw bytes when all of them have arrived already (h1 only;
        the body is then over), else None: read them from ``iter_raw()`` as they come.
        Never waits, never holds back bytes still arriving."""
        return self._h1.rest() if self._h1 is not None else None

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
        await self._close()

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
        transport runs a read timeout while the body is still being sent. ``transport`` (an
        httpx one) replaces the configured one; ``self.transport`` is None when the aiohttp
        session is called directly (``upstream.transport = "aiohttp"``)."""
        self.config = config
        self.base = httpx.URL(config.endpoint)
        aiohttp_default = transport is None and config.transport == "aiohttp"
        own = transport is None and config.transport == "h1"
        # aiohttp's ``connect`` covers the pool wait and the connect: give it both budgets.
        pool = config.pool_timeout_s + (config.connect_timeout_s if aiohttp_default else 0.0)

        def phases(read: float) -> httpx.Timeout:
            return httpx.Timeout(
                connect=config.connect_timeout_s, read=read, write=config.write_timeout_s, pool=pool
            )

        self.timeout = phases(config.read_timeout_s)
        self.stream_timeout = phases(config.stream_read_timeout_s)
        upload = phases(max(config.read_timeout_s, upload_read_timeout_s))
        self._upload_timeout = upload.as_dict()
        self._session: aiohttp.ClientSession | None = None
        if transport is None and not aiohttp_default and not own:
            limits = httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_keepalive,
                keepalive_expiry=30.0,
            )
            transport = httpx.AsyncHTTPTransport(limits=limits, retries=0, trust_env=False)
        self.transport: httpx.AsyncBaseTransport | None = transport
        self._timeouts = {False: self.timeout.as_dict(), True: self.stream_timeout.as_dict()}
        self._base_path = self.base.raw_path.rstrip(b"/").decode("ascii")
        # The aiohttp path: the endpoint's origin (the target is appended as encoded) and one
        # ``ClientTimeout`` per kind of request, built once.
        self._origin = str(self.base.copy_with(raw_path=b"/")).rstrip("/")
        self._port = self.base.port or (443 if self.base.scheme == "https" else 80)

        def client_timeout(t: httpx.Timeout) -> aiohttp.ClientTimeout:
            return aiohttp.ClientTimeout(
                total=None, sock_connect=t.connect, sock_read=t.read, connect=t.pool
            )

        self._aiohttp_timeouts = {
            False: client_timeout(self.timeout),
            True: client_timeout(self.stream_timeout),
        }
        self._aiohttp_upload_timeout = client_timeout(upload)
        # The h1 path: its pool (built lazily, inside the running loop), the ``Host`` header
        # as aiohttp sends it, and the read timeout per kind of request.
        self._h1: h1.Pool | None = None
        self._own = own
        host = self.base.raw_host
        host = b"[" + host + b"]" if b":" in host else host
        self._host_header = host + (b":%d" % self.base.port if self.base.port else b"")
        self._h1_timeouts = {False: config.read_timeout_s, True: config.stream_read_timeout_s}
        self._h1_upload_timeout = max(config.read_timeout_s, upload_read_timeout_s)

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
        streamed = body is not None and not isinstance(body, bytes)
        try:
            if self._own:
                return await self._send_h1(method, target, headers, body, streamed, stream)
            if self.transport is None:
                return await self._send_aiohttp(method, target, headers, body, streamed, stream)
            return await self._send_httpx(method, target, headers, body, streamed, stream)
        except _ERRORS as exc:
            cause = exc.__cause__ if isinstance(exc, httpx.HTTPError) else exc
            log.warning("upstream request failed: %s", type(cause or exc).__name__)
            raise translate(exc, pool_full=self._pool_full()) from None

    async def _send_aiohttp(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None,
        streamed: bool,
        stream: bool,
    ) -> UpstreamResponse:
        url = URL(self._origin + target, encoded=True)  # as it is: never re-quoted
        if (
            not _TARGET.fullmatch(target)
            or url.raw_path_qs != target
            or url.raw_host != self.base.host
            or url.port != self._port
            or url.scheme != self.base.scheme
        ):
            raise _off_route()
        session = self._session or self._new_session()
        response = await session.request(
            method,
            url,
            headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers],
            data=body or None,
            allow_redirects=False,
            compress=False,
            timeout=self._aiohttp_upload_timeout if streamed else self._aiohttp_timeouts[stream],
        )
        return UpstreamResponse._of_aiohttp(response)

    async def _send_httpx(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None,
        streamed: bool,
        stream: bool,
    ) -> UpstreamResponse:
        assert self.transport is not None
        expected = target.encode("ascii")
        try:
            url = self.base.copy_with(raw_path=expected)
        except httpx.InvalidURL:  # not a path httpx would send as it is
            raise _off_route() from None
        request = httpx.Request(
            method,
            url,
            headers=list(headers),
            content=body,
            extensions={"timeout": self._upload_timeout if streamed else self._timeouts[stream]},
        )
        if (
            not _TARGET.fullmatch(target)
            or request.url.raw_path != expected
            or request.url.host != self.base.host
            or (request.url.port != self.base.port or request.url.scheme != self.base.scheme)
        ):
            raise _off_route()
        response = await self.transport.handle_async_request(request)
        response.request = request
        return UpstreamResponse._of_httpx(response)

    async def _send_h1(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None,
        streamed: bool,
        stream: bool,
    ) -> UpstreamResponse:
        if not _TARGET.fullmatch(target):  # written on the request line as it is
            raise _off_route()
        length: int | None = None
        if isinstance(body, bytes) and body:
            framing = b"Content-Length: %d\r\n" % len(body)
        elif streamed:
            length = h1.declared_length(headers)
            framing = b"" if length is not None else b"Transfer-Encoding: chunked\r\n"
        else:
            body = None
            framing = b"" if method in h1.BODYLESS else b"Content-Length: 0\r\n"
        head = h1.request_head(
            method, target, self._host_header, headers, framing, keep_framing=length is not None
        )
        pool = self._h1 or self._new_h1()
        conn = await pool.acquire(
            self._h1_upload_timeout if streamed else self._h1_timeouts[stream]
        )
        try:
            await conn.send(head, body, length)
            await conn.response_head()
        except BaseException:
            conn.abort()  # never reused: the exchange stopped midway
            raise
        return UpstreamResponse._of_h1(conn)

    def _new_h1(self) -> h1.Pool:
        config = self.config
        self._h1 = h1.Pool(
            self.base.host,
            self._port,
            ssl_context=(
                httpx.create_ssl_context(trust_env=False) if self.base.scheme == "https" else None
            ),
            max_connections=config.max_connections,
            max_keepalive=config.max_keepalive,
            connect_timeout_s=config.connect_timeout_s,
            pool_timeout_s=config.pool_timeout_s,
        )
        return self._h1

    def _new_session(self) -> aiohttp.ClientSession:
        self._session = _aiohttp_session(self.config)
        return self._session

    def _pool_full(self) -> bool:
        if self._h1 is not None:
            return self._h1.full
        connector = self._session.connector if self._session is not None else None
        acquired = getattr(connector, "_acquired", ())
        return connector is not None and len(acquired) >= connector.limit > 0

    def pool_connections(self) -> int:
        """Connections the pool holds now (for metrics and leak tests)."""
        if self._h1 is not None:
            return self._h1.size
        if self._session is not None:
            connector = self._session.connector
            idle = getattr(connector, "_conns", {})
            return len(getattr(connector, "_acquired", ())) + sum(len(v) for v in idle.values())
        pool = getattr(self.transport, "_pool", None)
        return len(getattr(pool, "connections", ()))

    async def aclose(self) -> None:
        if self._h1 is not None:
            await self._h1.close()
        if self.transport is not None:
            await self.transport.aclose()
        if self._session is not None:
            await self._session.close()
