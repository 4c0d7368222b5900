"""Attacks from the security checklist (sections A, C, F) against a real gateway.

Every refusal must be a 4xx in Azure's error shape, and the recording fake Azure must have
received nothing (the gateway holds the real key: nothing unvetted may reach Azure).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.fakeazure import ScriptedResponse
from tests.rawhttp import build_request, raw_request
from tests.stack import V2, Stack, make_token

T = "thread_abc123"


def assert_azure_error(body: dict[str, object]) -> None:
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == {"code", "message", "param", "type"}


SMUGGLING = [
    # C1 path traversal through the id, in its encodings
    ("GET", "/openai/threads/../assistants?api-version=" + V2, 404),
    ("GET", "/openai/threads/%2e%2e/messages?api-version=" + V2, 404),
    ("GET", "/openai/threads/.%2e/messages?api-version=" + V2, 404),
    (
        "GET",
        "/openai/threads/%2E%2E/%2E%2E/deployments/gpt/chat/completions?api-version=" + V2,
        404,
    ),
    ("GET", "/openai/threads/x%2F..%2F..%2Fassistants/messages?api-version=" + V2, 404),
    ("GET", "/openai/threads/x/../../deployments/gpt/chat/completions?api-version=" + V2, 404),
    ("GET", "/openai/threads/x\\..\\y/messages?api-version=" + V2, 404),
    ("GET", "/openai/threads/x/..;/y/messages?api-version=" + V2, 404),
    ("GET", "/openai/threads/thread_abc%252F..%252F/messages?api-version=" + V2, 404),
    ("GET", "/openai/threads/thread_abc%2Fmessages?api-version=" + V2, 404),
    # C2 query and fragment injection through the id
    ("GET", "/openai/threads/x%3Fapi-version%3D2023-01-01%26/messages?api-version=" + V2, 404),
    ("GET", "/openai/threads/x%23frag/messages?api-version=" + V2, 404),
    # C3 caller query parameters
    ("GET", f"/openai/threads/{T}/messages?api-version={V2}&api-version=2023-01-01", 400),
    ("GET", f"/openai/threads/{T}/messages?api-version=2023-01-01", 400),
    ("GET", f"/openai/threads/{T}/messages", 400),
    ("GET", f"/openai/threads/{T}/messages?API-VERSION={V2}", 400),
    ("GET", f"/openai/threads/{T}/messages?api-version={V2}&limit=5&limit=6", 400),
    ("GET", f"/openai/threads/{T}/messages?api-version={V2}&access_token=x", 400),
    ("GET", f"/openai/threads/{T}/messages?api-version={V2}&after=msg_1%26x%3Dy", 400),
    ("GET", f"/openai/threads/{T}/messages?api-version={V2}&limit=1000", 400),
    ("GET", f"/openai/threads/{T}/messages?api-version={V2}&order=asc%23", 400),
    # C9 routes: no generic passthrough
    ("GET", "/openai/fine_tuning/jobs?api-version=" + V2, 404),
    ("POST", "/openai/deployments/gpt-4/chat/completions?api-version=" + V2, 404),
    ("GET", "/openai/batches?api-version=" + V2, 404),
    ("POST", "/openai/vector_stores/vs_abc/search?api-version=" + V2, 404),
    ("GET", "/openai/files/file-abc/content/extra?api-version=" + V2, 404),
    ("GET", "/?api-version=" + V2, 404),
    ("PUT", f"/openai/threads/{T}?api-version={V2}", 405),
    ("PATCH", f"/openai/threads/{T}/messages?api-version={V2}", 405),
    ("DELETE", f"/openai/threads/{T}/messages/msg_1?api-version=2024-02-15-preview", 400),
]


@pytest.mark.parametrize(
    ("method", "target", "status"), SMUGGLING, ids=[f"{m} {t[:60]}" for m, t, _ in SMUGGLING]
)
def test_smuggling_attempts_never_reach_azure(
    gw: Stack, method: str, target: str, status: int
) -> None:
    response = raw_request(gw.url, build_request(method, target, gw.auth()))
    assert response.status == status, response.body
    assert_azure_error(response.json())
    assert response.header("x-request-id")
    assert gw.fake.requests == []


def test_absolute_form_target_cannot_choose_the_upstream_host(gw: Stack) -> None:
    response = raw_request(
        gw.url,
        build_request(
            "GET",
            f"http://evil.example/openai/threads/{T}?api-version={V2}",
            {**gw.auth(), "X-Forwarded-Host": "evil.example"},
        ),
    )
    assert response.status == 404  # the configured (fake) Azure's answer: no such thread
    [rec] = gw.fake.requests
    assert rec.header("host") == gw.upstream_url.split("//", 1)[1]
    assert rec.path == f"/openai/threads/{T}"


def test_method_override_headers_are_ignored(gw: Stack) -> None:
    response = httpx.get(
        f"{gw.url}/openai/threads/{T}",
        params={"api-version": V2},
        headers={
            **gw.auth(),
            "X-HTTP-Method-Override": "DELETE",
            "X-Original-URL": "/openai/assistants",
            "X-Forwarded-Uri": "/openai/assistants",
        },
    )
    assert response.status_code == 404  # the fake's "no such thread": a GET reached it
    [rec] = gw.fake.requests
    assert rec.method == "GET" and rec.path == f"/openai/threads/{T}"
    names = {n for n, _ in rec.headers}
    assert not names & {"x-http-method-override", "x-original-url", "x-forwarded-uri"}


def test_caller_credentials_and_hop_by_hop_headers_are_stripped(gw: Stack) -> None:
    token = gw.token()
    headers = [
        ("Authorization", f"Bearer {token}"),
        ("api-key", "caller-key"),
        ("API-KEY", "caller-key-2"),
        ("Api-Key", "caller-key-3"),
        ("Ocp-Apim-Subscription-Key", "sub-key"),
        ("Cookie", "session=abc"),
        ("Proxy-Authorization", "Basic eA=="),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Forwarded-Host", "evil.example"),
        ("Forwarded", "for=1.2.3.4"),
        ("Connection", "close, X-Stainless-Lang, Keep-Alive"),
        ("Keep-Alive", "timeout=5"),
        ("X-Stainless-Lang", "python"),
        ("TE", "trailers"),
        ("Trailer", "x"),
        ("Content-Type", "application/json"),
        ("OpenAI-Beta", "assistants=v2"),
    ]
    response = raw_request(
        gw.url, build_request("POST", f"/openai/threads?api-version={V2}", headers, b"{}")
    )
    assert response.status == 200, response.body
    [rec] = gw.fake.requests
    names = [n for n, _ in rec.headers]
    assert rec.header_values("api-key") == [gw.api_key]
    for banned in (
        "authorization",
        "ocp-apim-subscription-key",
        "cookie",
        "proxy-authorization",
        "x-forwarded-for",
        "x-forwarded-host",
        "forwarded",
        "keep-alive",
        "te",
        "trailer",
        "x-stainless-lang",
    ):
        assert banned not in names, banned
    assert rec.header("openai-beta") == "assistants=v2"
    assert rec.header("host") != "evil.example"
    assert token not in repr(rec.headers)


def test_response_headers_are_filtered_and_cookies_never_replayed(gw: Stack) -> None:
    with httpx.Client(base_url=gw.url) as h:
        first = h.post(
            "/openai/threads",
            params={"api-version": V2},
            json={},
            headers=gw.auth(namespace="team-a"),
        )
        assert "set-cookie" not in first.headers
        assert "server" not in first.headers
        assert first.headers["apim-request-id"]
        assert first.headers["x-ratelimit-remaining-requests"]
        # A second caller's request must not carry cookies Azure set for the first.
        h.cookies.clear()
        h.post(
            "/openai/threads",
            params={"api-version": V2},
            json={},
            headers=gw.auth(namespace="team-b"),
        )
    assert all(r.header("cookie") is None for r in gw.fake.requests)
    session = gw.gateway.upstream._session  # the aiohttp transport's (a DummyCookieJar)
    assert session is None or len(session.cookie_jar) == 0


def test_header_injection_and_non_ascii_values_are_not_forwarded(gw: Stack) -> None:
    # A CR/LF in a value splits it into a second header on the wire: the injected name is
    # not on the allow-list, so it goes nowhere.
    injected = build_request(
        "POST",
        f"/openai/threads?api-version={V2}",
        [
            *gw.auth().items(),
            ("Content-Type", "application/json"),
            ("OpenAI-Beta", "v2\r\nX-Injected: 1\r\napi-key: stolen"),
        ],
        b"{}",
    )
    assert raw_request(gw.url, injected).status == 200
    non_ascii = build_request(
        "POST",
        f"/openai/threads?api-version={V2}",
        [*gw.auth().items(), ("Content-Type", "application/json"), ("OpenAI-Beta", "caf\u00e9")],
        b"{}",
    )
    response = raw_request(gw.url, non_ascii)
    assert response.status in (200, 400)
    for rec in gw.fake.requests:
        assert rec.header("x-injected") is None
        assert rec.header_values("api-key") == [gw.api_key]
        assert all(v.isascii() for _, v in rec.headers)


def test_upgrade_requests_are_refused(gw: Stack) -> None:
    response = raw_request(
        gw.url,
        build_request(
            "GET",
            f"/openai/threads/{T}?api-version={V2}",
            {**gw.auth(), "Upgrade": "websocket", "Connection": "Upgrade"},
        ),
    )
    assert response.status in (400, 404, 426)
    assert gw.fake.requests == []


def test_oversized_headers_are_refused(gw: Stack) -> None:
    response = raw_request(
        gw.url,
        build_request(
            "GET", f"/openai/threads/{T}?api-version={V2}", {**gw.auth(), "X-Padding": "a" * 40_000}
        ),
    )
    assert response.status == 431
    assert gw.fake.requests == []


def test_auth_failures_are_401_and_nothing_is_forwarded(gw: Stack) -> None:
    cases = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer " + make_token(now=time.time() - 7200)},
        {"Authorization": "Bearer " + make_token(aud=["https://kubernetes.default.svc"])},
        {"Authorization": "Bearer " + make_token(iss="https://issuer.test")},
        {"api-key": gw.api_key},  # even Azure's real key is no credential here
        {"Authorization": "Bearer " + "a" * 9_000},
        # validly signed, but a 400-digit exp / nbf: 401, never a 500
        {"Authorization": "Bearer " + make_token(exp=10**400)},
        {"Authorization": "Bearer " + make_token(nbf=10**400)},
    ]
    for headers in cases:
        response = httpx.get(
            f"{gw.url}/openai/threads/{T}", params={"api-version": V2}, headers=headers
        )
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert response.json()["error"]["code"] == "invalid_token"
    both = raw_request(
        gw.url,
        build_request(
            "GET",
            f"/openai/threads/{T}?api-version={V2}",
            [("Authorization", f"Bearer {gw.token()}"), ("Authorization", f"Bearer {gw.token()}")],
        ),
    )
    assert both.status == 401
    query_token = httpx.get(
        f"{gw.url}/openai/threads/{T}", params={"api-version": V2, "access_token": gw.token()}
    )
    assert query_token.status_code == 401
    huge = httpx.get(
        f"{gw.url}/openai/threads/{T}",
        params={"api-version": V2},
        headers={"Authorization": "Bearer " + "a" * 1_000_000},
    )
    assert huge.status_code == 431
    assert gw.fake.requests == []


def test_profile_limits_operations(gw: Stack) -> None:
    reader = gw.auth(namespace="readers")
    with httpx.Client(base_url=gw.url) as h:
        created = h.post("/openai/threads", params={"api-version": V2}, json={}, headers=reader)
        assert created.status_code == 403
        assert created.json()["error"]["code"] == "operation_not_allowed"
        assert gw.fake.requests == []
        listed = h.get(f"/openai/threads/{T}/messages", params={"api-version": V2}, headers=reader)
        assert listed.status_code == 404  # allowed, so it reached the fake (no such thread)
        assert len(gw.fake.requests) == 1
        outsider = h.get(
            f"/openai/threads/{T}", params={"api-version": V2}, headers=gw.auth(namespace="team-z")
        )
        assert outsider.status_code == 403
        assert outsider.json()["error"]["code"] == "caller_not_allowed"
    assert len(gw.fake.requests) == 1


def test_upstream_credential_refusal_is_a_502_not_a_401(gw: Stack) -> None:
    gw.fake.script(
        ScriptedResponse(
            status=401,
            chunks=(b'{"error":{"code":"401"}}',),
            headers=(("content-type", "application/json"),),
        )
    )
    response = httpx.post(
        f"{gw.url}/openai/threads", params={"api-version": V2}, json={}, headers=gw.auth()
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_auth_failed"


def test_upstream_redirect_is_not_followed(gw: Stack) -> None:
    gw.fake.script(ScriptedResponse(status=302, headers=(("location", "http://127.0.0.1:9/x"),)))
    response = httpx.post(
        f"{gw.url}/openai/threads", params={"api-version": V2}, json={}, headers=gw.auth()
    )
    assert response.status_code == 302
    assert "location" not in response.headers
    assert len(gw.fake.requests) == 1


def test_upstream_429_passes_its_retry_hints(gw: Stack) -> None:
    gw.fake.script(
        ScriptedResponse(
            status=429,
            chunks=(b'{"error":{"code":"429","message":"slow down"}}',),
            headers=(
                ("content-type", "application/json"),
                ("retry-after", "2"),
                ("retry-after-ms", "1500"),
            ),
        )
    )
    response = httpx.post(
        f"{gw.url}/openai/threads", params={"api-version": V2}, json={}, headers=gw.auth()
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "1500"
    assert response.json()["error"]["message"] == "slow down"


def test_azure_refusing_the_key_triggers_one_reload(tmp_path: Path) -> None:
    from tests.stack import running_stack

    with running_stack(tmp_path, overrides={"upstream": {"api_key_reload_s": 3600}}) as gw:
        (tmp_path / "api-key").write_text("rotated-key-0123456789")
        gw.fake.api_key = "rotated-key-0123456789"  # Azure now wants the new key
        first = httpx.post(
            f"{gw.url}/openai/threads", params={"api-version": V2}, json={}, headers=gw.auth()
        )
        assert first.status_code == 502  # the old key, refused; the refusal made it reload
        assert first.json()["error"]["code"] == "upstream_auth_failed"
        second = httpx.post(
            f"{gw.url}/openai/threads", params={"api-version": V2}, json={}, headers=gw.auth()
        )
        assert second.status_code == 200
        assert gw.fake.requests[-1].header("api-key") == "rotated-key-0123456789"
