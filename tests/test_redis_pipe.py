"""The limiter's pipelined connection (``redisconn.pipe``) against real redis-servers: calls in
flight together answered in order on one connection of the client's pool, ``NOSCRIPT``
after a flush (loaded and retried once), ``AUTH`` and ``SELECT``, unix sockets and TLS (on
asyncio's and uvloop's transports) as the URL says, Redis killed mid-call, stopped,
restarted, and the client's ``aclose``."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio
import redis.exceptions
import uvloop

from gateway.ratelimit.gcra import Rate, RateLimitProfile, plan
from gateway.ratelimit.redis_limiter import RedisRateLimiter
from gateway.redisconn.client import make_redis_client
from gateway.redisconn.pipe import ScriptPipe, usable
from tests.faultproxy import delay_proxy
from tests.ratelimitcases import caller, run
from tests.servers import RedisServer, free_port, wait_for_port
from tests.test_e2e_tls import self_signed

#: Answers its first argument; with a second, first spins that many milliseconds on Redis.
ECHO = """
if ARGV[2] then
  local t = redis.call('TIME'); local stop = t[1] * 1000000 + t[2] + ARGV[2] * 1000
  repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop
end
if KEYS[1] then redis.call('SET', KEYS[1], ARGV[1]) end
return ARGV[1]
"""


def client(url: str, timeout: float = 2.0) -> redis.asyncio.Redis:
    c = make_redis_client(url, socket_timeout_s=timeout, connect_timeout_s=timeout)
    assert isinstance(c, redis.asyncio.Redis)
    return c


@contextlib.contextmanager
def redis_process(
    *extra: str, port: int | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is required"
    port = port or free_port()
    base = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*base, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(5)


async def call(pipe: ScriptPipe, *args: str, keys: tuple[str, ...] = ()) -> Any:
    """One call on the pipe: its reply, or the exception it failed with (returned)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    pipe.send(loop, list(keys), list(args), future.set_result)
    return await future


def test_a_single_redis_takes_the_pipe_a_fake_or_resp3_does_not(redis_url: str) -> None:
    assert usable(client(redis_url))
    assert not usable(fakeredis.FakeAsyncRedis())
    assert not usable(redis.asyncio.Redis.from_url(redis_url, protocol=3))
    limiter = RedisRateLimiter(fakeredis.FakeAsyncRedis())
    assert limiter.batch.pipes == []  # the in-process demo Redis keeps redis-py's path


def test_the_payload_is_the_evalsha_redis_py_would_send(redis_url: str) -> None:
    c = client(redis_url)
    pipe = ScriptPipe(c, ECHO)
    script = c.register_script(ECHO)
    expected = redis.asyncio.connection.Connection().pack_command(
        "EVALSHA", script.sha, 2, "k1", "k2", "c 1 - 5", "x y"
    )
    assert pipe.payload(["k1", "k2"], ["c 1 - 5", "x y"]) == b"".join(expected)


def test_calls_in_flight_together_are_answered_in_order_on_one_connection(
    redis_url: str,
) -> None:
    async def scenario() -> tuple[list[Any], int]:
        c = client(redis_url)
        pipe = ScriptPipe(c, ECHO)
        try:
            # the first is slow on Redis: the others are written behind it, not after it
            replies = await asyncio.gather(
                call(pipe, "0", "50"), *(call(pipe, str(i)) for i in range(1, 40))
            )
            return list(replies), pipe.connects_total
        finally:
            await pipe.aclose(1)
            await c.aclose()

    replies, connects = run(scenario)
    assert replies == [str(i).encode() for i in range(40)]
    assert connects == 1


def test_noscript_after_a_flush_loads_the_script_and_retries_each_call_once(
    redis_url: str,
) -> None:
    sync = redis.Redis.from_url(redis_url)

    async def scenario() -> list[Any]:
        c = client(redis_url)
        pipe = ScriptPipe(c, ECHO)
        try:
            assert await call(pipe, "warm") == b"warm"
            sync.script_flush()
            return list(await asyncio.gather(*(call(pipe, str(i)) for i in range(5))))
        finally:
            await pipe.aclose(1)
            await c.aclose()

    assert run(scenario) == [str(i).encode() for i in range(5)]
    assert sync.script_exists(redis.Redis().register_script(ECHO).sha) == [True]
    sync.close()


def test_a_user_who_may_not_load_the_script_gets_the_load_s_refusal(redis_url: str) -> None:
    """After ``NOSCRIPT`` the retry needs ``SCRIPT LOAD``: refused, the call fails with that
    refusal (an ACL misconfiguration, ``refused``), not with a second ``NOSCRIPT``."""
    with redis_process() as (port, _):
        admin = redis.Redis(port=port)
        admin.execute_command("ACL", "SETUSER", "noload", "on", ">pw", "~*", "+evalsha", "+ping")
        url = f"redis://noload:pw@127.0.0.1:{port}/0"

        async def scenario() -> Any:
            c = client(url)
            pipe = ScriptPipe(c, ECHO)
            try:
                return await call(pipe, "x")
            finally:
                await pipe.aclose(1)
                await c.aclose()

        failure = run(scenario)
        admin.close()
    assert isinstance(failure, redis.exceptions.NoPermissionError), failure


def test_auth_user_password_and_db_come_from_the_url() -> None:
    with redis_process("--requirepass", "adminpw") as (port, _):
        admin = redis.Redis(port=port, password="adminpw")
        admin.execute_command("ACL", "SETUSER", "gw", "on", ">gwpw", "~*", "+@all")
        good = f"redis://gw:gwpw@127.0.0.1:{port}/3"
        bad = f"redis://gw:wrong@127.0.0.1:{port}/3"

        async def scenario(url: str) -> Any:
            c = client(url)
            pipe = ScriptPipe(c, ECHO)
            try:
                return await call(pipe, "stored", keys=("gw:pipe",))
            finally:
                await pipe.aclose(1)
                await c.aclose()

        assert run(lambda: scenario(good)) == b"stored"
        assert admin.execute_command("SELECT", 3)
        assert redis.Redis(port=port, password="adminpw", db=3).get("gw:pipe") == b"stored"
        assert redis.Redis(port=port, password="adminpw", db=0).get("gw:pipe") is None
        refused = run(lambda: scenario(bad))
        admin.close()
    assert isinstance(refused, redis.exceptions.AuthenticationError), refused


def test_a_unix_socket_url(tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    with redis_process("--unixsocket", str(path), "--unixsocketperm", "700"):

        async def scenario() -> Any:
            c = redis.asyncio.Redis.from_url(f"unix://{path}?db=1", socket_timeout=2, protocol=2)
            assert usable(c)
            pipe = ScriptPipe(c, ECHO)
            try:
                return await call(pipe, "over unix", keys=("gw:unix",))
            finally:
                await pipe.aclose(1)
                await c.aclose()

        assert run(scenario) == b"over unix"
        assert redis.Redis(unix_socket_path=str(path), db=1).get("gw:unix") == b"over unix"


def test_redis_killed_mid_call_fails_the_calls_in_flight_then_a_new_one_reconnects() -> None:
    port = free_port()

    async def scenario() -> tuple[Any, Any, Any, int]:
        with redis_process(port=port) as (_, proc):
            c = client(f"redis://127.0.0.1:{port}/0")
            pipe = ScriptPipe(c, ECHO)
            try:
                assert await call(pipe, "before") == b"before"
                slow = asyncio.ensure_future(call(pipe, "slow", "500"))
                behind = asyncio.ensure_future(call(pipe, "behind"))
                await asyncio.sleep(0.1)  # Redis is running the slow one
                proc.kill()
                proc.wait(5)  # gone, its port free: the restart below listens there
                first, second = await slow, await behind
                with redis_process(port=port):  # restarted, empty: no script cached
                    after = await call(pipe, "after")
                return first, second, after, pipe.connects_total
            finally:
                await pipe.aclose(1)
                await c.aclose()

    first, second, after, connects = run(scenario)
    assert isinstance(first, redis.exceptions.ConnectionError)
    assert isinstance(second, redis.exceptions.ConnectionError)
    assert after == b"after", str(after)  # reconnected, NOSCRIPT handled
    assert connects == 2


def test_a_stopped_redis_times_out_after_the_socket_timeout_and_the_pipe_recovers() -> None:
    async def scenario(proc: subprocess.Popen[bytes], url: str) -> tuple[Any, float, Any]:
        c = client(url, timeout=0.3)
        pipe = ScriptPipe(c, ECHO)
        try:
            assert await call(pipe, "warm") == b"warm"
            proc.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            stuck = await call(pipe, "stuck")
            elapsed = time.monotonic() - started
            proc.send_signal(signal.SIGCONT)
            return stuck, elapsed, await call(pipe, "again")
        finally:
            proc.send_signal(signal.SIGCONT)
            await pipe.aclose(1)
            await c.aclose()

    with redis_process() as (port, proc):
        stuck, elapsed, again = run(lambda: scenario(proc, f"redis://127.0.0.1:{port}/0"))
    assert isinstance(stuck, redis.exceptions.TimeoutError), stuck
    assert 0.28 <= elapsed < 0.6
    assert again == b"again"


def test_a_reply_given_up_on_is_dropped_and_the_next_calls_get_their_own() -> None:
    """The batcher's budget (0.1 s) is shorter than the socket timeout (2 s): its calls fail
    at the budget while Redis is stopped (one timer per call, none per operation); the late
    replies, when Redis resumes, go to them and are dropped; the connection stays, and the
    next decisions are exact."""
    profile = RateLimitProfile(per_caller={"write": Rate(10, 3600, 10)})
    p = plan(caller(), "write", profile)

    async def scenario(proc: subprocess.Popen[bytes], url: str) -> tuple[list[Any], list[int]]:
        c = client(url, timeout=2)
        limiter = RedisRateLimiter(c, fail_mode="open", budget_s=0.1)
        try:
            assert (await limiter.check(p, "warm")).rules[0].remaining == 9
            proc.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            late = await asyncio.gather(*(limiter.check(p, str(i)) for i in range(3)))
            assert time.monotonic() - started < 0.1 + 0.1  # the budget, not the socket's 2 s
            await asyncio.sleep(0.3)  # Redis stays stopped past their deadline (d8)
            proc.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.6)  # past RETRY_S: the next call asks Redis again
            after = [(await limiter.check(p, f"a{i}")).rules[0].remaining for i in range(2)]
            assert limiter.batch.pipes
            assert limiter.batch.pipes[0].connects_total == 1
            return list(late), after
        finally:
            proc.send_signal(signal.SIGCONT)
            await limiter.aclose()
            await c.aclose()

    with redis_process() as (port, proc):
        late, after = run(lambda: scenario(proc, f"redis://127.0.0.1:{port}/0"))
    assert all(d.degraded for d in late)
    # the late calls ran past their deadline on Redis's clock: they changed nothing
    assert after == [8, 7]


def test_the_client_s_aclose_closes_the_pipe_s_connection(redis_url: str) -> None:
    sync = redis.Redis.from_url(redis_url)

    def clients() -> int:
        return int(sync.info("clients")["connected_clients"])

    async def scenario() -> tuple[int, int]:
        c = client(redis_url)
        limiter = RedisRateLimiter(c, budget_s=1)
        await limiter.check(plan(caller(), "write", RateLimitProfile(max_concurrent=5)), "r")
        during = clients()
        await c.aclose()  # as the tests and the app's shutdown do: the pool's connections
        await asyncio.sleep(0.05)
        return during, clients()

    before = clients()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        during, after = run(scenario)
    sync.close()
    assert during == before + 1  # one connection: the pipe's
    assert after == before


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_tls_url_over_asyncio_s_and_uvloop_s_ssl_transports(tmp_path: Path, loop: str) -> None:
    """``rediss://``: redis-py's TLS handshake, then the pipe on its TLS transport (the
    gateway serves on uvloop, whose SSL transport is its own)."""
    cert, key = self_signed(tmp_path)
    tls = free_port()
    tls_args = ["--tls-port", str(tls), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    tls_args += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    with redis_process(*tls_args) as (port, _):
        wait_for_port(tls)
        url = f"rediss://127.0.0.1:{tls}/2?ssl_ca_certs={cert}"

        async def scenario() -> Any:
            c = client(url)
            assert usable(c)
            pipe = ScriptPipe(c, ECHO)
            try:
                return await asyncio.gather(
                    call(pipe, "over tls", keys=("gw:tls",)), call(pipe, "and again")
                )
            finally:
                await pipe.aclose(1)
                await c.aclose()

        replies = uvloop.run(scenario()) if loop == "uvloop" else run(scenario)
        assert replies == [b"over tls", b"and again"]
        assert redis.Redis(port=port, db=2).get("gw:tls") == b"over tls"


def test_a_call_issued_while_another_is_held_up_goes_on_another_connection(
    redis_server: RedisServer, redis_url: str
) -> None:
    """Every reply is held 50 ms on its way back: the calls issued meanwhile go each on a
    connection with none in flight (not queued behind the held one), and once all are
    answered the first connection carries the next call again."""
    profile = RateLimitProfile(per_caller={"write": Rate(100, 3600, 100)})
    p = plan(caller(), "write", profile)

    async def scenario(url: str) -> tuple[list[int], list[int], list[int]]:
        c = client(url, timeout=2)
        limiter = RedisRateLimiter(c, budget_s=1)
        try:

            async def later(i: int) -> int:
                await asyncio.sleep(0.01 * i)  # one iteration each, the others in flight
                return (await limiter.check(p, str(i))).rules[0].remaining

            remaining = list(await asyncio.gather(*(later(i) for i in range(3))))
            calls = [pipe.connects_total for pipe in limiter.batch.pipes]
            await limiter.check(p, "last")
            after = [pipe.connects_total for pipe in limiter.batch.pipes]
            return sorted(remaining), calls, after
        finally:
            await limiter.aclose()
            await c.aclose()

    with delay_proxy(redis_server.port, delay_s=0.05, chance=1.0) as proxy:
        remaining, connects, after = run(lambda: scenario(proxy.url))
    assert remaining == [97, 98, 99]
    assert connects == [1, 1, 1, 0]
    assert after == connects  # the first connection, idle again, took the last call
