"""The stock openai SDK through a real gateway to the recording fake Azure."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.beta.threads import Message, TextContentBlock

from tests.stack import V1, V2, Stack


def client(gw: Stack, version: str = V2) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=gw.url, api_version=version, azure_ad_token=gw.token(), max_retries=0
    )


def text_of(message: Message) -> str:
    """The text of the message's first content block (the SDK types it as a union)."""
    block = message.content[0]
    assert isinstance(block, TextContentBlock)
    return block.text.value


def assert_only_gateway_credentials(gw: Stack, token: str) -> None:
    assert gw.fake.requests, "nothing reached Azure"
    for rec in gw.fake.requests:
        names = [n for n, _ in rec.headers]
        assert rec.header_values("api-key") == [gw.api_key]
        assert "authorization" not in names
        assert "cookie" not in names
        assert not any(n.startswith("x-forwarded") for n in names)
        assert token not in repr(rec.headers) and token.encode() not in rec.body


def test_messages_lifecycle_v2(gw: Stack) -> None:
    token = gw.token()
    c = openai.AzureOpenAI(
        azure_endpoint=gw.url, api_version=V2, azure_ad_token=token, max_retries=0
    )
    thread = c.beta.threads.create(metadata={"team": "a"})
    created = [
        c.beta.threads.messages.create(
            thread.id, role="user", content=f"message {i}", metadata={"i": str(i)}
        )
        for i in range(5)
    ]
    assert created[0].role == "user" and text_of(created[0]) == "message 0"
    # Pagination: the SDK follows `after` cursors through pages of two.
    listed = list(c.beta.threads.messages.list(thread.id, limit=2, order="asc"))
    assert [m.id for m in listed] == [m.id for m in created]
    pages = [r for r in gw.fake.requests if r.method == "GET" and r.path.endswith("/messages")]
    assert len(pages) == 3
    assert pages[1].query == f"api-version={V2}&limit=2&order=asc&after={created[1].id}"
    got = c.beta.threads.messages.retrieve(created[2].id, thread_id=thread.id)
    assert got.id == created[2].id
    modified = c.beta.threads.messages.update(
        created[2].id, thread_id=thread.id, metadata={"state": "seen"}
    )
    assert modified.metadata == {"state": "seen"}
    deleted = c.beta.threads.messages.delete(created[2].id, thread_id=thread.id)
    assert deleted.deleted is True
    remaining = list(c.beta.threads.messages.list(thread.id, order="asc"))
    assert created[2].id not in [m.id for m in remaining] and len(remaining) == 4
    assert c.beta.threads.retrieve(thread.id).metadata == {"team": "a"}
    assert c.beta.threads.delete(thread.id).deleted is True
    assert_only_gateway_credentials(gw, token)
    create = next(
        r for r in gw.fake.requests if r.method == "POST" and r.path.endswith("/messages")
    )
    assert create.json() == {"content": "message 0", "role": "user", "metadata": {"i": "0"}}


def test_messages_and_files_v1(gw: Stack) -> None:
    token = gw.token()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=gw.url, headers=headers) as h:
        thread = h.post("/openai/threads", params={"api-version": V1}, json={}).json()
        message = h.post(
            f"/openai/threads/{thread['id']}/messages",
            params={"api-version": V1},
            json={"role": "user", "content": "see file", "file_ids": ["file-abc123"]},
        )
        assert message.status_code == 200, message.text
        msg = message.json()
        assert msg["file_ids"] == ["file-abc123"] and "attachments" not in msg
        listed = h.get(
            f"/openai/threads/{thread['id']}/messages", params={"api-version": V1, "limit": 10}
        ).json()
        assert [m["id"] for m in listed["data"]] == [msg["id"]]
        files = h.get(
            f"/openai/threads/{thread['id']}/messages/{msg['id']}/files", params={"api-version": V1}
        ).json()
        assert [f["id"] for f in files["data"]] == ["file-abc123"]
        one = h.get(
            f"/openai/threads/{thread['id']}/messages/{msg['id']}/files/file-abc123",
            params={"api-version": V1},
        ).json()
        assert one["object"] == "thread.message.file" and one["message_id"] == msg["id"]
        # The file routes do not exist on v2, and v2 bodies are refused on v1.
        on_v2 = h.get(
            f"/openai/threads/{thread['id']}/messages/{msg['id']}/files", params={"api-version": V2}
        )
        assert on_v2.status_code == 400
        assert on_v2.json()["error"]["code"] == "operation_not_in_api_version"
    assert_only_gateway_credentials(gw, token)


def test_sdk_on_v1_creates_and_lists(gw: Stack) -> None:
    c = client(gw, V1)
    thread = c.beta.threads.create()
    c.beta.threads.messages.create(thread.id, role="user", content="hello v1")
    assert [text_of(m) for m in c.beta.threads.messages.list(thread.id)] == ["hello v1"]


def test_upstream_errors_reach_the_sdk_as_its_own_classes(gw: Stack) -> None:
    c = client(gw)
    with pytest.raises(openai.NotFoundError) as err:
        c.beta.threads.messages.list("thread_doesnotexist0000")
    assert err.value.response.headers["x-request-id"]


def test_gateway_errors_parse_in_the_sdk(gw: Stack) -> None:
    bad = openai.AzureOpenAI(
        azure_endpoint=gw.url, api_version=V2, azure_ad_token="not.a-valid.token", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as err:
        bad.beta.threads.create()
    assert err.value.code == "invalid_token"
    assert err.value.type == "authentication_error"
    wrong = openai.AzureOpenAI(
        azure_endpoint=gw.url, api_version="2023-01-01", azure_ad_token=gw.token(), max_retries=0
    )
    with pytest.raises(openai.BadRequestError) as bad_version:
        wrong.beta.threads.create()
    assert bad_version.value.code == "unsupported_api_version"
    assert bad_version.value.param == "api-version"
    assert gw.fake.requests == []


def test_request_id_is_propagated_or_generated(gw: Stack) -> None:
    with httpx.Client(base_url=gw.url, headers=gw.auth()) as h:
        own = h.post(
            "/openai/threads",
            params={"api-version": V2},
            json={},
            headers={"x-request-id": "req-123"},
        )
        assert own.headers["x-request-id"] == "req-123"
        assert gw.fake.requests[-1].header("x-ms-client-request-id") == "req-123"
        generated = h.post("/openai/threads", params={"api-version": V2}, json={})
        assert len(generated.headers["x-request-id"]) == 36
        assert generated.headers["x-upstream-request-id"]
        refused = h.get(
            "/openai/assistant",
            params={"api-version": V2},
            headers={"x-request-id": "bad id with spaces"},
        )
        assert refused.status_code == 404 and len(refused.headers["x-request-id"]) == 36


def test_readiness_and_health_are_not_proxied(gw: Stack) -> None:
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gw.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert gw.fake.requests == []
