"""The fake's v1 API (``/openai/v1/``: responses, conversations and their items, files) over
real HTTP, every answer and every SSE event's data validated against Microsoft's v1 document
(tests/specs/v1, via tests.fakeazure.openapi) or, for conversations, which it does not
define, the OpenAI reference's shapes; then the stock SDK against the fake directly."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.fakeazure import FakeAzure
from tests.fakeazure.openapi import CONVERSATIONS, DELETED_RESPONSE, V1_API, check, errors
from tests.servers import ThreadedUvicorn, run_app

KEY = "upstream-key-v1"
OWNER = {"gateway_owner": "tenant-a", "team": "blue"}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeAzure, ThreadedUvicorn]]:
    fake = FakeAzure(KEY, bearer_token=KEY)
    with run_app(fake.app) as server:
        yield fake, server


@pytest.fixture
def fake(served: tuple[FakeAzure, ThreadedUvicorn]) -> FakeAzure:
    served[0].reset()
    served[0].response_complete_after_s = 60.0
    served[0].response_event_delay_s = 0.0
    return served[0]


class V1:
    """httpx against ``/openai/v1/``; ``call`` asserts the status and the documented schema."""

    def __init__(self, url: str, version: str | None = None) -> None:
        self.version = version
        self.http = httpx.Client(base_url=url, headers={"api-key": KEY}, timeout=10)

    def send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        params = dict(kw.pop("params", {}))
        if self.version is not None:
            params["api-version"] = self.version
        return self.http.request(method, "/openai/v1/" + path, params=params, **kw)

    def call(
        self, method: str, path: str, schema: str, status: int = 200, doc: str = V1_API, **kw: Any
    ) -> Any:
        response = self.send(method, path, **kw)
        assert response.status_code == status, response.text
        body = response.json()
        check(doc, schema, body)
        return body

    def fail(self, method: str, path: str, status: int, **kw: Any) -> Any:
        """A refusal: the status, and the error body the document gives (AzureErrorResponse:
        string code/message/param, type "error")."""
        response = self.send(method, path, **kw)
        assert response.status_code == status, response.text
        body = response.json()
        check(V1_API, "AzureErrorResponse", body)
        assert isinstance(body["error"].get("message"), str)
        return body["error"]

    def events(
        self, method: str, path: str, *, obfuscated: bool = True, **kw: Any
    ) -> list[dict[str, Any]]:
        """An SSE answer's events, each checked: the ``event:`` name is the data's ``type``
        and the data is a documented ResponseStreamEvent. With ``obfuscated=False``
        (``include_obfuscation: false``) no event may carry ``obfuscation``: the document says
        the field is then left out, while its ResponseTextDeltaEvent lists it as required,
        so a delta is checked as if it had one."""
        params = dict(kw.pop("params", {}))
        if self.version is not None:
            params["api-version"] = self.version
        out: list[dict[str, Any]] = []
        with self.http.stream(method, "/openai/v1/" + path, params=params, **kw) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    data = json.loads(line[len("data: ") :])
                    assert data["type"] == name
                    shown = data
                    if not obfuscated:
                        assert "obfuscation" not in data
                        if data["type"] == "response.output_text.delta":
                            shown = {**data, "obfuscation": ""}
                    check(V1_API, "OpenAI.ResponseStreamEvent", shown)
                    out.append(data)
        return out


@pytest.fixture(params=[None, "v1", "preview"])
def v1(
    request: pytest.FixtureRequest, fake: FakeAzure, served: tuple[FakeAzure, ThreadedUvicorn]
) -> Iterator[V1]:
    client = V1(served[1].url, request.param)
    yield client
    client.http.close()


@pytest.fixture
def az(fake: FakeAzure, served: tuple[FakeAzure, ThreadedUvicorn]) -> Iterator[V1]:
    client = V1(served[1].url)
    yield client
    client.http.close()


def url(client: V1) -> str:
    return str(client.http.base_url).rstrip("/")


def check_items(items: list[Any]) -> None:
    """Items are ``OpenAI.ItemResource`` (vendored only as its base); each is checked against
    the OpenAI reference's item shapes too."""
    for item in items:
        check(CONVERSATIONS, "ConversationItem", item)


# ----------------------------------------------------------------- the validators
def test_validators_catch_what_the_documents_forbid() -> None:
    delta = {
        "type": "response.output_text.delta",
        "sequence_number": 3,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "hi",
    }
    assert any("obfuscation" in e for e in errors(V1_API, "OpenAI.ResponseStreamEvent", delta))
    assert not errors(V1_API, "OpenAI.ResponseStreamEvent", {**delta, "obfuscation": "x"})
    created = {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1"}}
    assert any("'user'" in e for e in errors(V1_API, "OpenAI.ResponseStreamEvent", created))
    assert errors(V1_API, "AzureOpenAIFile", {"id": "f", "purpose": "vision"})
    assert errors(CONVERSATIONS, "Conversation", {"id": "c", "object": "thread"})
    assert errors(V1_API, DELETED_RESPONSE, {"id": "r", "object": "response", "deleted": True})
    item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed"}
    text = {"type": "output_text", "text": "x"}
    assert any(
        "annotations" in e
        for e in errors(V1_API, "OpenAI.ItemResource", {**item, "content": [text]})
    )
    assert not errors(
        V1_API, "OpenAI.ItemResource", {**item, "content": [{**text, "annotations": []}]}
    )
    assert errors(V1_API, "OpenAI.ResponseUsage", {"input_tokens": 1})


# ----------------------------------------------------------------- responses
def test_create_retrieve_input_items_delete(v1: V1) -> None:
    made = v1.call(
        "POST",
        "responses",
        "AzureResponse",
        json={
            "model": "gpt-4o",
            "input": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
                {"type": "message", "role": "user", "content": "What is a gateway?"},
            ],
            "metadata": OWNER,
            "instructions": "Answer kindly.",
        },
    )
    assert made["id"].startswith("resp_") and made["status"] == "completed"
    assert made["metadata"] == OWNER and made["instructions"] == "Answer kindly."
    text = made["output"][0]["content"][0]["text"]
    assert "What is a gateway?" in text
    check_items(made["output"])
    got = v1.call("GET", f"responses/{made['id']}", "AzureResponse")
    assert got == made
    page = v1.call("GET", f"responses/{made['id']}/input_items", "OpenAI.ResponseItemList")
    check_items(page["data"])
    ids = [i["id"] for i in page["data"]]  # default order desc: the last input first
    assert len(ids) == 3 and page["data"][0]["content"][0]["text"] == "What is a gateway?"
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[0], ids[-1], False)
    first = v1.call(
        "GET",
        f"responses/{made['id']}/input_items",
        "OpenAI.ResponseItemList",
        params={"limit": 1, "order": "asc"},
    )
    assert [i["id"] for i in first["data"]] == [ids[-1]] and first["has_more"] is True
    after = v1.call(
        "GET",
        f"responses/{made['id']}/input_items",
        "OpenAI.ResponseItemList",
        params={"order": "asc", "after": ids[-1]},
    )
    assert [i["id"] for i in after["data"]] == [ids[1], ids[0]] and after["has_more"] is False
    before = v1.call(
        "GET",
        f"responses/{made['id']}/input_items",
        "OpenAI.ResponseItemList",
        params={"before": ids[-1]},
    )
    assert [i["id"] for i in before["data"]] == [ids[0], ids[1]]
    gone = v1.call("DELETE", f"responses/{made['id']}", DELETED_RESPONSE)
    assert gone == {"id": made["id"], "object": "response.deleted", "deleted": True}
    missing = v1.fail("GET", f"responses/{made['id']}", 404)
    assert missing["type"] == "error" and "param" not in missing


def test_store_false_is_answered_but_never_kept(az: V1) -> None:
    made = az.call(
        "POST", "responses", "AzureResponse", json={"model": "m", "input": "hi", "store": False}
    )
    assert made["status"] == "completed" and made["store"] is False
    az.fail("GET", f"responses/{made['id']}", 404)
    az.fail("GET", f"responses/{made['id']}/input_items", 404)
    chained = az.fail(
        "POST", "responses", 400, json={"model": "m", "previous_response_id": made["id"]}
    )
    assert chained["param"] == "previous_response_id"
    bad = az.fail("POST", "responses", 400, json={"model": "m", "store": False, "background": True})
    assert bad["param"] == "background"


def test_refusals(az: V1) -> None:
    for body, param in (
        ({"input": "x"}, "model"),
        ({"model": "m", "nope": 1}, "nope"),
        ({"model": "m", "max_output_tokens": 3}, "max_output_tokens"),
        ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "conversation": {"id": 3}}, "conversation"),
        ({"model": "m", "temperature": 2.5}, "temperature"),
        ({"model": "m", "top_p": -0.1}, "top_p"),
        ({"model": "m", "top_logprobs": 21}, "top_logprobs"),
        ({"model": "m", "store": "yes"}, "store"),
        ({"model": "m", "truncation": "middle"}, "truncation"),
        ({"model": "m", "include": ["everything"]}, "include"),
        ({"model": "m", "tool_choice": "always"}, "tool_choice"),
        ({"model": "m", "instructions": ["x"]}, "instructions"),
        (
            {
                "model": "m",
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_image", "image_url": "https://x/y.png", "detail": "max"}
                        ],
                    }
                ],
            },
            "input[0].content[0].detail",
        ),
    ):
        assert az.fail("POST", "responses", 400, json=body)["param"] == param
    assert "message" in az.fail(
        "POST", "responses", 400, content=b"{", headers={"content-type": "application/json"}
    )


def test_stream_is_the_documented_event_sequence(v1: V1) -> None:
    events = v1.events(
        "POST",
        "responses",
        json={"model": "gpt-4o", "input": "stream this please", "stream": True, "metadata": OWNER},
    )
    types = [e["type"] for e in events]
    deltas = types.count("response.output_text.delta")
    assert deltas >= 2
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    created, completed = events[0]["response"], events[-1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert created["metadata"] == OWNER and completed["metadata"] == OWNER
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert text == done["text"] == completed["output"][0]["content"][0]["text"]
    item_ids = {e["item_id"] for e in events if "item_id" in e}
    assert item_ids == {completed["output"][0]["id"]}
    check_items(completed["output"])
    check(V1_API, "AzureResponse", completed)
    stored = v1.call("GET", f"responses/{created['id']}", "AzureResponse")
    assert stored["status"] == "completed" and stored["output"] == completed["output"]


def test_background_queues_completes_later_and_cancels(fake: FakeAzure, az: V1) -> None:
    made = az.call(
        "POST", "responses", "AzureResponse", json={"model": "m", "input": "bg", "background": True}
    )
    assert made["status"] == "queued" and made["background"] is True
    polled = az.call("GET", f"responses/{made['id']}", "AzureResponse")
    assert polled["status"] == "in_progress"
    cancelled = az.call("POST", f"responses/{made['id']}/cancel", "AzureResponse")
    assert cancelled["status"] == "cancelled"
    again = az.call("POST", f"responses/{made['id']}/cancel", "AzureResponse")
    assert again["status"] == "cancelled"  # idempotent
    fake.response_complete_after_s = 0.0
    assert az.call("GET", f"responses/{made['id']}", "AzureResponse")["status"] == "cancelled"
    later = az.call(
        "POST", "responses", "AzureResponse", json={"model": "m", "input": "b", "background": True}
    )
    finished = az.call("GET", f"responses/{later['id']}", "AzureResponse")
    assert finished["status"] == "completed" and finished["output"]
    refused = az.fail("POST", f"responses/{later['id']}/cancel", 400)
    assert "completed" in refused["message"]
    plain = az.call("POST", "responses", "AzureResponse", json={"model": "m", "input": "fg"})
    az.fail("POST", f"responses/{plain['id']}/cancel", 400)


def test_streamed_retrieval_resumes_after_a_sequence_number(az: V1) -> None:
    body = {"model": "m", "input": "resume me later", "background": True, "stream": True}
    params: dict[str, Any] = {}
    seen: list[dict[str, Any]] = []
    with az.http.stream("POST", "/openai/v1/responses", params=params, json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if len(seen) == 3:
                    break
    assert seen[0]["type"] == "response.created" and seen[0]["response"]["status"] == "queued"
    rid = seen[0]["response"]["id"]
    rest = az.events("GET", f"responses/{rid}", params={"stream": "true", "starting_after": 2})
    assert rest[0]["sequence_number"] == 3 and rest[-1]["type"] == "response.completed"
    assert [e["sequence_number"] for e in rest] == list(range(3, 3 + len(rest)))
    whole = az.events("GET", f"responses/{rid}", params={"stream": "true"})
    assert [e["sequence_number"] for e in whole] == list(range(len(whole)))
    assert whole[:3] == seen and whole[3:] == rest
    plain = az.call("POST", "responses", "AzureResponse", json={"model": "m", "input": "x"})
    refused = az.fail("GET", f"responses/{plain['id']}", 400, params={"stream": "true"})
    assert refused["param"] == "stream"


def test_failing_responses_end_in_response_failed(fake: FakeAzure, az: V1) -> None:
    fake.fail_responses = True
    events = az.events("POST", "responses", json={"model": "m", "input": "x", "stream": True})
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"


# ----------------------------------------------------------------- conversations
def test_conversations_crud(v1: V1) -> None:
    conv = v1.call(
        "POST",
        "conversations",
        "Conversation",
        doc=CONVERSATIONS,
        json={"items": [{"role": "user", "content": "hello"}], "metadata": OWNER},
    )
    assert conv["id"].startswith("conv_") and conv["metadata"] == OWNER
    assert v1.call("GET", f"conversations/{conv['id']}", "Conversation", doc=CONVERSATIONS) == conv
    changed = v1.call(
        "POST",
        f"conversations/{conv['id']}",
        "Conversation",
        doc=CONVERSATIONS,
        json={"metadata": {"gateway_owner": "tenant-a"}},
    )
    assert changed["metadata"] == {"gateway_owner": "tenant-a"}
    v1.fail("POST", f"conversations/{conv['id']}", 400, json={})
    gone = v1.call(
        "DELETE", f"conversations/{conv['id']}", "ConversationDeletedResource", doc=CONVERSATIONS
    )
    assert gone == {"id": conv["id"], "object": "conversation.deleted", "deleted": True}
    v1.fail("GET", f"conversations/{conv['id']}", 404)
    too_many = [{"role": "user", "content": str(i)} for i in range(21)]
    assert v1.fail("POST", "conversations", 400, json={"items": too_many})["param"] == "items"


def test_conversation_items(az: V1) -> None:
    conv = az.call("POST", "conversations", "Conversation", doc=CONVERSATIONS, json={})
    path = f"conversations/{conv['id']}/items"
    added = az.call(
        "POST",
        path,
        "ConversationItemList",
        doc=CONVERSATIONS,
        json={"items": [{"role": "user", "content": f"m{i}"} for i in range(20)]},
    )
    assert len(added["data"]) == 20 and added["has_more"] is False
    assert added["first_id"] == added["data"][0]["id"]
    too_many = az.fail("POST", path, 400, json={"items": [{"role": "user", "content": "x"}] * 21})
    assert too_many["code"] == "array_above_max_length"
    az.fail("POST", path, 400, json={"items": []})
    page = az.call("GET", path, "ConversationItemList", doc=CONVERSATIONS, params={"limit": 5})
    assert [i["content"][0]["text"] for i in page["data"]] == ["m19", "m18", "m17", "m16", "m15"]
    assert page["has_more"] is True
    nxt = az.call(
        "GET",
        path,
        "ConversationItemList",
        doc=CONVERSATIONS,
        params={"limit": 5, "after": page["last_id"]},
    )
    assert nxt["data"][0]["content"][0]["text"] == "m14"
    asc = az.call(
        "GET",
        path,
        "ConversationItemList",
        doc=CONVERSATIONS,
        params={"order": "asc", "limit": 100},
    )
    assert len(asc["data"]) == 20 and asc["data"][0]["content"][0]["text"] == "m0"
    one = added["data"][3]
    assert az.call("GET", f"{path}/{one['id']}", "ConversationItem", doc=CONVERSATIONS) == one
    after_delete = az.call("DELETE", f"{path}/{one['id']}", "Conversation", doc=CONVERSATIONS)
    assert after_delete == conv  # the documented answer: the conversation
    az.fail("GET", f"{path}/{one['id']}", 404)
    az.fail("GET", "conversations/conv_nope/items", 404)


def test_responses_append_to_their_conversation_and_chain(az: V1) -> None:
    conv = az.call(
        "POST",
        "conversations",
        "Conversation",
        doc=CONVERSATIONS,
        json={"items": [{"role": "user", "content": "remember blue"}]},
    )
    first = az.call(
        "POST",
        "responses",
        "AzureResponse",
        json={"model": "m", "input": "what colour?", "conversation": conv["id"]},
    )
    assert first["conversation"] == {"id": conv["id"]}
    second = az.call(
        "POST",
        "responses",
        "AzureResponse",
        json={"model": "m", "input": "and now?", "conversation": {"id": conv["id"]}},
    )
    items = az.call(
        "GET",
        f"conversations/{conv['id']}/items",
        "ConversationItemList",
        doc=CONVERSATIONS,
        params={"order": "asc"},
    )["data"]
    assert [(i["role"], i["content"][0]["text"][:12]) for i in items] == [
        ("user", "remember blu"),
        ("user", "what colour?"),
        ("assistant", first["output"][0]["content"][0]["text"][:12]),
        ("user", "and now?"),
        ("assistant", second["output"][0]["content"][0]["text"][:12]),
    ]
    assert items[2]["id"] == first["output"][0]["id"]
    chained = az.call(
        "POST",
        "responses",
        "AzureResponse",
        json={"model": "m", "previous_response_id": first["id"]},
    )
    assert chained["previous_response_id"] == first["id"]
    assert "what colour?" in chained["output"][0]["content"][0]["text"]  # the chain's context
    both = {"model": "m", "conversation": conv["id"], "previous_response_id": first["id"]}
    assert az.fail("POST", "responses", 400, json=both)["code"] == "mutually_exclusive_parameters"
    missing = az.fail("POST", "responses", 404, json={"model": "m", "conversation": "conv_nope"})
    assert missing["param"] == "conversation"


def test_input_file_references_must_exist(az: V1) -> None:
    uploaded = az.call(
        "POST",
        "files",
        "AzureOpenAIFile",
        data={"purpose": "assistants"},
        files={"file": ("a.pdf", b"%PDF-1", "application/pdf")},
    )
    part = {"type": "input_file", "file_id": uploaded["id"]}
    body = {"model": "m", "input": [{"role": "user", "content": [part]}]}
    az.call("POST", "responses", "AzureResponse", json=body)
    part["file_id"] = "assistant-nope"
    refused = az.fail("POST", "responses", 404, json=body)
    assert refused["param"] == "input[0].content[0].file_id"


# ----------------------------------------------------------------- files, versions, paths
def test_v1_files_share_the_assistants_files_store(fake: FakeAzure, v1: V1) -> None:
    made = v1.call(
        "POST",
        "files",
        "AzureOpenAIFile",
        data={"purpose": "assistants"},
        files={"file": ("gwo-abc-notes.txt", b"hello v1", "text/plain")},
    )
    other = v1.call(
        "POST",
        "files",
        "AzureOpenAIFile",
        data={"purpose": "batch"},
        files={"file": ("b.jsonl", b"{}", "application/jsonl")},
    )
    assert fake.store.files.items[made["id"]].filename == "gwo-abc-notes.txt"
    assert v1.call("GET", f"files/{made['id']}", "AzureOpenAIFile") == made
    dated = httpx.get(
        f"{url(v1)}/openai/files/{made['id']}",
        params={"api-version": "2024-05-01-preview"},
        headers={"api-key": KEY},
    )
    assert dated.status_code == 200 and dated.json()["id"] == made["id"]
    listed = v1.call("GET", "files", "AzureListFilesResponse", params={"purpose": "assistants"})
    assert [f["id"] for f in listed["data"]] == [made["id"]]
    page = v1.call("GET", "files", "AzureListFilesResponse", params={"limit": 1, "order": "asc"})
    assert [f["id"] for f in page["data"]] == [made["id"]] and page["has_more"] is True
    nxt = v1.call(
        "GET", "files", "AzureListFilesResponse", params={"after": made["id"], "order": "asc"}
    )
    assert [f["id"] for f in nxt["data"]] == [other["id"]]
    expiring = v1.call(
        "POST",
        "files",
        "AzureOpenAIFile",
        data={
            "purpose": "evals",
            "expires_after[seconds]": "3600",
            "expires_after[anchor]": "created_at",
        },
        files={"file": ("e.jsonl", b"{}", "application/jsonl")},
    )
    assert expiring["expires_at"] == expiring["created_at"] + 3600
    for data in (
        {"purpose": "vision"},  # a dated-API purpose, not the v1 document's
        {"purpose": "batch", "expires_after[seconds]": "10", "expires_after[anchor]": "created_at"},
        {"purpose": "batch", "expires_after[seconds]": "3600"},
    ):
        files = {"file": ("x.txt", b"x", "text/plain")}
        v1.fail("POST", "files", 400, data=data, files=files)
    content = v1.send("GET", f"files/{made['id']}/content")
    assert content.status_code == 200 and content.content == b"hello v1"
    deleted = v1.send("DELETE", f"files/{made['id']}")
    assert deleted.json() == {"id": made["id"], "object": "file", "deleted": True}
    v1.fail("GET", f"files/{made['id']}", 404)


def test_api_version_rules_and_unknown_paths(az: V1) -> None:
    for version in ("2024-05-01-preview", "v2", ""):
        answer = az.fail("GET", "conversations/conv_x", 400, params={"api-version": version})
        assert answer == {"code": "BadRequest", "message": "API version not supported"}
    for method, path in (
        ("GET", "responses"),
        ("POST", "responses/resp_1/input_items"),
        ("GET", "threads"),
        ("GET", "conversations/c/items/i/extra"),
    ):
        assert az.fail(method, path, 404) == {"code": "404", "message": "Resource not found"}
    dated = az.http.get("/openai/responses", params={"api-version": "2024-05-01-preview"})
    assert dated.status_code == 404
    unauth = httpx.post(f"{url(az)}/openai/v1/responses", json={"model": "m"})
    assert unauth.status_code == 401


def test_every_request_is_recorded_as_sent(fake: FakeAzure, az: V1) -> None:
    az.send("POST", "responses", json={"model": "m", "input": "x", "metadata": OWNER})
    az.send("GET", "responses/resp_missing", params={"include[]": "message.output_text.logprobs"})
    first, second = fake.requests[-2:]
    assert first.path == "/openai/v1/responses" and first.json()["metadata"] == OWNER
    assert first.header("api-key") == KEY and first.outcome.status == 200
    assert second.query == "include%5B%5D=message.output_text.logprobs"
    assert second.outcome.status == 404


# ----------------------------------------------------------------- the stock SDK
def test_stock_sdk_against_the_fake(
    fake: FakeAzure, served: tuple[FakeAzure, ThreadedUvicorn]
) -> None:
    client = openai.OpenAI(base_url=f"{served[1].url}/openai/v1/", api_key=KEY, max_retries=0)
    conv = client.conversations.create(
        items=[{"role": "user", "content": "hi"}], metadata={"gateway_owner": "t"}
    )
    assert conv.metadata == {"gateway_owner": "t"}
    added = client.conversations.items.create(
        conv.id, items=[{"type": "message", "role": "user", "content": f"n{i}"} for i in range(7)]
    )
    assert len(added.data) == 7
    every = list(client.conversations.items.list(conv.id, limit=3, order="asc"))
    assert len(every) == 8  # auto-pagination over three pages
    plain = client.responses.create(model="gpt-4o", input="plain", conversation=conv.id)
    assert plain.status == "completed" and "plain" in plain.output_text
    kinds = [e.type for e in client.responses.create(model="gpt-4o", input="s", stream=True)]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    with client.responses.stream(
        model="gpt-4o", input="helper", previous_response_id=plain.id
    ) as st:
        text = "".join(e.delta for e in st if e.type == "response.output_text.delta")
        final = st.get_final_response()
    assert text == final.output_text and final.previous_response_id == plain.id
    inputs = list(client.responses.input_items.list(plain.id, limit=1))
    assert [i.type for i in inputs] == ["message"]
    assert fake.requests[-1].header("authorization") == f"Bearer {KEY}"
    client.close()


def test_a_stream_left_early_finishes_server_side(fake: FakeAzure, az: V1) -> None:
    fake.response_event_delay_s = 0.05
    body = {"model": "m", "input": "leave early please", "stream": True}
    with az.http.stream("POST", "/openai/v1/responses", json=body) as response:
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
    rid = json.loads(first[6:])["response"]["id"]
    assert fake.requests[-1].outcome.ended.wait(5)
    assert fake.requests[-1].closed_early.is_set()
    done = az.call("GET", f"responses/{rid}", "AzureResponse")
    assert done["status"] == "completed" and done["output"][0]["status"] == "completed"


def test_stream_knobs_first_event_delay_cut_and_obfuscation(fake: FakeAzure, az: V1) -> None:
    fake.response_first_event_delay_s = 0.3
    body: dict[str, Any] = {"model": "m", "input": "slow start", "stream": True}
    with az.http.stream("POST", "/openai/v1/responses", json=body) as response:
        opened = time.monotonic()
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert time.monotonic() - opened >= 0.25  # headers first, then the delay
        assert json.loads(first[6:])["type"] == "response.created"
    fake.response_first_event_delay_s = 0.0
    quiet_body = {**body, "stream_options": {"include_obfuscation": False}}
    quiet = az.events("POST", "responses", obfuscated=False, json=quiet_body)
    deltas = [e for e in quiet if e["type"] == "response.output_text.delta"]
    assert deltas and all("obfuscation" not in e for e in deltas)  # as the service leaves it out
    fake.fail_responses_after_events = 4
    seen: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        az.http.stream("POST", "/openai/v1/responses", json=body) as response,
    ):
        seen.extend(line for line in response.iter_lines() if line.startswith("data: "))
    assert len(seen) == 4
    rid = json.loads(seen[0][6:])["response"]["id"]
    failed = az.call("GET", f"responses/{rid}", "AzureResponse")
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    fake.fail_responses_after_events = None
    bg = az.events("POST", "responses", json={**body, "background": True})
    replay = az.events(
        "GET",
        f"responses/{bg[0]['response']['id']}",
        obfuscated=False,
        params={"stream": "true", "include_obfuscation": "false"},
    )
    assert [e["sequence_number"] for e in replay] == [e["sequence_number"] for e in bg]
    assert all("obfuscation" not in e for e in replay)


def test_file_search_vector_stores_must_exist(fake: FakeAzure, az: V1) -> None:
    store = httpx.post(
        f"{url(az)}/openai/vector_stores",
        params={"api-version": "2025-04-01-preview"},
        headers={"api-key": KEY},
        json={"name": "kb"},
    ).json()
    tool: dict[str, Any] = {"type": "file_search", "vector_store_ids": [store["id"]]}
    made = az.call(
        "POST", "responses", "AzureResponse", json={"model": "m", "input": "q", "tools": [tool]}
    )
    assert made["tools"] == [tool]
    tool["vector_store_ids"] = [store["id"], "vs_nope"]
    refused = az.fail("POST", "responses", 404, json={"model": "m", "tools": [tool]})
    assert refused["param"] == "tools[0].vector_store_ids[1]"


def test_async_sdk_streams_from_the_fake(served: tuple[FakeAzure, ThreadedUvicorn]) -> None:
    served[0].reset()

    async def scenario() -> tuple[list[str], list[str]]:
        async with openai.AsyncOpenAI(
            base_url=f"{served[1].url}/openai/v1/", api_key=KEY, max_retries=0
        ) as client:
            conv = await client.conversations.create()
            stream = await client.responses.create(
                model="m", input="async", conversation=conv.id, stream=True
            )
            kinds = [str(event.type) async for event in stream]
            items = [str(i.type) async for i in client.conversations.items.list(conv.id, limit=1)]
            return kinds, items

    kinds, items = asyncio.run(scenario())
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert items == ["message", "message"]  # the input and the answer, one page each
