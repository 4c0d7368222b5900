"""Backpressure (checklist E7): a client that reads slowly from a large upstream body does not
make the gateway buffer it. A real `gateway serve` process relays 24 MiB to a client reading
256 KiB at a time with pauses; the process's resident memory stays within a few MiB."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.fakeazure import ScriptedResponse
from tests.gatewayproc import served
from tests.rawhttp import build_request
from tests.stack import V2, make_token

CHUNK = b"x" * 65536
CHUNKS = 384  # 24 MiB


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_slow_reader_does_not_make_the_gateway_buffer(tmp_path: Path, redis_url: str) -> None:
    with served(tmp_path, redis_url) as (fake, proc):
        assert proc.proc is not None
        pid = proc.proc.pid
        fake.script(
            ScriptedResponse(
                chunks=(CHUNK,) * CHUNKS,
                headers=(
                    ("content-type", "application/octet-stream"),
                    ("content-length", str(len(CHUNK) * CHUNKS)),
                ),
            )
        )
        before = peak = rss_kib(pid)
        received = 0
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(
                build_request(
                    "GET",
                    f"/openai/threads/thread_abc123/messages?api-version={V2}",
                    {"Authorization": f"Bearer {make_token()}"},
                )
            )
            deadline = time.monotonic() + 60
            while received < len(CHUNK) * CHUNKS and time.monotonic() < deadline:
                data = sock.recv(262144)
                if not data:
                    break
                received += len(data)
                if received % (4 * 1024 * 1024) < 262144:
                    time.sleep(0.2)  # a slow reader: the gateway must wait, not buffer
                    peak = max(peak, rss_kib(pid))
        peak = max(peak, rss_kib(pid))
    assert received > len(CHUNK) * CHUNKS  # the whole body (plus the response head)
    assert peak - before < 12 * 1024, f"gateway RSS grew by {(peak - before) // 1024} MiB"
