"""Rate limiting end to end: real gateway servers (in-process uvicorn and ``gateway serve``
children), a real Redis, the recording fake Azure, and the openai SDK. Nothing is mocked.

Budgets use ``per_seconds = SLOW`` where refill must not matter during a test, so a burst of
``L`` means exactly ``L`` admissions (see ``gateway/ratelimit.py`` for the GCRA semantics).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.fakeazure import ScriptedResponse
from tests.gatewayproc import GatewayProcess, gateway_processes, write_config
from tests.rawhttp import build_request
from tests.servers import RedisServer, private_redis
from tests.stack import V2, Stack, base_config, deep_merge, running_stack

SLOW = 3600  # per_seconds: refill is negligible within a test
THREADS = "/openai/threads"
Q = {"api-version": V2}
MARGIN = 0.5  # scheduling slack on top of the limiter's budget (hosts can be busy)


def rate(requests: int, per_seconds: float, burst: int) -> dict[str, Any]:
    return {"requests": requests, "per_seconds": per_seconds, "burst": burst}


def profiles(**named: dict[str, Any]) -> dict[str, Any]:
    """Overrides giving namespace ``<name>`` the profile ``<name>`` with these rate limits."""
    return {
        "auth": {"callers": [{"profile": name, "namespaces": [name]} for name in named]},
        "profiles": {
            name: {"operations": ["*"], "rate_limit": limits} for name, limits in named.items()
        },
    }


#: One profile (and namespace) per concern, so the tests sharing this layout stay independent.
LAYOUT = profiles(
    shape={"per_caller": {"write": rate(3, SLOW, 3)}},
    # One request a second: long enough that loaded-host round trips (~0.2 s seen) stay well
    # inside one emission interval, and longer than the SDK's own first backoff (<= 0.5 s).
    paced={"per_caller": {"write": rate(1, 1, 1)}},
    team={
        "per_caller": {"write": rate(2, SLOW, 2), "read": rate(100, 60, 100)},
        "per_tenant": {"write": rate(3, SLOW, 3)},
    },
    conc={"max_concurrent": 2},
)
# Tenants are namespaces: "team" and "other" get the same profile but separate tenant budgets.
LAYOUT["auth"]["callers"].insert(0, {"profile": "team", "namespaces": ["other"]})


@pytest.fixture
def rl(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    """A gateway with rate limiting on (fresh Redis db); upstream reads time out after 1 s."""
    overrides = deep_merge(LAYOUT, {"upstream": {"read_timeout_s": 1}})
    with running_stack(tmp_path, redis_url=redis_url, overrides=overrides) as stack:
        yield stack


# -- helpers ------------------------------------------------------------------------------

_SF_ITEM = re.compile(r'"((?:[^"\\]|\\.)*)"((?:;[a-z*][a-z0-9_.*-]*=-?[0-9]+)*)')
_SF_PARAM = re.compile(r";([a-z*][a-z0-9_.*-]*)=(-?[0-9]+)")


def sf_item(value: str) -> tuple[str, dict[str, int]]:
    """An RFC 8941 list holding one string item with integer parameters (the draft's form)."""
    match = _SF_ITEM.fullmatch(value.strip())
    assert match, f"not a structured-field string item: {value!r}"
    return match.group(1), {k: int(v) for k, v in _SF_PARAM.findall(match.group(2))}


def create(client: httpx.Client, **headers: str) -> httpx.Response:
    return client.post(THREADS, params=Q, json={}, headers=headers)


def assert_azure_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "param", "type"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


def assert_refusal_hints(response: httpx.Response) -> int:
    """Retry-After (integer seconds >= 1), retry-after-ms, x-should-retry; returns the ms."""
    seconds, ms = response.headers["retry-after"], response.headers["retry-after-ms"]
    assert seconds.isdigit() and int(seconds) >= 1
    assert ms.isdigit() and int(ms) >= 1
    assert int(seconds) == max(1, -(-int(ms) // 1000))  # ceil, never earlier than the ms
    assert response.headers["x-should-retry"] == "true"
    return int(ms)


def no_gateway_limit_headers(response: httpx.Response) -> bool:
    names = {k.lower() for k in response.headers}
    return not names & {
        "ratelimit",
        "ratelimit-policy",
        "x-ratelimit-limit-requests",
        "x-ratelimit-reset-requests",
    }


def eventually(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def held_leases(redis_url: str) -> int:
    """Concurrency slots held in Redis right now (members of every lease ZSET)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(int(client.zcard(key)) for key in client.scan_iter("gw:rl:*:cc:*"))
    finally:
        client.close()


def slow_body(chunks: int, delay: float = 0.3) -> ScriptedResponse:
    return ScriptedResponse(
        chunks=(b'{"part":0}',) + (b" ",) * (chunks - 1),
        chunk_delay_s=delay,
        headers=(("content-type", "application/json"),),
    )


def get_fully(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    with httpx.Client(timeout=15) as client:
        response = client.get(url, params=Q, headers=headers)
        return response.status_code, response.content


# -- 1. exactness across replicas ---------------------------------------------------------


def test_three_gateway_processes_admit_exactly_the_burst(tmp_path: Path, redis_url: str) -> None:
    burst, total = 20, 60
    # A generous budget: 60 cold requests on a small shared host can stall an event loop past
    # the default 0.25 s, and fail-open would then admit unchecked (that policy is tested below).
    overrides = deep_merge(
        profiles(burst={"per_caller": {"write": rate(burst, SLOW, burst)}}),
        {
            "rate_limit": {"budget_s": 2.0},
            "redis": {"socket_timeout_s": 2.0, "connect_timeout_s": 2.0},
        },
    )
    with running_stack(tmp_path, redis_url=redis_url, overrides=overrides) as stack:
        config = deep_merge(
            base_config(stack.upstream_url, str(tmp_path / "jwks.json"), redis_url), overrides
        )
        with gateway_processes(
            config, tmp_path, 3, api_key=stack.api_key, redis_url=redis_url
        ) as procs:
            headers = stack.auth(namespace="burst", sa="app")

            async def fire() -> list[httpx.Response]:
                limits = httpx.Limits(max_connections=total, max_keepalive_connections=0)
                async with httpx.AsyncClient(timeout=15, limits=limits) as client:
                    return await asyncio.gather(
                        *(
                            client.post(
                                f"{procs[i % 3].url}{THREADS}", params=Q, json={}, headers=headers
                            )
                            for i in range(total)
                        )
                    )

            responses = asyncio.run(fire())
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: burst, 429: total - burst}
    for refused in (r for r in responses if r.status_code == 429):
        assert_azure_error(refused, 429, "rate_limit_exceeded")
        assert_refusal_hints(refused)
    # Every admission saw its own state: the remaining counts are exactly burst-1 .. 0.
    remaining = sorted(
        int(r.headers["x-ratelimit-remaining-requests"]) for r in responses if r.status_code == 200
    )
    assert remaining == list(range(burst))
    reached = [r for r in stack.fake.requests if r.method == "POST" and r.path == THREADS]
    assert len(reached) == len(stack.fake.requests) == burst


# -- 2. the 429 and the headers, seen raw and through the SDK -----------------------------


def test_refusal_shape_and_limit_headers(rl: Stack) -> None:
    remaining = []
    with httpx.Client(base_url=rl.url, headers=rl.auth(namespace="shape"), timeout=5) as client:
        for _ in range(3):
            ok = create(client)
            assert ok.status_code == 200
            name, policy = sf_item(ok.headers["ratelimit-policy"])
            assert (name, policy) == ("caller-write", {"q": 3, "w": SLOW})
            name, state = sf_item(ok.headers["ratelimit"])
            assert name == "caller-write" and state["t"] >= 0
            # Exactly one value: the gateway's own, not also Azure's deployment-wide count.
            assert ok.headers.get_list("x-ratelimit-remaining-requests") == [str(state["r"])]
            assert ok.headers["x-ratelimit-limit-requests"] == "3"
            remaining.append(state["r"])
        assert remaining == [2, 1, 0]
        refused = create(client)
    assert_azure_error(refused, 429, "rate_limit_exceeded")
    assert refused.json()["error"]["type"] == "rate_limit_error"
    ms = assert_refusal_hints(refused)
    assert ms > 1000 * (SLOW / 3 - 60)  # the next token is ~1200 s away
    name, state = sf_item(refused.headers["ratelimit"])
    assert name == "caller-write" and state["r"] == 0
    assert int(refused.headers["retry-after"]) >= state["t"]
    assert len(rl.fake.requests) == 3

    with (
        openai.AzureOpenAI(
            azure_endpoint=rl.url,
            api_version=V2,
            max_retries=0,
            azure_ad_token=rl.token(namespace="shape"),
        ) as sdk,
        pytest.raises(openai.RateLimitError) as err,
    ):
        sdk.beta.threads.create()
    assert err.value.code == "rate_limit_exceeded"
    assert err.value.response.headers["retry-after-ms"]
    assert len(rl.fake.requests) == 3


def test_sdk_retry_honours_retry_after_ms(rl: Stack) -> None:
    with openai.AzureOpenAI(
        azure_endpoint=rl.url,
        api_version=V2,
        max_retries=2,
        azure_ad_token=rl.token(namespace="paced"),
    ) as sdk:
        sdk.beta.threads.create()  # takes the one-request burst; the next fits 1 s later
        started = time.monotonic()
        raw = sdk.beta.threads.with_raw_response.create()
        elapsed = time.monotonic() - started
    # One retry: the SDK slept the advertised retry-after-ms. Its own backoff (0.375-0.5 s,
    # then 0.75-1 s) would have retried too early and needed a second retry, or failed.
    assert raw.retries_taken == 1
    assert raw.parse().id.startswith("thread_")
    assert 0.3 < elapsed < 3
    assert len(rl.fake.requests) == 2


# -- 3. Retry-After is exact -------------------------------------------------------------


def test_request_after_retry_after_ms_is_admitted_and_one_before_is_not(rl: Stack) -> None:
    with httpx.Client(base_url=rl.url, headers=rl.auth(namespace="paced"), timeout=5) as client:
        assert create(client).status_code == 200
        for _ in range(2):
            refused = create(client)
            assert_azure_error(refused, 429, "rate_limit_exceeded")
            first_ms = assert_refusal_hints(refused)
            assert 0 < first_ms <= 1000  # 1/s, burst 1: one request a second
            time.sleep(first_ms / 2000)  # well before the advertised time
            early = create(client)
            assert early.status_code == 429
            wait_ms = assert_refusal_hints(early)
            assert wait_ms <= first_ms - first_ms // 2
            time.sleep(wait_ms / 1000)  # exactly the advertised wait, no slack added
            assert create(client).status_code == 200
    assert len(rl.fake.requests) == 3


# -- 4. separate budgets ------------------------------------------------------------------


def test_budgets_are_per_operation_class_and_per_tenant(rl: Stack) -> None:
    def client(namespace: str, sa: str) -> httpx.Client:
        return httpx.Client(base_url=rl.url, headers=rl.auth(namespace=namespace, sa=sa), timeout=5)

    with (
        client("team", "app1") as app1,
        client("team", "app2") as app2,
        client("other", "app1") as elsewhere,
    ):
        first = create(app1)
        assert first.status_code == 200
        assert create(app1).status_code == 200
        refused = create(app1)
        assert_azure_error(refused, 429, "rate_limit_exceeded")
        assert sf_item(refused.headers["ratelimit-policy"])[0] == "caller-write"
        # Writes are exhausted; reads have their own budget.
        read = app1.get(f"{THREADS}/{first.json()['id']}", params=Q)
        assert read.status_code == 200
        assert sf_item(read.headers["ratelimit-policy"]) == ("caller-read", {"q": 100, "w": 60})
        assert sf_item(read.headers["ratelimit"])[1]["r"] == 99
        # The tenant's third write is app2's; the refused request above consumed nothing.
        shared = create(app2)
        assert shared.status_code == 200
        assert sf_item(shared.headers["ratelimit"]) == ("tenant-write", {"r": 0, "t": SLOW // 3})
        tenant_refused = create(app2)
        assert_azure_error(tenant_refused, 429, "rate_limit_exceeded")
        assert sf_item(tenant_refused.headers["ratelimit-policy"])[0] == "tenant-write"
        # Another namespace is another tenant: unaffected.
        assert [create(elsewhere).status_code for _ in range(2)] == [200, 200]
    assert len(rl.fake.requests) == 6


# -- 5. Redis failure through the gateway -------------------------------------------------


@contextlib.contextmanager
def stopped(server: RedisServer) -> Iterator[None]:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
def test_redis_stopped_applies_the_failure_policy_within_budget(
    tmp_path: Path, fail_mode: str
) -> None:
    budget = 0.1
    overrides = deep_merge(
        profiles(team={"per_caller": {"write": rate(100, 60, 100)}, "max_concurrent": 10}),
        {
            "rate_limit": {"fail_mode": fail_mode, "budget_s": budget},
            "redis": {"socket_timeout_s": budget, "connect_timeout_s": budget},
        },
    )
    with (
        private_redis() as server,
        running_stack(tmp_path, redis_url=server.url, overrides=overrides) as stack,
        httpx.Client(base_url=stack.url, headers=stack.auth(namespace="team"), timeout=5) as client,
    ):
        healthy = create(client)
        assert healthy.status_code == 200 and healthy.headers["ratelimit-policy"]
        assert client.get("/readyz").status_code == 200
        with stopped(server):
            for _ in range(3):
                started = time.monotonic()
                response = create(client)
                elapsed = time.monotonic() - started
                assert elapsed < budget + MARGIN
                if fail_mode == "open":
                    assert response.status_code == 200
                    assert no_gateway_limit_headers(response)
                else:
                    error = assert_azure_error(response, 503, "rate_limiter_unavailable")
                    assert error["type"] == "server_error"
                    assert response.headers["retry-after"] == "1"
            started = time.monotonic()
            ready = client.get("/readyz")
            assert time.monotonic() - started < budget + MARGIN
            assert ready.status_code == (200 if fail_mode == "open" else 503)
            assert ready.json()["checks"]["redis"] == "unavailable"
        assert len(stack.fake.requests) == (4 if fail_mode == "open" else 1)

        def recovered() -> bool:
            response = create(client)
            return response.status_code == 200 and "ratelimit-policy" in response.headers

        assert eventually(recovered, timeout=3, interval=0.1)
        assert client.get("/readyz").status_code == 200


def test_redis_stopped_with_local_fallback_keeps_a_per_replica_share(tmp_path: Path) -> None:
    """fail_mode = "local": while Redis is stopped each replica decides alone on its share
    (burst 6 over 2 replicas: 3), refusing beyond it with an honest Retry-After. The share
    starts from what Redis last said: 1 of 6 spent there is 1/6 of the local share spent."""
    budget = 0.1
    overrides = deep_merge(
        profiles(team={"per_caller": {"write": rate(60, SLOW, 6)}}),
        {
            "rate_limit": {"fail_mode": "local", "replicas": 2, "budget_s": budget},
            "redis": {"socket_timeout_s": budget, "connect_timeout_s": budget},
        },
    )
    with (
        private_redis() as server,
        running_stack(tmp_path, redis_url=server.url, overrides=overrides) as stack,
        httpx.Client(base_url=stack.url, headers=stack.auth(namespace="team"), timeout=5) as client,
    ):
        assert create(client).status_code == 200  # Redis decides: 5 left in the fleet
        with stopped(server):
            statuses = [create(client) for _ in range(5)]
            assert [r.status_code for r in statuses] == [200, 200, 429, 429, 429]
            assert all(no_gateway_limit_headers(r) for r in statuses[:2])
            refused = assert_azure_error(statuses[2], 429, "rate_limit_exceeded")
            assert refused["type"] == "rate_limit_error"
            assert int(statuses[2].headers["retry-after"]) >= 1
            assert client.get("/readyz").status_code == 200  # degraded, still serving
        # Redis is back: it decides again, from its own (shared) state.
        deadline = time.monotonic() + 5
        while (back := create(client)).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert back.headers["ratelimit-policy"]
        assert len(stack.fake.requests) == 4, [(r.method, r.path) for r in stack.fake.requests]


# -- 6. concurrency slots -----------------------------------------------------------------


def test_concurrency_slots_are_released_whatever_ends_the_request(
    rl: Stack, redis_url: str
) -> None:
    auth = rl.auth(namespace="conc")
    url = f"{rl.url}{THREADS}/thread_slow"

    def admitted() -> bool:
        with httpx.Client(base_url=rl.url, headers=auth, timeout=5) as client:
            return create(client).status_code == 200

    def released_and_admitted() -> None:
        # The release follows the last body byte; a leaked slot would stay for lease_ttl_s (30).
        assert eventually(lambda: held_leases(redis_url) == 0, timeout=2)
        assert admitted()
        assert eventually(lambda: held_leases(redis_url) == 0, timeout=2)

    with ThreadPoolExecutor(max_workers=2) as pool:
        # Two slow requests hold both slots; a third is refused without reaching Azure.
        rl.fake.script(slow_body(4), count=2)
        slow = [pool.submit(get_fully, url, auth) for _ in range(2)]
        assert rl.fake.wait_for_requests(2, timeout=5)
        assert held_leases(redis_url) == 2
        with httpx.Client(base_url=rl.url, headers=auth, timeout=5) as client:
            third = client.get(f"{THREADS}/thread_slow", params=Q)
        assert_azure_error(third, 429, "concurrency_limit_exceeded")
        assert assert_refusal_hints(third) <= 1000
        assert len(rl.fake.requests) == 2
        assert [f.result(timeout=10) for f in slow] == [(200, b'{"part":0}   ')] * 2
        released_and_admitted()

        # Upstream errors.
        rl.fake.script(
            ScriptedResponse(status=500, chunks=(b'{"error":{"code":"boom"}}',)), count=2
        )
        assert [s for s, _ in pool.map(lambda _: get_fully(url, auth), range(2))] == [500, 500]
        released_and_admitted()

        # Upstream timeouts (read_timeout_s = 1, headers after 3 s).
        rl.fake.script(ScriptedResponse(delay_headers_s=3, chunks=(b"{}",)), count=2)
        statuses = list(pool.map(lambda _: get_fully(url, auth), range(2)))
        assert [s for s, _ in statuses] == [504, 504]
        released_and_admitted()

    # Client disconnects mid-body (raw sockets closed after the first bytes).
    rl.fake.script(slow_body(20), count=2)
    before = len(rl.fake.requests)
    request = build_request("GET", f"{THREADS}/thread_slow?api-version={V2}", auth)
    port = int(rl.url.rsplit(":", 1)[1])
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    try:
        for sock in socks:
            sock.sendall(request)
        for sock in socks:
            data = b""
            while b'{"part":0}' not in data:
                chunk = sock.recv(4096)
                assert chunk, f"connection closed before the body started: {data!r}"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")
        assert held_leases(redis_url) == 2
    finally:
        for sock in socks:
            sock.close()
    released_and_admitted()
    cut = rl.fake.requests[before : before + 2]
    assert all(r.outcome.closed_early.wait(5) for r in cut)


def test_a_killed_gateways_slot_expires_after_the_lease_ttl(tmp_path: Path, redis_url: str) -> None:
    ttl = 2.0
    overrides = deep_merge(
        profiles(conc={"max_concurrent": 1}), {"rate_limit": {"lease_ttl_s": ttl}}
    )
    with running_stack(tmp_path, redis_url=redis_url, overrides=overrides) as stack:
        config = deep_merge(
            base_config(stack.upstream_url, str(tmp_path / "jwks.json"), redis_url), overrides
        )
        doomed = GatewayProcess(
            write_config(config, tmp_path / "gateway.toml"),
            api_key=stack.api_key,
            redis_url=redis_url,
        )
        auth = stack.auth(namespace="conc")
        client = httpx.Client(base_url=stack.url, headers=auth, timeout=5)
        try:
            doomed.start()
            doomed.wait_ready()
            stack.fake.script(slow_body(40))  # ~12 s: far longer than the test waits
            with ThreadPoolExecutor(max_workers=1) as pool:
                holder = pool.submit(get_fully, f"{doomed.url}{THREADS}/thread_slow", auth)
                assert stack.fake.wait_for_requests(1, timeout=5)
                # The live replica renews its lease: still held after more than one TTL.
                time.sleep(ttl + 0.5)
                assert_azure_error(create(client), 429, "concurrency_limit_exceeded")
                doomed.kill()
                killed = time.monotonic()
                with pytest.raises(httpx.TransportError):
                    holder.result(timeout=5)
            left_us = lease_time_left_us(redis_url)
            assert 0 < left_us <= ttl * 1_000_000
            refused = create(client)
            assert_azure_error(refused, 429, "concurrency_limit_exceeded")
            assert assert_refusal_hints(refused) <= 1000
            assert eventually(
                lambda: create(client).status_code == 200, timeout=ttl + 1, interval=0.1
            )
            assert time.monotonic() - killed >= left_us / 1_000_000 - 0.3
        finally:
            client.close()
            doomed.kill()
    assert held_leases(redis_url) == 0


def lease_time_left_us(redis_url: str) -> int:
    """Microseconds until the one held lease expires, on Redis's own clock."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter("gw:rl:*:cc:*"))
        assert len(keys) == 1
        members = client.zrange(keys[0], 0, -1, withscores=True)
        assert len(members) == 1
        seconds, micros = client.time()
        return int(members[0][1]) - (seconds * 1_000_000 + micros)
    finally:
        client.close()


def test_shadow_mode_counts_but_never_refuses(tmp_path: Path, redis_url: str) -> None:
    overrides = {
        "rate_limit": {"shadow": True},
        "profiles": {
            "writer": {
                "rate_limit": {
                    "per_caller": {"write": {"requests": 1, "per_seconds": 3600, "burst": 2}}
                }
            }
        },
    }
    with running_stack(tmp_path, redis_url=redis_url, overrides=overrides) as stack:
        statuses = [
            httpx.post(
                f"{stack.url}/openai/threads",
                params={"api-version": V2},
                json={},
                headers=stack.auth(),
            ).status_code
            for _ in range(5)
        ]
        assert statuses == [200] * 5
        assert len(stack.fake.requests) == 5
        assert stack.gateway.metrics is not None
        shadow_refusals = stack.gateway.metrics.registry.get_sample_value(
            "gateway_ratelimit_decisions_total", {"result": "shadow"}
        )
        assert shadow_refusals == 3
