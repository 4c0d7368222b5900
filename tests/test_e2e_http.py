"""HTTP/1.1 framing attacks against the real server the gateway runs on (uvicorn with
httptools, as `gateway serve` runs it): checklist F1. Each ambiguous request is refused (400)
or its connection closed, and nothing reaches Azure."""

from __future__ import annotations

import socket

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
    base = [f"POST /openai/threads?api-version={V2} HTTP/1.1", "Host: gw",
            f"Authorization: {auth}", "Content-Type: application/json"]
    return ("\r\n".join([*base, *lines]) + "\r\n\r\n").encode()


CASES = {
    "CL and TE together": lambda s: _head(s, "Content-Length: 2", "Transfer-Encoding: chunked")
    + b"2\r\n{}\r\n0\r\n\r\n",
    "duplicate Content-Length": lambda s: _head(s, "Content-Length: 2", "Content-Length: 3")
    + b"{} ",
    "obfuscated Content-Length": lambda s: _head(s, "Content-Length: +2") + b"{}",
    "TE with obs-fold": lambda s: _head(s, "Transfer-Encoding:\r\n chunked")
    + b"2\r\n{}\r\n0\r\n\r\n",
    "bad chunk terminator": lambda s: _head(s, "Transfer-Encoding: chunked")
    + b"2\r\n{}XX0\r\n\r\n",
    "TE not chunked": lambda s: _head(s, "Transfer-Encoding: gzip, identity") + b"{}",
    "space before colon": lambda s: _head(s, "Content-Length : 2") + b"{}",
}


@pytest.mark.parametrize("build", CASES.values(), ids=list(CASES))
def test_ambiguous_framing_is_refused(gw: Stack, build: object) -> None:
    reply = _send(gw, build(gw))  # type: ignore[operator]
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
