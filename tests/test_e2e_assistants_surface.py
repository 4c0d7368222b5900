"""The whole Assistants surface with the stock openai SDK (issue 14, item 7): a caller holding
only a gateway token creates an assistant, uploads a file, makes a vector store with it, opens a
thread with attachments, streams a run and deletes everything again — through a real gateway
(real uvicorn, real Redis, ownership on) to the recording fake Azure, on 2024-05-01-preview
(v2 shapes) and on 2024-02-15-preview (v1 shapes: ``file_ids``, ``retrieval``; the SDK's v2
types are widened with ``extra_body`` where v1 needs a field they no longer have).

What reached Azure is asserted too: the gateway's key and nothing of the caller's, the owner
stamp on every object made (``gateway_owner`` metadata, the ``gwo-`` filename prefix), and
no stamp ever shown to the caller.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from gateway.auth.tokens import default_domain
from gateway.ownership.filenames import stamp_filename
from gateway.ownership.rules import tenant_digest
from tests.fakeazure import FakeAzure
from tests.servers import RedisServer
from tests.stack import ISSUER, V1, V2, Stack, running_stack

# openai 2.x marks the whole Assistants API deprecated (a bare "deprecated" from its
# typing_extensions decorator, attributed to the caller): the surface is still what Azure serves.
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

STAMP_KEY = "gateway_owner"
NOTES = b"The launch code is 0000. Nobody must know.\n"
OWNED: dict[str, Any] = {
    "threads": {"ownership": True, "unknown": "deny"},
    "rate_limit": {"enabled": False},
}


@pytest.fixture(scope="module")
def owned(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Stack]:
    url = os.environ.get("GATEWAY_TEST_REDIS_URL") or redis_server.url
    with running_stack(tmp_path_factory.mktemp("surface"), redis_url=url, overrides=OWNED) as s:
        yield s


@pytest.fixture
def stack(owned: Stack) -> Stack:
    owned.fake.reset()
    return owned


def owner_digest(namespace: str = "team-a") -> str:
    return tenant_digest(f"{default_domain(ISSUER)}:{namespace}")


def sdk(stack: Stack, version: str, token: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=stack.url, api_version=version, azure_ad_token=token, max_retries=0
    )


def reached(fake: FakeAzure) -> list[tuple[str, str]]:
    """``(method, path)`` of everything that reached Azure, in order."""
    return [(r.method, r.path) for r in fake.requests]


def assert_only_gateway_credentials(stack: Stack, token: str) -> None:
    assert stack.fake.requests, "nothing reached Azure"
    for rec in stack.fake.requests:
        assert rec.header_values("api-key") == [stack.api_key]
        assert rec.header("authorization") is None
        assert token not in repr(rec.headers) and token.encode() not in rec.body


def uploaded_filenames(fake: FakeAzure) -> list[str]:
    """The multipart ``filename`` of every upload that reached Azure."""
    return [
        name.decode()
        for r in fake.requests
        if r.method == "POST" and r.path == "/openai/files"
        for name in re.findall(rb'filename="([^"]*)"', r.body)
    ]


def json_bodies(fake: FakeAzure, method: str, path: str) -> list[Any]:
    return [r.json() for r in fake.requests if (r.method, r.path) == (method, path)]


def test_sdk_builds_and_cleans_up_on_v2(stack: Stack) -> None:
    token = stack.token()
    c = sdk(stack, V2, token)
    uploaded = c.files.create(file=("notes.txt", NOTES), purpose="assistants")
    assert uploaded.filename == "notes.txt" and uploaded.bytes == len(NOTES)
    assert c.files.retrieve(uploaded.id).filename == "notes.txt"
    assert c.files.content(uploaded.id).read() == NOTES
    store = c.vector_stores.create(name="notes", file_ids=[uploaded.id], metadata={"t": "1"})
    assert store.metadata == {"t": "1"}
    in_store = c.vector_stores.files.list(store.id)
    assert [f.id for f in in_store] == [uploaded.id]
    assistant = c.beta.assistants.create(
        model="gpt-4o",
        name="reader",
        instructions="Answer from the notes.",
        tools=[{"type": "file_search"}, {"type": "code_interpreter"}],
        tool_resources={
            "file_search": {"vector_store_ids": [store.id]},
            "code_interpreter": {"file_ids": [uploaded.id]},
        },
    )
    assert assistant.metadata == {}
    assert assistant.id in [a.id for a in c.beta.assistants.list()]
    thread = c.beta.threads.create(
        messages=[
            {
                "role": "user",
                "content": "What do the notes say?",
                "attachments": [{"file_id": uploaded.id, "tools": [{"type": "file_search"}]}],
            }
        ]
    )
    with c.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as events:
        names = [event.event for event in events]
        run = events.get_final_run()
    assert names[0] == "thread.run.created" and names[-1] == "thread.run.completed"
    assert run.status == "completed" and run.assistant_id == assistant.id
    answer = c.beta.threads.messages.list(thread.id, order="desc").data[0]
    assert answer.role == "assistant" and answer.run_id == run.id

    assert c.beta.threads.delete(thread.id).deleted
    assert c.beta.assistants.delete(assistant.id).deleted
    assert c.vector_stores.files.delete(uploaded.id, vector_store_id=store.id).deleted
    assert c.vector_stores.delete(store.id).deleted
    assert c.files.delete(uploaded.id).deleted
    assert uploaded.id not in [f.id for f in c.files.list()]
    assert store.id not in [s.id for s in c.vector_stores.list()]
    assert assistant.id not in [a.id for a in c.beta.assistants.list()]

    # What Azure saw: the gateway's key, the owner stamped on every object made.
    assert_only_gateway_credentials(stack, token)
    mine = owner_digest()
    assert uploaded_filenames(stack.fake) == [stamp_filename(mine, "notes.txt")]
    (made_store,) = json_bodies(stack.fake, "POST", "/openai/vector_stores")
    assert made_store["metadata"] == {"t": "1", STAMP_KEY: mine}
    assert made_store["file_ids"] == [uploaded.id]
    (made_assistant,) = json_bodies(stack.fake, "POST", "/openai/assistants")
    assert made_assistant["metadata"] == {STAMP_KEY: mine}
    assert made_assistant["tool_resources"]["file_search"] == {"vector_store_ids": [store.id]}
    (made_thread,) = json_bodies(stack.fake, "POST", "/openai/threads")
    assert made_thread["metadata"] == {STAMP_KEY: mine}
    assert made_thread["messages"][0]["attachments"] == [
        {"file_id": uploaded.id, "tools": [{"type": "file_search"}]}
    ]
    (started,) = json_bodies(stack.fake, "POST", f"/openai/threads/{thread.id}/runs")
    assert started == {"assistant_id": assistant.id, "stream": True}
    deletes = [path for method, path in reached(stack.fake) if method == "DELETE"]
    assert deletes == [
        f"/openai/threads/{thread.id}",
        f"/openai/assistants/{assistant.id}",
        f"/openai/vector_stores/{store.id}/files/{uploaded.id}",
        f"/openai/vector_stores/{store.id}",
        f"/openai/files/{uploaded.id}",
    ]


#: v1's tool and message shapes, which the SDK's (v2) parameter types no longer name.
RETRIEVAL: Any = [{"type": "retrieval"}]


def v1_message(content: str, *file_ids: str) -> Any:
    return {"role": "user", "content": content, "file_ids": list(file_ids)}


def test_sdk_builds_and_cleans_up_on_v1(stack: Stack) -> None:
    """2024-02-15-preview: no vector stores; ``retrieval`` and ``file_ids`` on assistants and
    messages, assistant files; runs polled and streamed as the v1 document allows."""
    token = stack.token()
    c = sdk(stack, V1, token)
    uploaded = c.files.create(file=("v1-notes.txt", NOTES), purpose="assistants")
    assert uploaded.filename == "v1-notes.txt"
    assistant = c.beta.assistants.create(
        model="gpt-4",
        instructions="Answer from the notes.",
        tools=RETRIEVAL,
        extra_body={"file_ids": [uploaded.id]},
    )
    # v1 assistant files: the SDK's resource is gone, its generic calls still reach it.
    second = c.files.create(file=("more.txt", b"more"), purpose="assistants")
    attached = c.post(
        f"/assistants/{assistant.id}/files", body={"file_id": second.id}, cast_to=object
    )
    assert isinstance(attached, dict) and attached["id"] == second.id
    listed = c.get(f"/assistants/{assistant.id}/files", cast_to=object)
    assert isinstance(listed, dict)
    assert {f["id"] for f in listed["data"]} == {uploaded.id, second.id}
    thread = c.beta.threads.create(messages=[v1_message("Read it.", uploaded.id)])
    # The SDK's own polling helper: it sends `"stream": false`, which the gateway accepts on
    # v1 and does not forward (the v1 document has no such field).
    run = c.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "completed"
    assert [s.type for s in c.beta.threads.runs.steps.list(run.id, thread_id=thread.id)]
    answer = c.beta.threads.messages.list(thread.id).data[0]
    assert answer.role == "assistant"

    gone = c.delete(f"/assistants/{assistant.id}/files/{second.id}", cast_to=object)
    assert isinstance(gone, dict) and gone["deleted"] is True
    assert c.beta.threads.delete(thread.id).deleted
    assert c.beta.assistants.delete(assistant.id).deleted
    assert c.files.delete(uploaded.id).deleted
    assert c.files.delete(second.id).deleted

    assert_only_gateway_credentials(stack, token)
    mine = owner_digest()
    assert uploaded_filenames(stack.fake) == [
        stamp_filename(mine, "v1-notes.txt"),
        stamp_filename(mine, "more.txt"),
    ]
    (made_assistant,) = json_bodies(stack.fake, "POST", "/openai/assistants")
    assert made_assistant["file_ids"] == [uploaded.id]
    assert made_assistant["tools"] == [{"type": "retrieval"}]
    assert made_assistant["metadata"] == {STAMP_KEY: mine}
    (made_thread,) = json_bodies(stack.fake, "POST", "/openai/threads")
    assert made_thread["messages"][0]["file_ids"] == [uploaded.id]
    (started,) = json_bodies(stack.fake, "POST", f"/openai/threads/{thread.id}/runs")
    assert started == {"assistant_id": assistant.id}
    assert all(r.query.startswith(f"api-version={V1}") for r in stack.fake.requests)


def test_another_tenant_sees_none_of_it(stack: Stack) -> None:
    """Made by A with the SDK: B's SDK gets the SDK's own NotFoundError for each object, and
    B's lists do not show them."""
    a = sdk(stack, V2, stack.token())
    b = sdk(stack, V2, stack.token(namespace="team-b"))
    uploaded = a.files.create(file=("a.txt", NOTES), purpose="assistants")
    store = a.vector_stores.create(name="a", file_ids=[uploaded.id])
    assistant = a.beta.assistants.create(model="gpt-4o")
    before = len(stack.fake.requests)
    for attempt, code in (
        (lambda: b.files.retrieve(uploaded.id), "file_not_found"),
        (lambda: b.files.content(uploaded.id), "file_not_found"),
        (lambda: b.vector_stores.retrieve(store.id), "vector_store_not_found"),
        (lambda: b.vector_stores.files.list(store.id), "vector_store_not_found"),
        (lambda: b.beta.assistants.retrieve(assistant.id), "assistant_not_found"),
        (lambda: b.beta.assistants.delete(assistant.id), "assistant_not_found"),
    ):
        with pytest.raises(openai.NotFoundError) as err:
            attempt()
        assert err.value.code == code
    with pytest.raises(openai.BadRequestError) as bad:
        b.beta.threads.create(
            messages=[
                {
                    "role": "user",
                    "content": "steal",
                    "attachments": [{"file_id": uploaded.id, "tools": [{"type": "file_search"}]}],
                }
            ]
        )
    assert bad.value.code == "reference_not_found"
    assert bad.value.param == "messages[0].attachments[0].file_id"
    assert len(stack.fake.requests) == before
    assert uploaded.id not in [f.id for f in b.files.list()]
    assert store.id not in [s.id for s in b.vector_stores.list()]
    assert assistant.id not in [x.id for x in b.beta.assistants.list()]
    assert uploaded.id in [f.id for f in a.files.list()]


def test_async_sdk_streams_a_run_with_file_search(stack: Stack) -> None:
    """The async client, the same surface: upload, vector store, assistant, thread with an
    attachment, a streamed run, everything deleted; each object stamped at Azure."""
    token = stack.token()

    async def scenario() -> list[str]:
        async with openai.AsyncAzureOpenAI(
            azure_endpoint=stack.url, api_version=V2, azure_ad_token=token, max_retries=0
        ) as c:
            uploaded = await c.files.create(file=("async.txt", NOTES), purpose="assistants")
            store = await c.vector_stores.create(name="async", file_ids=[uploaded.id])
            assistant = await c.beta.assistants.create(
                model="gpt-4o",
                tools=[{"type": "file_search"}],
                tool_resources={"file_search": {"vector_store_ids": [store.id]}},
            )
            thread = await c.beta.threads.create(
                messages=[
                    {
                        "role": "user",
                        "content": "Summarise.",
                        "attachments": [
                            {"file_id": uploaded.id, "tools": [{"type": "file_search"}]}
                        ],
                    }
                ]
            )
            async with c.beta.threads.runs.stream(
                thread_id=thread.id, assistant_id=assistant.id
            ) as events:
                names: list[str] = [event.event async for event in events]
                run = await events.get_final_run()
            assert run.status == "completed"
            assert (await c.beta.threads.delete(thread.id)).deleted
            assert (await c.beta.assistants.delete(assistant.id)).deleted
            assert (await c.vector_stores.delete(store.id)).deleted
            assert (await c.files.delete(uploaded.id)).deleted
            return names

    names = asyncio.run(scenario())
    assert names[0] == "thread.run.created" and names[-1] == "thread.run.completed"
    assert_only_gateway_credentials(stack, token)
    mine = owner_digest()
    assert uploaded_filenames(stack.fake) == [stamp_filename(mine, "async.txt")]
    for path in ("/openai/vector_stores", "/openai/assistants", "/openai/threads"):
        (made,) = json_bodies(stack.fake, "POST", path)
        assert made["metadata"] == {STAMP_KEY: mine}, path
