"""A private ``redis-server`` child that dies with its parent (the demo's Redis).

The child must not outlive the process that started it, however that process ends:

* Ctrl-C or SIGTERM: the demo unwinds and ``private_redis`` terminates the child (the demo
  turns SIGTERM into the same ``KeyboardInterrupt`` as Ctrl-C, see ``tests.demo.run``);
* a crash (SIGKILL, the OOM killer, a segfault), where no ``finally`` runs: on Linux the
  kernel sends the child SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``, set in the
  child between fork and exec). The signal follows the *thread* that forked, so the child is
  started from the main thread (the demo's event loop), which lives as long as the process.

``tests/test_demo.py`` holds both: a demo stopped with SIGTERM and one killed with SIGKILL leave
no ``redis-server`` behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: ``<linux/prctl.h>``: the signal a process gets when its parent (thread) exits.
PR_SET_PDEATHSIG = 1
#: How long a redis-server may take to listen, and to exit when terminated.
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RedisChild:
    url: str
    pid: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks the kernel to SIGTERM the child when we die (Linux only;
    elsewhere None: only the orderly paths clean up)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            os._exit(127)
        if os.getppid() != parent:  # we died between fork and prctl: nobody will signal
            os._exit(0)

    return preexec


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited at start (status {proc.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not listen on 127.0.0.1:{port} in {START_TIMEOUT_S}s")


@contextlib.contextmanager
def private_redis() -> Iterator[RedisChild | None]:
    """A private redis-server child on a free loopback port (no persistence), or None when
    redis-server is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Called from the main thread, before the demo starts any other thread.
        preexec_fn=die_with_parent(),
    )
    try:
        _wait_listening(proc, port)
        yield RedisChild(f"redis://127.0.0.1:{port}/0", proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
