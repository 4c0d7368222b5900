"""The benchmark's servers, each run as its own process: ``python -m tests.benchmark.servers
{upstream|upstream-uvicorn|ceiling|ceiling-protocol|baseline|aiohttp-proxy} PORT
[UPSTREAM_URL TRANSPORT]``.

* ``upstream``: a static, fast fake Azure: a fixed thread, a fixed created message (JSON) and a
  fixed run event stream (SSE, one body chunk per event). It keeps the thread metadata of the
  last create (the gateway's owner stamp among it) and answers ``GET /openai/threads/{id}``
  with it, as Azure does: the gateway's owner lookup reads it. An asyncio protocol over
  httptools on uvloop (``_Upstream``), answering byte for byte as ``upstream-uvicorn`` (the
  same answers as a raw ASGI app under uvicorn, which the benchmark ran before) does
  (``tests/test_benchmark_upstream.py``): it shares the two cores with the server measured,
  so the cheaper it is, the less it takes from every row (53 µs per request under uvicorn).
* ``ceiling``: Starlette answering a fixed JSON response after reading the body — what
  uvicorn + Starlette can do at all; ``ceiling-protocol`` is the same under the gateway's
  HTTP protocol (``gateway/httpprotocol.py``: header deadlines, connection caps), so the
  pair measures that protocol's cost per request.
* ``baseline``: a minimal Starlette pass-through over the gateway's own upstream adapter
  (``UpstreamClient``, same transport and settings as the gateway), streaming the body back.
* ``aiohttp-proxy``: the floor of a Python proxy: a minimal aiohttp server whose one handler
  forwards over one aiohttp client session (no cookie jar, raw bytes, hop-by-hop headers
  dropped) and streams the answer back, on uvloop. No Starlette, no uvicorn.

The first three run under the gateway's server settings (uvicorn, uvloop + httptools, one
worker). The benchmark's ``nginx`` row (nginx as a reverse proxy, one process) is configured
in ``__main__`` (``nginx_config``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any, Literal, cast

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

THREAD_ID = "thread_bench0000000000000000001"
ASSISTANT_ID = "asst_bench0000000000000000001"

THREAD = {
    "id": THREAD_ID,
    "object": "thread",
    "created_at": 1767225600,
    "metadata": {},
    "tool_resources": {},
}
MESSAGE = {
    "id": "msg_bench0000000000000000001",
    "object": "thread.message",
    "created_at": 1767225600,
    "assistant_id": None,
    "thread_id": THREAD_ID,
    "run_id": None,
    "role": "user",
    "status": None,
    "incomplete_details": None,
    "completed_at": None,
    "incomplete_at": None,
    "attachments": [],
    "content": [{"type": "text", "text": {"value": "x" * 480, "annotations": []}}],
    "metadata": {"source": "benchmark", "conversation": "conv-0042", "channel": "web"},
}


def _sse_events() -> list[bytes]:
    run = {
        "id": "run_bench0000000000000000001",
        "object": "thread.run",
        "thread_id": THREAD_ID,
        "assistant_id": ASSISTANT_ID,
        "status": "queued",
    }
    names = [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.message.created",
    ]
    events = [f"event: {n}\ndata: {json.dumps(run)}\n\n".encode() for n in names]
    for i in range(20):
        delta = {
            "id": "msg_bench1",
            "object": "thread.message.delta",
            "delta": {"content": [{"index": 0, "type": "text", "text": {"value": f"token{i} "}}]},
        }
        events.append(f"event: thread.message.delta\ndata: {json.dumps(delta)}\n\n".encode())
    events += [
        f"event: thread.run.completed\ndata: {json.dumps(run)}\n\n".encode(),
        b"event: done\ndata: [DONE]\n\n",
    ]
    return events


SSE_EVENTS = _sse_events()
_COMMON = [
    (b"apim-request-id", b"6c0e5a47-7b4f-4f7e-9f0e-bench"),
    (b"x-request-id", b"bench-upstream-id"),
    (b"openai-processing-ms", b"12"),
]


def _json_response(obj: dict[str, Any]) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(obj).encode()
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *_COMMON,
    ], body


#: The created thread's metadata (with the gateway's owner stamp), kept as Azure keeps it.
_THREAD_METADATA: dict[str, str] = {}
#: The created assistant's (the runs name it: ownership checks that reference).
_ASSISTANT_METADATA: dict[str, str] = {}
ASSISTANT = {
    "id": ASSISTANT_ID,
    "object": "assistant",
    "created_at": 1767225600,
    "name": None,
    "description": None,
    "model": "gpt-4o",
    "instructions": None,
    "tools": [],
    "metadata": {},
}
_MESSAGE_RESPONSE = _json_response(MESSAGE)
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), *_COMMON]


async def upstream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more, received = True, bytearray()
    while more:  # read the whole request body, as a real server does
        message = await receive()
        received += message.get("body", b"")
        more = message.get("more_body", False)
    path: str = scope["path"]
    if path in ("/openai/threads", f"/openai/threads/{THREAD_ID}"):  # create, retrieve
        if scope["method"] == "POST":
            _THREAD_METADATA.update(json.loads(received or b"{}").get("metadata") or {})
        headers, data = _json_response({**THREAD, "metadata": _THREAD_METADATA})
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})
        return
    if path in ("/openai/assistants", f"/openai/assistants/{ASSISTANT_ID}"):  # create, retrieve
        if scope["method"] == "POST":
            _ASSISTANT_METADATA.update(json.loads(received or b"{}").get("metadata") or {})
        headers, data = _json_response({**ASSISTANT, "metadata": _ASSISTANT_METADATA})
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})
        return
    if path.endswith("/runs"):
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        for event in SSE_EVENTS:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path.endswith("/messages"):
        headers, body = _MESSAGE_RESPONSE
    else:
        headers, body = [(b"content-length", b"0")], b""
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Upstream(asyncio.Protocol):
    """The same answers as ``upstream_app`` under uvicorn, byte for byte (status line, header
    names, order and values, the ``date`` header, chunked SSE with one write per event,
    ``connection: close`` when asked), from an asyncio protocol over httptools with no ASGI
    and no per-request task: so the fake Azure costs the shared cores as little as it can."""

    def __init__(self) -> None:
        import httptools

        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = bytearray()

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        import httptools

        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def eof_received(self) -> None:
        return None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.body = b"", bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        method = self.parser.get_method().decode()
        close = not self.parser.should_keep_alive()
        for piece in _answer(method, path, bytes(self.body), close):
            self.transport.write(piece)
        if close:
            self.transport.close()


_DATE = [b""]


def _date_header() -> bytes:
    return _DATE[0]


def _head(status: bytes, headers: list[tuple[bytes, bytes]], close: bool, chunked: bool) -> bytes:
    out = [status, b"date: ", _date_header(), b"\r\n"]
    for name, value in headers:
        out += [name, b": ", value, b"\r\n"]
    if close:
        out.append(b"connection: close\r\n")
    if chunked:
        out.append(b"transfer-encoding: chunked\r\n")
    out.append(b"\r\n")
    return b"".join(out)


_OK, _NOT_FOUND = b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 404 Not Found\r\n"


def _answer(method: str, path: str, received: bytes, close: bool) -> list[bytes]:
    """What ``upstream_app`` answers under uvicorn, as the writes uvicorn makes."""
    if path in ("/openai/threads", f"/openai/threads/{THREAD_ID}"):
        if method == "POST":
            _THREAD_METADATA.update(json.loads(received or b"{}").get("metadata") or {})
        headers, data = _json_response({**THREAD, "metadata": _THREAD_METADATA})
        return [_head(_OK, headers, close, False), data]
    if path in ("/openai/assistants", f"/openai/assistants/{ASSISTANT_ID}"):
        if method == "POST":
            _ASSISTANT_METADATA.update(json.loads(received or b"{}").get("metadata") or {})
        headers, data = _json_response({**ASSISTANT, "metadata": _ASSISTANT_METADATA})
        return [_head(_OK, headers, close, False), data]
    if path.endswith("/runs"):
        chunks = [b"%x\r\n%b\r\n" % (len(event), event) for event in SSE_EVENTS]
        return [_head(_OK, _SSE_HEADERS, close, True), *chunks, b"0\r\n\r\n"]
    if path.endswith("/messages"):
        headers, body = _MESSAGE_RESPONSE
        return [_head(_OK, headers, close, False) + body]
    return [_head(_NOT_FOUND, [(b"content-length", b"0")], close, False)]


def fast_upstream(port: int) -> None:
    import email.utils

    import uvloop

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Upstream, "127.0.0.1", port, backlog=2048)

        def tick() -> None:  # uvicorn refreshes its date header once a second
            _DATE[0] = email.utils.formatdate(usegmt=True).encode()
            loop.call_later(1.0, tick)

        tick()
        async with server:
            await server.serve_forever()

    uvloop.run(run())


def ceiling_app() -> Starlette:
    _headers, body = _MESSAGE_RESPONSE

    async def fixed(request: Request) -> Response:
        await request.body()
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", fixed, methods=["GET", "POST"])])


_HOP = {
    b"host",
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"content-length",
    b"te",
    b"upgrade",
    b"proxy-authorization",
    b"proxy-connection",
    b"trailer",
}


def baseline_app(upstream_url: str, transport: str) -> Starlette:
    from contextlib import asynccontextmanager

    from gateway.config import UpstreamConfig
    from gateway.upstream.client import UpstreamClient

    client = UpstreamClient(
        UpstreamConfig(
            endpoint=upstream_url,
            allow_plain_http=True,
            transport=cast(Literal["httpx", "aiohttp", "h1"], transport),
        )
    )

    async def forward(request: Request) -> Response:
        body = await request.body()
        headers = [(n, v) for n, v in request.headers.raw if n not in _HOP]
        response = await client.send(
            request.method, request.url.path, request.url.query, headers, body or None, stream=True
        )
        out = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in response.headers
            if k.lower() not in _HOP
        }

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.iter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return StreamingResponse(relay(), status_code=response.status, headers=out)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(
        routes=[Route("/{path:path}", forward, methods=["GET", "POST"])], lifespan=lifespan
    )


def aiohttp_proxy(upstream_url: str, port: int) -> None:
    import asyncio

    import aiohttp
    import uvloop
    from aiohttp import web

    hop = {h.decode() for h in _HOP}
    session: aiohttp.ClientSession | None = None

    async def forward(request: web.Request) -> web.StreamResponse:
        assert session is not None
        body = await request.read()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in hop]
        async with session.request(
            request.method,
            upstream_url + request.raw_path,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            out = [(k, v) for k, v in upstream.headers.items() if k.lower() not in hop]
            length = upstream.headers.get("content-length")
            response = web.StreamResponse(status=upstream.status, headers=out)
            if length is not None:
                response.content_length = int(length)
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(16 * 1024):
                await response.write(chunk)
            await response.write_eof()
            return response

    async def start(_app: web.Application) -> None:
        nonlocal session
        session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, trust_env=False
        )

    async def stop(_app: web.Application) -> None:
        if session is not None:
            await session.close()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve(app: Any, port: int, http: Any = "httptools") -> None:
    """The gateway's server settings (``gateway.cli.uvicorn_config``)."""
    uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            lifespan="auto",
            http=http,
            loop="uvloop",
            proxy_headers=False,
            server_header=False,
            access_log=False,
            log_config=None,
            timeout_keep_alive=30,
        )
    ).run()


def main(argv: list[str]) -> None:
    kind, port = argv[0], int(argv[1])
    if kind == "upstream":
        fast_upstream(port)
    elif kind == "upstream-uvicorn":
        serve(upstream_app, port)
    elif kind == "ceiling":
        serve(ceiling_app(), port)
    elif kind == "ceiling-protocol":
        from gateway.server.protocol import ConnectionLimits, protocol_class

        # The config defaults (server.header_timeout_s, first_request_timeout_s,
        # max_waiting_connections, max_concurrent_connections), without importing the rest.
        serve(ceiling_app(), port, http=protocol_class(ConnectionLimits(10, 10, 2048, 2048)))
    elif kind == "baseline":
        serve(baseline_app(argv[2], argv[3]), port)
    elif kind == "aiohttp-proxy":
        aiohttp_proxy(argv[2], port)
    else:
        raise SystemExit(f"unknown server {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
