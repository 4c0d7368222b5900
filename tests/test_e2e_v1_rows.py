"""The v1 API's rows and policy end to end: the stock SDK (``OpenAI(base_url=…/openai/v1/)``,
the caller's JWT as its api key) through the real gateway to the recording fake Azure. What
reaches Azure is the validated body and the validated query (an absent api-version stays
absent); refusals reach the SDK with the rule's code and param, and nothing reaches Azure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.stack import Stack, running_stack

MCP_URL = "https://mcp.example.com/sse"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(Path(tmp_path_factory.mktemp("v1rows"))) as stack:
        yield stack


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A writer profile that tightens the v1 keys."""
    policy = {
        "input_roles": ["user", "assistant"],
        "max_input_items": 3,
        "max_input_images": 1,
        "mcp_server_urls": [MCP_URL],
        "allow_store": False,
        "allow_background": False,
        "max_output_tokens": 256,
        "models": ["gpt-4o"],
        "tools": ["function", "file_search", "mcp"],
    }
    overrides = {"profiles": {"writer": {"policy": policy}}}
    with running_stack(Path(tmp_path_factory.mktemp("v1strict")), overrides=overrides) as stack:
        yield stack


def sdk(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/openai/v1/", api_key=stack.token(), max_retries=0)


def forwarded(stack: Stack, path_start: str) -> list[Any]:
    return [r for r in stack.fake.requests if r.path.startswith(path_start)]


def test_the_stock_sdk_runs_responses_and_conversations_through_the_gateway(gw: Stack) -> None:
    gw.fake.reset()
    client = sdk(gw)
    conv = client.conversations.create(
        items=[{"role": "user", "content": "hi"}], metadata={"topic": "t"}
    )
    added = client.conversations.items.create(
        conv.id, items=[{"type": "message", "role": "user", "content": f"n{i}"} for i in range(4)]
    )
    assert len(added.data) == 4
    every = list(client.conversations.items.list(conv.id, limit=2, order="asc"))
    assert len(every) == 5  # auto-pagination over the gateway: limit and after kept
    pages = [r.query for r in forwarded(gw, f"/openai/v1/conversations/{conv.id}/items")]
    assert pages[1:3] == ["limit=2&order=asc", f"limit=2&order=asc&after={every[1].id}"]
    plain = client.responses.create(model="gpt-4o", input="plain", conversation=conv.id)
    assert plain.status == "completed" and "plain" in plain.output_text
    create = forwarded(gw, "/openai/v1/responses")[-1]
    assert (create.method, create.path, create.query) == ("POST", "/openai/v1/responses", "")
    assert create.json() == {"model": "gpt-4o", "input": "plain", "conversation": conv.id}
    kinds = [e.type for e in client.responses.create(model="gpt-4o", input="s", stream=True)]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    with client.responses.stream(
        model="gpt-4o", input="more", previous_response_id=plain.id
    ) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text and final.previous_response_id == plain.id
    assert client.responses.retrieve(plain.id).id == plain.id
    background = client.responses.create(model="gpt-4o", input="b", background=True)
    replay = [e.type for e in client.responses.retrieve(background.id, stream=True)]
    assert replay[-1] == "response.completed"
    assert forwarded(gw, f"/openai/v1/responses/{background.id}")[-1].query == "stream=true"
    inputs = list(client.responses.input_items.list(plain.id, limit=1))
    assert [i.type for i in inputs] == ["message"]
    deleted = client.conversations.delete(conv.id)
    assert deleted.deleted
    # the gateway's own credential reached Azure, never the caller's token
    assert all(r.header("authorization") is None for r in gw.fake.requests)
    assert all(r.header("api-key") == gw.api_key for r in gw.fake.requests)
    client.close()


def test_a_given_api_version_is_forwarded_and_a_dated_one_refused(gw: Stack) -> None:
    gw.fake.reset()
    headers = {**gw.auth(), "Content-Type": "application/json"}
    body = {"model": "gpt-4o", "input": "x", "store": False}
    ok = httpx.post(
        f"{gw.url}/openai/v1/responses",
        params={"api-version": "preview"},
        headers=headers,
        json=body,
    )
    assert ok.status_code == 200, ok.text
    assert gw.fake.requests[-1].query == "api-version=preview"
    before = len(gw.fake.requests)
    for query, path, code in [
        (
            {"api-version": "2025-04-01-preview"},
            "/openai/v1/responses",
            "operation_not_in_api_version",
        ),
        ({"api-version": "v1"}, "/openai/threads", "operation_not_in_api_version"),
        ({}, "/openai/threads", "missing_api_version"),
    ]:
        refused = httpx.post(f"{gw.url}{path}", params=query, headers=headers, json={})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == code
    for path in ("/openai/v1/chat/completions", "/openai/v1/assistants", "/openai/v1/responses/x"):
        assert httpx.post(f"{gw.url}{path}", headers=headers, json=body).status_code == 404
    assert len(gw.fake.requests) == before


Call = Callable[[openai.OpenAI], Any]
REFUSALS: list[tuple[str, Call, str, str]] = [
    (
        "mcp to another server",
        lambda c: c.responses.create(
            model="gpt-4o",
            input="x",
            tools=[{"type": "mcp", "server_label": "x", "server_url": "https://evil.example/sse"}],
        ),
        "mcp_server_not_allowed",
        "tools[0].server_url",
    ),
    (
        "a tool the profile does not list",
        lambda c: c.responses.create(model="gpt-4o", input="x", tools=[{"type": "web_search"}]),
        "tool_not_allowed",
        "tools[0].type",
    ),
    (
        "store",
        lambda c: c.responses.create(model="gpt-4o", input="x", store=True),
        "store_not_allowed",
        "store",
    ),
    (
        "background",
        lambda c: c.responses.create(model="gpt-4o", input="x", background=True),
        "background_not_allowed",
        "background",
    ),
    (
        "output tokens",
        lambda c: c.responses.create(model="gpt-4o", input="x", max_output_tokens=257),
        "max_output_tokens_too_large",
        "max_output_tokens",
    ),
    (
        "model",
        lambda c: c.responses.create(model="gpt-4o-mini", input="x"),
        "model_not_allowed",
        "model",
    ),
    (
        "system role",
        lambda c: c.responses.create(model="gpt-4o", input=[{"role": "system", "content": "obey"}]),
        "role_not_allowed",
        "input[0].role",
    ),
    (
        "item reference",
        lambda c: c.responses.create(
            model="gpt-4o", input=[{"type": "item_reference", "id": "msg_someone_elses"}]
        ),
        "input_item_id_not_allowed",
        "input[0].type",
    ),
    (
        "two images",
        lambda c: c.responses.create(
            model="gpt-4o",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_image", "file_id": "file-a", "detail": "auto"},
                        {"type": "input_image", "file_id": "file-b", "detail": "auto"},
                    ],
                }
            ],
        ),
        "too_many_images",
        "input[0].content[1]",
    ),
    (
        "four items in a conversation",
        lambda c: c.conversations.create(items=[{"role": "user", "content": "hi"}] * 4),
        "too_many_input_items",
        "items",
    ),
    (
        "gateway_owner",
        lambda c: c.conversations.create(metadata={"gateway_owner": "team-b"}),
        "metadata_key_reserved",
        "metadata",
    ),
    (
        "private image URL",
        lambda c: c.conversations.items.create(
            "conv_abc",
            items=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "input_image",
                            "image_url": "https://127.0.0.1/x.png",
                            "detail": "auto",
                        }
                    ],
                }
            ],
        ),
        "content_part_not_allowed",
        "items[0].content[0].image_url",
    ),
]


@pytest.mark.parametrize(
    ("call", "code", "param"),
    [pytest.param(call, code, param, id=name) for name, call, code, param in REFUSALS],
)
def test_refusals_reach_the_sdk_and_nothing_reaches_azure(
    strict: Stack, call: Call, code: str, param: str
) -> None:
    strict.fake.reset()
    with sdk(strict) as client, pytest.raises(openai.BadRequestError) as err:
        call(client)
    assert (err.value.code, err.value.param) == (code, param)
    assert strict.fake.requests == []


def test_the_strict_profile_forwards_its_fills(strict: Stack) -> None:
    strict.fake.reset()
    with sdk(strict) as client:
        answer = client.responses.create(model="gpt-4o", input="x")
    assert answer.status == "completed"
    sent = strict.fake.requests[-1].json()
    assert sent == {"model": "gpt-4o", "input": "x", "store": False, "max_output_tokens": 256}
