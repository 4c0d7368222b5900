"""Real servers on loopback for tests: uvicorn in a background thread, private redis-server."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--loglevel", "warning", "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
