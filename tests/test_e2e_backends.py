"""Several Azure resources (issue 16, item 2): two fake Azures on loopback with distinct keys,
a real gateway (uvicorn) in front, a private Redis, and the stock ``openai`` SDK.

Nothing is mocked: each fake Azure records what reached it, so "went to A" is read from A's
own record of requests; breaker states and counts are read from the gateway's registry.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.app import Gateway, build
from gateway.config import Config, parse
from gateway.ownership.rules import owner_key
from gateway.upstream.credentials import ApiKeySource
from tests.fakeazure import FakeAzure, ScriptedResponse
from tests.servers import ThreadedUvicorn, free_port
from tests.stack import PUBLIC_JWK, V2, base_config, deep_merge, make_token

pytestmark = [
    pytest.mark.timeout(60),
    # The SDK marks its Assistants methods deprecated (the API Azure serves them for).
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
]
Q = {"api-version": V2}


@dataclass
class Two:
    a: FakeAzure
    b: FakeAzure
    gateway: Gateway
    url: str
    config: Config
    key_files: dict[str, Path]
    redis_url: str

    def auth(self, namespace: str = "team-a") -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(namespace)}", "Accept-Encoding": "identity"}

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.url}/openai/{path}", params=Q, json=body or {}, headers=self.auth(), timeout=10
        )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}/openai/{path}", params=Q, headers=self.auth(), timeout=10)

    def thread(self) -> str:
        response = self.post("threads")
        assert response.status_code == 200, response.text
        thread_id: str = response.json()["id"]
        return thread_id

    def sdk(self) -> openai.AzureOpenAI:
        return openai.AzureOpenAI(
            azure_endpoint=self.url,
            api_version=V2,
            max_retries=0,
            azure_ad_token=make_token("team-a"),
        )

    def state(self, backend: str) -> float | None:
        return self.sample("gateway_upstream_backend_state", backend=backend)

    def sample(self, name: str, **labels: str) -> float | None:
        assert self.gateway.metrics is not None
        return self.gateway.metrics.registry.get_sample_value(name, labels)


def alternate() -> Callable[[], float]:
    """Draws for equal weights: A, B, A, B, ..."""
    draws = iter([0.0, 0.99] * 100)
    return lambda: next(draws)


def creates(fake: FakeAzure, path: str = "/openai/threads") -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path == path)


def reached(fake: FakeAzure, object_id: str) -> int:
    return sum(1 for r in fake.requests if object_id in r.path)


def start_gateway(config: Config, draw: Callable[[], float] | None = None) -> Gateway:
    """Every backend's credential built from the config (``make_credential``), as served."""
    return build(config, environ={}, draw=draw)


@contextlib.contextmanager
def two_backends(
    tmp: Path,
    redis_url: str,
    *,
    a: dict[str, Any] | None = None,
    b: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    a_endpoint: str | None = None,
    draw: Callable[[], float] | None = None,
) -> Iterator[Two]:
    keys = {"a": secrets.token_urlsafe(24), "b": secrets.token_urlsafe(24)}
    fakes = {name: FakeAzure(key) for name, key in keys.items()}
    jwks_file = tmp / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    key_files = {}
    for name, key in keys.items():
        key_files[name] = tmp / f"key-{name}"
        key_files[name].write_text(key)
    with (
        ThreadedUvicorn(fakes["a"].app, lifespan="off") as server_a,
        ThreadedUvicorn(fakes["b"].app, lifespan="off") as server_b,
    ):
        data = base_config(server_a.url, str(jwks_file), redis_url)
        del data["upstream"]["endpoint"]
        data["upstream"]["backends"] = [
            {
                "name": "a",
                "endpoint": a_endpoint or server_a.url,
                "api_key_file": str(key_files["a"]),
                **(a or {}),
            },
            {
                "name": "b",
                "endpoint": server_b.url,
                "api_key_file": str(key_files["b"]),
                **(b or {}),
            },
        ]
        data = deep_merge(
            data,
            {
                "threads": {"ownership": True, "unknown": "deny"},
                "rate_limit": {"enabled": False},
                "upstream": upstream or {},
            },
        )
        config = parse(data)
        gateway = start_gateway(config, draw)
        with ThreadedUvicorn(gateway, http="httptools", server_header=False) as server:
            yield Two(fakes["a"], fakes["b"], gateway, server.url, config, key_files, redis_url)


def test_new_objects_spread_by_weight(tmp_path: Path, redis_url: str) -> None:
    rng = random.Random(20261201)  # noqa: S311 (a weighted spread, not a secret)
    with two_backends(tmp_path, redis_url, a={"weight": 3}, b={"weight": 1}, draw=rng.random) as s:
        homes = {}
        for _ in range(80):
            before = creates(s.a)
            thread_id = s.thread()
            homes[thread_id] = "a" if creates(s.a) > before else "b"
        on_a, on_b = creates(s.a), creates(s.b)
        assert on_a + on_b == 80
        assert 0.6 < on_a / 80 < 0.9, (on_a, on_b)
        # Each thread's later requests go to the backend that made it, and only there.
        for thread_id in list(homes)[:12]:
            assert s.get(f"threads/{thread_id}").status_code == 200
            home, other = (s.a, s.b) if homes[thread_id] == "a" else (s.b, s.a)
            assert reached(home, thread_id) == 1 and reached(other, thread_id) == 0
        assert s.sample("gateway_upstream_backend_requests_total", backend="a", status_class="2xx")


def test_lower_priority_first_the_other_only_as_fallback(tmp_path: Path, redis_url: str) -> None:
    with two_backends(tmp_path, redis_url, a={"priority": 1, "weight": 50}, b={"priority": 0}) as s:
        for _ in range(12):
            s.thread()
        assert (creates(s.a), creates(s.b)) == (0, 12)


def test_affinity_holds_across_a_failover_and_the_sdk_sees_retry_after(
    tmp_path: Path, redis_url: str
) -> None:
    with two_backends(tmp_path, redis_url, b={"priority": 1}) as s, s.sdk() as client:
        assistant = client.beta.assistants.create(model="gpt-4o")
        thread = client.beta.threads.create()
        assert creates(s.a) == 1 and creates(s.b) == 0
        assert creates(s.a, "/openai/assistants") == 1
        s.a.script(
            ScriptedResponse(
                429,
                (("content-type", "application/json"), ("retry-after", "20")),
                (b'{"error":{"code":"429","message":"Rate limit is exceeded."}}',),
            ),
            path_prefix=f"/openai/threads/{thread.id}/messages",
        )
        with pytest.raises(openai.RateLimitError) as limited:
            client.beta.threads.messages.create(thread.id, role="user", content="hi")
        assert limited.value.response.headers["retry-after"] == "20"
        assert s.state("a") == 2.0 and s.state("b") == 0.0
        assert (
            s.sample("gateway_upstream_backend_errors_total", backend="a", reason="throttled") == 1
        )

        # New objects go to B while A is out of rotation ...
        other = client.beta.threads.create()
        assert creates(s.b) == 1 and creates(s.a) == 1
        # ... requests on A's thread still go to A (elsewhere they would 404).
        before_a = len(s.a.requests)
        message = client.beta.threads.messages.create(thread.id, role="user", content="again")
        run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
        listed = client.beta.threads.messages.list(thread.id)
        assert message.id in [m.id for m in listed.data] and run.thread_id == thread.id
        assert len(s.a.requests) >= before_a + 3
        assert reached(s.a, thread.id) >= 4 and reached(s.b, thread.id) == 0

        # A run on B's thread naming A's assistant: the two live apart → 400, nothing sent.
        sent = len(s.a.requests), len(s.b.requests)
        with pytest.raises(openai.BadRequestError) as spans:
            client.beta.threads.runs.create(other.id, assistant_id=assistant.id)
        error = spans.value.body
        assert isinstance(error, dict)
        assert error["code"] == "references_span_backends" and error["param"] == "assistant_id"
        assert (len(s.a.requests), len(s.b.requests)) == sent


def test_5xx_open_the_breaker_then_a_half_open_probe_closes_it(
    tmp_path: Path, redis_url: str
) -> None:
    breaker = {"breaker": {"failures": 2, "cooldown_s": 0.6, "max_cooldown_s": 5}}
    with two_backends(tmp_path, redis_url, b={"priority": 1}, upstream=breaker) as s:
        s.a.script(ScriptedResponse(500, (), (b"{}",)), path_prefix="/openai/threads", count=2)
        assert [s.post("threads").status_code for _ in range(2)] == [500, 500]  # Azure's, relayed
        assert s.state("a") == 2.0
        s.thread()
        assert creates(s.b) == 1
        time.sleep(0.7)
        assert s.state("a") == 1.0  # half-open: the next new object is A's probe
        s.a.script(ScriptedResponse(503, (), (b"{}",)), path_prefix="/openai/threads")
        assert s.post("threads").status_code == 503  # the probe failed: open again, doubled
        assert s.state("a") == 2.0
        s.thread()
        assert creates(s.b) == 2
        time.sleep(1.3)
        probe = s.thread()
        assert reached(s.a, probe) == 0 and creates(s.a) == 4  # the probe went to A and worked
        assert s.state("a") == 0.0
        s.thread()
        assert creates(s.a) == 5 and creates(s.b) == 2
        assert (
            s.sample("gateway_upstream_backend_errors_total", backend="a", reason="server_error")
            == 3
        )


def test_timeouts_open_the_breaker(tmp_path: Path, redis_url: str) -> None:
    upstream = {"read_timeout_s": 0.3, "breaker": {"failures": 2, "cooldown_s": 30}}
    with two_backends(tmp_path, redis_url, b={"priority": 1}, upstream=upstream) as s:
        slow = ScriptedResponse(200, (), (b"{}",), delay_headers_s=1.0)
        s.a.script(slow, path_prefix="/openai/threads", count=2)
        assert [s.post("threads").status_code for _ in range(2)] == [504, 504]
        assert s.state("a") == 2.0
        s.thread()
        assert creates(s.b) == 1
        assert s.sample("gateway_upstream_backend_errors_total", backend="a", reason="timeout") == 2


def test_an_unreachable_backend_is_taken_out_of_rotation(tmp_path: Path, redis_url: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    upstream = {"breaker": {"failures": 2, "cooldown_s": 30}}
    with two_backends(
        tmp_path, redis_url, a_endpoint=closed, b={"priority": 1}, upstream=upstream
    ) as s:
        refused = [s.post("threads") for _ in range(2)]
        assert [r.json()["error"]["code"] for r in refused] == ["upstream_unreachable"] * 2
        s.thread()
        assert creates(s.b) == 1 and s.state("a") == 2.0
        assert (
            s.sample("gateway_upstream_backend_requests_total", backend="a", status_class="none")
            == 2
        )


def test_all_backends_out_of_rotation_is_a_503_and_nothing_is_sent(
    tmp_path: Path, redis_url: str
) -> None:
    with two_backends(tmp_path, redis_url, draw=alternate()) as s:
        a_thread, b_thread = s.thread(), s.thread()  # weights 1:1, draws low then high
        assert (creates(s.a), creates(s.b)) == (1, 1)
        for fake, thread_id, wait in ((s.a, a_thread, "30"), (s.b, b_thread, "45")):
            fake.script(
                ScriptedResponse(429, (("retry-after", wait),), (b"{}",)),
                path_prefix=f"/openai/threads/{thread_id}",
            )
            assert s.get(f"threads/{thread_id}").status_code == 429
        sent = len(s.a.requests), len(s.b.requests)
        response = s.post("threads")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "no_upstream_available"
        assert 28 <= int(response.headers["retry-after"]) <= 30
        assert (len(s.a.requests), len(s.b.requests)) == sent
        assert s.sample("gateway_upstream_errors_total", kind="no_backend") == 1
        # Requests on existing objects still go to their backend.
        assert s.get(f"threads/{a_thread}").status_code == 200


def test_redis_losing_the_records_recovers_affinity_from_the_backends(
    tmp_path: Path, redis_url: str
) -> None:
    with two_backends(tmp_path, redis_url, a={"priority": 1}) as s:
        thread_id = s.thread()  # on B, the second backend configured
        store = redis.Redis.from_url(redis_url)
        try:
            assert store.get(owner_key(thread_id)).decode().endswith("@b")  # type: ignore[union-attr]
            store.flushall()
            replica = start_gateway(s.config)  # an empty in-process cache
            with ThreadedUvicorn(replica, http="httptools", server_header=False) as server:
                response = httpx.get(
                    f"{server.url}/openai/threads/{thread_id}", params=Q, headers=s.auth()
                )
                assert response.status_code == 200, response.text
                # A was asked first (404), then B, which has it: B is its home, written back.
                lookups_a = [r for r in s.a.requests if r.method == "GET" and thread_id in r.path]
                assert len(lookups_a) == 1
                assert reached(s.b, thread_id) == 2  # the lookup, then the request itself
                assert store.get(owner_key(thread_id)).decode().endswith("@b")  # type: ignore[union-attr]
                message = httpx.post(
                    f"{server.url}/openai/threads/{thread_id}/messages",
                    params=Q,
                    json={"role": "user", "content": "hi"},
                    headers=s.auth(),
                )
                assert message.status_code == 200
                assert reached(s.a, thread_id) == 1  # never again
        finally:
            store.close()


def test_each_backend_key_rotates_without_restart(tmp_path: Path, redis_url: str) -> None:
    upstream = {"api_key_reload_s": 0.2}
    with two_backends(tmp_path, redis_url, upstream=upstream, draw=alternate()) as s:
        a_thread, thread_id = s.thread(), s.thread()
        assert reached(s.a, a_thread) == 0 and (creates(s.a), creates(s.b)) == (1, 1)
        new_key = secrets.token_urlsafe(24)
        s.b.api_key = new_key  # B's key rotated at Azure ...
        assert s.get(f"threads/{thread_id}").status_code == 502  # upstream_auth_failed
        s.key_files["b"].write_text(new_key)  # ... and in B's mounted Secret
        deadline = time.monotonic() + 5
        while s.get(f"threads/{thread_id}").status_code != 200:
            assert time.monotonic() < deadline, "B's new key was not picked up"
            time.sleep(0.1)
        assert s.b.requests[-1].header("api-key") == new_key
        # A's key is A's own: unchanged, still used.
        assert s.get(f"threads/{a_thread}").status_code == 200
        assert s.a.requests[-1].header("api-key") == s.a.api_key != new_key
        assert (s.sample("gateway_azure_key_reloads_total") or 0) >= 1


def test_one_backend_has_no_breaker_azure_answers_are_relayed(
    tmp_path: Path, redis_url: str
) -> None:
    """The single ``endpoint`` form is backend ``default``: nothing to fail over to, so no
    breaker: every 5xx and 429 of Azure's reaches the caller and nothing is refused."""
    key = secrets.token_urlsafe(24)
    fake = FakeAzure(key)
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    with ThreadedUvicorn(fake.app, lifespan="off") as upstream:
        data = base_config(upstream.url, str(jwks_file), redis_url)
        data["upstream"]["breaker"] = {"failures": 1}
        gateway = build(parse(data), api_key=ApiKeySource(key))
        with ThreadedUvicorn(gateway, http="httptools", server_header=False) as server:
            fake.script(ScriptedResponse(503, (), (b"{}",)), path_prefix="/openai/threads", count=3)
            fake.script(
                ScriptedResponse(429, (("retry-after", "9"),), (b"{}",)),
                path_prefix="/openai/threads",
            )
            auth = {"Authorization": f"Bearer {make_token()}"}
            statuses = [
                httpx.post(f"{server.url}/openai/threads", params=Q, json={}, headers=auth)
                for _ in range(5)
            ]
            assert [r.status_code for r in statuses] == [503, 503, 503, 429, 200]
            assert statuses[3].headers["retry-after"] == "9"
            assert creates(fake) == 5
            assert gateway.metrics is not None
            registry = gateway.metrics.registry
            state = registry.get_sample_value(
                "gateway_upstream_backend_state", {"backend": "default"}
            )
            assert state == 0.0


def test_v1_conversations_and_responses_keep_to_their_backend(
    tmp_path: Path, redis_url: str
) -> None:
    """The v1 API: a conversation's items and the responses in it go to the conversation's
    backend; ``previous_response_id`` on another backend than ``conversation`` → 400."""
    with two_backends(tmp_path, redis_url, draw=alternate()) as s:

        def v1(method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
            return httpx.request(
                method, f"{s.url}/openai/v1/{path}", json=body, headers=s.auth(), timeout=10
            )

        on_a = v1("POST", "conversations", {}).json()["id"]
        on_b = v1("POST", "conversations", {}).json()["id"]
        assert creates(s.a, "/openai/v1/conversations") == 1
        assert creates(s.b, "/openai/v1/conversations") == 1
        answer = v1("POST", "responses", {"model": "gpt-4o", "input": "hi", "conversation": on_b})
        assert answer.status_code == 200, answer.text
        response_id = answer.json()["id"]
        assert creates(s.b, "/openai/v1/responses") == 1
        assert creates(s.a, "/openai/v1/responses") == 0
        items = v1("GET", f"conversations/{on_b}/items")
        assert items.status_code == 200 and reached(s.b, on_b) == 1 and reached(s.a, on_b) == 0
        assert v1("GET", f"responses/{response_id}").status_code == 200
        assert reached(s.a, response_id) == 0

        spanning = v1(
            "POST",
            "responses",
            {"model": "gpt-4o", "input": "x", "conversation": on_a},
        )
        assert spanning.status_code == 200  # one conversation, on A: goes to A
        assert creates(s.a, "/openai/v1/responses") == 1
        spanning = v1(
            "POST",
            "responses",
            {"model": "gpt-4o", "input": "x", "previous_response_id": response_id, "store": True},
        )
        assert spanning.status_code == 200 and creates(s.b, "/openai/v1/responses") == 2
        store = s.post("vector_stores", {"name": "docs"})  # no references: the next draw, A
        assert store.status_code == 200 and creates(s.a, "/openai/vector_stores") == 1
        sent = len(s.a.requests), len(s.b.requests)
        tools = [{"type": "file_search", "vector_store_ids": [store.json()["id"]]}]
        both = v1(
            "POST",
            "responses",
            {"model": "gpt-4o", "input": "x", "conversation": on_b, "tools": tools},
        )
        assert both.status_code == 400, both.text
        error = both.json()["error"]
        assert error["code"] == "references_span_backends"
        assert error["param"] == "tools[0].vector_store_ids[0]"
        assert (len(s.a.requests), len(s.b.requests)) == sent


def test_lists_go_to_the_cursors_backend_else_the_preferred_one(
    tmp_path: Path, redis_url: str
) -> None:
    """The lists decision: a list of top-level objects shows one backend's, the cursor's when
    it has one, else the preferred backend's (equal weights: the first configured)."""
    with two_backends(tmp_path, redis_url, draw=alternate()) as s:
        first = s.post("assistants", {"model": "gpt-4o"}).json()["id"]
        second = s.post("assistants", {"model": "gpt-4o"}).json()["id"]
        assert creates(s.a, "/openai/assistants") == creates(s.b, "/openai/assistants") == 1

        def listed(fake: FakeAzure) -> int:
            return sum(
                1 for r in fake.requests if r.method == "GET" and r.path == "/openai/assistants"
            )

        page = s.get("assistants")
        assert page.status_code == 200
        assert [a["id"] for a in page.json()["data"]] == [first]
        assert (listed(s.a), listed(s.b)) == (1, 0)
        cursor = httpx.get(
            f"{s.url}/openai/assistants",
            params={**Q, "after": second},
            headers=s.auth(),
            timeout=10,
        )
        assert cursor.status_code == 200, cursor.text
        assert (listed(s.a), listed(s.b)) == (1, 1)
        assert f"after={second}" in s.b.requests[-1].query


def test_a_record_naming_a_removed_backend_is_probed_at_the_configured_ones(
    tmp_path: Path, redis_url: str
) -> None:
    """A record naming backend ``gone`` (since removed from the config) is no guess for the
    first backend: the configured ones are asked, the one holding the object (B) is its home,
    the record is rewritten, and the request goes there. Before, it went to A (the first),
    which does not hold the thread: 404."""
    with two_backends(tmp_path, redis_url, a={"priority": 1}) as s:
        thread_id = s.thread()  # on B (A is only the fallback)
        store = redis.Redis.from_url(redis_url)
        try:
            record: bytes = store.get(owner_key(thread_id))  # type: ignore[assignment]
            owner = record.decode().rsplit("@", 1)[0]
            store.set(owner_key(thread_id), f"{owner}@gone")
            replica = start_gateway(s.config)  # an empty in-process cache
            with ThreadedUvicorn(replica, http="httptools", server_header=False) as server:
                response = httpx.get(
                    f"{server.url}/openai/threads/{thread_id}", params=Q, headers=s.auth()
                )
                assert response.status_code == 200, response.text
                assert response.json()["id"] == thread_id
                lookups_a = [r for r in s.a.requests if r.method == "GET" and thread_id in r.path]
                assert len(lookups_a) == 1  # A was asked (404), never sent the request
                assert reached(s.b, thread_id) == 2  # the lookup, then the request itself
                assert store.get(owner_key(thread_id)) == f"{owner}@b".encode()
        finally:
            store.close()
