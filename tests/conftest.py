"""Shared fixtures: a real Redis for the whole session, flushed before each test that uses it.

Redis comes from, in order: ``GATEWAY_TEST_REDIS_URL`` (a Redis you run; its db is flushed),
else a private ``redis-server`` child started here on a free loopback port. When neither is
available the tests that need Redis fail with a message saying what is missing.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator

import pytest
import redis

from tests.servers import RedisServer, private_redis, redis_server_binary
from tests.stack import Stack, running_stack

#: Sockets a test module's clients left unclosed, found when its garbage is collected.
STRAY_SOCKETS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _collect_module_garbage(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect each module's garbage when it ends, so a client socket one of its tests left in
    a reference cycle is found there, and listed in the summary under that module's name,
    instead of raising (warnings are errors) in whichever later test the collector happens to
    run. The gateway's own descriptors are checked by counting them (``test_faults``)."""
    yield
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    STRAY_SOCKETS.extend(
        f"{request.module.__name__}: {w.message}"
        for w in caught
        if issubclass(w.category, ResourceWarning)
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if STRAY_SOCKETS:
        terminalreporter.section("unclosed resources found at module ends")
        for line in STRAY_SOCKETS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    url = os.environ.get("GATEWAY_TEST_REDIS_URL")
    if url:
        client = redis.Redis.from_url(url)
        try:
            client.ping()
        except redis.RedisError as exc:
            pytest.fail(f"GATEWAY_TEST_REDIS_URL={url} is not reachable: {exc}")
        finally:
            client.close()
        pool = redis.connection.parse_url(url)
        yield RedisServer(str(pool.get("host", "127.0.0.1")), int(pool.get("port", 6379)), None)
        return
    if redis_server_binary() is None:
        pytest.fail(
            "Redis is required: install redis-server (Debian/Ubuntu: apt-get install redis-server) "
            "or point GATEWAY_TEST_REDIS_URL at a running Redis"
        )
    with private_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session Redis, flushed clean for this test."""
    url = os.environ.get("GATEWAY_TEST_REDIS_URL") or redis_server.url
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Stack]:
    """Fake Azure + gateway on real uvicorn servers, shared by a module: the session Redis
    holds the limiter (no limits in the default profiles); thread ownership is off."""
    url = os.environ.get("GATEWAY_TEST_REDIS_URL") or redis_server.url
    with running_stack(tmp_path_factory.mktemp("stack"), redis_url=url) as running:
        yield running


@pytest.fixture
def gw(stack: Stack) -> Stack:
    """The module's stack with the fake Azure's state and records cleared."""
    stack.fake.reset()
    return stack
