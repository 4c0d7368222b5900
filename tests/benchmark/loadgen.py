"""Load generators that run in their own process (never the server's):
``python -m tests.benchmark.loadgen {open|closed} SPEC.json`` prints one JSON result line.

* ``open``: open-loop at a fixed rate. Request ``i`` is due at ``t0 + i / rate`` whatever
  happened to earlier ones, and its latency counts from that due time, so a stalled server is
  not hidden by the generator waiting for it (no coordinated omission).
* ``closed``: ``concurrency`` workers back to back for ``duration_s`` — the fallback when
  ``wrk`` is not installed (slower than wrk, and said so in the report).

SPEC: ``{"url", "method", "headers": {...}, "body": str, "rate", "duration_s",
"concurrency"}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
import uvloop


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


async def _one(session: aiohttp.ClientSession, spec: dict[str, Any]) -> int:
    async with session.request(
        spec["method"], spec["url"], headers=spec["headers"], data=spec["body"].encode()
    ) as response:
        await response.read()
        return response.status


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def open_loop(spec: dict[str, Any]) -> dict[str, Any]:
    rate, duration = float(spec["rate"]), float(spec["duration_s"])
    total = int(rate * duration)
    latencies: list[float] = []
    errors = 0

    async with _session() as session:

        async def fire(due: float) -> None:
            nonlocal errors
            try:
                status = await _one(session, spec)
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            latencies.append(time.perf_counter() - due)
            if not 200 <= status < 300:
                errors += 1

        tasks = []
        t0 = time.perf_counter() + 0.05
        for i in range(total):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(fire(due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "requests": total,
        "errors": errors,
        "rate": rate,
        "achieved": total / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
    }


async def closed_loop(spec: dict[str, Any]) -> dict[str, Any]:
    duration, concurrency = float(spec["duration_s"]), int(spec["concurrency"])
    done = errors = 0
    async with _session() as session:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                try:
                    status = await _one(session, spec)
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                done += 1
                errors += not 200 <= status < 300

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": done, "errors": errors, "rps": done / elapsed}


def main(argv: list[str]) -> None:
    mode, spec_path = argv[0], argv[1]
    with open(spec_path) as f:
        spec = json.load(f)
    runner = open_loop if mode == "open" else closed_loop
    result = uvloop.run(runner(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
