"""The fake Azure OpenAI Assistants upstream, driven over real HTTP (uvicorn) by httpx and the
real ``openai`` SDK, plus table tests for its pure parts."""

from __future__ import annotations

import gzip
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import TypedDict, Unpack

import httpx
import openai
import pytest
from openai.types.beta import FunctionToolParam
from openai.types.beta.threads import Message, MessageDeltaEvent, Run, TextContentBlock

from tests.fakeazure import FakeAzure, RecordedRequest, ScriptedResponse, new_id
from tests.fakeazure.runs import split_answer, sse_frame
from tests.fakeazure.shapes import (
    FakeError,
    Generation,
    ListQuery,
    match_route,
    paginate,
    parse_list_query,
)
from tests.servers import ThreadedUvicorn, run_app

KEY = "upstream-key-123"
V1 = "2024-02-15-preview"
V2 = "2024-05-01-preview"
ID = re.compile(r"^(thread|msg|run|step)_[A-Za-z0-9]{24}$")
V1_MESSAGE_KEYS = {
    "id",
    "object",
    "created_at",
    "assistant_id",
    "thread_id",
    "run_id",
    "role",
    "content",
    "file_ids",
    "metadata",
}
V2_MESSAGE_KEYS = (V1_MESSAGE_KEYS - {"file_ids"}) | {
    "attachments",
    "status",
    "incomplete_details",
    "completed_at",
    "incomplete_at",
}
STREAM_EVENTS = [
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.message.created",
    "thread.message.in_progress",
    "thread.message.delta",
    "thread.message.delta",
    "thread.message.delta",
    "thread.message.delta",
    "thread.message.completed",
    "thread.run.step.completed",
    "thread.run.completed",
]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeAzure, ThreadedUvicorn]]:
    fake = FakeAzure(KEY, bearer_token="entra-token")
    with run_app(fake.app) as server:
        yield fake, server


@pytest.fixture
def fake(served: tuple[FakeAzure, ThreadedUvicorn]) -> FakeAzure:
    fake = served[0]
    fake.reset()
    fake.run_event_delay_s = 0.002
    fake.run_complete_after_s = 2.0
    return fake


@pytest.fixture
def url(served: tuple[FakeAzure, ThreadedUvicorn], fake: FakeAzure) -> str:
    return served[1].url


def sdk(url: str, version: str = V2, key: str = KEY) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=url, api_key=key, api_version=version, max_retries=0)


def raw(
    url: str,
    method: str,
    path: str,
    version: str | None = V2,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    params = {"api-version": version} if version else {}
    with httpx.Client(base_url=url, headers={"api-key": KEY, **(headers or {})}) as client:
        return client.request(method, path, params=params, json=body)


def text_of(message: object) -> str:
    assert isinstance(message, Message)
    block = message.content[0]
    assert isinstance(block, TextContentBlock)
    return block.text.value


def delta_text(data: object) -> str:
    assert isinstance(data, MessageDeltaEvent)
    assert data.delta.content
    part = data.delta.content[0]
    assert part.type == "text"
    assert part.text is not None
    return part.text.value or ""


def read_raw(response: httpx.Response, into: list[bytes]) -> None:
    """Collects raw body chunks as they arrive (kept when reading fails midway)."""
    into.extend(chunk for chunk in response.iter_raw())


# ---------------------------------------------------------------- threads and messages (SDK)
def test_thread_lifecycle_with_sdk(fake: FakeAzure, url: str) -> None:
    client = sdk(url)
    thread = client.beta.threads.create(
        metadata={"team": "a"}, messages=[{"role": "user", "content": "hello"}]
    )
    assert ID.match(thread.id)
    assert thread.metadata == {"team": "a"}
    assert abs(thread.created_at - time.time()) < 5
    assert client.beta.threads.retrieve(thread.id).id == thread.id
    assert client.beta.threads.update(thread.id, metadata={"team": "b"}).metadata == {"team": "b"}
    assert [text_of(m) for m in client.beta.threads.messages.list(thread.id)] == ["hello"]
    deleted = client.beta.threads.delete(thread.id)
    assert deleted.deleted
    assert deleted.object == "thread.deleted"
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)


def test_modify_replaces_the_whole_metadata_map(fake: FakeAzure, url: str) -> None:
    """As Microsoft documents it (``modify_thread.json``: the answer carries exactly the map
    sent); a modify without ``metadata`` leaves the map alone, ``null`` empties it."""
    client = sdk(url)
    thread = client.beta.threads.create(metadata={"a": "1", "b": "2"})
    assert client.beta.threads.update(thread.id, metadata={"c": "3"}).metadata == {"c": "3"}
    assert client.beta.threads.update(thread.id).metadata == {"c": "3"}
    empty = httpx.post(
        f"{url}/openai/threads/{thread.id}",
        params={"api-version": V2},
        headers={"api-key": KEY},
        json={"metadata": None},
    )
    assert empty.json()["metadata"] == {}
    too_many = httpx.post(
        f"{url}/openai/threads",
        params={"api-version": V2},
        headers={"api-key": KEY},
        json={"metadata": {f"k{i}": "v" for i in range(17)}},
    )
    assert too_many.status_code == 400


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1, gzip;q=0.5", True),
        ("*", True),
        ("identity", False),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),
        (None, False),
    ],
)
def test_json_answers_are_gzipped_when_asked(url: str, accept: str | None, gzipped: bool) -> None:
    headers = {"api-key": KEY, **({"accept-encoding": accept} if accept else {})}
    request = httpx.Request(
        "POST", f"{url}/openai/threads", params={"api-version": V2}, headers=headers, json={}
    )
    assert request.headers.get("accept-encoding") == accept  # a bare request: no defaults
    with httpx.Client() as client:
        response = client.send(request, stream=True)
        raw = b"".join(response.iter_raw())
    assert (response.headers.get("content-encoding") == "gzip") is gzipped
    assert int(response.headers["content-length"]) == len(raw)
    body = gzip.decompress(raw) if gzipped else raw
    assert json.loads(body)["object"] == "thread"


def test_event_streams_are_never_gzipped(url: str) -> None:
    with httpx.stream(
        "POST",
        f"{url}/openai/threads/runs",
        params={"api-version": V2},
        headers={"api-key": KEY, "accept-encoding": "gzip"},
        json={"assistant_id": "asst_abc123", "stream": True},
    ) as response:
        raw = b"".join(response.iter_raw())
    assert "content-encoding" not in response.headers
    assert raw.startswith(b"event: thread.created")


def test_messages_crud_and_auto_pagination_v2(fake: FakeAzure, url: str) -> None:
    client = sdk(url)
    thread = client.beta.threads.create()
    created = [
        client.beta.threads.messages.create(thread.id, role="user", content=f"m{i}")
        for i in range(5)
    ]
    page = client.beta.threads.messages.list(thread.id, limit=2, order="asc")
    assert [m.id for m in page] == [m.id for m in created]  # iterating follows every page
    afters = [r.query for r in fake.requests if r.method == "GET"]
    assert len(afters) == 3
    assert f"after={created[1].id}" in afters[1]
    newest = client.beta.threads.messages.list(thread.id, limit=2)
    assert [m.id for m in newest.data] == [created[4].id, created[3].id]
    assert newest.has_more

    first = client.beta.threads.messages.retrieve(created[0].id, thread_id=thread.id)
    assert text_of(first) == "m0"
    assert first.status == "completed"
    changed = client.beta.threads.messages.update(
        created[0].id, thread_id=thread.id, metadata={"k": "v"}
    )
    assert changed.metadata == {"k": "v"}
    gone = client.beta.threads.messages.delete(created[0].id, thread_id=thread.id)
    assert gone.deleted
    assert gone.object == "thread.message.deleted"
    assert len(client.beta.threads.messages.list(thread.id).data) == 4
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(created[0].id, thread_id=thread.id)


def test_v2_message_shape_and_array_content(fake: FakeAzure, url: str) -> None:
    thread = raw(url, "POST", "/openai/threads", body={}).json()
    body = {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_file", "image_file": {"file_id": "assistant-f1"}},
        ],
        "attachments": [{"file_id": "assistant-f2", "tools": [{"type": "file_search"}]}],
    }
    message = raw(url, "POST", f"/openai/threads/{thread['id']}/messages", body=body).json()
    assert set(message) == V2_MESSAGE_KEYS
    assert ID.match(message["id"])
    assert message["content"] == [
        {"type": "text", "text": {"value": "hi", "annotations": []}},
        {"type": "image_file", "image_file": {"file_id": "assistant-f1", "detail": "auto"}},
    ]
    assert message["attachments"] == body["attachments"]
    assert message["run_id"] is None
    assert "tool_resources" in thread


def test_v1_messages_and_message_files(fake: FakeAzure, url: str) -> None:
    thread = raw(url, "POST", "/openai/threads", V1, body={}).json()
    assert "tool_resources" not in thread
    base = f"/openai/threads/{thread['id']}/messages"
    message = raw(
        url,
        "POST",
        base,
        V1,
        body={"role": "user", "content": "hi", "file_ids": ["file-a", "file-b"]},
    ).json()
    assert set(message) == V1_MESSAGE_KEYS
    assert message["file_ids"] == ["file-a", "file-b"]
    listed = raw(url, "GET", base, V1).json()
    assert listed["data"] == [message]
    assert listed["first_id"] == listed["last_id"] == message["id"]
    files = raw(url, "GET", f"{base}/{message['id']}/files", V1).json()
    assert [f["id"] for f in files["data"]] == ["file-b", "file-a"]  # desc by default
    assert files["data"][0] == {
        "id": "file-b",
        "object": "thread.message.file",
        "created_at": message["created_at"],
        "message_id": message["id"],
    }
    one = raw(url, "GET", f"{base}/{message['id']}/files/file-a", V1)
    assert one.status_code == 200
    assert one.json()["id"] == "file-a"
    assert raw(url, "GET", f"{base}/{message['id']}/files/file-x", V1).status_code == 404
    # v1 has no message DELETE; v2 has no message files; v1 takes no "assistant" role
    assert raw(url, "DELETE", f"{base}/{message['id']}", V1).status_code == 404
    assert raw(url, "GET", f"{base}/{message['id']}/files", V2).status_code == 404
    bad = raw(url, "POST", base, V1, body={"role": "assistant", "content": "x"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "role"


def test_sdk_v1_client_creates_and_lists(fake: FakeAzure, url: str) -> None:
    client = sdk(url, V1)
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread.id, role="user", content="v1 hello")
    assert [text_of(m) for m in client.beta.threads.messages.list(thread.id)] == ["v1 hello"]
    assert all(r.query.startswith(f"api-version={V1}") for r in fake.requests)


def test_empty_list_has_empty_string_ids(fake: FakeAzure, url: str) -> None:
    """first_id/last_id are required strings (not nullable) in every list schema."""
    thread = raw(url, "POST", "/openai/threads", body={}).json()
    listed = raw(url, "GET", f"/openai/threads/{thread['id']}/messages").json()
    assert listed == {
        "object": "list",
        "data": [],
        "first_id": "",
        "last_id": "",
        "has_more": False,
    }


# ---------------------------------------------------------------- errors
def test_wrong_key_is_401_in_azure_words_and_still_recorded(fake: FakeAzure, url: str) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(url, key="wrong").beta.threads.create()
    assert caught.value.status_code == 401
    assert caught.value.body == {
        "code": "401",
        "message": (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
            "provide a valid key for an active subscription and use a correct regional API "
            "endpoint for your resource."
        ),
    }
    assert len(fake.requests) == 1
    assert fake.requests[0].header("api-key") == "wrong"
    assert fake.requests[0].outcome.status == 401


def test_bearer_token_is_accepted_and_duplicate_keys_are_not(fake: FakeAzure, url: str) -> None:
    with httpx.Client(base_url=url) as client:
        ok = client.post(
            "/openai/threads",
            params={"api-version": V2},
            json={},
            headers={"authorization": "Bearer entra-token"},
        )
        dup = client.post(
            "/openai/threads",
            params={"api-version": V2},
            json={},
            headers=[("api-key", KEY), ("api-key", KEY)],
        )
    assert ok.status_code == 200
    assert dup.status_code == 401
    assert fake.requests[1].header_values("api-key") == [KEY, KEY]


def test_a_bearer_validator_accepts_only_what_it_vouches_for() -> None:
    issued = {"entra-live"}
    fake = FakeAzure(KEY, bearer=issued.__contains__)
    q = {"api-version": V2}
    with run_app(fake.app, lifespan="off") as server, httpx.Client(base_url=server.url) as c:

        def status(headers: list[tuple[str, str]]) -> int:
            return c.post("/openai/threads", params=q, json={}, headers=headers).status_code

        assert status([("authorization", "Bearer entra-live")]) == 200
        assert status([("authorization", "Bearer entra-other")]) == 401
        assert status([("authorization", "entra-live")]) == 401  # no scheme
        assert status([("authorization", "Basic entra-live")]) == 401
        two = [("authorization", "Bearer entra-live"), ("authorization", "Bearer entra-live")]
        assert status(two) == 401
        # A request with an api-key is judged by the key alone: a valid token does not help.
        assert status([("api-key", "wrong"), ("authorization", "Bearer entra-live")]) == 401
        assert status([("api-key", KEY)]) == 200
        issued.clear()  # expired: refused from then on
        assert status([("authorization", "Bearer entra-live")]) == 401


def test_unknown_thread_is_404_not_found(fake: FakeAzure, url: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(url).beta.threads.messages.list("thread_doesnotexist")
    assert caught.value.body == {
        "code": "NotFound",
        "param": None,
        "type": "invalid_request_error",
        "message": "No thread found with id 'thread_doesnotexist'.",
    }


@pytest.mark.parametrize(
    ("version", "status", "code"),
    [(None, 404, "404"), ("2023-01-01", 400, "BadRequest"), ("", 400, "BadRequest")],
)
def test_api_version_is_required_and_known(
    fake: FakeAzure, url: str, version: str | None, status: int, code: str
) -> None:
    with httpx.Client(base_url=url, headers={"api-key": KEY}) as client:
        query = "" if version is None else f"?api-version={version}"
        response = client.post("/openai/threads" + query, json={})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"content": "x"}, "role"),
        ({"role": "user"}, "content"),
        ({"role": "system", "content": "x"}, "role"),
        ({"role": "user", "content": ""}, "content"),
        ({"role": "user", "content": []}, "content"),
        ({"role": "user", "content": "x", "file_ids": ["f"]}, "file_ids"),
        ({"role": "user", "content": "x", "metadata": {"k": 1}}, "metadata.k"),
    ],
)
def test_message_validation(fake: FakeAzure, url: str, body: object, param: str) -> None:
    thread = raw(url, "POST", "/openai/threads", body={}).json()
    response = raw(url, "POST", f"/openai/threads/{thread['id']}/messages", body=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_invalid_json_unknown_path_and_bad_list_query(fake: FakeAzure, url: str) -> None:
    with httpx.Client(base_url=url, headers={"api-key": KEY}) as client:
        bad_json = client.post("/openai/threads", params={"api-version": V2}, content=b"{nope")
        nan = client.post("/openai/threads", params={"api-version": V2}, content=b'{"a": NaN}')
        unknown = client.get("/openai/assistants/a/nope", params={"api-version": V2})
    assert bad_json.status_code == nan.status_code == 400
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"code": "404", "message": "Resource not found"}}
    thread = raw(url, "POST", "/openai/threads", body={}).json()
    for query in ("limit=0", "limit=101", "limit=x", "order=up"):
        listed = httpx.get(
            f"{url}/openai/threads/{thread['id']}/messages?api-version={V2}&{query}",
            headers={"api-key": KEY},
        )
        assert listed.status_code == 400, query


# ---------------------------------------------------------------- runs
def test_stream_run_yields_the_event_sequence_and_stores_the_answer(
    fake: FakeAzure, url: str
) -> None:
    client = sdk(url)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "cube root?"}])
    with client.beta.threads.runs.create(thread.id, assistant_id="asst_1", stream=True) as s:
        events = list(s)
    assert [e.event for e in events] == STREAM_EVENTS
    final = events[-3].data
    assert isinstance(final, Message)
    assert final.status == "completed"
    text = text_of(final)
    deltas = "".join(delta_text(e.data) for e in events if e.event == "thread.message.delta")
    assert deltas == text
    assert "cube root?" in text
    run = events[-1].data
    assert isinstance(run, Run)
    assert run.status == "completed"
    assert run.usage is not None
    messages = client.beta.threads.messages.list(thread.id, order="asc").data
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].run_id == run.id
    assert text_of(messages[1]) == text
    assert client.beta.threads.messages.list(thread.id, run_id=run.id).data == [messages[1]]


def test_sse_framing_on_the_wire(fake: FakeAzure, url: str) -> None:
    thread = raw(url, "POST", "/openai/threads", body={}).json()
    with (
        httpx.Client(base_url=url, headers={"api-key": KEY}) as client,
        client.stream(
            "POST",
            f"/openai/threads/{thread['id']}/runs",
            params={"api-version": V2},
            json={"assistant_id": "asst_1", "stream": True},
        ) as response,
    ):
        assert response.headers["content-type"] == "text/event-stream"
        body = response.read().decode()
    frames = body.split("\n\n")
    assert frames[-1] == ""
    assert frames[-2] == "event: done\ndata: [DONE]"
    for frame in frames[:-2]:
        event, data = frame.split("\n")
        assert event.startswith("event: thread.")
        assert data.startswith("data: {")
        json.loads(data[len("data: ") :])


def test_runs_stream_helper_gives_final_messages(fake: FakeAzure, url: str) -> None:
    client = sdk(url)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi there"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id="asst_1") as stream:
        stream.until_done()
        final = stream.get_final_messages()
        run = stream.get_final_run()
    assert len(final) == 1
    assert "hi there" in text_of(final[0])
    assert run.status == "completed"
    assert fake.requests[-1].header("x-stainless-stream-helper") == "threads.runs.create_and_stream"


def test_create_and_run_stream_starts_with_thread_created(fake: FakeAzure, url: str) -> None:
    client = sdk(url)
    with client.beta.threads.create_and_run(
        assistant_id="asst_1", stream=True, thread={"messages": [{"role": "user", "content": "x"}]}
    ) as stream:
        events = [e.event for e in stream]
    assert events == ["thread.created", *STREAM_EVENTS]


def test_non_stream_run_advances_by_polls(fake: FakeAzure, url: str) -> None:
    client = sdk(url)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "poll me"}])
    run = client.beta.threads.runs.create(thread.id, assistant_id="asst_1", model="gpt-4o-mini")
    assert run.status == "queued"
    assert run.model == "gpt-4o-mini"
    assert ID.match(run.id)
    statuses = [
        client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status for _ in range(3)
    ]
    assert statuses == ["in_progress", "completed", "completed"]
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    assert [s.type for s in steps] == ["message_creation"]
    assert steps[0].status == "completed"
    step = client.beta.threads.runs.steps.retrieve(steps[0].id, thread_id=thread.id, run_id=run.id)
    assert step.id == steps[0].id
    assert ID.match(step.id)
    assert [r.id for r in client.beta.threads.runs.list(thread.id)] == [run.id]
    updated = client.beta.threads.runs.update(run.id, thread_id=thread.id, metadata={"a": "b"})
    assert updated.metadata == {"a": "b"}


def test_create_and_poll_and_age_based_completion(fake: FakeAzure, url: str) -> None:
    client = sdk(url)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "q"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id="asst_1", poll_interval_ms=5
    )
    assert run.status == "completed"
    fake.run_complete_after_s = 0.0
    client.beta.threads.runs.create(thread.id, assistant_id="asst_1")
    roles = [m.role for m in client.beta.threads.messages.list(thread.id, order="asc")]
    assert roles == ["user", "assistant", "assistant"]  # finished without a single poll


def test_active_run_blocks_messages_and_runs_then_cancel(fake: FakeAzure, url: str) -> None:
    client = sdk(url)
    thread = client.beta.threads.create()
    run = client.beta.threads.runs.create(thread.id, assistant_id="asst_1")
    with pytest.raises(openai.BadRequestError, match="while a run"):
        client.beta.threads.messages.create(thread.id, role="user", content="x")
    with pytest.raises(openai.BadRequestError, match="already has an active run"):
        client.beta.threads.runs.create(thread.id, assistant_id="asst_1")
    assert client.beta.threads.runs.cancel(run.id, thread_id=thread.id).status == "cancelling"
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    client.beta.threads.messages.create(thread.id, role="user", content="now it works")


def test_function_tools_require_action_then_submit_outputs_streams(
    fake: FakeAzure, url: str
) -> None:
    client = sdk(url)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather?"}])
    tools: list[FunctionToolParam] = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    ]
    with client.beta.threads.runs.create(
        thread.id, assistant_id="asst_1", stream=True, tools=tools
    ) as stream:
        events = list(stream)
    assert events[-1].event == "thread.run.requires_action"
    run = events[-1].data
    assert isinstance(run, Run)
    assert run.required_action is not None
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [c.function.name for c in calls] == ["get_weather"]
    resumed_stream = client.beta.threads.runs.submit_tool_outputs(
        run.id,
        thread_id=thread.id,
        stream=True,
        tool_outputs=[{"tool_call_id": calls[0].id, "output": "sunny"}],
    )
    with resumed_stream as stream:
        resumed = [e.event for e in stream]
    assert resumed[:4] == [
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.completed",
        "thread.run.step.created",
    ]
    assert resumed[-1] == "thread.run.completed"
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc").data
    details = steps[0].step_details
    assert details.type == "tool_calls"
    call = details.tool_calls[0]
    assert call.type == "function"
    assert call.function.output == "sunny"


def test_fail_runs_ends_with_run_failed(fake: FakeAzure, url: str) -> None:
    fake.fail_runs = True
    client = sdk(url)
    thread = client.beta.threads.create()
    with client.beta.threads.runs.create(thread.id, assistant_id="a", stream=True) as stream:
        events = list(stream)
    assert events[-1].event == "thread.run.failed"
    failed = events[-1].data
    assert isinstance(failed, Run)
    assert failed.last_error is not None
    assert failed.last_error.code == "server_error"
    fake.reset()
    assert fake.fail_runs is False


def test_fail_runs_after_events_cuts_the_stream(fake: FakeAzure, url: str) -> None:
    fake.fail_runs_after_events = 3
    thread = raw(url, "POST", "/openai/threads", body={}).json()
    with (
        httpx.Client(base_url=url, headers={"api-key": KEY}) as client,
        client.stream(
            "POST",
            f"/openai/threads/{thread['id']}/runs",
            params={"api-version": V2},
            json={"assistant_id": "asst_1", "stream": True},
        ) as response,
    ):
        chunks: list[bytes] = []
        with pytest.raises(httpx.RemoteProtocolError):
            read_raw(response, chunks)
    received = b"".join(chunks)
    assert received.count(b"event: ") == 3
    assert b"[DONE]" not in received
    runs = raw(url, "GET", f"/openai/threads/{thread['id']}/runs").json()["data"]
    assert runs[0]["status"] == "failed"


# ---------------------------------------------------------------- recording and headers
def test_records_keep_the_raw_request(fake: FakeAzure, url: str) -> None:
    with httpx.Client(base_url=url) as client:
        client.post(
            "/openai/threads/thread%5Fx/messages?api-version=2024-05-01-preview&b=%2F",
            content=b'{"role":"user","content":"hi"}',
            headers=[("api-key", KEY), ("X-Dup", "1"), ("x-dup", "2")],
        )
    record = fake.requests[0]
    assert record.method == "POST"
    assert record.path == "/openai/threads/thread%5Fx/messages"
    assert record.query == "api-version=2024-05-01-preview&b=%2F"
    assert record.body == b'{"role":"user","content":"hi"}'
    assert record.json()["role"] == "user"
    assert ("x-dup", "1") in record.headers
    assert ("x-dup", "2") in record.headers
    assert all(name == name.lower() for name, _ in record.headers)
    assert record.finished.is_set()
    assert not record.closed_early.is_set()
    assert record.outcome.status == 404  # thread_x does not exist
    assert 0 < record.received_at <= time.monotonic()


def test_sdk_request_is_recorded_in_full(fake: FakeAzure, url: str) -> None:
    client = sdk(url)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.list("thread_abc", limit=5, order="asc", after="msg_0")
    record = fake.requests[-1]
    assert (record.method, record.path) == ("GET", "/openai/threads/thread_abc/messages")
    assert record.query == f"api-version={V2}&after=msg_0&limit=5&order=asc"
    assert record.header("api-key") == KEY
    assert record.header("openai-beta") == "assistants=v2"
    assert record.body == b""


def test_azure_response_headers(fake: FakeAzure, url: str) -> None:
    response = raw(url, "POST", "/openai/threads", body={})
    headers = response.headers
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["x-request-id"])
    assert headers["apim-request-id"] == headers["x-request-id"]
    assert headers["x-ms-region"] == "fake-region"
    assert int(headers["openai-processing-ms"]) >= 0
    assert int(headers["x-ratelimit-remaining-requests"]) < 1000
    assert headers["set-cookie"].startswith("ARRAffinity=")
    assert headers["content-type"] == "application/json"
    denied = raw(url, "POST", "/openai/threads", body={}, headers={"api-key": "nope"})
    assert "set-cookie" in denied.headers
    assert "x-request-id" in denied.headers


def test_wait_for_requests_from_another_thread(fake: FakeAzure, url: str) -> None:
    threading.Timer(0.1, lambda: raw(url, "GET", "/openai/threads/thread_x")).start()
    assert fake.wait_for_requests(1, timeout=5)
    assert not fake.wait_for_requests(2, timeout=0.05)


def test_created_at_comes_from_the_clock(served: tuple[FakeAzure, ThreadedUvicorn]) -> None:
    fake = FakeAzure(KEY, clock=lambda: 1_700_000_000.7)
    with run_app(fake.app) as server:
        thread = sdk(server.url).beta.threads.create()
    assert thread.created_at == 1_700_000_000


# ---------------------------------------------------------------- scripted responses
def test_scripted_slow_chunks_arrive_separately(fake: FakeAzure, url: str) -> None:
    fake.script(
        ScriptedResponse(
            headers=(("content-type", "text/plain"),),
            chunks=(b"one", b"two", b"three"),
            chunk_delay_s=0.2,
        ),
        path_prefix="/openai/threads",
    )
    arrivals: list[tuple[float, bytes]] = []
    with httpx.stream("GET", f"{url}/openai/threads/x", headers={"api-key": KEY}) as response:
        assert response.headers["content-type"] == "text/plain"
        arrivals = [(time.monotonic(), chunk) for chunk in response.iter_raw()]
    assert [chunk for _, chunk in arrivals] == [b"one", b"two", b"three"]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.15 for gap in gaps), gaps
    assert fake.requests[0].finished.is_set()


def test_scripted_cut_after_gives_an_incomplete_body(fake: FakeAzure, url: str) -> None:
    fake.script(ScriptedResponse(chunks=(b'{"a":', b'"b"}'), cut_after=1))
    chunks: list[bytes] = []
    with httpx.stream("GET", f"{url}/anything", headers={"api-key": KEY}) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            read_raw(response, chunks)
    assert chunks == [b'{"a":']
    record = fake.requests[0]
    assert record.outcome.ended.wait(1)
    assert not record.finished.is_set()


def test_script_prefix_count_status_and_headers(fake: FakeAzure, url: str) -> None:
    fake.script(
        ScriptedResponse(
            status=429,
            headers=(("retry-after", "1"),),
            chunks=(b'{"error":{"code":"429","message":"slow down"}}',),
        ),
        path_prefix="/openai/threads",
        count=2,
    )
    assert raw(url, "GET", "/openai/other").status_code == 404  # prefix does not match
    first = raw(url, "POST", "/openai/threads", body={}, headers={"api-key": "wrong"})
    assert first.status_code == 429
    assert first.headers["retry-after"] == "1"
    assert "x-request-id" in first.headers  # Azure's headers are added to scripts too
    assert raw(url, "POST", "/openai/threads", body={}).status_code == 429
    assert raw(url, "POST", "/openai/threads", body={}).status_code == 200
    with pytest.raises(ValueError, match="count"):
        fake.script(ScriptedResponse(), count=0)


def test_scripted_delayed_headers_and_sdk_sees_5xx(fake: FakeAzure, url: str) -> None:
    fake.script(
        ScriptedResponse(
            status=503,
            delay_headers_s=0.3,
            chunks=(b'{"error":{"code":"ServiceUnavailable","message":"busy"}}',),
        )
    )
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError):
        sdk(url).beta.threads.create()
    assert time.monotonic() - started >= 0.28


# ---------------------------------------------------------------- client disconnects
def test_disconnect_mid_stream_is_noticed_and_the_run_finishes(fake: FakeAzure, url: str) -> None:
    fake.run_event_delay_s = 0.3
    thread = raw(
        url,
        "POST",
        "/openai/threads",
        body={"messages": [{"role": "user", "content": "long answer please"}]},
    ).json()
    with (
        httpx.Client(base_url=url, headers={"api-key": KEY}) as client,
        client.stream(
            "POST",
            f"/openai/threads/{thread['id']}/runs",
            params={"api-version": V2},
            json={"assistant_id": "asst_1", "stream": True},
        ) as response,
    ):
        assert next(response.iter_raw()).startswith(b"event: thread.run.created")
    left_at = time.monotonic()
    record = fake.requests[-1]
    assert record.closed_early.wait(1.0)
    assert record.outcome.ended.wait(1.0)
    assert record.outcome.ended_at is not None
    assert record.outcome.ended_at - left_at < 1.0
    assert not record.finished.is_set()
    messages = raw(url, "GET", f"/openai/threads/{thread['id']}/messages").json()["data"]
    assert messages[0]["role"] == "assistant"
    assert messages[0]["status"] == "completed"


def test_disconnect_while_headers_are_delayed(fake: FakeAzure, url: str) -> None:
    fake.script(ScriptedResponse(delay_headers_s=5.0))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{url}/openai/threads", headers={"api-key": KEY}, timeout=0.3)
    assert fake.requests[0].closed_early.wait(1.0)


# ---------------------------------------------------------------- pure parts
def test_ids_look_real() -> None:
    ids = {new_id("msg_") for _ in range(50)}
    assert len(ids) == 50
    assert all(ID.match(i) for i in ids)


class Query(TypedDict, total=False):
    limit: int
    order: str
    after: str
    before: str


def _page(ids: list[str], **query: Unpack[Query]) -> tuple[list[str], bool]:
    items = [(i, n) for n, i in enumerate(ids)]
    page, more = paginate(
        items,
        ListQuery(**query),
        lambda x: (0, x[1]),
        lambda x: x[0],
    )
    return [i for i, _ in page], more


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, (["e", "d", "c", "b", "a"], False)),
        ({"limit": 2}, (["e", "d"], True)),
        ({"limit": 2, "order": "asc"}, (["a", "b"], True)),
        ({"limit": 2, "order": "asc", "after": "b"}, (["c", "d"], True)),
        ({"limit": 2, "order": "asc", "after": "d"}, (["e"], False)),
        ({"limit": 2, "order": "asc", "before": "d"}, (["b", "c"], True)),
        ({"order": "asc", "after": "a", "before": "d"}, (["b", "c"], False)),
        ({"after": "zzz"}, ([], False)),
    ],
)
def test_paginate(query: Query, expected: tuple[list[str], bool]) -> None:
    assert _page(["a", "b", "c", "d", "e"], **query) == expected


def test_list_query_parsing() -> None:
    assert parse_list_query({"run_id": "run_1"}, "v1").run_id is None
    assert parse_list_query({"run_id": "run_1", "limit": "100"}, "v2") == ListQuery(
        100, "desc", None, None, "run_1"
    )
    with pytest.raises(FakeError) as caught:
        parse_list_query({"limit": "0"}, "v2")
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("method", "path", "gen", "expected"),
    [
        ("POST", "/openai/threads", "v1", "create_thread"),
        ("POST", "/openai/threads/runs", "v2", "create_thread_and_run"),
        ("POST", "/openai/threads/runs", "v1", "create_thread_and_run"),
        ("GET", "/openai/threads/runs", "v1", None),
        ("POST", "/openai/threads/t/runs", "v1", "create_run"),
        ("POST", "/openai/assistants/a/files", "v1", "assistants.files.create"),
        ("POST", "/openai/assistants/a/files", "v2", None),
        ("POST", "/openai/vector_stores", "v1", None),
        (
            "GET",
            "/openai/vector_stores/v/file_batches/b/files",
            "v2",
            "vector_stores.file_batches.list_files",
        ),
        ("GET", "/openai/files/f/content", "v1", "files.content"),
        ("DELETE", "/openai/threads/t/messages/m", "v2", "delete_message"),
        ("DELETE", "/openai/threads/t/messages/m", "v1", None),
        ("GET", "/openai/threads/t/messages/m/files/f", "v1", "get_message_file"),
        ("POST", "/openai/threads/t/runs/r/submit_tool_outputs", "v2", "submit_tool_outputs"),
        ("GET", "/openai/threads/t/runs/r/steps/s", "v2", "get_step"),
        ("GET", "/openai/threads//messages", "v2", None),
        ("GET", "/openai/threads/t/messages/", "v2", None),
        ("GET", "/threads/t", "v2", None),
        ("PUT", "/openai/threads/t", "v2", None),
    ],
)
def test_route_table(method: str, path: str, gen: Generation, expected: str | None) -> None:
    route = match_route(method, path, gen)
    assert (route[0] if route else None) == expected


def test_split_answer_and_sse_frame() -> None:
    for text in ("", "one", "a b", "the quick brown fox jumps over the lazy dog"):
        pieces = split_answer(text)
        assert "".join(pieces) == text
        assert 1 <= len(pieces) <= 4
    assert sse_frame("thread.run.created", {"a": 1}) == (
        b'event: thread.run.created\ndata: {"a":1}\n\n'
    )


def test_recorded_request_helpers() -> None:
    record = RecordedRequest("POST", "/p", "", (("a", "1"), ("a", "2")), b'{"x":1}', 0.0)
    assert record.header("A") == "1"
    assert record.header_values("a") == ["1", "2"]
    assert record.json() == {"x": 1}
    assert record.header("b") is None
