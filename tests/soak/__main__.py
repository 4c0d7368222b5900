"""Soak: ``python -m tests.soak --minutes 10 --rate 100`` (not collected by pytest, not CI).

Runs ``gateway serve`` (a child process, production settings: JSON logs, metrics listener,
Redis limits per caller and tenant plus a concurrency limit, thread ownership with
``unknown = "deny"``) in front of the recording fake Azure (its own process), with a
private ``redis-server``, and drives it open-loop at a steady rate for the whole run:
request ``i`` is due at ``t0 + i / rate`` and its latency counts from then (a stall is not
hidden). The mix, per 20:

    8 messages.create on an owned thread    6 messages.list          2 threads.create
    2 runs.create streamed (read to the end)  1 threads.retrieve     1 bad token (401 expected)

Runs go round-robin to their own threads, messages to the others (Azure refuses a message
or a second run on a thread while a run is active). Every ``--report-s`` it prints one
line: requests, errors (unexpected status or transport error), latency p50/p95/p99/max of
the plain calls in that interval, p50 of a whole streamed run, and the gateway's RSS, fds
and CPU. At the end: totals, whole-run percentiles, RSS first/last/peak, the gateway's
``/metrics`` in-flight gauges after the run, whether every log line was JSON, and what
reached the fake Azure (every request with exactly one ``api-key``, the gateway's, and no
``Authorization``). Exit 1 on any error or broken invariant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from tests.gatewayproc import GatewayProcess, write_config
from tests.servers import free_port, private_redis
from tests.soak.upstream import API_KEY, run_upstream
from tests.stack import PUBLIC_JWK, V2, base_config, make_token

MIX = ["message"] * 8 + ["list"] * 6 + ["thread"] * 2 + ["run"] * 2 + ["retrieve"] + ["bad_token"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Window:
    latencies_ms: list[float] = field(default_factory=list)  # plain calls
    run_ms: list[float] = field(default_factory=list)  # whole streamed runs
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0


@dataclass
class Soak:
    url: str
    rate: float
    token: str
    threads: list[str]
    run_threads: list[str]
    #: The soak tenant's own assistant (ownership checks a run's ``assistant_id``).
    assistant_id: str
    window: Window = field(default_factory=Window)
    all_latencies_ms: list[float] = field(default_factory=list)
    all_run_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    overrun: int = 0
    runs_started: int = 0

    async def one(self, session: aiohttp.ClientSession, kind: str, due: float) -> None:
        try:
            status, expected = await self._send(session, kind)
            failure = None if status == expected else f"{kind}:{status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = f"{kind}:{type(exc).__name__}"
        latency = (time.monotonic() - due) * 1000
        if kind == "run":
            self.window.run_ms.append(latency)
            self.all_run_ms.append(latency)
        else:
            self.window.latencies_ms.append(latency)
            self.all_latencies_ms.append(latency)
        self.outcomes[kind] += 1
        if failure is not None:
            self.window.errors[failure] += 1
            self.errors[failure] += 1

    async def _send(self, session: aiohttp.ClientSession, kind: str) -> tuple[int, int]:
        q = {"api-version": V2}
        auth = {"Authorization": f"Bearer {self.token}"}
        thread = random.choice(self.threads)  # noqa: S311
        base = f"{self.url}/openai/threads"
        if kind == "message":
            body = {
                "role": "user",
                "content": "soak " * 40,
                "metadata": {"source": "soak", "n": str(self.sent)},
            }
            async with session.post(
                f"{base}/{thread}/messages", params=q, json=body, headers=auth
            ) as r:
                await r.read()
                return r.status, 200
        if kind == "list":
            async with session.get(
                f"{base}/{thread}/messages", params={**q, "limit": "5"}, headers=auth
            ) as r:
                await r.read()
                return r.status, 200
        if kind == "thread":
            async with session.post(
                base, params=q, json={"metadata": {"soak": "1"}}, headers=auth
            ) as r:
                await r.read()
                return r.status, 200
        if kind == "retrieve":
            async with session.get(f"{base}/{thread}", params=q, headers=auth) as r:
                await r.read()
                return r.status, 200
        if kind == "run":
            thread = self.run_threads[self.runs_started % len(self.run_threads)]
            self.runs_started += 1
            async with session.post(
                f"{base}/{thread}/runs",
                params=q,
                headers=auth,
                json={"assistant_id": self.assistant_id, "stream": True},
            ) as r:
                stream = await r.read()
                done = b"event: done" in stream
                return (r.status if done or r.status != 200 else 599), 200
        async with session.get(
            f"{base}/{thread}", params=q, headers={"Authorization": "Bearer not-a-token"}
        ) as r:
            await r.read()
            return r.status, 401

    async def run(self, seconds: float, report_s: float, gateway: Gateway) -> None:
        connector = aiohttp.TCPConnector(limit=256)
        timeout = aiohttp.ClientTimeout(total=30)
        pending: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        next_report = t0 + report_s
        print(gateway.header(), flush=True)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            while (now := time.monotonic()) < t0 + seconds:
                due = t0 + self.sent / self.rate
                if due > now:
                    await asyncio.sleep(min(due - now, 0.05))
                    continue
                if len(pending) >= 512:
                    self.overrun += 1  # the gateway is this far behind: counted, not hidden
                kind = MIX[self.sent % len(MIX)]
                task = asyncio.ensure_future(self.one(session, kind, due))
                pending.add(task)
                task.add_done_callback(pending.discard)
                self.sent += 1
                self.window.sent += 1
                if now >= next_report:
                    print(gateway.line(now - t0, self.window), flush=True)
                    self.window = Window()
                    next_report += report_s
            if pending:
                await asyncio.wait(pending, timeout=35)
        print(gateway.line(time.monotonic() - t0, self.window), flush=True)


class Gateway:
    """Reads the gateway child's RSS, fds and CPU from /proc."""

    def __init__(self, proc: GatewayProcess) -> None:
        assert proc.proc is not None
        self.pid = proc.proc.pid
        self.rss_mib: list[tuple[float, float]] = []
        self._cpu = (self.cpu_s(), time.monotonic())

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan

    def fds(self) -> int:
        return len(list(Path(f"/proc/{self.pid}/fd").iterdir()))

    @staticmethod
    def header() -> str:
        return (
            f"{'t (s)':>6} {'sent':>6} {'errors':>6} {'p50 ms':>7} {'p95 ms':>7} "
            f"{'p99 ms':>7} {'max ms':>8} {'run ms':>7} {'RSS MiB':>8} {'fds':>5} "
            f"{'CPU %':>6}"
        )

    def line(self, elapsed: float, window: Window) -> str:
        cpu, at = self.cpu_s(), time.monotonic()
        busy = (cpu - self._cpu[0]) / max(at - self._cpu[1], 1e-9) * 100
        self._cpu = (cpu, at)
        rss = self.rss()
        self.rss_mib.append((elapsed, rss))
        lat = window.latencies_ms
        return (
            f"{elapsed:6.0f} {window.sent:6d} {sum(window.errors.values()):6d} "
            f"{percentile(lat, 0.5):7.2f} {percentile(lat, 0.95):7.2f} "
            f"{percentile(lat, 0.99):7.2f} {max(lat, default=math.nan):8.1f} "
            f"{percentile(window.run_ms, 0.5):7.1f} {rss:8.1f} {self.fds():5d} {busy:6.1f}"
            + (f"  {dict(window.errors)}" if window.errors else "")
        )


def soak_config(upstream: str, jwks: Path, redis_url: str, metrics_port: int) -> dict[str, Any]:
    config = base_config(upstream, str(jwks), redis_url)
    config["server"] = {
        **config["server"],
        "metrics_host": "127.0.0.1",
        "metrics_port": metrics_port,
        "overhead_header": False,
    }
    config["threads"] = {"ownership": True, "unknown": "deny"}
    config["rate_limit"] = {"enabled": True, "fail_mode": "closed"}
    high = {"requests": 100_000, "per_seconds": 1, "burst": 100_000}
    config["profiles"]["writer"]["rate_limit"] = {
        "max_concurrent": 1000,
        "per_caller": {"read": high, "write": high},
        "per_tenant": {"read": high, "write": high},
    }
    return config


def in_flight(metrics_port: int) -> str:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    wanted = ("gateway_requests_in_flight ", "gateway_streams_in_flight ")
    return ", ".join(line for line in text.splitlines() if line.startswith(wanted))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=100, help="requests per second")
    parser.add_argument("--report-s", type=float, default=30, help="seconds per report line")
    parser.add_argument("--threads", type=int, default=50, help="owned threads to write to")
    parser.add_argument(
        "--run-threads", type=int, default=40, help="owned threads for streamed runs (round robin)"
    )
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    jwks = work / "jwks.json"
    jwks.write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    metrics_port, upstream_port = free_port(), free_port()
    ours, theirs = multiprocessing.Pipe()
    upstream = multiprocessing.get_context("spawn").Process(
        target=run_upstream, args=(upstream_port, theirs), name="soak-upstream"
    )
    upstream.start()
    if not ours.poll(30) or ours.recv() != "ready":
        upstream.kill()
        raise RuntimeError("the fake Azure did not start")
    with private_redis() as redis:
        config = soak_config(f"http://127.0.0.1:{upstream_port}", jwks, redis.url, metrics_port)
        proc = GatewayProcess(
            write_config(config, work / "gateway.toml"), api_key=API_KEY, redis_url=redis.url
        )
        proc.env["GATEWAY_LOG_LEVEL"] = "INFO"
        proc.start()
        try:
            proc.wait_ready()
            token = make_token(ttl=int(seconds) + 600)
            threads = [
                httpx.post(
                    f"{proc.url}/openai/threads",
                    params={"api-version": V2},
                    json={},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=10,
                ).json()["id"]
                for _ in range(args.threads + args.run_threads)
            ]
            assistant_id = httpx.post(
                f"{proc.url}/openai/assistants",
                params={"api-version": V2},
                json={"model": "gpt-4o"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            ).json()["id"]
            gateway = Gateway(proc)
            print(
                f"soak: {args.minutes:g} min at {args.rate:g} req/s against gateway serve "
                f"(pid {gateway.pid}); logs and config in {work}",
                flush=True,
            )
            soak = Soak(
                proc.url,
                args.rate,
                token,
                threads[: args.threads],
                threads[args.threads :],
                assistant_id,
            )
            asyncio.run(soak.run(seconds, args.report_s, gateway))
            gauges = in_flight(metrics_port)
        finally:
            proc.stop()
            ours.send("report")
            reached, problems = ours.recv() if ours.poll(60) else (0, ["no upstream report"])
            upstream.join(15)
            if upstream.is_alive():
                upstream.kill()
    return report(soak, gateway, reached, problems, gauges, proc)


def report(
    soak: Soak,
    gateway: Gateway,
    reached: int,
    problems: list[str],
    gauges: str,
    proc: GatewayProcess,
) -> int:
    lat = soak.all_latencies_ms
    rss = [r for _, r in gateway.rss_mib]
    log_lines = proc.log_path.read_text().splitlines()
    not_json = sum(1 for line in log_lines if not line.startswith("{"))
    print(
        f"\nrequests {soak.sent} ({dict(soak.outcomes)}), errors {sum(soak.errors.values())} "
        f"{dict(soak.errors)}, generator overruns {soak.overrun}"
    )
    print(
        f"latency ms (plain calls): p50 {percentile(lat, 0.5):.2f}, "
        f"p95 {percentile(lat, 0.95):.2f}, p99 {percentile(lat, 0.99):.2f}, "
        f"p99.9 {percentile(lat, 0.999):.2f}, max {max(lat, default=math.nan):.1f}"
    )
    runs = soak.all_run_ms
    print(
        f"streamed runs, whole stream ms: p50 {percentile(runs, 0.5):.1f}, "
        f"p99 {percentile(runs, 0.99):.1f}, max {max(runs, default=math.nan):.1f}"
    )
    if rss:
        print(
            f"gateway RSS MiB: first report {rss[0]:.1f}, last {rss[-1]:.1f}, peak {max(rss):.1f}"
        )
    print(f"gateway after the run: {gauges}; {len(log_lines)} log lines, {not_json} not JSON")
    print(
        f"upstream: {reached} requests reached the fake Azure; invariant problems: "
        f"{problems or 'none'}"
    )
    ok = not soak.errors and not problems and not not_json and soak.overrun == 0
    print("soak: OK" if ok else "soak: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
