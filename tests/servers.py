"""Real servers on loopback for tests: uvicorn in a background thread, private redis-server."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn


def free_port() -> int:
    """A port free now, for a server the test starts next (``free_ports``: why not bind(0))."""
    return free_ports()


#: The kernel's ephemeral range when /proc does not say (Linux's default).
EPHEMERAL_DEFAULT = (32768, 60999)
_handed: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel picks for outgoing connections and ``bind(0)``."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return EPHEMERAL_DEFAULT


def bindable(port: int) -> bool:
    """A server could bind ``port`` on every address now, as uvicorn does (SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def free_ports(*offsets: int) -> int:
    """A port ``p`` such that ``p`` and every ``p + offset`` are free now, for a server that
    binds several ports derived from one (a worker's ``metrics_port + i``, a Redis node's
    cluster bus at ``+ 10000``).

    They are drawn from below the kernel's ephemeral range, not by ``bind(0)``: no outgoing
    connection's local port, nor one left in TIME_WAIT by the suite's earlier connections,
    takes one between this check and the server's bind (seen: EADDRINUSE on
    ``metrics_port + 1``, next to a port bind(0) had checked, at the suite's end). A port
    is handed out once per process."""
    span = max((0, *offsets))
    low, high = ephemeral_range()
    first, last = 10_000, min(low, 65_536) - 1 - span  # every p + offset below the range
    if last < first:  # a machine whose ephemeral range starts low: anywhere above it
        first, last = high + 1, 65_535 - span
    if last < first:
        raise RuntimeError(f"no room for ports at offsets {offsets} outside {low}-{high}")
    for _ in range(500):
        port = random.randint(first, last)  # noqa: S311 (a port, not a secret)
        ports = {port + offset for offset in (0, *offsets)}
        if ports & _handed:
            continue
        if all(bindable(p) for p in ports):
            _handed.update(ports)
            return port
    raise RuntimeError(f"no free ports at offsets {offsets} in {first}-{last + span}")


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class ThreadedUvicorn:
    """Runs an ASGI app under a real uvicorn server in a background thread."""

    def __init__(self, app: Any, *, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "on")
        self.config = uvicorn.Config(app, host="127.0.0.1", port=self.port, **config)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedUvicorn:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn thread died during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> ThreadedUvicorn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def run_app(app: Any, **config: Any) -> Iterator[ThreadedUvicorn]:
    with ThreadedUvicorn(app, **config) as server:
        yield server


@dataclass
class RedisServer:
    host: str
    port: int
    proc: subprocess.Popen[bytes] | None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


@contextlib.contextmanager
def private_redis() -> Iterator[RedisServer]:
    """A fresh redis-server child on a free loopback port, killed afterwards."""
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: install it (Debian: apt-get install redis-server) "
            "or set GATEWAY_TEST_REDIS_URL to a running Redis"
        )
    port = free_port()
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
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield RedisServer("127.0.0.1", port, proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(18)  # SIGCONT, in case a test left it stopped
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def private_redis_cluster(masters: int = 3) -> Iterator[list[RedisServer]]:
    """A real Redis Cluster of ``masters`` redis-server children on free loopback ports."""
    binary, cli = redis_server_binary(), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise RuntimeError(
            "redis-server and redis-cli are needed for the Redis Cluster tests "
            "(Debian: apt-get install redis-server)"
        )
    with tempfile.TemporaryDirectory(prefix="gw-cluster-") as tmp:
        nodes: list[RedisServer] = []
        try:
            for _ in range(masters):
                port = free_ports(10000)  # and its cluster bus
                proc = subprocess.Popen(
                    [
                        binary,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"{tmp}/nodes-{port}.conf",
                        "--dir",
                        tmp,
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--loglevel",
                        "warning",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                nodes.append(RedisServer("127.0.0.1", port, proc))
            for node in nodes:
                wait_for_port(node.port)
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *[f"127.0.0.1:{n.port}" for n in nodes],
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                info = subprocess.run(
                    [cli, "-p", str(nodes[0].port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                if "cluster_state:ok" in info:
                    break
                time.sleep(0.1)
            else:
                raise TimeoutError("the Redis Cluster did not become ready")
            yield nodes
        finally:
            for node in nodes:
                assert node.proc is not None
                node.proc.terminate()
            for node in nodes:
                assert node.proc is not None
                try:
                    node.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
