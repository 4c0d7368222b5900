"""A raw HTTP/1.1 client for tests that must send exact bytes (httpx normalises paths)."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


def _read_chunked(sock_file: Any) -> bytes:
    out = bytearray()
    while True:
        size_line = sock_file.readline()
        if not size_line:
            raise ConnectionError("connection closed inside a chunked body")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            sock_file.readline()
            return bytes(out)
        out += sock_file.read(size)
        sock_file.readline()


def raw_request(url: str, request: bytes, timeout: float = 10.0) -> RawResponse:
    """Send ``request`` verbatim to ``url``'s host and port; parse one response."""
    host_port = url.split("//", 1)[1].rstrip("/")
    host, port = host_port.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        f = sock.makefile("rb")
        status_line = f.readline()
        if not status_line:
            raise ConnectionError("no response")
        status = int(status_line.split()[1])
        headers: list[tuple[str, str]] = []
        while True:
            line = f.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        lookup = {k.lower(): v for k, v in headers}
        if lookup.get("transfer-encoding", "").lower() == "chunked":
            body = _read_chunked(f)
        elif "content-length" in lookup:
            body = f.read(int(lookup["content-length"]))
        else:
            body = b""
        return RawResponse(status, headers, body)


def build_request(
    method: str, target: str, headers: dict[str, str] | list[tuple[str, str]], body: bytes = b""
) -> bytes:
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    lines = [f"{method} {target} HTTP/1.1", "Host: gateway.test", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in items]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
