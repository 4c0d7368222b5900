"""HTTP/1.1 framing attacks against the real server the gateway runs on (uvicorn with
httptools, as `gateway serve` runs it): checklist F1. Each ambiguous request is refused (400)
or its connection closed, and nothing reaches Azure."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from tests.stack import V2, Stack


def _send(stack: Stack, raw: bytes, *, half_close: bool = True) -> bytes:
    port = int(stack.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return out


def _head(stack: Stack, *lines: str) -> bytes:
    auth = stack.auth()["Authorization"]
    base = [
        f"POST /openai/threads?api-version={V2} HTTP/1.1",
        "Host: gw",
        f"Authorization: {auth}",
        "Content-Type: application/json",
    ]
    return ("\r\n".join([*base, *lines]) + "\r\n\r\n").encode()


_CHUNKED = b"2\r\n{}\r\n0\r\n\r\n"

CASES = {
    "CL and TE together": lambda s: (
        _head(s, "Content-Length: 2", "Transfer-Encoding: chunked") + b"2\r\n{}\r\n0\r\n\r\n"
    ),
    "duplicate Content-Length": lambda s: (
        _head(s, "Content-Length: 2", "Content-Length: 3") + b"{} "
    ),
    "obfuscated Content-Length": lambda s: _head(s, "Content-Length: +2") + b"{}",
    "TE with obs-fold": lambda s: (
        _head(s, "Transfer-Encoding:\r\n chunked") + b"2\r\n{}\r\n0\r\n\r\n"
    ),
    "bad chunk terminator": lambda s: (
        _head(s, "Transfer-Encoding: chunked") + b"2\r\n{}XX0\r\n\r\n"
    ),
    "TE not chunked": lambda s: _head(s, "Transfer-Encoding: gzip, identity") + b"{}",
    # Codings before chunked that the parser would drop (issue 12 item 11).
    "TE gzip, chunked": lambda s: _head(s, "Transfer-Encoding: gzip, chunked") + _CHUNKED,
    "TE identity, chunked": lambda s: _head(s, "Transfer-Encoding: identity, chunked") + _CHUNKED,
    "TE unknown, chunked": lambda s: _head(s, "Transfer-Encoding: x-custom, chunked") + _CHUNKED,
    "two TE lines": lambda s: (
        _head(s, "Transfer-Encoding: gzip", "Transfer-Encoding: chunked") + _CHUNKED
    ),
    "TE chunked twice": lambda s: _head(s, "Transfer-Encoding: chunked, chunked") + _CHUNKED,
    "TE on HTTP/1.0": lambda s: (
        _head(s, "Transfer-Encoding: chunked").replace(b"HTTP/1.1", b"HTTP/1.0", 1) + _CHUNKED
    ),
    "TE chunked with parameters": lambda s: _head(s, "Transfer-Encoding: chunked;q=1") + _CHUNKED,
    "space before colon": lambda s: _head(s, "Content-Length : 2") + b"{}",
}


@pytest.mark.parametrize("build", CASES.values(), ids=list(CASES))
def test_ambiguous_framing_is_refused(gw: Stack, build: Callable[[Stack], bytes]) -> None:
    reply = _send(gw, build(gw))
    assert reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert gw.fake.requests == []


def test_pipelined_smuggled_request_is_not_forwarded_with_the_key(gw: Stack) -> None:
    """A body that hides a second request: the gateway parses exactly one, validates it, and
    the hidden bytes never become a request to Azure."""
    hidden = b"GET /openai/assistants HTTP/1.1\r\nHost: gw\r\n\r\n"
    body = b'{"metadata":{}}'
    raw = _head(gw, f"Content-Length: {len(body)}") + body + hidden
    reply = _send(gw, raw, half_close=False)  # read until the server goes quiet
    assert reply.startswith(b"HTTP/1.1 200")
    assert b"HTTP/1.1 401" in reply  # the hidden request was parsed on its own: no token
    assert [r.path for r in gw.fake.requests] == ["/openai/threads"]


@pytest.mark.parametrize("te", ["gzip, chunked", "identity, chunked", "x-custom, chunked"])
def test_a_coding_besides_chunked_is_refused_by_the_gateway_and_closes(gw: Stack, te: str) -> None:
    """The parser decodes the chunks and drops the other coding: the gateway refuses it
    itself (its error, its code) and closes the connection even if more was pipelined."""
    after = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
    reply = _send(gw, _head(gw, f"Transfer-Encoding: {te}") + _CHUNKED + after, half_close=False)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert b'"code":"invalid_transfer_encoding"' in reply
    assert b"connection: close" in reply.lower()
    assert reply.count(b"HTTP/1.1 ") == 1  # the pipelined request was not served
    assert gw.fake.requests == []


@pytest.mark.parametrize("te", ["chunked", "Chunked", "  chunked "])
def test_chunked_alone_is_accepted(gw: Stack, te: str) -> None:
    reply = _send(
        gw, _head(gw, f"Transfer-Encoding:{te}", "Connection: close") + _CHUNKED, half_close=False
    )
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert [r.path for r in gw.fake.requests] == ["/openai/threads"]
