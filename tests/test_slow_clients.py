"""Slow clients against a real ``gateway serve`` (security checklist F3).

A flood of sockets that send their request head one byte a second must not lock legitimate
callers out: each connection has a deadline for its first request (and each request head a
deadline from its first byte), connections still waiting for a request are capped apart
from the requests in flight (the oldest waiting one is closed to admit a new one), and
``server.max_concurrent_connections`` bounds requests in flight only.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.gatewayproc import served
from tests.slowclients import slow_header_flood
from tests.stack import V2, make_token

pytestmark = pytest.mark.timeout(90)


def _legitimate(url: str, total: int, workers: int) -> list[int | str]:
    """``total`` thread creations, each on a new connection; their statuses (or errors)."""
    results: list[int | str] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {make_token()}"}

    def worker(n: int) -> None:
        for _ in range(n):
            try:
                r = httpx.post(
                    f"{url}/openai/threads",
                    params={"api-version": V2},
                    json={},
                    headers=headers,
                    timeout=10,
                )
                outcome: int | str = (
                    r.status_code
                    if r.status_code != 200 or r.json().get("object") == "thread"
                    else "bad body"
                )
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=worker, args=(total // workers,)) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _enough_fds(needed: int) -> None:
    """Raise the soft fd limit (the gateway child inherits it) or say why the test can't run."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(
                f"the slow-client flood needs {needed} file descriptors; the hard "
                f"limit is {hard} (raise it: ulimit -Hn)"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_slow_header_flood_does_not_lock_out_legitimate_requests(
    tmp_path: Path, redis_url: str
) -> None:
    _enough_fds(8192)
    with served(tmp_path, redis_url, header_timeout_s=3, first_request_timeout_s=3) as (fake, proc):
        with slow_header_flood(proc.port, 3000) as flood:
            assert flood.wait_open(3000, 30), flood.stats
            time.sleep(1.0)
            results = _legitimate(proc.url, 200, workers=8)
            time.sleep(3.5)  # past the deadline of every socket still open
            stats = flood.stats
        ok = results.count(200)
        failed = [r for r in results if r != 200]
        assert ok >= 190, f"{ok}/200 served; failures: {failed[:10]} ({len(failed)})"
        assert len(fake.requests) == ok
        # Slow sockets were closed: the ones not evicted at the waiting cap by their deadline.
        assert len(stats.closed_after_s) >= 3000, stats.opened
        assert max(stats.closed_after_s) < 3 + 6, sorted(stats.closed_after_s)[-5:]
        # Once the flood is over the gateway serves as before.
        after = _legitimate(proc.url, 10, workers=2)
        assert after == [200] * 10


def test_idle_connections_are_closed_at_their_first_request_deadline(
    tmp_path: Path, redis_url: str
) -> None:
    with served(tmp_path, redis_url, first_request_timeout_s=1, header_timeout_s=1) as (_, proc):
        with (
            socket.create_connection(("127.0.0.1", proc.port), timeout=10) as idle,
            socket.create_connection(("127.0.0.1", proc.port), timeout=10) as slow,
        ):
            opened = time.monotonic()
            slow.sendall(b"GET /openai/threads/thread_a HTTP/1.1\r\nHost: x\r\n")
            assert idle.recv(1024) == b""  # closed without an answer: it never asked anything
            answer = slow.recv(1024)
            elapsed = time.monotonic() - opened
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"request_header_timeout" in answer
        assert 0.8 < elapsed < 4, elapsed


def test_waiting_connections_beyond_their_cap_are_evicted_oldest_first(
    tmp_path: Path, redis_url: str
) -> None:
    with served(tmp_path, redis_url, max_waiting_connections=16) as (fake, proc):
        with contextlib.ExitStack() as stack:
            idle = [
                stack.enter_context(socket.create_connection(("127.0.0.1", proc.port), timeout=5))
                for _ in range(20)
            ]
            response = httpx.post(
                f"{proc.url}/openai/threads",
                params={"api-version": V2},
                json={},
                headers={"Authorization": f"Bearer {make_token()}"},
                timeout=5,
            )
            assert response.status_code == 200
            # The oldest idle sockets were closed to admit the newer ones and the request.
            closed = [s.recv(1) == b"" for s in idle[:5]]
            assert all(closed)
            idle[-1].setblocking(False)
            with pytest.raises(BlockingIOError):
                idle[-1].recv(1)  # the newest is still open
        assert len(fake.requests) == 1
