"""The fake's Assistants surface (assistants, v1 assistant files, files, vector stores, their
files and batches, v1 and v2 runs) driven over real HTTP, every answer validated against the
response schema Microsoft's document gives for that operation and api-version
(tests/specs, via tests.fakeazure.openapi)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.fakeazure import FakeAzure
from tests.fakeazure.openapi import ERRATA, check, document_version, errors
from tests.servers import ThreadedUvicorn, run_app

KEY = "upstream-key-surface"
V1 = "2024-02-15-preview"
V2S = ("2024-05-01-preview", "2025-04-01-preview")
STAMPED = "gwo-3f2a9c1d0b7e4a65-notes on Q3.txt"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeAzure, ThreadedUvicorn]]:
    fake = FakeAzure(KEY)
    with run_app(fake.app) as server:
        yield fake, server


@pytest.fixture
def fake(served: tuple[FakeAzure, ThreadedUvicorn]) -> FakeAzure:
    served[0].reset()
    served[0].run_complete_after_s = 0.0
    return served[0]


class Azure:
    """httpx against the fake: ``call`` asserts the status and the documented schema."""

    def __init__(self, url: str, version: str) -> None:
        self.version = version
        self.http = httpx.Client(base_url=url, headers={"api-key": KEY}, timeout=10)

    def send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        params = {"api-version": self.version, **kw.pop("params", {})}
        return self.http.request(method, "/openai/" + path, params=params, **kw)

    def call(self, method: str, path: str, schema: str, status: int = 200, **kw: Any) -> Any:
        response = self.send(method, path, **kw)
        assert response.status_code == status, response.text
        body = response.json()
        check(self.version, schema, body)
        return body

    def upload(self, filename: str, data: bytes, purpose: str = "assistants") -> Any:
        files = {"file": (filename, data, "text/plain")}
        return self.call("POST", "files", "File", data={"purpose": purpose}, files=files)


@pytest.fixture
def v1(fake: FakeAzure, served: tuple[FakeAzure, ThreadedUvicorn]) -> Iterator[Azure]:
    client = Azure(served[1].url, V1)
    yield client
    client.http.close()


@pytest.fixture(params=V2S)
def v2(
    request: pytest.FixtureRequest, fake: FakeAzure, served: tuple[FakeAzure, ThreadedUvicorn]
) -> Iterator[Azure]:
    client = Azure(served[1].url, request.param)
    yield client
    client.http.close()


def finished_run(az: Azure, thread_id: str, run_id: str) -> Any:
    for _ in range(20):
        run = az.call("GET", f"threads/{thread_id}/runs/{run_id}", "runObject")
        if run["status"] not in ("queued", "in_progress"):
            return run
        time.sleep(0.01)
    raise AssertionError("run did not finish")


# ----------------------------------------------------------------- the validator itself
def test_validator_catches_what_the_old_fake_sent() -> None:
    """A null first_id and a null run expires_at break the documents; an "" does not."""
    page: dict[str, Any] = {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    assert errors(V1, "listAssistantsResponse", page)
    assert not errors(V1, "listAssistantsResponse", {**page, "first_id": "", "last_id": ""})
    assert any("expires_at" in e for e in errors(V2S[0], "runObject", {"expires_at": None}))
    assert errors(
        V2S[0], "File", {"filename": "a", "purpose": "assistants", "status_details": None}
    )
    assert {e[1] for e in ERRATA} >= {"runObject", "runStepObject", "listAssistantFilesResponse"}


# ----------------------------------------------------------------- assistants
def test_v1_assistants_crud_with_v1_shape(v1: Azure) -> None:
    made = v1.call(
        "POST",
        "assistants",
        "assistantObject",
        json={
            "model": "gpt-4",
            "name": "helper",
            "tools": [{"type": "retrieval"}, {"type": "code_interpreter"}],
            "file_ids": ["assistant-abc"],
            "metadata": {"gateway_owner": "d1", "team": "a"},
        },
    )
    assert made["file_ids"] == ["assistant-abc"] and "tool_resources" not in made
    assert made["metadata"] == {"gateway_owner": "d1", "team": "a"}
    got = v1.call("GET", f"assistants/{made['id']}", "assistantObject")
    assert got == made
    changed = v1.call(
        "POST", f"assistants/{made['id']}", "assistantObject", json={"metadata": {"x": "y"}}
    )
    assert changed["metadata"] == {"x": "y"}  # replaced wholesale, as Azure does
    assert changed["name"] == "helper"
    listed = v1.call("GET", "assistants", "listAssistantsResponse")
    assert [a["id"] for a in listed["data"]] == [made["id"]]
    gone = v1.call("DELETE", f"assistants/{made['id']}", "deleteAssistantResponse")
    assert gone == {"id": made["id"], "object": "assistant.deleted", "deleted": True}
    assert v1.send("GET", f"assistants/{made['id']}").status_code == 404
    # v2's tool and fields are not v1's
    bad = v1.send("POST", "assistants", json={"model": "m", "tools": [{"type": "file_search"}]})
    assert bad.status_code == 400
    assert (
        v1.send("POST", "assistants", json={"model": "m", "tool_resources": {}}).status_code == 400
    )


def test_v2_assistants_crud_with_v2_shape(v2: Azure) -> None:
    made = v2.call(
        "POST",
        "assistants",
        "assistantObject",
        json={
            "model": "gpt-4o",
            "instructions": "be brief",
            "tools": [{"type": "file_search"}],
            "tool_resources": {"file_search": {"vector_store_ids": ["vs_abc"]}},
            "temperature": 0.5,
            "metadata": {"gateway_owner": "d2"},
        },
    )
    assert "file_ids" not in made
    assert made["tool_resources"] == {"file_search": {"vector_store_ids": ["vs_abc"]}}
    assert v2.call("GET", f"assistants/{made['id']}", "assistantObject") == made
    changed = v2.call(
        "POST",
        f"assistants/{made['id']}",
        "assistantObject",
        json={"name": "n", "metadata": {"gateway_owner": "d2", "k": "v"}},
    )
    assert changed["metadata"] == {"gateway_owner": "d2", "k": "v"} and changed["name"] == "n"
    v2.call("GET", "assistants", "listAssistantsResponse")
    v2.call("DELETE", f"assistants/{made['id']}", "deleteAssistantResponse")
    assert v2.send("POST", "assistants", json={"model": "m", "file_ids": []}).status_code == 400
    assert v2.send("POST", f"assistants/{made['id']}/files", json={}).status_code == 404


def test_list_pagination_follows_the_documents(v2: Azure) -> None:
    ids = [
        v2.call("POST", "assistants", "assistantObject", json={"model": "m"})["id"]
        for _ in range(5)
    ]
    page = v2.call(
        "GET", "assistants", "listAssistantsResponse", params={"limit": 2, "order": "asc"}
    )
    assert [a["id"] for a in page["data"]] == ids[:2]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[0], ids[1], True)
    page = v2.call(
        "GET",
        "assistants",
        "listAssistantsResponse",
        params={"limit": 2, "order": "asc", "after": page["last_id"]},
    )
    assert [a["id"] for a in page["data"]] == ids[2:4] and page["has_more"]
    tail = v2.call(
        "GET", "assistants", "listAssistantsResponse", params={"order": "asc", "after": ids[3]}
    )
    assert [a["id"] for a in tail["data"]] == [ids[4]] and not tail["has_more"]
    before = v2.call(
        "GET",
        "assistants",
        "listAssistantsResponse",
        params={"limit": 2, "order": "asc", "before": ids[4]},
    )
    assert [a["id"] for a in before["data"]] == ids[2:4]
    newest = v2.call("GET", "assistants", "listAssistantsResponse", params={"limit": 1})
    assert newest["first_id"] == newest["last_id"] == ids[4]  # desc by default
    for aid in ids:
        v2.call("DELETE", f"assistants/{aid}", "deleteAssistantResponse")
    empty = v2.call("GET", "assistants", "listAssistantsResponse")
    assert empty == {"object": "list", "data": [], "first_id": "", "last_id": "", "has_more": False}


def test_v1_assistant_files(v1: Azure) -> None:
    asst = v1.call("POST", "assistants", "assistantObject", json={"model": "m"})
    up = v1.upload("a.txt", b"alpha")
    base = f"assistants/{asst['id']}/files"
    made = v1.call("POST", base, "assistantFileObject", json={"file_id": up["id"]})
    assert made["id"] == up["id"] and made["assistant_id"] == asst["id"]
    assert v1.call("GET", f"assistants/{asst['id']}", "assistantObject")["file_ids"] == [up["id"]]
    assert v1.call("GET", f"{base}/{up['id']}", "assistantFileObject") == made
    listed = v1.call("GET", base, "listAssistantFilesResponse")
    assert [f["id"] for f in listed["data"]] == [up["id"]]
    gone = v1.call("DELETE", f"{base}/{up['id']}", "deleteAssistantFileResponse")
    assert gone["object"] == "assistant.file.deleted" and gone["deleted"] is True
    assert v1.send("GET", f"{base}/{up['id']}").status_code == 404
    assert v1.send("POST", base, json={"file_id": "assistant-nope"}).status_code == 404


# ----------------------------------------------------------------- files
@pytest.mark.parametrize("version", [V1, *V2S])
def test_files_upload_list_retrieve_content_delete(
    fake: FakeAzure, served: tuple[FakeAzure, ThreadedUvicorn], version: str
) -> None:
    az = Azure(served[1].url, version)
    data = bytes(range(256)) * 1024  # 256 KiB, every byte value
    up = az.upload(STAMPED, data)
    assert up["filename"] == STAMPED  # exactly as sent: the gateway's stamp reaches "Azure"
    assert up["bytes"] == len(data) and up["purpose"] == "assistants"
    assert up["id"].startswith("assistant-") and "status_details" not in up
    assert STAMPED.encode() in fake.requests[-1].body
    other = az.upload("batch.jsonl", b"{}\n", purpose="fine-tune")
    assert other["id"].startswith("file-")
    assert az.call("GET", f"files/{up['id']}", "File") == up
    everything = az.call("GET", "files", "FileList")
    assert {f["id"] for f in everything["data"]} == {up["id"], other["id"]}
    only = az.call("GET", "files", "FileList", params={"purpose": "assistants"})
    assert [f["id"] for f in only["data"]] == [up["id"]]
    with az.http.stream(
        "GET", f"/openai/files/{up['id']}/content", params={"api-version": version}
    ) as content:
        assert content.status_code == 200
        assert content.headers.get("transfer-encoding") == "chunked"  # streamed, no length
        assert b"".join(content.iter_bytes()) == data
    gone = az.send("DELETE", f"files/{up['id']}")
    assert gone.status_code == 200
    assert gone.json() == {"id": up["id"], "object": "file", "deleted": True}
    assert az.send("GET", f"files/{up['id']}").status_code == 404
    assert az.send("GET", f"files/{up['id']}/content").status_code == 404
    az.http.close()


def test_upload_refusals(v2: Azure) -> None:
    no_purpose = v2.send("POST", "files", files={"file": ("a.txt", b"x")})
    assert no_purpose.status_code == 400 and no_purpose.json()["error"]["param"] == "purpose"
    bad_purpose = v2.send(
        "POST", "files", data={"purpose": "nope"}, files={"file": ("a.txt", b"x")}
    )
    assert bad_purpose.status_code == 400
    not_multipart = v2.send("POST", "files", json={"purpose": "assistants"})
    assert not_multipart.status_code == 400


def test_sdk_uploads_and_builds_a_vector_store(fake: FakeAzure, served: Any) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=served[1].url, api_key=KEY, api_version=V2S[0], max_retries=0
    )
    up = client.files.create(file=("hello.md", b"# hi\n"), purpose="assistants")
    assert up.filename == "hello.md"
    store = client.vector_stores.create(name="kb", file_ids=[up.id])
    assert store.file_counts.completed == 1
    batch = client.vector_stores.file_batches.create_and_poll(store.id, file_ids=[up.id])
    assert batch.status == "completed"
    assert [f.id for f in client.vector_stores.files.list(store.id)] == [up.id]
    assert client.files.content(up.id).read() == b"# hi\n"
    assert client.vector_stores.delete(store.id).deleted


# ----------------------------------------------------------------- vector stores
def test_vector_stores_files_and_batches(v2: Azure) -> None:
    a, b, c = (v2.upload(f"{n}.txt", n.encode() * 10) for n in "abc")
    vs = v2.call(
        "POST",
        "vector_stores",
        "vectorStoreObject",
        json={
            "name": "kb",
            "file_ids": [a["id"]],
            "expires_after": {"anchor": "last_active_at", "days": 7},
            "metadata": {"gateway_owner": "d3"},
        },
    )
    assert vs["file_counts"]["total"] == 1 and vs["usage_bytes"] == 10
    assert vs["metadata"] == {"gateway_owner": "d3"} and isinstance(vs["expires_at"], int)
    assert v2.call("GET", f"vector_stores/{vs['id']}", "vectorStoreObject")["name"] == "kb"
    changed = v2.call(
        "POST", f"vector_stores/{vs['id']}", "vectorStoreObject", json={"metadata": {"n": "1"}}
    )
    assert changed["metadata"] == {"n": "1"}
    v2.call("GET", "vector_stores", "listVectorStoresResponse")
    base = f"vector_stores/{vs['id']}"
    vf = v2.call("POST", f"{base}/files", "vectorStoreFileObject", json={"file_id": b["id"]})
    assert vf["vector_store_id"] == vs["id"] and vf["status"] == "completed"
    assert v2.call("GET", f"{base}/files/{b['id']}", "vectorStoreFileObject") == vf
    listed = v2.call("GET", f"{base}/files", "listVectorStoreFilesResponse")
    assert {f["id"] for f in listed["data"]} == {a["id"], b["id"]}
    done = v2.call(
        "GET", f"{base}/files", "listVectorStoreFilesResponse", params={"filter": "completed"}
    )
    assert len(done["data"]) == 2
    v2.call("DELETE", f"{base}/files/{b['id']}", "deleteVectorStoreFileResponse")
    assert v2.send("POST", f"{base}/files", json={"file_id": "assistant-x"}).status_code == 404

    batch = v2.call(
        "POST",
        f"{base}/file_batches",
        "vectorStoreFileBatchObject",
        json={"file_ids": [b["id"], c["id"]]},
    )
    assert batch["status"] == "in_progress" and batch["file_counts"]["in_progress"] == 2
    polled = v2.call("GET", f"{base}/file_batches/{batch['id']}", "vectorStoreFileBatchObject")
    assert polled["status"] == "in_progress"
    polled = v2.call("GET", f"{base}/file_batches/{batch['id']}", "vectorStoreFileBatchObject")
    assert polled["status"] == "completed" and polled["file_counts"]["completed"] == 2
    in_batch = v2.call(
        "GET", f"{base}/file_batches/{batch['id']}/files", "listVectorStoreFilesResponse"
    )
    assert {f["id"] for f in in_batch["data"]} == {b["id"], c["id"]}
    late = v2.send("POST", f"{base}/file_batches/{batch['id']}/cancel")
    assert late.status_code == 400  # a finished batch cannot be cancelled

    second = v2.call(
        "POST", f"{base}/file_batches", "vectorStoreFileBatchObject", json={"file_ids": [a["id"]]}
    )
    cancelled = v2.call(
        "POST", f"{base}/file_batches/{second['id']}/cancel", "vectorStoreFileBatchObject"
    )
    assert cancelled["status"] == "cancelled"
    gone = v2.call("DELETE", f"vector_stores/{vs['id']}", "deleteVectorStoreResponse")
    assert gone["deleted"] is True
    assert v2.send("GET", f"vector_stores/{vs['id']}").status_code == 404


def test_v1_has_no_vector_stores(v1: Azure) -> None:
    for method, path in (("POST", "vector_stores"), ("GET", "vector_stores/vs_1/files")):
        answer = v1.send(method, path, json={})
        assert answer.status_code == 404
        assert answer.json() == {"error": {"code": "404", "message": "Resource not found"}}


# ----------------------------------------------------------------- runs
def test_v1_runs_steps_and_create_and_run(v1: Azure) -> None:
    asst = v1.call(
        "POST",
        "assistants",
        "assistantObject",
        json={"model": "gpt-4", "instructions": "v1", "tools": [{"type": "retrieval"}]},
    )
    thread = v1.call("POST", "threads", "threadObject", json={})
    v1.call(
        "POST",
        f"threads/{thread['id']}/messages",
        "messageObject",
        json={"role": "user", "content": "hi", "file_ids": ["assistant-f1"]},
    )
    run = v1.call(
        "POST", f"threads/{thread['id']}/runs", "runObject", json={"assistant_id": asst["id"]}
    )
    assert run["object"] == "thread.run" and run["tools"] == [{"type": "retrieval"}]
    assert "file_ids" in run and "truncation_strategy" not in run
    done = finished_run(v1, thread["id"], run["id"])
    assert done["status"] == "completed" and isinstance(done["expires_at"], int)
    v1.call("GET", f"threads/{thread['id']}/runs", "listRunsResponse")
    v1.call(
        "POST",
        f"threads/{thread['id']}/runs/{run['id']}",
        "runObject",
        json={"metadata": {"k": "v"}},
    )
    steps = v1.call("GET", f"threads/{thread['id']}/runs/{run['id']}/steps", "listRunStepsResponse")
    assert steps["data"] and "usage" not in steps["data"][0]
    step = steps["data"][0]
    got = v1.call(
        "GET", f"threads/{thread['id']}/runs/{run['id']}/steps/{step['id']}", "runStepObject"
    )
    assert got["expired_at"] is None
    v1.call("GET", f"threads/{thread['id']}/messages", "listMessagesResponse")
    # create_and_run exists in the v1 document (createThreadAndRunRequest)
    both = v1.call(
        "POST",
        "threads/runs",
        "runObject",
        json={
            "assistant_id": asst["id"],
            "thread": {"messages": [{"role": "user", "content": "again"}]},
        },
    )
    assert both["thread_id"].startswith("thread_")
    v1.call("GET", f"threads/{both['thread_id']}", "threadObject")
    # v1 runs take v1 bodies only: no streaming, no v2 tools
    streamed = v1.send(
        "POST", f"threads/{thread['id']}/runs", json={"assistant_id": "a", "stream": True}
    )
    assert streamed.status_code == 400
    assert streamed.json()["error"]["code"] == "unknown_parameter"
    v2tool = v1.send(
        "POST",
        f"threads/{thread['id']}/runs",
        json={"assistant_id": "a", "tools": [{"type": "file_search"}]},
    )
    assert v2tool.status_code == 400


def test_v1_tool_calls_cancel_and_submit(fake: FakeAzure, v1: Azure) -> None:
    fake.run_complete_after_s = 60.0  # only polls advance runs here
    thread = v1.call("POST", "threads", "threadObject", json={})
    tool = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}
    run = v1.call(
        "POST",
        f"threads/{thread['id']}/runs",
        "runObject",
        json={"assistant_id": "asst_x", "tools": [tool]},
    )
    waiting = finished_run(v1, thread["id"], run["id"])
    assert waiting["status"] == "requires_action"
    call = waiting["required_action"]["submit_tool_outputs"]["tool_calls"][0]
    resumed = v1.call(
        "POST",
        f"threads/{thread['id']}/runs/{run['id']}/submit_tool_outputs",
        "runObject",
        json={"tool_outputs": [{"tool_call_id": call["id"], "output": "42"}]},
    )
    assert resumed["status"] == "queued"
    assert finished_run(v1, thread["id"], run["id"])["status"] == "completed"
    second = v1.call(
        "POST", f"threads/{thread['id']}/runs", "runObject", json={"assistant_id": "asst_x"}
    )
    cancelled = v1.call("POST", f"threads/{thread['id']}/runs/{second['id']}/cancel", "runObject")
    assert cancelled["status"] == "cancelling"


def test_v2_runs_validate_and_finished_runs_keep_expires_at(v2: Azure) -> None:
    asst = v2.call("POST", "assistants", "assistantObject", json={"model": "gpt-4o"})
    thread = v2.call("POST", "threads", "threadObject", json={})
    v2.call(
        "POST",
        f"threads/{thread['id']}/messages",
        "messageObject",
        json={"role": "user", "content": "hello"},
    )
    run = v2.call(
        "POST", f"threads/{thread['id']}/runs", "runObject", json={"assistant_id": asst["id"]}
    )
    assert run["model"] == "gpt-4o"  # the assistant's settings
    done = finished_run(v2, thread["id"], run["id"])
    assert done["status"] == "completed" and done["expires_at"] == run["created_at"] + 600
    steps = v2.call("GET", f"threads/{thread['id']}/runs/{run['id']}/steps", "listRunStepsResponse")
    v2.call(
        "GET",
        f"threads/{thread['id']}/runs/{run['id']}/steps/{steps['data'][0]['id']}",
        "runStepObject",
    )
    v2.call("GET", f"threads/{thread['id']}/runs", "listRunsResponse")
    both = v2.call("POST", "threads/runs", "runObject", json={"assistant_id": asst["id"]})
    v2.call("GET", f"threads/{both['thread_id']}", "threadObject")
    bare = v2.call("POST", "threads", "threadObject", json={})
    empty = v2.call("GET", f"threads/{bare['id']}/messages", "listMessagesResponse")
    assert (empty["first_id"], empty["last_id"]) == ("", "")


@pytest.mark.parametrize("version", [V1, *V2S])
def test_unknown_paths_are_the_json_404_not_a_thread_lookup(
    fake: FakeAzure, served: tuple[FakeAzure, ThreadedUvicorn], version: str
) -> None:
    az = Azure(served[1].url, version)
    for method, path in (
        ("GET", "threads/runs"),
        ("POST", "threads/runs/run_1"),
        ("DELETE", "threads/messages"),
        ("GET", "assistants/files"),
        ("PUT", "files"),
        ("GET", "nothing/here"),
    ):
        answer = az.send(method, path)
        assert answer.status_code == 404, (method, path)
        assert answer.json() == {"error": {"code": "404", "message": "Resource not found"}}
    az.http.close()


_EVENT_SCHEMAS = (
    ("thread.run.step.", "runStepObject"),
    ("thread.run.", "runObject"),
    ("thread.message.", "messageObject"),
    ("thread.created", "threadObject"),
)


def test_v2_stream_event_data_match_the_documented_objects(v2: Azure) -> None:
    with v2.http.stream(
        "POST",
        "/openai/threads/runs",
        params={"api-version": v2.version},
        json={"assistant_id": "asst_s", "stream": True, "thread": {"messages": []}},
    ) as response:
        text = "".join(response.iter_text())
    checked = 0
    for frame in text.strip().split("\n\n"):
        event, data = (line.split(": ", 1)[1] for line in frame.split("\n"))
        if event == "done" or event.endswith(".delta"):
            continue
        schema = next(s for prefix, s in _EVENT_SCHEMAS if event.startswith(prefix))
        check(v2.version, schema, json.loads(data))
        checked += 1
    assert checked >= 10


def test_each_version_is_checked_against_its_own_document() -> None:
    assert document_version(V1, "runObject") == V1
    assert document_version(V2S[1], "vectorStoreFileObject") == V2S[1]
    assert document_version(V2S[1], "runObject") == V2S[0]  # not vendored for 2025-04
    failed = {
        "id": "f",
        "object": "vector_store.file",
        "usage_bytes": 1,
        "created_at": 1,
        "vector_store_id": "vs_1",
        "status": "failed",
        "last_error": {"code": "internal_error", "message": "m"},
    }
    assert not errors(V2S[0], "vectorStoreFileObject", failed)
    assert errors(V2S[1], "vectorStoreFileObject", failed)  # 2025-04 renamed the codes


def test_vector_store_helper_in_tool_resources_makes_vector_stores(v2: Azure) -> None:
    up = v2.upload("kb.txt", b"knowledge")
    helper = {"file_search": {"vector_stores": [{"file_ids": [up["id"]], "metadata": {"m": "1"}}]}}
    asst = v2.call(
        "POST",
        "assistants",
        "assistantObject",
        json={"model": "m", "tools": [{"type": "file_search"}], "tool_resources": helper},
    )
    (vs_id,) = asst["tool_resources"]["file_search"]["vector_store_ids"]
    assert "vector_stores" not in asst["tool_resources"]["file_search"]
    made = v2.call("GET", f"vector_stores/{vs_id}", "vectorStoreObject")
    assert made["metadata"] == {"m": "1"} and made["file_counts"]["total"] == 1
    thread = v2.call("POST", "threads", "threadObject", json={"tool_resources": helper})
    (thread_vs,) = thread["tool_resources"]["file_search"]["vector_store_ids"]
    assert thread_vs != vs_id
    v2.call("GET", f"vector_stores/{thread_vs}/files/{up['id']}", "vectorStoreFileObject")
    missing = {"file_search": {"vector_stores": [{"file_ids": ["assistant-nope"]}]}}
    assert v2.send("POST", "threads", json={"tool_resources": missing}).status_code == 404
