"""N server processes on one port (``server.workers``): a supervisor and its workers.

``gateway serve`` with ``server.workers = N > 1`` is a supervisor: it starts N children,
``gateway serve --worker i``, and does nothing else (it builds no client and opens no port).
Each worker is a full gateway (its own upstream pool, Redis client, caches and limits state in
Redis, shared as across replicas) that binds the proxy port with ``SO_REUSEPORT``, so the
kernel spreads new connections over the workers, and serves its own metrics on
``metrics_port + i`` (scrape each, as separate replicas).

Signals: SIGTERM/SIGINT to the supervisor go to every worker, which drain as one gateway does
(``server.drain_timeout_s``); the supervisor exits when they have, with the first non-zero
exit code, else 0. A worker that exits on its own (a crash) stops the others and the
supervisor exits non-zero: the pod restarts whole, never silently serving with fewer workers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

#: The environment variable that carries a worker's metrics port (``server.metrics_port``).
METRICS_PORT_ENV = "GATEWAY_METRICS_PORT"


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """The proxy's listening socket, bound with ``SO_REUSEPORT`` (shared by the workers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def worker_argv(config_path: str, index: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        "--config",
        config_path,
        "--worker",
        str(index),
    ]


def supervise(argvs: Sequence[list[str]], metrics_port: int, *, poll_s: float = 0.2) -> int:
    """Run one worker per ``argv`` until they have all exited; the exit code (see above)."""
    children: list[subprocess.Popen[bytes]] = []
    signalled: set[int] = set()  # once each: a second SIGTERM would cut uvicorn's drain
    stopping = False

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.pid not in signalled and child.poll() is None:
                signalled.add(child.pid)
                child.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for index, argv in enumerate(argvs):
        if stopping:  # signalled while starting: start no more
            break
        env = dict(os.environ)
        if metrics_port:
            env[METRICS_PORT_ENV] = str(metrics_port + index)
        children.append(subprocess.Popen(argv, env=env))
    if stopping:  # and stop those started after the signal
        forward(signal.SIGTERM, None)
    code = 0
    while any(child.poll() is None for child in children):
        if not stopping and any(child.poll() is not None for child in children):
            code = 1  # a worker died on its own: stop the rest, exit non-zero
            forward(signal.SIGTERM, None)
        time.sleep(poll_s)
    for child in children:
        if child.returncode and not code:
            code = child.returncode if child.returncode > 0 else 1
    return code
