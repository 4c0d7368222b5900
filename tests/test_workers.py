"""``server.workers``: N ``gateway serve`` processes on one port under one supervisor.

A real supervisor with real workers (real Redis, the recording fake Azure): both workers
serve the one proxy port (the kernel spreads connections, ``SO_REUSEPORT``) and each its own
metrics port (``metrics_port + i``); SIGTERM to the supervisor drains both and it exits 0; a
worker that dies on its own takes the others down and the supervisor exits non-zero.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.gatewayproc import served
from tests.servers import free_ports
from tests.stack import V2, make_token

pytestmark = pytest.mark.timeout(60)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_two_workers_share_the_port_and_drain_on_sigterm(tmp_path: Path, redis_url: str) -> None:
    metrics = free_ports(1)  # worker 0's and worker 1's
    with served(tmp_path, redis_url, env={"GATEWAY_WORKERS": "2"}, metrics_port=metrics) as (
        fake,
        proc,
    ):
        assert proc.proc is not None
        supervisor = proc.proc.pid
        assert _wait(lambda: len(_children(supervisor)) == 2, 10)
        workers = _children(supervisor)
        for port in (metrics, metrics + 1):  # each worker's own metrics listener
            assert _wait(lambda p=port: _metrics_up(p), 20), port
        token = make_token("team-a", "app")
        statuses = []
        for _ in range(40):  # a new connection each: the kernel spreads them over the workers
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as client:
                response = client.post(
                    f"{proc.url}/openai/threads", params={"api-version": V2}, json={}
                )
            statuses.append(response.status_code)
        assert statuses == [200] * 40
        assert len(fake.requests) == 40
        # A list: a set of the two counts is {20} when the kernel split them evenly.
        served_by = [_requests_served(port) for port in (metrics, metrics + 1)]
        assert sum(served_by) == 40 and 0 not in served_by, served_by
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=30) == 0
        assert not any(Path(f"/proc/{w}").exists() for w in workers)


def test_a_worker_that_dies_takes_the_supervisor_down(tmp_path: Path, redis_url: str) -> None:
    with served(tmp_path, redis_url, env={"GATEWAY_WORKERS": "2"}) as (_fake, proc):
        assert proc.proc is not None
        supervisor = proc.proc.pid
        assert _wait(lambda: len(_children(supervisor)) == 2, 10)
        first, second = _children(supervisor)
        os.kill(first, signal.SIGKILL)
        assert proc.proc.wait(timeout=30) != 0
        assert _wait(lambda: not Path(f"/proc/{second}").exists(), 5)


def _metrics_up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _requests_served(port: int) -> int:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gateway_requests_total{") and 'operation="threads.create"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)
