"""The rows of issue 14 through a real gateway and the recording fake Azure: assistants,
v1 runs and assistant files on 2024-02-15-preview, files, vector stores with their files and
batches; the profile's models and tools refused before Azure; the false refusals now reach
Azure as the documents allow (ownership off: the tenant tests live elsewhere)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.servers import RedisServer
from tests.stack import V1, V2, Stack, running_stack

V25 = "2025-04-01-preview"
INCLUDE = "step_details.tool_calls%5B%2A%5D.file_search.results%5B%2A%5D.content"


def call(
    stack: Stack, method: str, path: str, version: str, body: Any = None, query: str = ""
) -> httpx.Response:
    url = f"{stack.url}/openai/{path}?api-version={version}{query}"
    return httpx.request(method, url, headers=stack.auth(), json=body, timeout=10)


def upload(stack: Stack, version: str, name: str = "notes.txt") -> str:
    """A file put straight into the fake (the upload row is the upload path's)."""
    answer = httpx.post(
        f"{stack.upstream_url}/openai/files?api-version={version}",
        headers={"api-key": stack.api_key},
        files={"file": (name, b"hello"), "purpose": (None, "assistants")},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    file_id = answer.json()["id"]
    assert isinstance(file_id, str)
    return file_id


def reached(stack: Stack, method: str, suffix: str) -> list[dict[str, Any]]:
    return [
        json.loads(r.body) if r.body else {}
        for r in stack.fake.requests
        if r.method == method and r.path.endswith(suffix)
    ]


def test_assistants_create_list_retrieve_modify_delete_v2(gw: Stack) -> None:
    created = call(gw, "POST", "assistants", V2, {"model": "gpt-4o", "name": "helper"})
    assert created.status_code == 200, created.text
    asst = created.json()["id"]
    assert asst.startswith("asst_")
    listed = call(gw, "GET", "assistants", V2, query="&limit=5&order=asc")
    assert [a["id"] for a in listed.json()["data"]] == [asst]
    assert call(gw, "GET", f"assistants/{asst}", V2).json()["name"] == "helper"
    modified = call(gw, "POST", f"assistants/{asst}", V2, {"instructions": "be brief"})
    assert modified.json()["instructions"] == "be brief"
    assert call(gw, "DELETE", f"assistants/{asst}", V2).json()["deleted"] is True
    assert reached(gw, "POST", "/openai/assistants") == [{"model": "gpt-4o", "name": "helper"}]


def test_v1_runs_and_assistant_files_reach_azure(gw: Stack) -> None:
    """2024-02-15-preview defines runs, steps and create-and-run (v1 bodies): on main they were
    refused with operation_not_in_api_version."""
    file_id = upload(gw, V1)
    asst = call(
        gw, "POST", "assistants", V1, {"model": "gpt-4", "tools": [{"type": "retrieval"}]}
    ).json()["id"]
    attached = call(gw, "POST", f"assistants/{asst}/files", V1, {"file_id": file_id})
    assert attached.status_code == 200, attached.text
    files = call(gw, "GET", f"assistants/{asst}/files", V1).json()["data"]
    assert [f["id"] for f in files] == [file_id]
    run = call(gw, "POST", "threads/runs", V1, {"assistant_id": asst, "thread": {}})
    assert run.status_code == 200, run.text
    thread, run_id = run.json()["thread_id"], run.json()["id"]
    assert call(gw, "GET", f"threads/{thread}/runs/{run_id}", V1).status_code == 200
    assert call(gw, "GET", f"threads/{thread}/runs/{run_id}/steps", V1).status_code == 200
    assert call(gw, "POST", f"threads/{thread}/runs/{run_id}/cancel", V1).status_code == 200
    other = call(gw, "POST", "threads", V1, {}).json()["id"]
    again = call(gw, "POST", f"threads/{other}/runs", V1, {"assistant_id": asst})
    assert again.status_code == 200, again.text
    refused = call(gw, "POST", f"threads/{other}/runs", V1, {"assistant_id": asst, "stream": True})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "field_not_allowed_in_version"
    assert reached(gw, "POST", f"/threads/{other}/runs") == [{"assistant_id": asst}]


def test_files_json_operations(gw: Stack) -> None:
    file_id = upload(gw, V2)
    listed = call(gw, "GET", "files", V2, query="&purpose=assistants")
    assert [f["id"] for f in listed.json()["data"]] == [file_id]
    assert call(gw, "GET", f"files/{file_id}", V2).json()["id"] == file_id
    content = call(gw, "GET", f"files/{file_id}/content", V2)
    assert content.content == b"hello"
    assert call(gw, "DELETE", f"files/{file_id}", V2).json()["deleted"] is True
    bad = call(gw, "GET", "files", V2, query="&purpose=secrets")
    assert bad.json()["error"]["code"] == "invalid_query_parameter"
    assert not [r for r in gw.fake.requests if "purpose=secrets" in r.query]


def test_vector_stores_files_and_batches(gw: Stack) -> None:
    first, second = upload(gw, V2), upload(gw, V2)
    store = call(gw, "POST", "vector_stores", V2, {"name": "docs", "file_ids": [first]})
    assert store.status_code == 200, store.text
    vs = store.json()["id"]
    assert call(gw, "GET", "vector_stores", V2).json()["data"][0]["id"] == vs
    assert call(gw, "POST", f"vector_stores/{vs}", V2, {"name": "d2"}).json()["name"] == "d2"
    added = call(gw, "POST", f"vector_stores/{vs}/files", V2, {"file_id": second})
    assert added.status_code == 200, added.text
    listed = call(gw, "GET", f"vector_stores/{vs}/files", V2, query="&filter=completed&limit=10")
    assert listed.status_code == 200
    assert reached(gw, "GET", f"/vector_stores/{vs}/files")
    assert any("filter=completed" in r.query for r in gw.fake.requests)
    batch = call(gw, "POST", f"vector_stores/{vs}/file_batches", V2, {"file_ids": [first]})
    assert batch.status_code == 200, batch.text
    batch_id = batch.json()["id"]
    assert batch_id.startswith("vsfb_")
    got = call(gw, "GET", f"vector_stores/{vs}/file_batches/{batch_id}/files", V2)
    assert got.status_code == 200
    assert call(gw, "DELETE", f"vector_stores/{vs}/files/{second}", V2).status_code == 200
    assert call(gw, "DELETE", f"vector_stores/{vs}", V2).json()["deleted"] is True


def test_false_refusals_now_reach_azure(gw: Stack) -> None:
    """Issue 14 item 4, through the gateway (2025-04-01-preview)."""
    asst = call(gw, "POST", "assistants", V25, {"model": "gpt-4o"}).json()["id"]
    body = {
        "assistant_id": asst,
        "max_completion_tokens": 256.0,
        "tool_choice": {"type": "function"},
        "thread": {
            "messages": [{"role": "user", "content": "hi"}] * 40,
            "tool_resources": {
                "file_search": {"vector_stores": [{"chunking_strategy": {"type": "auto"}}]}
            },
        },
    }
    answer = call(gw, "POST", "threads/runs", V25, body)
    assert answer.status_code == 200, answer.text
    [sent] = reached(gw, "POST", "/openai/threads/runs")
    assert sent["max_completion_tokens"] == 256
    assert isinstance(sent["max_completion_tokens"], int)
    assert len(sent["thread"]["messages"]) == 40
    thread, run_id = answer.json()["thread_id"], answer.json()["id"]
    query = f"&include%5B%5D={INCLUDE}&include%5B%5D={INCLUDE}"
    steps = call(gw, "GET", f"threads/{thread}/runs/{run_id}/steps", V25, query=query)
    assert steps.status_code == 200, steps.text
    [forwarded] = [r for r in gw.fake.requests if r.path.endswith("/steps")]
    assert forwarded.query.count("include%5B%5D=") == 2


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Stack]:
    policy = {
        "models": ["gpt-4o"],
        "tools": ["function", "file_search"],
        "max_instructions_chars": 10,
    }
    overrides = {"profiles": {"writer": {"operations": ["*"], "policy": policy}}}
    with running_stack(
        tmp_path_factory.mktemp("strict"), redis_url=redis_server.url, overrides=overrides
    ) as running:
        yield running


@pytest.mark.parametrize(
    ("path", "body", "code", "param"),
    [
        ("assistants", {"model": "gpt-35"}, "model_not_allowed", "model"),
        (
            "assistants",
            {"model": "gpt-4o", "tools": [{"type": "code_interpreter"}]},
            "tool_not_allowed",
            "tools[0].type",
        ),
        (
            "assistants",
            {"model": "gpt-4o", "instructions": "x" * 11},
            "content_too_long",
            "instructions",
        ),
        (
            "threads/runs",
            {"assistant_id": "asst_1", "model": "gpt-35"},
            "model_not_allowed",
            "model",
        ),
    ],
)
def test_profile_refusals_never_reach_azure(
    strict: Stack, path: str, body: dict[str, Any], code: str, param: str
) -> None:
    strict.fake.reset()
    answer = call(strict, "POST", path, V2, body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
    assert not strict.fake.requests


def test_profile_allows_its_models_and_tools(strict: Stack) -> None:
    strict.fake.reset()
    body = {"model": "gpt-4o", "tools": [{"type": "file_search"}], "instructions": "brief"}
    answer = call(strict, "POST", "assistants", V2, body)
    assert answer.status_code == 200, answer.text
    assert reached(strict, "POST", "/openai/assistants") == [body]
