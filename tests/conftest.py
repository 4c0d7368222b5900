"""Shared fixtures: a real Redis for the whole session, flushed before each test that uses it.

Redis comes from, in order: ``GATEWAY_TEST_REDIS_URL`` (a Redis you run; its db is flushed),
else a private ``redis-server`` child started here on a free loopback port. When neither is
available the tests that need Redis fail with a message saying what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from tests.servers import RedisServer, private_redis, redis_server_binary
from tests.stack import Stack, running_stack


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
