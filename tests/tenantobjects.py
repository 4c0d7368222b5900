"""One object of every owned kind for a tenant, made through the gateway (for the end-to-end
tests that need a populated world: the cross-tenant matrix, the conformance run).

Each tenant gets three uploaded files, a vector store holding the first (a vector store file)
and a batch of the second, an assistant, and a thread with one message and one finished
(streamed) run with its steps; and, through the v1 API (``/openai/v1/``, no api-version), a
conversation with one item and a response in it. ``Tenant.ids`` maps every path parameter of
the operation table to one of these objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.operations.row import Kind
from tests.stack import V2

Json = dict[str, Any]


@dataclass(frozen=True)
class Tenant:
    """One tenant's objects: the path parameters' values, and the tenant's files."""

    namespace: str
    ids: dict[str, str]
    files: tuple[str, ...]

    def of(self, kind: Kind) -> str:
        return self.ids[kind.param]


def ok(response: httpx.Response) -> Json:
    assert response.status_code == 200, response.text
    data: Json = response.json()
    return data


def upload(client: httpx.Client, name: str, content: bytes, version: str = V2) -> str:
    answer = ok(
        client.post(
            "/openai/files",
            params={"api-version": version},
            data={"purpose": "assistants"},
            files={"file": (name, content)},
        )
    )
    file_id: str = answer["id"]
    return file_id


def streamed_run(client: httpx.Client, thread_id: str, assistant_id: str) -> str:
    """Start a streamed run and read it to its end; the run's id."""
    run_id = None
    with client.stream(
        "POST",
        f"/openai/threads/{thread_id}/runs",
        params={"api-version": V2},
        json={"assistant_id": assistant_id, "stream": True},
    ) as streamed:
        assert streamed.status_code == 200, streamed.read()
        for line in streamed.iter_lines():
            if run_id is None and line.startswith("data:") and '"thread.run"' in line:
                run_id = json.loads(line[5:])["id"]
    assert isinstance(run_id, str)
    return run_id


def make_tenant(client: httpx.Client, namespace: str) -> Tenant:
    """``client`` sends as ``namespace`` (its token in the default headers)."""
    q = {"api-version": V2}
    files = tuple(upload(client, f"{namespace}-{i}.txt", f"notes {i}".encode()) for i in range(3))
    store = ok(client.post("/openai/vector_stores", params=q, json={"name": namespace}))
    in_store = ok(
        client.post(
            f"/openai/vector_stores/{store['id']}/files", params=q, json={"file_id": files[0]}
        )
    )
    assert in_store["id"] == files[0]
    batch = ok(
        client.post(
            f"/openai/vector_stores/{store['id']}/file_batches",
            params=q,
            json={"file_ids": [files[1]]},
        )
    )
    assistant = ok(
        client.post("/openai/assistants", params=q, json={"model": "gpt-4o", "name": namespace})
    )
    thread = ok(
        client.post(
            "/openai/threads",
            params=q,
            json={"messages": [{"role": "user", "content": f"hello from {namespace}"}]},
        )
    )
    messages = ok(client.get(f"/openai/threads/{thread['id']}/messages", params=q))
    run_id = streamed_run(client, thread["id"], assistant["id"])
    steps = ok(client.get(f"/openai/threads/{thread['id']}/runs/{run_id}/steps", params=q))
    conversation = ok(
        client.post(
            "/openai/v1/conversations",
            json={"items": [{"role": "user", "content": f"hello from {namespace}"}]},
        )
    )
    items = ok(client.get(f"/openai/v1/conversations/{conversation['id']}/items"))
    response = ok(
        client.post(
            "/openai/v1/responses",
            json={"model": "gpt-4o", "input": "hi", "conversation": conversation["id"]},
        )
    )
    return Tenant(
        namespace,
        {
            "thread_id": thread["id"],
            "message_id": messages["data"][0]["id"],
            "run_id": run_id,
            "step_id": steps["data"][0]["id"],
            "assistant_id": assistant["id"],
            "file_id": files[0],
            "vector_store_id": store["id"],
            "batch_id": batch["id"],
            "conversation_id": conversation["id"],
            "item_id": items["data"][0]["id"],
            "response_id": response["id"],
        },
        files,
    )
