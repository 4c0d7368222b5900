"""The README's Redis ACL user runs the whole gateway (issue 12, item 5).

A private ``redis-server`` gets the README's own ``ACL SETUSER`` line (read from README.md,
so the advice and the test cannot drift); the gateway connects as that user and goes through
everything that touches Redis: the limiter script (allowed, rate-refused, concurrency-refused),
a slot renewed by a long response and released, ``NOSCRIPT`` after a script flush, thread
ownership recorded, looked up and deleted, and readiness. Redis's ``ACL LOG`` must stay empty.
A user restricted the way the README used to advise, or a wrong password, makes ``/readyz``
answer 503 with the dependency ``refused`` and its gauge 0.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.fakeazure import ScriptedResponse
from tests.servers import RedisServer, private_redis, private_redis_cluster
from tests.stack import V2, Stack, deep_merge, running_stack

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "acl-test-password"
THREADS = "/openai/threads"
Q = {"api-version": V2}
#: What the README advised before: these commands, and nothing else.
OLD_ADVICE = "ACL SETUSER gateway reset on >PASSWORD ~gw:* +evalsha +eval +script +ping"


def readme_acl_line() -> str:
    """The one ``ACL SETUSER gateway …`` line of README.md."""
    lines = [
        line.strip()
        for line in (ROOT / "README.md").read_text().splitlines()
        if re.match(r"\s*ACL SETUSER gateway ", line)
    ]
    assert len(lines) == 1, f"README.md must give exactly one ACL SETUSER line: {lines}"
    return lines[0]


def apply_acl(server: RedisServer, line: str) -> None:
    words = shlex.split(line.replace(">PASSWORD", f">{PASSWORD}"))
    assert words[:3] == ["ACL", "SETUSER", "gateway"], words
    admin = redis.Redis(host=server.host, port=server.port)
    try:
        assert admin.execute_command(*words) in (b"OK", "OK", True)
        admin.execute_command("ACL", "LOG", "RESET")
    finally:
        admin.close()


def acl_log(server: RedisServer) -> list[Any]:
    admin = redis.Redis(host=server.host, port=server.port)
    try:
        return list(admin.execute_command("ACL", "LOG"))
    finally:
        admin.close()


def user_url(server: RedisServer, password: str = PASSWORD) -> str:
    return f"redis://gateway:{password}@{server.host}:{server.port}/0"


def overrides(fail_mode: str = "closed") -> dict[str, Any]:
    # closed: any refused limiter call would surface as a 503 instead of a local decision.
    return {
        "auth": {"callers": [{"profile": "acl", "namespaces": ["team-a", "team-b"]}]},
        "profiles": {
            "acl": {
                "operations": ["*"],
                "rate_limit": {
                    "per_caller": {
                        "write": {"requests": 3, "per_seconds": 3600, "burst": 3},
                        "read": {"requests": 100, "per_seconds": 60, "burst": 100},
                    },
                    "max_concurrent": 1,
                },
            }
        },
        "rate_limit": {"fail_mode": fail_mode, "lease_ttl_s": 3, "budget_s": 1.0},
        "redis": {"socket_timeout_s": 1.0, "connect_timeout_s": 1.0},
        "threads": {"ownership": True, "unknown": "deny"},
    }


@pytest.fixture
def acl_redis() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


def gauge(stack: Stack, dependency: str) -> float | None:
    assert stack.gateway.metrics is not None
    return stack.gateway.metrics.registry.get_sample_value(
        "gateway_dependency_up", {"dependency": dependency}
    )


def test_the_readme_acl_user_runs_everything_the_gateway_sends(
    tmp_path: Path, acl_redis: RedisServer
) -> None:
    apply_acl(acl_redis, readme_acl_line())
    with running_stack(tmp_path, redis_url=user_url(acl_redis), overrides=overrides()) as stack:
        base = httpx.Client(base_url=stack.url, timeout=10)
        ready = base.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert {
            k: ready.json()["checks"][k] for k in ("rate_limiter", "ownership_store", "redis")
        } == dict.fromkeys(("rate_limiter", "ownership_store", "redis"), "ok")
        a = stack.auth(namespace="team-a")
        created = base.post(THREADS, params=Q, json={}, headers=a)
        assert created.status_code == 200, created.text
        assert created.headers["ratelimit-policy"]
        thread = created.json()["id"]
        # Ownership recorded and read back (GET: the record is not in the process's cache
        # yet), and enforced against another tenant.
        assert base.get(f"{THREADS}/{thread}", params=Q, headers=a).status_code == 200
        other = base.get(f"{THREADS}/{thread}", params=Q, headers=stack.auth(namespace="team-b"))
        assert other.status_code == 404
        # A long response holds the one slot past a renew (lease TTL 3 s: renewed every 1 s);
        # a second request meanwhile is refused by the full slot set (ZRANGE).
        stack.fake.script(
            ScriptedResponse(
                chunks=(b'{"a":1}',) + (b" ",) * 6,
                chunk_delay_s=0.25,
                headers=(("content-type", "application/json"),),
            )
        )
        with ThreadPoolExecutor(max_workers=1) as pool:
            slow = pool.submit(
                lambda: httpx.get(
                    f"{stack.url}{THREADS}/{thread}/messages", params=Q, headers=a, timeout=10
                )
            )
            assert stack.fake.wait_for_requests(3, timeout=5)
            refused = base.get(f"{THREADS}/{thread}", params=Q, headers=a)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "concurrency_limit_exceeded"
            assert slow.result(timeout=10).status_code == 200
        # Redis loses its scripts: the next call loads them again (NOSCRIPT, SCRIPT LOAD).
        admin = redis.Redis(host=acl_redis.host, port=acl_redis.port)
        try:
            admin.script_flush()
            deadline = time.monotonic() + 5
            while (
                admin.zcard(next(iter(admin.scan_iter("gw:rl:*:cc:*")), "none"))
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)  # the slow request's slot is released (ZREM)
            second = base.post(THREADS, params=Q, json={}, headers=a)
            assert second.status_code == 200, (second.text, dict(second.headers))
            assert second.headers["x-ratelimit-remaining-requests"] == "1"
            deleted = base.delete(f"{THREADS}/{thread}", params=Q, headers=a)  # the third write
            assert deleted.status_code == 200
            assert not admin.exists(f"gw:own:{{{thread}}}")
            limited = base.post(THREADS, params=Q, json={}, headers=a)
            assert limited.status_code == 429
            assert limited.json()["error"]["code"] == "rate_limit_exceeded"
            # The gateway really was that user.
            users = {c.get("user") for c in admin.client_list()} - {"default"}
            assert users == {"gateway"}
        finally:
            admin.close()
        assert base.get("/readyz").status_code == 200
        assert gauge(stack, "rate_limiter") == 1
        assert gauge(stack, "ownership_store") == 1
        base.close()
    assert acl_log(acl_redis) == []


@pytest.mark.parametrize(
    ("acl", "fail_mode"), [("old advice", "open"), ("old advice", "closed"), ("other keys", "open")]
)
def test_a_user_restricted_as_the_readme_used_to_say_is_not_ready(
    tmp_path: Path, acl_redis: RedisServer, acl: str, fail_mode: str
) -> None:
    """The old advice lacks the scripts' commands and GET/SET/DEL; "other keys" is the
    README's line with a key pattern that does not cover ``gw:*``."""
    line = OLD_ADVICE if acl == "old advice" else readme_acl_line().replace("~gw:*", "~app:*")
    apply_acl(acl_redis, line)
    with running_stack(
        tmp_path, redis_url=user_url(acl_redis), overrides=overrides(fail_mode)
    ) as stack:
        ready = httpx.get(f"{stack.url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        checks = ready.json()["checks"]
        assert checks["rate_limiter"] == "refused"  # the scripts' commands are not allowed
        assert checks["ownership_store"] == "refused"
        assert checks["redis"] == "refused"
        assert gauge(stack, "rate_limiter") == 0
        assert gauge(stack, "ownership_store") == 0
        assert stack.gateway.metrics is not None
        refused = stack.gateway.metrics.registry.get_sample_value(
            "gateway_redis_errors_total", {"kind": "refused"}
        )
        assert refused is not None and refused >= 1
    assert acl_log(acl_redis)  # Redis saw the refused commands


def test_a_wrong_password_is_not_ready(tmp_path: Path, acl_redis: RedisServer) -> None:
    apply_acl(acl_redis, readme_acl_line())
    with running_stack(
        tmp_path,
        redis_url=user_url(acl_redis, "wrong"),
        overrides=deep_merge(overrides("open"), {}),
    ) as stack:
        ready = httpx.get(f"{stack.url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["rate_limiter"] == "refused"
        assert ready.json()["checks"]["ownership_store"] == "refused"


CLUSTER_EXTRA = "+cluster|slots +command"


def test_the_readme_acl_user_on_a_redis_cluster(tmp_path: Path) -> None:
    """On Redis Cluster the README's line plus its cluster addition (slot and key
    discovery), on every node."""
    readme = (ROOT / "README.md").read_text()
    assert f"`{CLUSTER_EXTRA}`" in readme
    with private_redis_cluster() as nodes:
        for node in nodes:
            apply_acl(node, f"{readme_acl_line()} {CLUSTER_EXTRA}")
        cluster = {
            "redis": {"cluster": True},
            "rate_limit": {"global": {"requests": 5, "per_seconds": 3600, "burst": 5}},
        }
        with (
            running_stack(
                tmp_path, redis_url=user_url(nodes[0]), overrides=deep_merge(overrides(), cluster)
            ) as stack,
            httpx.Client(base_url=stack.url, timeout=10) as client,
        ):
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
            a = stack.auth(namespace="team-a")
            created = client.post(THREADS, params=Q, json={}, headers=a)
            assert created.status_code == 200, created.text
            thread = created.json()["id"]
            assert client.get(f"{THREADS}/{thread}", params=Q, headers=a).status_code == 200
            assert (
                client.get(
                    f"{THREADS}/{thread}", params=Q, headers=stack.auth(namespace="team-b")
                ).status_code
                == 404
            )
            assert client.delete(f"{THREADS}/{thread}", params=Q, headers=a).status_code == 200
            assert client.get("/readyz").status_code == 200
        assert all(acl_log(node) == [] for node in nodes)
