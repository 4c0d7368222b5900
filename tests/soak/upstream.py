"""The soak's recording fake Azure, run in its own process (``multiprocessing`` spawn)."""

from __future__ import annotations

from typing import Any

from tests.fakeazure import FakeAzure
from tests.servers import ThreadedUvicorn

API_KEY = "soak-azure-key-0123456789"


def run_upstream(port: int, conn: Any) -> None:
    """The recording fake Azure in its own process (the load generator's GIL stays its own);
    answers ``(reached, problems)`` when asked, then exits."""
    fake = FakeAzure(API_KEY)
    fake.run_event_delay_s = 0.005
    with ThreadedUvicorn(fake.app, port=port, lifespan="off"):
        conn.send("ready")
        conn.recv()
        conn.send(upstream_invariants(fake))


def upstream_invariants(fake: FakeAzure) -> tuple[int, list[str]]:
    """(requests that reached the fake Azure, broken invariants)."""
    problems: list[str] = []
    reached = len(fake.requests)
    for record in fake.requests:
        keys = [v for k, v in record.headers if k == "api-key"]
        if keys != [API_KEY]:
            problems.append(f"{record.method} {record.path}: api-key headers {len(keys)}")
        if any(k == "authorization" for k, _ in record.headers):
            problems.append(f"{record.method} {record.path}: an Authorization header")
    return reached, problems[:10]
