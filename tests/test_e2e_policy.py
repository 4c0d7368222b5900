"""Payload policy end to end: refusals reach the openai SDK as BadRequestError with the rule's
code and param, and nothing reaches Azure. Body intake limits over real HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.rawhttp import build_request, raw_request
from tests.stack import V1, V2, Stack, running_stack

T = "thread_abc123"


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway whose writer profile tightens Azure's limits."""
    overrides = {
        "profiles": {
            "writer": {
                "policy": {
                    "roles": ["user"],
                    "max_files": 2,
                    "max_metadata_pairs": 4,
                    "required_metadata_keys": ["cost-centre"],
                    "allow_image_url": False,
                }
            }
        }
    }
    with running_stack(Path(tmp_path_factory.mktemp("strict")), overrides=overrides) as stack:
        yield stack


def sdk(stack: Stack, version: str = V2) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=stack.url, api_version=version, max_retries=0, azure_ad_token=stack.token()
    )


Call = Callable[[openai.AzureOpenAI], Any]
MSG = "client.beta.threads.messages.create"
CASES: list[tuple[str, Call, str, str | None]] = [
    (
        "17 metadata pairs",
        lambda c: c.beta.threads.messages.create(
            T, role="user", content="x", metadata={f"k{i}": "v" for i in range(17)}
        ),
        "metadata_too_many_pairs",
        "metadata",
    ),
    (
        "65-char key",
        lambda c: c.beta.threads.messages.create(
            T, role="user", content="x", metadata={"k" * 65: "v"}
        ),
        "metadata_key_too_long",
        None,
    ),
    (
        "513-char value",
        lambda c: c.beta.threads.messages.create(
            T, role="user", content="x", metadata={"k": "v" * 513}
        ),
        "metadata_value_too_long",
        None,
    ),
    (
        "513 emoji value",
        lambda c: c.beta.threads.messages.create(
            T, role="user", content="x", metadata={"k": "\U0001f600" * 513}
        ),
        "metadata_value_too_long",
        None,
    ),
    (
        "empty content",
        lambda c: c.beta.threads.messages.create(T, role="user", content=""),
        "content_empty",
        "content",
    ),
    (
        "content too long",
        lambda c: c.beta.threads.messages.create(T, role="user", content="x" * 256_001),
        "content_too_long",
        "content",
    ),
    (
        "11 attachments",
        lambda c: c.beta.threads.messages.create(
            T,
            role="user",
            content="x",
            attachments=[
                {"file_id": f"assistant-f{i}", "tools": [{"type": "file_search"}]}
                for i in range(11)
            ],
        ),
        "too_many_files",
        "attachments",
    ),
    (
        "duplicate attachment",
        lambda c: c.beta.threads.messages.create(
            T,
            role="user",
            content="x",
            attachments=[{"file_id": "assistant-f1", "tools": [{"type": "file_search"}]}] * 2,
        ),
        "duplicate_file_id",
        None,
    ),
    (
        "bad file id",
        lambda c: c.beta.threads.messages.create(
            T,
            role="user",
            content="x",
            attachments=[{"file_id": "../etc/passwd", "tools": [{"type": "file_search"}]}],
        ),
        "invalid_file_id",
        None,
    ),
    (
        "unknown field",
        lambda c: c.beta.threads.messages.create(
            T, role="user", content="x", extra_body={"admin": True}
        ),
        "unknown_field",
        None,
    ),
    (
        "role system",
        lambda c: c.beta.threads.messages.create(T, role="system", content="x"),  # type: ignore[arg-type]
        "role_not_allowed",
        "role",
    ),
    (
        "create-thread bypass",
        lambda c: c.beta.threads.create(
            messages=[
                {"role": "user", "content": "x", "metadata": {f"k{i}": "v" for i in range(17)}}
            ]
        ),
        "metadata_too_many_pairs",
        None,
    ),
    (
        "modify message with content",
        lambda c: c.beta.threads.messages.update(
            "msg_abc", thread_id=T, metadata={"a": "b"}, extra_body={"content": "x"}
        ),
        "unknown_field",
        None,
    ),
    (
        "thread code interpreter files",
        lambda c: c.beta.threads.create(
            tool_resources={
                "code_interpreter": {"file_ids": [f"assistant-f{i}" for i in range(21)]}
            }
        ),
        "too_many_code_interpreter_files",
        None,
    ),
    (
        "image URL port 99999",
        lambda c: c.beta.threads.messages.create(
            T,
            role="user",
            content=[
                {"type": "image_url", "image_url": {"url": "https://cdn.example.com:99999/a.png"}}
            ],
        ),
        "invalid_content_part",
        "content[0].image_url.url",
    ),
    (
        "image URL to the metadata service",
        lambda c: c.beta.threads.messages.create(
            T,
            role="user",
            content=[
                {
                    "type": "image_url",
                    "image_url": {"url": "https://169.254.169.254/metadata/identity/oauth2/token"},
                }
            ],
        ),
        "content_part_not_allowed",
        "content[0].image_url.url",
    ),
    (
        "image URL to a hex IPv4 host",
        lambda c: c.beta.threads.create(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://0x7f000001/a.png"}}
                    ],
                }
            ]
        ),
        "invalid_content_part",
        None,
    ),
]


@pytest.mark.parametrize(
    ("call", "code", "param"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_refusals_reach_the_sdk(gw: Stack, call: Call, code: str, param: str | None) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        call(sdk(gw))
    assert err.value.code == code
    if param is not None:
        assert err.value.param == param
    assert err.value.type == "invalid_request_error"
    assert gw.fake.requests == []


def test_boundaries_are_accepted_and_forwarded_reserialised(gw: Stack) -> None:
    client = sdk(gw)
    thread = client.beta.threads.create()
    metadata = {f"{i:02d}" + "k" * 62: "\U0001f600" * 512 for i in range(16)}
    client.beta.threads.messages.create(
        thread.id, role="user", content="x" * 256_000, metadata=metadata
    )
    forwarded = gw.fake.requests[-1]
    assert forwarded.json() == {"role": "user", "content": "x" * 256_000, "metadata": metadata}


def test_v1_and_v2_fields_do_not_mix(gw: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gw, V1).beta.threads.messages.create(T, role="assistant", content="x")
    assert err.value.code == "role_not_allowed"
    headers = {**gw.auth(), "Content-Type": "application/json"}
    v2_with_file_ids = httpx.post(
        f"{gw.url}/openai/threads/{T}/messages",
        params={"api-version": V2},
        headers=headers,
        json={"role": "user", "content": "x", "file_ids": ["file-a"]},
    )
    assert v2_with_file_ids.status_code == 400
    assert v2_with_file_ids.json()["error"]["code"] == "field_not_allowed_in_version"
    assert gw.fake.requests == []


def test_profile_tightens_limits(strict: Stack) -> None:
    strict.fake.reset()
    client = sdk(strict)
    cases: list[tuple[Callable[[], object], str]] = [
        (
            lambda: client.beta.threads.messages.create(
                T, role="assistant", content="x", metadata={"cost-centre": "42"}
            ),
            "role_not_allowed",
        ),
        (
            lambda: client.beta.threads.messages.create(T, role="user", content="x"),
            "metadata_required_key_missing",
        ),
        (
            lambda: client.beta.threads.messages.create(
                T,
                role="user",
                content="x",
                metadata={"cost-centre": "1", **{f"k{i}": "v" for i in range(4)}},
            ),
            "metadata_too_many_pairs",
        ),
        (
            lambda: client.beta.threads.messages.create(
                T,
                role="user",
                content=[{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
                metadata={"cost-centre": "1"},
            ),
            "content_part_not_allowed",
        ),
    ]
    for call, code in cases:
        with pytest.raises(openai.BadRequestError) as err:
            call()
        assert err.value.code == code
    assert strict.fake.requests == []


def _post(
    stack: Stack,
    body: bytes,
    content_type: str | None = "application/json",
    extra: dict[str, str] | None = None,
) -> httpx.Response:
    headers = {**stack.auth(), **(extra or {})}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return httpx.post(
        f"{stack.url}/openai/threads", params={"api-version": V2}, headers=headers, content=body
    )


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b'{"role":"user","role":"assistant"}', "application/json", 400, "duplicate_key"),
        (b'{"metadata": NaN}', "application/json", 400, "invalid_number"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "invalid_body"),
        (b'{"a":' * 1000 + b"1" + b"}" * 1000, "application/json", 400, "json_too_deep"),
        (b'\xef\xbb\xbf{"metadata":{}}', "application/json", 400, "invalid_encoding"),
        ('{"metadata":{}}'.encode("utf-16"), "application/json", 400, "invalid_encoding"),
        (b'{"metadata":{"a":"\\ud800"}}', "application/json", 400, "invalid_string"),
        (b'{"metadata":{}}', "text/plain", 415, "unsupported_media_type"),
        (b'{"metadata":{}}', None, 415, "unsupported_media_type"),
        (b'{"metadata":{}}', "application/json; charset=latin-1", 415, "unsupported_media_type"),
        (b"null", "application/json", 400, "invalid_body"),
        (b'{"x":' + b"1" * 5000 + b"}", "application/json", 400, "invalid_number"),
    ],
)
def test_strict_json_intake(
    gw: Stack, body: bytes, content_type: str | None, status: int, code: str
) -> None:
    response = _post(gw, body, content_type)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert gw.fake.requests == []


def test_body_size_limit_declared_and_chunked(gw: Stack) -> None:
    big = b'{"metadata":{"a":"' + b"x" * 1_100_000 + b'"}}'
    declared = _post(gw, big)
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield big[:500_000]
        yield big[500_000:]

    chunked = httpx.post(
        f"{gw.url}/openai/threads",
        params={"api-version": V2},
        headers={**gw.auth(), "Content-Type": "application/json"},
        content=chunks(),
    )
    assert chunked.status_code == 413
    assert chunked.json()["error"]["code"] == "request_too_large"
    assert gw.fake.requests == []


def test_slow_body_gets_408(tmp_path: Path) -> None:
    with running_stack(tmp_path, overrides={"server": {"body_timeout_s": 0.5}}) as stack:
        port = int(stack.url.rsplit(":", 1)[1])
        head = build_request(
            "POST",
            f"/openai/threads?api-version={V2}",
            {**stack.auth(), "Content-Type": "application/json"},
            b"",
        )
        head = head.replace(b"Content-Length: 0", b"Content-Length: 100")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(head + b'{"meta')
            started = time.monotonic()
            reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 2
        assert stack.fake.requests == []


def test_bodies_on_bodyless_operations_are_refused(gw: Stack) -> None:
    response = raw_request(
        gw.url,
        build_request(
            "GET",
            f"/openai/threads/{T}?api-version={V2}",
            {**gw.auth(), "Content-Type": "application/json"},
            b'{"smuggled": 1}',
        ),
    )
    assert response.status == 400
    assert response.json()["error"]["code"] == "body_not_allowed"
    assert gw.fake.requests == []
