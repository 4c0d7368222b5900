"""The request target reaches Azure byte for byte, or not at all (``upstream.client``).

Over a real loopback server that records each request line, under every transport: the
target built by the operation table goes out exactly as built (percent-escapes and dot
segments untouched, never re-quoted or collapsed), and a target that could not go out as it is
(a fragment, a space; under httpx a dot segment) is refused with ``upstream_target_mismatch``
before anything is sent, never rewritten (httpx-aiohttp sent ``/a%2Fb/%2e%2e/c`` as ``/c``).
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import UpstreamConfig
from gateway.errors import BadGatewayError
from gateway.upstream.client import UpstreamClient

pytestmark = pytest.mark.timeout(20)

HEADERS = [(b"accept-encoding", b"identity"), (b"api-key", b"k")]
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class RecordingServer:
    """Answers every request with ``{}`` and keeps its request line."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.lines.append(head.split(b"\r\n", 1)[0])
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _send(transport: str, path: str, query: str) -> tuple[list[bytes], object]:
    """Send ``GET path?query`` through a client of ``transport`` to a recording server: the
    request lines it saw, and what ``send`` gave (the body read) or raised."""
    recorder = RecordingServer()
    srv = await asyncio.start_server(recorder._serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    config = UpstreamConfig(
        endpoint=f"http://127.0.0.1:{port}/base",
        allow_plain_http=True,
        transport=transport,  # type: ignore[arg-type]
    )
    client = UpstreamClient(config)
    outcome: object
    try:
        response = await client.send("GET", path, query, HEADERS, None, stream=False)
        async with response:
            outcome = b"".join([chunk async for chunk in response.iter_raw()])
    except BadGatewayError as exc:
        outcome = exc
    finally:
        await client.aclose()
        srv.close()
        await srv.wait_closed()
    return recorder.lines, outcome


@pytest.mark.parametrize("transport", ["h1", "aiohttp", "httpx"])
@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/openai/threads/thread_abc/messages", "api-version=2024-05-01-preview&limit=2"),
        ("/openai/a%2Fb/%2e%2e/c", "x=%20y"),
        ("/openai/a/../c", ""),
        ("/openai/files/file-1/content", ""),
    ],
)
def test_the_target_goes_out_byte_for_byte(transport: str, path: str, query: str) -> None:
    lines, outcome = asyncio.run(_send(transport, path, query))
    if transport == "httpx" and "/../" in path:
        # httpx will not put a dot segment on the request line: refused, not rewritten.
        assert isinstance(outcome, BadGatewayError)
        assert outcome.code == "upstream_target_mismatch"
        assert lines == []
        return
    assert outcome == b"{}"
    target = f"/base{path}?{query}" if query else f"/base{path}"
    assert lines == [f"GET {target} HTTP/1.1".encode()]


@pytest.mark.parametrize("transport", ["h1", "aiohttp", "httpx"])
@pytest.mark.parametrize("path", ["/openai/threads#x", "/openai/thr eads"])
def test_a_target_that_cannot_go_out_as_built_is_refused(transport: str, path: str) -> None:
    lines, outcome = asyncio.run(_send(transport, path, ""))
    assert isinstance(outcome, BadGatewayError)
    assert outcome.code == "upstream_target_mismatch"
    assert lines == []
