"""The Azure OpenAI v1 API (Responses and Conversations) with the stock openai SDK, unchanged
(issue 15, item 2): ``OpenAI(base_url=f"{gateway}/openai/v1/", api_key=<the caller's JWT>)``
and ``AsyncOpenAI`` send the token as ``Authorization: Bearer``, as ``AzureOpenAI`` does on
the Assistants path, and the gateway takes it the same way.

Through a real gateway (real uvicorn, the session's real Redis, ownership on) to the
recording fake Azure: responses created plain, streamed (``stream=True``) and with
``responses.stream(...)``; conversations made, items added and listed page by page (the SDK
follows ``last_id``), a response's input items listed page by page (the SDK follows the last
item's id). What reached Azure is asserted too: the gateway's key and nothing of the
caller's, no ``api-version`` (optional on ``/openai/v1/``, forwarded absent), the owner stamp
on every response and conversation made, and no stamp ever shown to the caller. Policy
refusals reach the SDK as ``BadRequestError`` with the rule's code and param; another
tenant's objects are ``NotFoundError`` (by path) and ``BadRequestError``
``reference_not_found`` (named in a body), with nothing forwarded.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from gateway.auth.tokens import default_domain
from gateway.ownership.filenames import stamp_filename
from gateway.ownership.rules import tenant_digest
from tests.fakeazure import FakeAzure
from tests.servers import RedisServer
from tests.stack import ISSUER, V2, Stack, running_stack

STAMP_KEY = "gateway_owner"
MODEL = "gpt-4o"
#: A profile that tightens the v1 policy (namespace ``strict``); the writer keeps Azure's.
STRICT_POLICY: dict[str, Any] = {
    "tools": ["function", "file_search"],
    "input_roles": ["user", "assistant"],
    "max_output_tokens": 1000,
    "allow_background": False,
}
OWNED: dict[str, Any] = {
    "threads": {"ownership": True, "unknown": "deny"},
    "rate_limit": {"enabled": False},
    "auth": {
        "callers": [
            {"profile": "reader", "namespaces": ["readers"]},
            {"profile": "strict", "namespaces": ["strict"]},
            {"profile": "writer", "namespaces": ["team-a", "team-b"]},
        ]
    },
    "profiles": {"strict": {"operations": ["*"], "policy": STRICT_POLICY}},
}


@pytest.fixture(scope="module")
def owned(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Stack]:
    url = os.environ.get("GATEWAY_TEST_REDIS_URL") or redis_server.url
    with running_stack(tmp_path_factory.mktemp("v1sdk"), redis_url=url, overrides=OWNED) as s:
        yield s


@pytest.fixture
def stack(owned: Stack) -> Stack:
    owned.fake.reset()
    return owned


def sdk(stack: Stack, token: str) -> openai.OpenAI:
    """The stock client exactly as a migrating service writes it."""
    return openai.OpenAI(base_url=f"{stack.url}/openai/v1/", api_key=token, max_retries=0)


def async_sdk(stack: Stack, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack.url}/openai/v1/", api_key=token, max_retries=0)


def owner_digest(namespace: str = "team-a") -> str:
    return tenant_digest(f"{default_domain(ISSUER)}:{namespace}")


def reached(fake: FakeAzure) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake.requests]


def bodies(fake: FakeAzure, method: str, path: str) -> list[Any]:
    return [r.json() for r in fake.requests if (r.method, r.path) == (method, path)]


def assert_only_gateway_credentials(stack: Stack, token: str) -> None:
    assert stack.fake.requests, "nothing reached Azure"
    for rec in stack.fake.requests:
        names = [n for n, _ in rec.headers]
        assert rec.header_values("api-key") == [stack.api_key]
        assert "authorization" not in names
        assert not any(n.startswith("x-forwarded") for n in names)
        assert token not in repr(rec.headers) and token.encode() not in rec.body
        # api-version is optional on /openai/v1/: the SDK sends none, none is forwarded.
        if rec.path.startswith("/openai/v1/"):
            assert "api-version" not in rec.query, rec.query


def message(text: str, role: str = "user") -> Any:
    return {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}


def test_responses_plain_and_streamed(stack: Stack) -> None:
    token = stack.token()
    c = sdk(stack, token)
    plain = c.responses.create(model=MODEL, input="Say hello", metadata={"team": "a"})
    assert plain.id.startswith("resp_") and plain.status == "completed"
    assert plain.output_text and plain.metadata == {"team": "a"}
    assert c.responses.retrieve(plain.id).metadata == {"team": "a"}

    events = list(c.responses.create(model=MODEL, input="Stream it", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    streamed_id = events[0].response.id if events[0].type == "response.created" else ""
    for event in events:
        if event.type in {"response.created", "response.in_progress", "response.completed"}:
            shown = getattr(event, "response")  # noqa: B009 (the union's common field)
            assert shown.id == streamed_id
            assert STAMP_KEY not in (shown.metadata or {})
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text

    with c.responses.stream(model=MODEL, input="Stream with the helper") as stream:
        helper_kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert helper_kinds[0] == "response.created" and helper_kinds[-1] == "response.completed"
    assert final.output_text and STAMP_KEY not in (final.metadata or {})
    # The streamed responses are the tenant's: retrievable by it, stamp hidden.
    for rid in (streamed_id, final.id):
        assert STAMP_KEY not in (c.responses.retrieve(rid).metadata or {})

    assert_only_gateway_credentials(stack, token)
    made = bodies(stack.fake, "POST", "/openai/v1/responses")
    assert [b.get("stream", False) for b in made] == [False, True, True]
    mine = owner_digest()
    assert made[0] == {
        "model": MODEL,
        "input": "Say hello",
        "metadata": {"team": "a", STAMP_KEY: mine},
    }
    assert all(b["metadata"][STAMP_KEY] == mine for b in made)


def test_conversation_items_paginate_and_input_items_list(stack: Stack) -> None:
    token = stack.token()
    c = sdk(stack, token)
    conv = c.conversations.create(metadata={"topic": "migration"}, items=[message("first")])
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "migration"}
    added = c.conversations.items.create(conv.id, items=[message(f"item {i}") for i in range(1, 6)])
    assert len(added.data) == 5
    # Auto-paging: the SDK follows `last_id` while `has_more`, in pages of two.
    listed = list(c.conversations.items.list(conv.id, limit=2, order="asc"))
    ids = [str(item.id) for item in listed]
    assert len(ids) == 6 and ids[1:] == [item.id for item in added.data]
    pages = [r for r in stack.fake.requests if r.method == "GET" and r.path.endswith("/items")]
    assert len(pages) == 3
    assert pages[0].query == "limit=2&order=asc"
    assert pages[1].query == f"limit=2&order=asc&after={ids[1]}"
    assert pages[2].query == f"limit=2&order=asc&after={ids[3]}"
    one = c.conversations.items.retrieve(ids[2], conversation_id=conv.id)
    assert one.id == ids[2]

    response = c.responses.create(
        model=MODEL, conversation=conv.id, input=[message("and one more"), message("and last")]
    )
    assert response.conversation is not None and response.conversation.id == conv.id
    inputs = list(c.responses.input_items.list(response.id, limit=1))
    assert len(inputs) == 2
    input_pages = [r for r in stack.fake.requests if r.path.endswith("/input_items")]
    assert len(input_pages) >= 2 and input_pages[1].query == f"limit=1&after={inputs[0].id}"

    assert c.conversations.retrieve(conv.id).metadata == {"topic": "migration"}
    assert c.conversations.update(conv.id, metadata={"topic": "done"}).metadata == {"topic": "done"}
    assert c.conversations.delete(conv.id).deleted
    c.responses.delete(response.id)
    assert ("DELETE", f"/openai/v1/responses/{response.id}") in reached(stack.fake)

    assert_only_gateway_credentials(stack, token)
    mine = owner_digest()
    (made,) = bodies(stack.fake, "POST", "/openai/v1/conversations")
    assert made["metadata"] == {"topic": "migration", STAMP_KEY: mine}
    (updated,) = bodies(stack.fake, "POST", f"/openai/v1/conversations/{conv.id}")
    # Azure replaces the whole map on update: the stamp is added back.
    assert updated["metadata"] == {"topic": "done", STAMP_KEY: mine}
    (with_conv,) = bodies(stack.fake, "POST", "/openai/v1/responses")
    assert with_conv["conversation"] == conv.id
    assert (
        "DELETE",
        f"/openai/v1/conversations/{conv.id}",
    ) in reached(stack.fake)


def test_async_sdk_streams_and_pages(stack: Stack) -> None:
    token = stack.token()

    async def scenario() -> tuple[str, list[str], list[str], str]:
        c = async_sdk(stack, token)
        conv = await c.conversations.create()
        await c.conversations.items.create(conv.id, items=[message(f"m{i}") for i in range(3)])
        ids = [str(item.id) async for item in c.conversations.items.list(conv.id, limit=1)]
        stream = await c.responses.create(
            model=MODEL, conversation={"id": conv.id}, input="go", stream=True
        )
        kinds: list[str] = [event.type async for event in stream]
        async with c.responses.stream(model=MODEL, input="again") as helper:
            async for _ in helper:
                pass
            final = await helper.get_final_response()
        await c.close()
        return conv.id, ids, kinds, final.output_text

    conv_id, ids, kinds, text = asyncio.run(scenario())
    assert len(ids) == 3 and len(set(ids)) == 3
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert text
    assert_only_gateway_credentials(stack, token)
    streamed = bodies(stack.fake, "POST", "/openai/v1/responses")
    assert streamed[0]["conversation"] == {"id": conv_id}
    assert all(b["stream"] is True for b in streamed)


Refusal = tuple[str, Callable[[openai.OpenAI], Any], str, str | None]
REFUSALS: list[Refusal] = [
    (
        "web_search tool",
        lambda c: c.responses.create(model=MODEL, input="x", tools=[{"type": "web_search"}]),
        "tool_not_allowed",
        "tools[0].type",
    ),
    (
        "system role",
        lambda c: c.responses.create(model=MODEL, input=[message("x", role="system")]),
        "role_not_allowed",
        "input[0].role",
    ),
    (
        "background",
        lambda c: c.responses.create(model=MODEL, input="x", background=True),
        "background_not_allowed",
        "background",
    ),
    (
        "the gateway's metadata key",
        lambda c: c.conversations.create(metadata={STAMP_KEY: "mine"}),
        "metadata_key_reserved",
        None,
    ),
    (
        "an unknown field",
        lambda c: c.responses.create(model=MODEL, input="x", extra_body={"surprise": 1}),
        "unknown_field",
        "surprise",
    ),
]


@pytest.mark.parametrize(("case", "call", "code", "param"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_policy_refusals_reach_the_sdk(
    stack: Stack, case: str, call: Callable[[openai.OpenAI], Any], code: str, param: str | None
) -> None:
    c = sdk(stack, stack.token(namespace="strict"))
    with pytest.raises(openai.BadRequestError) as err:
        call(c)
    assert err.value.code == code, (case, err.value.body)
    if param is not None:
        assert err.value.param == param, (case, err.value.body)
    assert err.value.type == "invalid_request_error"
    assert stack.fake.requests == []


def test_max_output_tokens_ceiling(stack: Stack) -> None:
    c = sdk(stack, stack.token(namespace="strict"))
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model=MODEL, input="x", max_output_tokens=1001)
    assert err.value.param == "max_output_tokens"
    assert stack.fake.requests == []
    ok = c.responses.create(model=MODEL, input="x", max_output_tokens=1000)
    assert ok.status == "completed"
    (sent,) = bodies(stack.fake, "POST", "/openai/v1/responses")
    assert sent["max_output_tokens"] == 1000


def test_another_tenants_objects_via_the_sdk(stack: Stack) -> None:
    a = sdk(stack, stack.token(namespace="team-a"))
    conv = a.conversations.create(items=[message("secret plans")])
    response = a.responses.create(model=MODEL, input="private")
    item_id = str(next(iter(a.conversations.items.list(conv.id))).id)
    before = len(stack.fake.requests)

    b = sdk(stack, stack.token(namespace="team-b"))
    by_path: list[tuple[Callable[[], Any], str]] = [
        (lambda: b.conversations.retrieve(conv.id), "conversation_not_found"),
        (lambda: b.conversations.update(conv.id, metadata={}), "conversation_not_found"),
        (lambda: b.conversations.delete(conv.id), "conversation_not_found"),
        (lambda: list(b.conversations.items.list(conv.id)), "conversation_not_found"),
        (
            lambda: b.conversations.items.retrieve(item_id, conversation_id=conv.id),
            "conversation_not_found",
        ),
        (
            lambda: b.conversations.items.create(conv.id, items=[message("x")]),
            "conversation_not_found",
        ),
        (lambda: b.responses.retrieve(response.id), "response_not_found"),
        (lambda: b.responses.delete(response.id), "response_not_found"),
        (lambda: b.responses.cancel(response.id), "response_not_found"),
        (lambda: list(b.responses.input_items.list(response.id)), "response_not_found"),
    ]
    for call, code in by_path:
        with pytest.raises(openai.NotFoundError) as not_found:
            call()
        assert not_found.value.code == code
    by_body: list[tuple[Callable[[], Any], str]] = [
        (lambda: b.responses.create(model=MODEL, input="x", conversation=conv.id), "conversation"),
        (
            lambda: b.responses.create(model=MODEL, input="x", conversation={"id": conv.id}),
            "conversation.id",
        ),
        (
            lambda: b.responses.create(model=MODEL, input="x", previous_response_id=response.id),
            "previous_response_id",
        ),
    ]
    for call, param in by_body:
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        assert refused.value.code == "reference_not_found"
        assert refused.value.param == param
    assert len(stack.fake.requests) == before, stack.fake.requests[before:]
    # Still the owner's.
    assert a.conversations.retrieve(conv.id).id == conv.id


def file_input(file_id: str) -> Any:
    return {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "What does the file say?"},
            {"type": "input_file", "file_id": file_id},
        ],
    }


def test_v1_files_are_the_assistants_files(stack: Stack) -> None:
    """A file uploaded on /openai/v1/files is the same owned FILE: stamped in its name at
    Azure, named by a response's ``input_file``, seen by the Assistants client, another
    tenant's 404 and ``reference_not_found``."""
    token = stack.token()
    c = sdk(stack, token)
    uploaded = c.files.create(file=("notes.txt", b"The plan is secret.\n"), purpose="assistants")
    assert uploaded.filename == "notes.txt"
    answer = c.responses.create(model=MODEL, input=[file_input(uploaded.id)])
    assert answer.status == "completed"
    assistants = openai.AzureOpenAI(
        azure_endpoint=stack.url, api_version=V2, azure_ad_token=token, max_retries=0
    )
    assert assistants.files.retrieve(uploaded.id).filename == "notes.txt"
    uploads = [r for r in stack.fake.requests if (r.method, r.path) == ("POST", "/openai/v1/files")]
    assert len(uploads) == 1
    assert f'filename="{stamp_filename(owner_digest(), "notes.txt")}"'.encode() in uploads[0].body
    (sent,) = bodies(stack.fake, "POST", "/openai/v1/responses")
    assert sent["input"][0]["content"][1] == {"type": "input_file", "file_id": uploaded.id}
    assert_only_gateway_credentials(stack, token)

    before = len(stack.fake.requests)
    other = sdk(stack, stack.token(namespace="team-b"))
    with pytest.raises(openai.NotFoundError) as not_found:
        other.files.retrieve(uploaded.id)
    assert not_found.value.code == "file_not_found"
    with pytest.raises(openai.BadRequestError) as refused:
        other.responses.create(model=MODEL, input=[file_input(uploaded.id)])
    assert refused.value.code == "reference_not_found"
    assert refused.value.param == "input[0].content[1].file_id"
    assert len(stack.fake.requests) == before


def test_a_token_provider_is_read_per_request(stack: Stack) -> None:
    """``api_key`` as a callable (what the README recommends for a projected token that
    rotates): the SDK asks it before each request, and the gateway takes each token."""
    issued: list[str] = []
    base = time.time()

    def provider() -> str:
        issued.append(stack.token(now=base - len(issued)))  # each one distinct (its iat)
        return issued[-1]

    c = openai.OpenAI(base_url=f"{stack.url}/openai/v1/", api_key=provider, max_retries=0)
    conv = c.conversations.create()
    assert c.conversations.retrieve(conv.id).id == conv.id
    assert len(issued) >= 2 and len(set(issued)) == len(issued)
