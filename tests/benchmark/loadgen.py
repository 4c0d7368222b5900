"""Load generators that run in their own process (never the server's):
``python -m tests.benchmark.loadgen {open|closed} SPEC.json`` prints one JSON result line.

* ``open``: open-loop at a fixed rate. Request ``i`` is due at ``t0 + i / rate`` whatever
  happened to earlier ones, and its latency counts from that due time, so a stalled server is
  not hidden by the generator waiting for it (no coordinated omission). It is kept light so
  that its own work is not the tail it measures: blocking sockets with ``TCP_NODELAY``, one
  ``select`` with a microsecond timeout, a new connection only when every open one has a
  request outstanding, the collector off, no event loop and no HTTP library. It also reports
  how late it sent (``late_p50_ms``, ``late_p99_ms``: its own share of the figures). (An
  aiohttp-on-uvloop generator measured 1.2 to 1.5 ms p50 and 3 to 8 ms p99 directly against the
  upstream where this one measures 0.6 to 0.7 and 1.3 to 5.9, and h2load ``--rps`` (C, but closed
  per connection) 0.4 to 0.5 and 1.2 to 4.5: the heavier client's own CPU on the shared cores
  counted as the server's latency.)
* ``closed``: ``concurrency`` workers back to back for ``duration_s`` — the fallback when
  ``wrk`` is not installed (slower than wrk, and said so in the report).

SPEC: ``{"url", "method", "headers": {...}, "body": str, "rate", "duration_s",
"concurrency"}``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import select
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import uvloop


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


async def _one(session: aiohttp.ClientSession, spec: dict[str, Any]) -> int:
    async with session.request(
        spec["method"], spec["url"], headers=spec["headers"], data=spec["body"].encode()
    ) as response:
        await response.read()
        return response.status


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
        timeout=aiohttp.ClientTimeout(total=30),
    )


def _complete(buf: bytes | bytearray) -> bool:
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    head = bytes(buf[:head_end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : end if end >= 0 else len(head)])
        return len(buf) >= head_end + 4 + length
    return bytes(buf).endswith(b"0\r\n\r\n")


def open_loop(spec: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(spec["url"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    target = url.path + (f"?{url.query}" if url.query else "")
    body = spec["body"].encode()
    head = [f"{spec['method']} {target} HTTP/1.1", f"Host: {host}:{port}"]
    head.append(f"Content-Length: {len(body)}")
    head += [f"{k}: {v}" for k, v in spec["headers"].items()]
    data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    rate, duration = float(spec["rate"]), float(spec["duration_s"])
    total = int(rate * duration)

    def connect() -> socket.socket:
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    idle = [connect()]
    busy: dict[socket.socket, tuple[float, bytearray]] = {}
    latencies: list[float] = []
    late: list[float] = []
    errors = sent = 0
    gc.collect()
    gc.disable()
    t0 = time.perf_counter() + 0.05
    while sent < total or busy:
        now = time.perf_counter()
        due = t0 + sent / rate if sent < total else now + 1.0
        if sent < total and now >= due:
            sock = idle.pop() if idle else connect()
            sock.sendall(data)
            late.append(time.perf_counter() - due)
            busy[sock] = (due, bytearray())
            sent += 1
            continue
        readable, _, _ = select.select(list(busy), [], [], max(0.0, due - now))
        for sock in readable:
            started, buf = busy[sock]
            chunk = sock.recv(65536)
            if not chunk:
                errors += 1
                del busy[sock]
                sock.close()
                continue
            buf += chunk
            if _complete(buf):
                latencies.append(time.perf_counter() - started)
                errors += not buf.startswith(b"HTTP/1.1 2")
                del busy[sock]
                idle.append(sock)
    elapsed = time.perf_counter() - t0
    gc.enable()
    for sock in idle:
        sock.close()
    latencies.sort()
    late.sort()
    return {
        "requests": total,
        "errors": errors,
        "rate": rate,
        "achieved": total / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
        "late_p50_ms": _percentile(late, 0.50) * 1000,
        "late_p99_ms": _percentile(late, 0.99) * 1000,
    }


async def closed_loop(spec: dict[str, Any]) -> dict[str, Any]:
    duration, concurrency = float(spec["duration_s"]), int(spec["concurrency"])
    done = errors = 0
    async with _session() as session:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                try:
                    status = await _one(session, spec)
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                done += 1
                errors += not 200 <= status < 300

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": done, "errors": errors, "rps": done / elapsed}


def main(argv: list[str]) -> None:
    mode, spec_path = argv[0], argv[1]
    with open(spec_path) as f:
        spec = json.load(f)
    result = open_loop(spec) if mode == "open" else uvloop.run(closed_loop(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
