"""Processes and measurements for the benchmark: start/stop servers, read their CPU time and
peak RSS from ``/proc``, drive them with wrk (or the Python fallback), open-loop latency, and
time to first SSE event."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import wait_for_port

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Request:
    """One request shape, sent the same way to every target."""

    method: str
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    log: Path | None = None
    #: Working directory (``--compare`` runs another checkout's code from its own tree).
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv, env={**os.environ, **self.env}, stdout=out, stderr=out, cwd=self.cwd
        )
        try:
            wait_for_port(self.port, timeout=20)
        except TimeoutError:
            self.stop()
            tail = self.log.read_text()[-2000:] if self.log else ""
            raise RuntimeError(f"{self.name} did not start:\n{tail}") from None
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def processes(self) -> list[int]:
        """The server's processes: itself, or its workers when it supervises some (the
        supervisor's own CPU is counted too; it only waits)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        workers = [int(p) for p in children.read_text().split()] if children.exists() else []
        return [self.pid, *workers]

    def cpu_s(self) -> float:
        """utime + stime of the server's processes so far (seconds)."""
        total = 0.0
        for pid in self.processes():
            with contextlib.suppress(FileNotFoundError):
                total += process_cpu_s(pid)
        return total

    def schedstat_s(self) -> tuple[float, float]:
        """Time on a CPU and time runnable but waiting for one (``/proc/<pid>/schedstat``,
        nanosecond clocks), summed over the server's processes (seconds)."""
        ran = waited = 0
        for pid in self.processes():
            with contextlib.suppress(FileNotFoundError):
                on_cpu, queued, _slices = Path(f"/proc/{pid}/schedstat").read_text().split()
                ran, waited = ran + int(on_cpu), waited + int(queued)
        return ran / 1e9, waited / 1e9

    def peak_rss_mib(self) -> float:
        """Peak RSS of the server (summed over its workers when it has some)."""
        pids = self.processes()
        pids = pids[1:] if len(pids) > 1 else pids
        total = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        return total / 1024 if total else float("nan")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


WRK = shutil.which("wrk")


def _lua(request: Request) -> str:
    lines = [f"wrk.method = {json.dumps(request.method)}", f"wrk.body = {json.dumps(request.body)}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in request.headers.items()]
    return "\n".join(lines) + "\n"


def process_cpu_s(pid: int) -> float:
    """utime + stime of one process so far (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _children_cpu_s() -> float:
    """CPU of the children waited for so far (the load generators: each run is waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class LoadResult:
    requests: int
    errors: int
    rps: float
    cpu_us_per_request: float
    #: CPU per request (µs) of what shares the machine with the server: the load generator
    #: (``load``) and each of ``closed_load``'s ``others`` (the upstream, Redis).
    others_us: dict[str, float] = field(default_factory=dict)


def closed_load(
    server: Server,
    request: Request,
    concurrency: int,
    duration_s: float,
    workdir: Path,
    others: dict[str, Callable[[], float]] | None = None,
) -> LoadResult:
    """Back-to-back load at ``concurrency`` connections; CPU of the server per request, and
    of the load generator and ``others`` (name → CPU seconds so far) per request."""
    others = others or {}
    others_before = {name: cpu() for name, cpu in others.items()}
    load_before = _children_cpu_s()
    before = server.cpu_s()
    if WRK is not None:
        script = workdir / "request.lua"
        script.write_text(_lua(request))
        out = subprocess.run(
            [
                WRK,
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(duration_s))}s",
                "-s",
                str(script),
                server.url + request.path,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        after = server.cpu_s()
        done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
        if m := re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), "
            r"timeout (\d+)",
            out,
        ):
            errors += sum(int(g) for g in m.groups())
    else:
        result = _loadgen(
            "closed", request, server.url, workdir, concurrency=concurrency, duration_s=duration_s
        )
        after = server.cpu_s()
        done, errors, rps = result["requests"], result["errors"], result["rps"]
    per = 1e6 / max(done, 1)
    used = {name: (cpu() - others_before[name]) * per for name, cpu in others.items()}
    return LoadResult(
        done,
        errors,
        rps,
        (after - before) * per,
        {"load": (_children_cpu_s() - load_before) * per, **used},
    )


def _loadgen(mode: str, request: Request, base: str, workdir: Path, **spec: Any) -> dict[str, Any]:
    path = workdir / f"{mode}.json"
    path.write_text(
        json.dumps(
            {
                "url": base + request.path,
                "method": request.method,
                "headers": request.headers,
                "body": request.body,
                **spec,
            }
        )
    )
    out = subprocess.run(
        python_module("tests.benchmark.loadgen", mode, str(path)),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def open_loop(
    server: Server, request: Request, rate: float, duration_s: float, workdir: Path
) -> dict[str, Any]:
    """Open-loop latency at ``rate``; with the server's CPU time and its wait for a CPU per
    request over the run (µs): on a shared machine the wait is the neighbours' share."""
    ran, waited = server.schedstat_s()
    result = _loadgen("open", request, server.url, workdir, rate=rate, duration_s=duration_s)
    ran_after, waited_after = server.schedstat_s()
    n = max(int(result["requests"]), 1)
    result["cpu_us"] = (ran_after - ran) / n * 1e6
    result["runq_us"] = (waited_after - waited) / n * 1e6
    return result


def _raw(request: Request, host: str) -> bytes:
    body = request.body.encode()
    head = [
        f"{request.method} {request.path} HTTP/1.1",
        f"Host: {host}",
        f"Content-Length: {len(body)}",
    ]
    head += [f"{k}: {v}" for k, v in request.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def first_event_ms(server: Server, request: Request, n: int) -> tuple[float, float, int]:
    """Time from sending a streamed-run request to the first complete SSE event (p50, p99 ms),
    over ``n`` sequential requests on one keep-alive connection; and the errors seen."""
    data = _raw(request, f"127.0.0.1:{server.port}")
    times: list[float] = []
    errors = 0
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            started = time.perf_counter()
            sock.sendall(data)
            buf = b""
            first = None
            while not buf.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError(f"{server.name} closed the stream: {buf[:300]!r}")
                buf += chunk
                head_end = buf.find(b"\r\n\r\n")
                if first is None and head_end >= 0 and buf.find(b"\n\n", head_end + 4) >= 0:
                    first = time.perf_counter() - started
            if not buf.startswith(b"HTTP/1.1 200") or b"[DONE]" not in buf or first is None:
                errors += 1
            else:
                times.append(first * 1000)
    times.sort()
    if not times:
        return float("nan"), float("nan"), errors
    return times[len(times) // 2], times[min(len(times) - 1, round(0.99 * len(times)))], errors


def sequential(
    server: Server, request: Request, n: int, before_each: Callable[[], object] | None = None
) -> tuple[float, float, int]:
    """``n`` requests one after the other on one keep-alive connection: (p50 ms, server CPU
    µs per request, errors). ``before_each`` runs before every request (its own time and the
    benchmark process's CPU are not counted)."""
    import httpx

    times: list[float] = []
    cpu = 0.0
    errors = 0
    with httpx.Client(base_url=server.url, headers=request.headers, timeout=10) as client:
        for _ in range(n):
            if before_each is not None:
                before_each()
            cpu_before, started = server.cpu_s(), time.perf_counter()
            response = client.request(request.method, request.path, content=request.body)
            times.append((time.perf_counter() - started) * 1000)
            cpu += server.cpu_s() - cpu_before
            errors += not 200 <= response.status_code < 300
    times.sort()
    return times[len(times) // 2], cpu / n * 1e6, errors


def py_spy(
    server: Server, out_dir: Path, duration_s: float, *, native: bool = False
) -> subprocess.Popen[bytes]:
    """``py-spy record`` of ``server`` for ``duration_s`` into ``out_dir/NAME.txt`` (``native``:
    C frames too, where the time in extensions and syscalls shows)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(server.pid),
            "--duration",
            str(round(duration_s)),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(out_dir / f"{server.name}.txt"),
            # Native unwinding needs the process stopped while sampled (no --nonblocking).
            *(["--native"] if native else ["--nonblocking"]),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="gateway-bench-"))
