"""What the h1 transport (``upstream/h1.py``) does beyond the properties every transport
shares (``test_upstream_transport.py``), over a real loopback server scripted per test: the
bytes it writes, the bodies it reads, its pool, its timeouts and what cancellation does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from gateway.config import UpstreamConfig
from gateway.errors import BadGatewayError, GatewayTimeoutError, ServiceUnavailableError
from gateway.upstream import h1
from gateway.upstream.client import UpstreamBrokenError, UpstreamClient

pytestmark = pytest.mark.timeout(20)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
HEADERS = [(b"accept-encoding", b"identity"), (b"api-key", b"k")]

Handler = Callable[["Upstream", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Upstream:
    """A loopback server: each connection runs ``handler``; what it read is kept."""

    handler: Handler
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(self, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request: its head kept in ``heads``, its body (de-chunked) in ``bodies``."""
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        lines = head.lower().split(b"\r\n")
        length = next((int(x.split(b":")[1]) for x in lines if x.startswith(b"content-length")), 0)
        body = b""
        if b"transfer-encoding: chunked" in lines:
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                body += (await reader.readexactly(size + 2))[:-2]
            await reader.readexactly(2)
        elif length:
            body = await reader.readexactly(length)
        self.bodies.append(body)
        return head


async def hold(reader: asyncio.StreamReader, seconds: float) -> None:
    """Read nothing for ``seconds``, unless the client closes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.read(1), seconds)


async def serving(handler: Handler) -> tuple[Upstream, asyncio.Server]:
    upstream = Upstream(handler)
    server = await asyncio.start_server(upstream._serve, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    return upstream, server


def client(upstream: Upstream, **settings: object) -> UpstreamClient:
    config = UpstreamConfig(
        endpoint=f"http://127.0.0.1:{upstream.port}",
        allow_plain_http=True,
        transport="h1",
        **settings,  # type: ignore[arg-type]
    )
    return UpstreamClient(config)


async def answering(answer: bytes, requests: int = 100) -> tuple[Upstream, asyncio.Server]:
    async def handler(up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for _ in range(requests):
            await up.read_request(r)
            w.write(answer)
            await w.drain()

    return await serving(handler)


async def read_all(c: UpstreamClient, *args: object, **kw: object) -> tuple[int, bytes]:
    response = await c.send(*args, **kw)  # type: ignore[arg-type]
    async with response:
        return response.status, b"".join([chunk async for chunk in response.iter_raw()])


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_the_request_is_host_the_given_headers_and_its_framing_only() -> None:
    async def main() -> None:
        up, server = await answering(OK)
        c = client(up)
        try:
            assert await read_all(c, "POST", "/a/b", "x=1", HEADERS, b"hello", stream=False) == (
                200,
                b"{}",
            )
            assert await read_all(c, "POST", "/cancel", "", HEADERS, None, stream=False)
            assert await read_all(c, "GET", "/get", "", HEADERS, None, stream=False)
        finally:
            await c.aclose()
            server.close()
        host = f"Host: 127.0.0.1:{up.port}".encode()
        own = b"accept-encoding: identity\r\napi-key: k\r\n"
        assert up.heads == [
            b"POST /a/b?x=1 HTTP/1.1\r\n" + host + b"\r\n" + own + b"Content-Length: 5\r\n\r\n",
            b"POST /cancel HTTP/1.1\r\n" + host + b"\r\n" + own + b"Content-Length: 0\r\n\r\n",
            b"GET /get HTTP/1.1\r\n" + host + b"\r\n" + own + b"\r\n",
        ]
        assert up.bodies == [b"hello", b"", b""]
        assert up.connections == 1  # kept alive and reused

    run(main())


def test_the_host_header_drops_the_default_port() -> None:
    base = UpstreamClient(UpstreamConfig(endpoint="https://res.openai.azure.com", transport="h1"))
    assert base._host_header == b"res.openai.azure.com"
    other = UpstreamClient(UpstreamConfig(endpoint="https://[::1]:8443", transport="h1"))
    assert other._host_header == b"[::1]:8443"


@pytest.mark.parametrize(
    "header",
    [
        (b"x-a", b"v\r\nx-injected: 1"),
        (b"x-a", b"v\nx"),
        (b"x-a", b"v\x00"),
        (b"x-a\r\nx-b", b"v"),
        (b"x a", b"v"),
        (b"", b"v"),
    ],
)
def test_a_header_with_cr_lf_or_nul_is_never_sent(header: tuple[bytes, bytes]) -> None:
    async def main() -> None:
        up, server = await answering(OK)
        c = client(up)
        try:
            with pytest.raises(BadGatewayError) as refused:
                await c.send("POST", "/a", "", [*HEADERS, header], b"{}", stream=False)
            assert refused.value.code == "upstream_target_mismatch"  # our refusal
        finally:
            await c.aclose()
            server.close()
        assert up.connections == 0

    run(main())


async def _body(*chunks: bytes, fail: Exception | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0.01)
        yield chunk
    if fail is not None:
        raise fail


def test_a_streamed_body_is_chunked_unless_its_length_is_declared() -> None:
    async def main() -> None:
        up, server = await answering(OK)
        c = client(up)
        try:
            await read_all(c, "POST", "/u", "", HEADERS, _body(b"ab", b"", b"cd"), stream=False)
            declared = [*HEADERS, (b"content-length", b"4")]
            await read_all(c, "POST", "/u", "", declared, _body(b"ab", b"cd"), stream=False)
        finally:
            await c.aclose()
            server.close()
        assert up.heads[0].endswith(b"Transfer-Encoding: chunked\r\n\r\n")
        assert b"content-length: 4\r\n\r\n" in up.heads[1]
        assert b"Transfer-Encoding" not in up.heads[1]
        assert up.bodies == [b"abcd", b"abcd"]
        assert up.connections == 1

    run(main())


@pytest.mark.parametrize("declared", [None, b"6", b"100", b"2"])
def test_a_streamed_body_that_fails_or_misses_its_length_aborts_the_request(
    declared: bytes | None,
) -> None:
    async def main() -> None:
        up, server = await answering(OK)
        c = client(up)
        headers = [*HEADERS] + ([(b"content-length", declared)] if declared else [])
        failing = declared in (None, b"6")
        body = _body(b"abc", b"d", fail=ValueError("the caller's body") if failing else None)
        try:
            with pytest.raises(ValueError if failing else BadGatewayError):
                await c.send("POST", "/u", "", headers, body, stream=False)
            await asyncio.wait_for(up.closed.wait(), 5)  # the connection was closed
            assert c.pool_connections() == 0
        finally:
            await c.aclose()
            server.close()
        assert up.bodies == []  # the server never got a whole request

    run(main())


def test_interim_answers_are_skipped() -> None:
    async def main() -> None:
        up, server = await answering(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
        )
        c = client(up)
        try:
            for _ in range(2):
                response = await c.send("GET", "/x", "", HEADERS, None, stream=False)
                async with response:
                    assert response.status == 200
                    assert response.headers == [(b"Content-Length", b"2")]
                    assert b"".join([x async for x in response.iter_raw()]) == b"{}"
        finally:
            await c.aclose()
            server.close()
        assert up.connections == 1

    run(main())


def test_raw_headers_in_order_and_a_body_read_until_close() -> None:
    async def handler(up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await up.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nX-B: 1\r\nx-a: 2\r\nX-B: 3\r\nContent-Encoding: gzip\r\n\r\n")
        for part in (b"\x1f\x8b", b"raw", b"end"):
            w.write(part)
            await w.drain()
            await asyncio.sleep(0.05)

    async def main() -> None:
        up, server = await serving(handler)
        c = client(up)
        try:
            response = await c.send("GET", "/x", "", HEADERS, None, stream=True)
            async with response:
                assert response.headers == [
                    (b"X-B", b"1"),
                    (b"x-a", b"2"),
                    (b"X-B", b"3"),
                    (b"Content-Encoding", b"gzip"),
                ]
                chunks = [x async for x in response.iter_raw()]
            assert chunks == [b"\x1f\x8b", b"raw", b"end"]  # as they arrived, not decoded
            assert c.pool_connections() == 0  # delimited by its close: never reused
        finally:
            await c.aclose()
            server.close()

    run(main())


@pytest.mark.parametrize("framing", [b"Content-Length: 100\r\n", b"Transfer-Encoding: chunked\r\n"])
def test_a_body_cut_short_is_broken(framing: bytes) -> None:
    async def handler(up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await up.read_request(r)
        first = b"5\r\nhello\r\n" if b"chunked" in framing else b"hello"
        w.write(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n" + first)
        await w.drain()
        await asyncio.sleep(0.1)

    async def main() -> None:
        up, server = await serving(handler)
        c = client(up)
        try:
            response = await c.send("GET", "/x", "", HEADERS, None, stream=True)
            got = bytearray()
            with pytest.raises(UpstreamBrokenError):  # noqa: PT012 (read inside the block)
                async for chunk in response.iter_raw():
                    got += chunk
            await response.aclose()
            assert got == b"hello"
            assert c.pool_connections() == 0
        finally:
            await c.aclose()
            server.close()

    run(main())


@pytest.mark.parametrize(
    ("answer", "reused"),
    [
        (OK, True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", False),
    ],
)
def test_a_connection_is_reused_only_when_both_sides_keep_it(answer: bytes, reused: bool) -> None:
    async def main() -> None:
        up, server = await answering(answer)
        c = client(up)
        try:
            for _ in range(3):
                assert await read_all(c, "GET", "/x", "", HEADERS, None, stream=False) == (
                    200,
                    b"{}",
                )
        finally:
            await c.aclose()
            server.close()
        assert up.connections == (1 if reused else 3)

    run(main())


def test_a_response_closed_before_its_end_closes_its_connection() -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300_000

    async def main() -> None:
        up, server = await answering(big)
        c = client(up)
        try:
            response = await c.send("GET", "/x", "", HEADERS, None, stream=False)
            assert await anext(response.iter_raw())
            await response.aclose()
            assert c.pool_connections() == 0
            status, body = await read_all(c, "GET", "/x", "", HEADERS, None, stream=False)
            assert (status, len(body)) == (200, 300_000)
        finally:
            await c.aclose()
            server.close()
        assert up.connections == 2

    run(main())


def test_a_slow_reader_pauses_reading_and_gets_every_byte() -> None:
    size = 4 * 1024 * 1024
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + bytes(range(256)) * (
        size // 256
    )

    async def main() -> None:
        up, server = await answering(big)
        c = client(up)
        try:
            response = await c.send("GET", "/x", "", HEADERS, None, stream=False)
            got = bytearray()
            async with response:
                async for chunk in response.iter_raw():
                    got += chunk
                    await asyncio.sleep(0.001)
            assert bytes(got) == big.split(b"\r\n\r\n", 1)[1]
            assert c.pool_connections() == 1  # read to its end: kept
        finally:
            await c.aclose()
            server.close()

    run(main())


def test_a_connection_the_server_closed_while_idle_is_dropped() -> None:
    async def handler(up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await up.read_request(r)
        w.write(OK)
        await w.drain()  # then closed: idle on the client's side

    async def main() -> None:
        up, server = await serving(handler)
        c = client(up)
        try:
            for _ in range(3):
                assert (await read_all(c, "GET", "/x", "", HEADERS, None, stream=False))[0] == 200
                for _ in range(100):
                    if c.pool_connections() == 0:
                        break
                    await asyncio.sleep(0.01)
                assert c.pool_connections() == 0
        finally:
            await c.aclose()
            server.close()
        assert up.connections == 3

    run(main())


def test_idle_connections_expire_and_are_reused_last_in_first_out() -> None:
    async def main() -> None:
        up, server = await answering(OK)
        pool = h1.Pool(
            "127.0.0.1",
            up.port,
            ssl_context=None,
            max_connections=3,
            max_keepalive=3,
            connect_timeout_s=1,
            pool_timeout_s=1,
            keepalive_s=0.3,
        )
        try:
            a, b = await pool.acquire(1), await pool.acquire(1)
            for conn in (a, b):
                await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None, None)
                await conn.response_head()
                while await conn.next_chunk() is not None:
                    pass
            a.finish()
            b.finish()
            assert await pool.acquire(1) is b  # the last one back
            b.abort()
            await asyncio.sleep(0.8)
            assert pool.size == 0  # a expired
        finally:
            await pool.close()
            server.close()

    run(main())


def test_waiters_are_served_in_order_and_the_pool_is_bounded() -> None:
    async def handler(up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await up.read_request(r)
            await asyncio.sleep(0.05)
            w.write(OK)
            await w.drain()

    async def main() -> None:
        up, server = await serving(handler)
        c = client(up, max_connections=2, pool_timeout_s=5.0)
        order: list[int] = []

        async def one(i: int) -> None:
            await asyncio.sleep(i * 0.001)
            await read_all(c, "GET", f"/{i}", "", HEADERS, None, stream=False)
            order.append(i)
            assert c.pool_connections() <= 2

        try:
            await asyncio.gather(*(one(i) for i in range(8)))
        finally:
            await c.aclose()
            server.close()
        assert up.connections == 2
        assert order[2:] == sorted(order[2:])  # the queued ones in their order

    run(main())


def test_a_full_pool_is_refused_after_the_pool_timeout() -> None:
    async def handler(up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await up.read_request(r)
        await asyncio.sleep(1)
        w.write(OK)

    async def main() -> None:
        up, server = await serving(handler)
        c = client(up, max_connections=1, pool_timeout_s=0.2)
        try:
            holder = asyncio.ensure_future(read_all(c, "GET", "/", "", HEADERS, None, stream=False))
            await asyncio.sleep(0.1)
            assert c._pool_full()
            with pytest.raises(ServiceUnavailableError) as refused:
                await c.send("GET", "/", "", HEADERS, None, stream=False)
            assert refused.value.code == "upstream_pool_exhausted"
            assert (await holder)[0] == 200
        finally:
            await c.aclose()
            server.close()

    run(main())


def test_the_read_timeout_is_reset_by_data_and_ends_a_silence() -> None:
    async def handler(up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await up.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):  # 1.2 s in all, never 0.5 s without data
            await asyncio.sleep(0.2)
            w.write(b"1\r\nx\r\n")
        await hold(r, 2)  # then silent

    async def main() -> None:
        up, server = await serving(handler)
        c = client(up, stream_read_timeout_s=0.5)
        try:
            response = await c.send("GET", "/", "", HEADERS, None, stream=True)
            got = bytearray()
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(UpstreamBrokenError):  # noqa: PT012 (read inside the block)
                async for chunk in response.iter_raw():
                    got += chunk
            assert got == b"x" * 6
            assert 1.5 < loop.time() - started < 2.5
            await response.aclose()
        finally:
            await c.aclose()
            server.close()

    run(main())


def test_a_silence_before_the_headers_is_a_timeout() -> None:
    async def handler(up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await up.read_request(r)
        await hold(r, 3)

    async def main() -> None:
        up, server = await serving(handler)
        c = client(up, read_timeout_s=0.3)
        try:
            with pytest.raises(GatewayTimeoutError):
                await c.send("GET", "/", "", HEADERS, None, stream=False)
            await asyncio.wait_for(up.closed.wait(), 2)
        finally:
            await c.aclose()
            server.close()

    run(main())


@pytest.mark.parametrize("during", ["headers", "body"])
def test_a_cancelled_request_closes_its_connection(during: str) -> None:
    async def handler(up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await up.read_request(r)
        if during == "body":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        await hold(r, 5)

    async def main() -> None:
        up, server = await serving(handler)
        c = client(up)

        async def call() -> None:
            response = await c.send("GET", "/", "", HEADERS, None, stream=True)
            async for _ in response.iter_raw():
                pass

        try:
            task = asyncio.ensure_future(call())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(up.closed.wait(), 2)
            assert c.pool_connections() == 0
        finally:
            await c.aclose()
            server.close()

    run(main())


def test_closing_the_client_closes_connections_and_fails_waiters() -> None:
    async def handler(up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await up.read_request(r)
        await hold(r, 5)

    async def main() -> None:
        up, server = await serving(handler)
        c = client(up, max_connections=1, pool_timeout_s=5.0)
        try:
            first = asyncio.ensure_future(c.send("GET", "/", "", HEADERS, None, stream=False))
            await asyncio.sleep(0.1)
            second = asyncio.ensure_future(c.send("GET", "/", "", HEADERS, None, stream=False))
            await asyncio.sleep(0.1)
            await c.aclose()
            for task in (first, second):
                with pytest.raises(BadGatewayError):
                    await task
            await asyncio.wait_for(up.closed.wait(), 2)
            assert c.pool_connections() == 0
        finally:
            server.close()

    run(main())


def test_a_body_the_server_does_not_read_is_bounded_by_the_read_timeout() -> None:
    async def handler(up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        await asyncio.sleep(3)  # reads no body

    async def main() -> None:
        up, server = await serving(handler)
        c = client(up, read_timeout_s=0.5)
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            with pytest.raises(GatewayTimeoutError):
                await c.send("POST", "/", "", HEADERS, b"x" * (64 << 20), stream=False)
            assert loop.time() - started < 2.5
            assert c.pool_connections() == 0
        finally:
            await c.aclose()
            server.close()

    run(main())


def test_connections_are_opened_with_tcp_nodelay() -> None:
    async def main() -> None:
        up, server = await answering(OK)
        c = client(up)
        try:
            await read_all(c, "GET", "/", "", HEADERS, None, stream=False)
            assert c._h1 is not None
            [conn] = c._h1._idle
            assert conn.transport is not None
            sock = conn.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            await c.aclose()
            server.close()

    run(main())


def test_a_body_that_came_whole_is_taken_at_once_and_one_still_coming_is_not() -> None:
    """``arrived()``: the whole rest of a body already received (the connection then handed
    back), or None with nothing taken while any of it is still to come."""
    gate = asyncio.Event()

    async def handler(up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await up.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")  # half now
        await gate.wait()
        w.write(b"def")
        await up.read_request(r)
        w.write(OK)  # whole, in one write
        await w.drain()
        await hold(r, 5)

    async def main() -> None:
        up, server = await serving(handler)
        c = client(up)
        try:
            response = await c.send("GET", "/x", "", HEADERS, None, stream=False)
            async with response:
                await asyncio.sleep(0.05)
                assert response.arrived() is None  # "def" is still to come: nothing held
                gate.set()
                assert b"".join([chunk async for chunk in response.iter_raw()]) == b"abcdef"
            response = await c.send("GET", "/x", "", HEADERS, None, stream=False)
            async with response:
                assert response.arrived() == b"{}"
                assert response.arrived() == b""  # (taken: the body is over)
                assert [chunk async for chunk in response.iter_raw()] == []
            assert c.pool_connections() == 1
        finally:
            await c.aclose()
            server.close()
        assert up.connections == 1

    run(main())


def test_a_large_body_taken_whole_leaves_its_connection_reading() -> None:
    """A body over the read-pause mark that came in one read: taking it resumes reading, so
    the next answer on that connection is read (not a read timeout)."""
    size = 200_000
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size

    async def main() -> None:
        up, server = await answering(big)
        c = client(up, read_timeout_s=2.0)
        try:
            for _ in range(3):
                response = await c.send("GET", "/x", "", HEADERS, None, stream=False)
                async with response:
                    await asyncio.sleep(0.05)  # all of it in (a read is up to 256 KiB)
                    whole = response.arrived()
                    if whole is None:
                        whole = b"".join([chunk async for chunk in response.iter_raw()])
                    assert len(whole) == size
        finally:
            await c.aclose()
            server.close()
        assert up.connections == 1

    run(main())


def test_a_broken_body_is_the_clients_error_without_a_wrapping_layer() -> None:
    async def handler(up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await up.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await w.drain()

    async def main() -> None:
        up, server = await serving(handler)
        c = client(up)
        try:
            response = await c.send("GET", "/x", "", HEADERS, None, stream=False)
            async with response:
                chunks = response.iter_raw()
                assert isinstance(chunks, h1.Body)  # the h1 body itself, no generator on top
                assert await anext(chunks) == b"abc"
                with pytest.raises(UpstreamBrokenError):
                    await anext(chunks)
        finally:
            await c.aclose()
            server.close()

    run(main())


HOST = b"127.0.0.1:9000"


@pytest.mark.parametrize(
    ("target", "host"),
    [("/a\r\nx-injected: 1", HOST), ("/a\n", HOST), ("/a\x00", HOST), ("/a", b"h\r\nx: 1")],
)
def test_a_target_or_host_with_cr_lf_or_nul_is_refused(target: str, host: bytes) -> None:
    with pytest.raises(h1.H1RequestError):
        h1.request_head("GET", target, host, HEADERS, b"", keep_framing=False)


def test_the_request_head_checks_every_name_every_time_and_drops_framing_in_any_case() -> None:
    for _ in range(2):  # (names are remembered once checked: a bad one never is)
        with pytest.raises(h1.H1RequestError):
            h1.request_head("GET", "/a", HOST, [(b"x a", b"v")], b"", keep_framing=False)
        with pytest.raises(h1.H1RequestError):
            h1.request_head("GET", "/a", HOST, [(b"x-a", b"v\rw")], b"", keep_framing=False)
        headers = [(b"Content-Length", b"9"), (b"x-a", b"v"), (b"TRANSFER-ENCODING", b"gzip")]
        framing = b"Content-Length: 2\r\n"
        assert h1.request_head("PURGE", "/a", HOST, headers, framing, keep_framing=False) == (
            b"PURGE /a HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nx-a: v\r\nContent-Length: 2\r\n\r\n"
        )
        assert h1.request_head("POST", "/a", HOST, headers[:2], b"", keep_framing=True) == (
            b"POST /a HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nContent-Length: 9\r\nx-a: v\r\n\r\n"
        )
    with pytest.raises(h1.H1RequestError):
        h1.request_head("BAD METHOD", "/a", HOST, HEADERS, b"", keep_framing=False)
