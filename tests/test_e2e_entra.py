"""Entra workload identity end to end: a real gateway, the fake Azure, and a fake Entra token
endpoint over TLS (``tests.faketoken``) exchanging a real projected-token file.

Each test drives the gateway over loopback HTTP and reads what reached the fake Azure and the
token endpoint; nothing of the gateway is mocked.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.entrastack import CLIENT, TENANT, EntraStack, running_entra_stack, wait_until
from tests.faketoken import ASSERTION_TYPE, SCOPE
from tests.stack import V2

Q = {"api-version": V2}


def create_thread(s: EntraStack) -> httpx.Response:
    gw = s.stack
    return httpx.post(f"{gw.url}/openai/threads", params=Q, json={}, headers=gw.auth(), timeout=15)


def test_the_token_exchanged_for_the_projected_token_is_sent_as_bearer(tmp_path: Path) -> None:
    with running_entra_stack(tmp_path) as s:
        response = create_thread(s)
        assert response.status_code == 200, response.text
        calls = s.endpoint.calls
        assert len(calls) == 1  # fetched at start-up, cached for the request
        call = calls[0]
        assert call.problem == ""
        assert call.tenant == TENANT
        assert call.form["client_id"] == CLIENT
        assert call.form["grant_type"] == "client_credentials"
        assert call.form["client_assertion_type"] == ASSERTION_TYPE
        assert call.form["scope"] == SCOPE
        assert call.form["client_assertion"] == s.token_file.read_text()
        reached = s.stack.fake.requests
        assert len(reached) == 1
        assert reached[0].header_values("authorization") == [f"Bearer {call.issued}"]
        assert reached[0].header_values("api-key") == []
        # The stock SDK through the gateway: the caller's own token never reaches Azure.
        client = openai.AzureOpenAI(
            azure_endpoint=s.stack.url,
            api_key="unused",
            azure_ad_token=s.stack.token(),
            api_version=V2,
            max_retries=0,
        )
        thread = client.beta.threads.create()
        assert thread.id.startswith("thread_")
        assert s.stack.fake.requests[-1].header_values("authorization") == [f"Bearer {call.issued}"]


def test_the_webhooks_variables_stand_for_unset_keys(tmp_path: Path) -> None:
    with running_entra_stack(tmp_path, from_environment=True) as s:
        assert s.stack.config.upstream.entra.client_id is None
        assert create_thread(s).status_code == 200
        (call,) = s.endpoint.calls
        assert (call.problem, call.tenant, call.form["client_id"]) == ("", TENANT, CLIENT)


def test_readiness_waits_for_the_first_token(tmp_path: Path) -> None:
    with running_entra_stack(tmp_path, ready=False, fail_status=503) as s:
        wait_until("a failed fetch", lambda: s.endpoint.count() >= 1)
        got = httpx.get(f"{s.stack.url}/readyz", timeout=5)
        assert got.status_code == 503
        assert got.json()["checks"]["upstream_credential"] == "pending"
        refused = create_thread(s)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "upstream_credential_unavailable"
        assert s.stack.fake.requests == []
        s.endpoint.fail_status = None
        wait_until(
            "ready",
            lambda: httpx.get(f"{s.stack.url}/readyz", timeout=5).status_code == 200,
            timeout=40,
        )
        assert create_thread(s).status_code == 200


def test_refreshed_ahead_of_expiry_and_the_new_token_is_used(tmp_path: Path) -> None:
    # 4 s tokens (margin 10 s > lifetime): refreshed at half their life, never in a loop.
    with running_entra_stack(tmp_path, lifetime_s=4) as s:
        first = s.endpoint.good_calls()[0].issued
        assert create_thread(s).status_code == 200
        wait_until("a refresh", lambda: len(s.endpoint.good_calls()) >= 2, timeout=10)
        second = s.endpoint.good_calls()[1]
        assert second.at - s.endpoint.good_calls()[0].at >= 1.5  # not before half its life
        assert create_thread(s).status_code == 200
        used = s.stack.fake.requests[-1].header_values("authorization")
        assert used == [f"Bearer {s.endpoint.good_calls()[-1].issued}"]
        assert used != [f"Bearer {first}"]
        time.sleep(3)
        assert len(s.endpoint.calls) <= 6  # about one fetch per 2 s, not a loop


def test_fifty_concurrent_requests_cause_one_fetch(tmp_path: Path) -> None:
    # The first fetch is slow: all 50 requests arrive while it is in flight and wait for it.
    with running_entra_stack(tmp_path, ready=False, delay_s=1.0) as s:
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            statuses = list(pool.map(lambda _: create_thread(s).status_code, range(50)))
        assert statuses == [200] * 50
        assert s.endpoint.count() == 1
        assert len(s.stack.fake.requests) == 50


def test_endpoint_down_cached_token_serves_then_503_then_recovery(tmp_path: Path) -> None:
    with running_entra_stack(tmp_path, lifetime_s=5) as s:
        s.endpoint.fail_status = 503
        fetched_at = s.endpoint.good_calls()[0].at
        # Until the token expires, requests are served with it (refreshes failing meanwhile).
        while time.time() < fetched_at + 3.5:
            assert create_thread(s).status_code == 200
            time.sleep(0.2)
        wait_until("a failed refresh", lambda: s.endpoint.count() >= 2)
        wait_until("the token expired", lambda: time.time() > fetched_at + 5.2)
        before = len(s.stack.fake.requests)
        refused = create_thread(s)
        assert refused.status_code == 503
        body = refused.json()["error"]
        assert body["code"] == "upstream_credential_unavailable"
        assert set(body) == {"code", "message", "param", "type"}
        assert int(refused.headers["retry-after"]) >= 1
        assert len(s.stack.fake.requests) == before  # nothing reached Azure
        # Still ready: the outage is shared by every replica (the 503 code and the alert say it).
        assert httpx.get(f"{s.stack.url}/readyz", timeout=5).status_code == 200
        s.endpoint.fail_status = None
        wait_until("recovered", lambda: create_thread(s).status_code == 200, timeout=40)
        assert s.stack.fake.requests[-1].header_values("authorization") == [
            f"Bearer {s.endpoint.good_calls()[-1].issued}"
        ]


def test_a_rotated_projected_token_is_used_at_the_next_fetch(tmp_path: Path) -> None:
    with running_entra_stack(tmp_path, lifetime_s=3) as s:
        rotated = s.rotate_token_file()
        wait_until(
            "a fetch with the rotated file",
            lambda: any(c.form.get("client_assertion") == rotated for c in s.endpoint.calls),
            timeout=10,
        )
        assert all(not c.problem for c in s.endpoint.calls)
        assert create_thread(s).status_code == 200


def test_azure_refusing_the_token_forces_a_refresh(tmp_path: Path) -> None:
    with running_entra_stack(tmp_path) as s:
        first = s.endpoint.good_calls()[0].issued
        s.stack.fake.bearer = lambda token: token != first and s.endpoint.valid(token)
        refused = create_thread(s)
        assert refused.status_code == 502
        assert refused.json()["error"]["code"] == "upstream_auth_failed"
        wait_until("a forced refresh", lambda: len(s.endpoint.good_calls()) == 2)
        assert create_thread(s).status_code == 200
        # A refused token cannot turn every request into a fetch (one per 5 s at most).
        s.stack.fake.bearer = lambda token: False
        for _ in range(5):
            assert create_thread(s).status_code == 502
        time.sleep(0.3)
        assert len(s.endpoint.calls) <= 3


@pytest.mark.parametrize("problem", ["client_id", "tenant_id"])
def test_a_wrong_identity_is_refused_by_the_endpoint_and_nothing_is_forwarded(
    tmp_path: Path, problem: str
) -> None:
    wrong = {problem: "ffffffff-0000-4000-8000-00000000000f"}
    with running_entra_stack(tmp_path, ready=False, overrides={"upstream": {"entra": wrong}}) as s:
        wait_until("a refused fetch", lambda: s.endpoint.count() >= 1)
        assert s.endpoint.calls[0].problem in {"client_id", "tenant"}
        refused = create_thread(s)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "upstream_credential_unavailable"
        assert s.stack.fake.requests == []
        assert httpx.get(f"{s.stack.url}/readyz", timeout=5).status_code == 503


def sample(s: EntraStack, name: str, **labels: str) -> float:
    metrics = s.stack.gateway.metrics
    assert metrics is not None
    got = metrics.registry.get_sample_value(name, {"backend": "default", **labels})
    assert got is not None, name
    return got


def test_token_metrics_report_expiry_refreshes_and_refusals(tmp_path: Path) -> None:
    with running_entra_stack(tmp_path, lifetime_s=4) as s:
        assert 2 < sample(s, "gateway_upstream_token_expiry_seconds") <= 4
        assert sample(s, "gateway_upstream_token_refreshes_total", result="ok") == 1
        assert sample(s, "gateway_upstream_token_refreshes_total", result="error") == 0
        assert sample(s, "gateway_upstream_token_unavailable_total") == 0
        s.endpoint.fail_status = 500
        obtained = s.endpoint.good_calls()[-1].at
        wait_until("expired", lambda: time.time() > obtained + 4.2)
        refused = [create_thread(s).status_code for _ in range(3)]
        assert refused == [503] * 3
        assert sample(s, "gateway_upstream_token_expiry_seconds") == 0
        assert sample(s, "gateway_upstream_token_unavailable_total") == 3
        failed = sample(s, "gateway_upstream_token_refreshes_total", result="error")
        # (a fetch may be in flight: answered by the endpoint, not yet counted by the gateway)
        assert 1 <= failed <= len(s.endpoint.calls) - len(s.endpoint.good_calls())
        assert sample(s, "gateway_upstream_token_refreshes_total", result="ok") == len(
            s.endpoint.good_calls()
        )
