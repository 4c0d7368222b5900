"""A cheap concurrent HTTP/1.1 flood for overload tests: raw asyncio sockets, one request each.

Every request is the same pre-built bytes (``tests.rawhttp.build_request``, ``Connection:
close``), sent on its own connection at once; each answer is read to EOF and parsed into its
status and headers. A connection the server resets or closes without an answer is recorded
with status 0, so a test can count it instead of losing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def parse_answer(data: bytes) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        return Answer(0, {}, data)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(parts[1]), headers, body)


async def _one(
    host: str, port: int, request: bytes, start: asyncio.Event, timeout: float
) -> Answer:
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                await start.wait()
                writer.write(request)
                await writer.drain()
                data = await reader.read()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return Answer(0, {}, b"")
    return parse_answer(data)


async def flood_async(
    host: str, port: int, request: bytes, count: int, *, timeout: float = 30.0
) -> tuple[list[Answer], float]:
    """``count`` connections opened first, then every request sent at the same moment.

    Returns the answers and the seconds from the first send to the last answer."""
    start = asyncio.Event()
    tasks = [asyncio.ensure_future(_one(host, port, request, start, timeout)) for _ in range(count)]
    await asyncio.sleep(0.5)  # let the connections open before anything is sent
    began = time.monotonic()
    start.set()
    answers = await asyncio.gather(*tasks)
    return list(answers), time.monotonic() - began


def flood(
    url: str, request: bytes, count: int, *, timeout: float = 30.0
) -> tuple[list[Answer], float]:
    host, port = url.split("//", 1)[1].rstrip("/").split(":")
    return asyncio.run(flood_async(host, int(port), request, count, timeout=timeout))
