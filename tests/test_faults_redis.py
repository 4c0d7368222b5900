"""Redis faults against a real ``gateway serve`` child: SIGSTOP, SIGKILL, an empty restart.

A private ``redis-server`` per test (it is stopped, killed and restarted on the same port),
the recording fake Azure, and the gateway's metrics listener. While Redis cannot decide,
``fail_mode = "open"`` still bounds each caller, from what Redis last said (no fresh burst),
concurrency slots included; readiness stays up (degraded) and the metrics say so; when Redis
comes back, even empty, the gateway uses it again (the scripts reload after ``NOSCRIPT``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakeazure import FakeAzure, ScriptedResponse
from tests.gatewayproc import GatewayProcess
from tests.servers import RedisServer, free_port, private_redis, wait_for_port
from tests.stack import V2, deep_merge, make_token
from tests.test_overload import gateway_child, limited

THREADS = "/openai/threads"
Q = {"api-version": V2}
BURST = 5
MARGIN = 0.75  # scheduling slack on a loaded host


def fault_config(fail_mode: str, metrics_port: int) -> dict[str, Any]:
    return deep_merge(
        limited(
            "fault",
            per_caller={
                "write": {"requests": 1, "per_seconds": 3600, "burst": BURST},
                "read": {"requests": 100, "per_seconds": 60, "burst": 100},
            },
            max_concurrent=2,
        ),
        {
            "rate_limit": {"fail_mode": fail_mode},
            "server": {"metrics_port": metrics_port, "metrics_host": "127.0.0.1"},
        },
    )


def metric(port: int, name: str, **labels: str) -> float | None:
    want = name + (
        "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
    )
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == want:
            return float(value)
    return None


def eventually(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@contextlib.contextmanager
def redis_on(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """An empty redis-server on ``port`` (a restart after a crash, state lost)."""
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=5)


class Caller:
    def __init__(self, proc: GatewayProcess) -> None:
        self.client = httpx.Client(
            base_url=proc.url,
            timeout=10,
            headers={"Authorization": f"Bearer {make_token('fault', 'app')}"},
        )

    def __enter__(self) -> Caller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def create(self) -> httpx.Response:
        return self.client.post(THREADS, params=Q, json={})

    def timed_create(self) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = self.create()
        return response, time.monotonic() - started


def created(fake: FakeAzure) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path == THREADS)


def assert_refused(response: httpx.Response, code: str) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == code
    assert int(response.headers["retry-after"]) >= 1


def test_open_bounds_a_caller_and_its_slots_while_redis_is_stopped(tmp_path: Path) -> None:
    mport = free_port()
    with (
        private_redis() as server,
        gateway_child(tmp_path, server.url, fault_config("open", mport)) as (fake, proc),
        Caller(proc) as caller,
    ):
        assert server.proc is not None
        thread = caller.create().json()["id"]
        assert caller.create().status_code == 200  # Redis: 3 writes left
        # Its owner is now cached in the process: reads on it need no ownership lookup.
        assert caller.client.get(f"{THREADS}/{thread}", params=Q).status_code == 200
        slow = ScriptedResponse(
            chunks=(b'{"x":1}',) + (b" ",) * 8,
            chunk_delay_s=0.25,
            headers=(("content-type", "application/json"),),
        )
        fake.script(slow, count=2)
        with ThreadPoolExecutor(max_workers=2) as pool:
            holders = [
                pool.submit(caller.client.get, f"{THREADS}/{thread}", params=Q) for _ in range(2)
            ]
            assert fake.wait_for_requests(5, timeout=5)  # both slots taken, through Redis
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                third = caller.client.get(f"{THREADS}/{thread}", params=Q)
                assert_refused(third, "concurrency_limit_exceeded")  # known locally
                assert [h.result(timeout=10).status_code for h in holders] == [200, 200]
                writes = [caller.timed_create() for _ in range(8)]
                assert [r.status_code for r, _ in writes] == [200] * 3 + [429] * 5
                for response, _ in writes[3:]:
                    assert_refused(response, "rate_limit_exceeded")
                assert all(seconds < 0.25 + MARGIN for _, seconds in writes)
                ready = httpx.get(f"{proc.url}/readyz", timeout=5)
                assert ready.status_code == 200  # degraded, still serving
                assert ready.json()["checks"]["rate_limiter"] == "unavailable"
                assert metric(mport, "gateway_ratelimit_degraded") == 1
                assert metric(mport, "gateway_dependency_up", dependency="rate_limiter") == 0
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
        assert created(fake) == 2 + 3
        # Redis is back and decides again (it never saw the 3 admitted alone).

        def redis_decides() -> bool:
            response = caller.create()
            return response.status_code == 200 and "ratelimit-policy" in response.headers

        assert eventually(redis_decides, timeout=5)
        assert metric(mport, "gateway_ratelimit_degraded") == 0
        assert metric(mport, "gateway_dependency_up", dependency="rate_limiter") == 1
        assert httpx.get(f"{proc.url}/readyz", timeout=5).json()["checks"]["redis"] == "ok"


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
def test_redis_killed_then_restarted_empty(tmp_path: Path, fail_mode: str) -> None:
    mport = free_port()
    with private_redis() as first:
        port, url = first.port, first.url
        with (
            gateway_child(tmp_path, url, fault_config(fail_mode, mport)) as (fake, proc),
            Caller(proc) as caller,
        ):
            assert caller.create().status_code == 200  # Redis: 4 left
            kill(first)
            writes = [caller.timed_create() for _ in range(7)]
            assert all(seconds < 0.25 + MARGIN for _, seconds in writes)
            if fail_mode == "open":
                assert [r.status_code for r, _ in writes] == [200] * 4 + [429] * 3
            else:
                assert {r.status_code for r, _ in writes} == {503}
                assert {r.json()["error"]["code"] for r, _ in writes} == {
                    "rate_limiter_unavailable"
                }
                assert all(r.headers["retry-after"] == "1" for r, _ in writes)
            ready = httpx.get(f"{proc.url}/readyz", timeout=5)
            assert ready.status_code == (200 if fail_mode == "open" else 503)
            assert ready.json()["checks"]["rate_limiter"] == "unavailable"
            assert created(fake) == (5 if fail_mode == "open" else 1)
            with redis_on(port):  # empty: no limit state, no scripts (NOSCRIPT, reloaded)

                def redis_decides() -> bool:
                    response = caller.create()
                    return response.status_code == 200 and "ratelimit-policy" in response.headers

                assert eventually(redis_decides, timeout=5)
                back = httpx.get(f"{proc.url}/readyz", timeout=5)
                assert back.status_code == 200
                assert back.json()["checks"]["redis"] == "ok"
                assert metric(mport, "gateway_ratelimit_degraded") == 0


def kill(server: RedisServer) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=5)
