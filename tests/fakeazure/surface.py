"""Dispatch of the Assistants surface beyond threads: assistants (and v1 assistant files),
files and vector stores (their files and batches); and of the v1 API (``/openai/v1/``:
responses, conversations and their items, files). One arm per operation, named as the
gateway names it (gateway/operations). No I/O; the caller holds ``Store.lock``."""

from __future__ import annotations

from tests.fakeazure.assistants import assistant_json
from tests.fakeazure.conversations import conversation_json
from tests.fakeazure.files import StoredFile, file_json
from tests.fakeazure.responses import response_json
from tests.fakeazure.shapes import Generation, Json, ListQuery
from tests.fakeazure.store import Store
from tests.fakeazure.vectorstores import vector_store_json


def dispatch(
    s: Store, name: str, gen: Generation, p: dict[str, str], q: ListQuery, body: Json
) -> Json:
    a, vs = s.assistants, s.vector_stores
    match name:
        case "assistants.create":
            return assistant_json(a.create(body, gen), gen)
        case "assistants.list":
            return a.list(q, gen)
        case "assistants.retrieve":
            return assistant_json(a.get(p["assistant_id"]), gen)
        case "assistants.modify":
            return assistant_json(a.modify(p["assistant_id"], body, gen), gen)
        case "assistants.delete":
            return a.delete(p["assistant_id"])
        case "assistants.files.create":
            if isinstance(body.get("file_id"), str):
                s.files.get(body["file_id"])  # 404 for a file that was never uploaded
            return a.add_file(p["assistant_id"], body)
        case "assistants.files.list":
            return a.list_files(p["assistant_id"], q)
        case "assistants.files.retrieve":
            return a.file(p["assistant_id"], p["file_id"])
        case "assistants.files.delete":
            return a.remove_file(p["assistant_id"], p["file_id"])
        case "files.list":
            return s.files.list(q)
        case "files.retrieve":
            return file_json(s.files.get(p["file_id"]))
        case "files.delete":
            return s.files.delete(p["file_id"])
        case "vector_stores.create":
            return vector_store_json(vs.create(body))
        case "vector_stores.list":
            return vs.list(q)
        case "vector_stores.retrieve":
            return vector_store_json(vs.get(p["vector_store_id"]))
        case "vector_stores.modify":
            return vector_store_json(vs.modify(p["vector_store_id"], body))
        case "vector_stores.delete":
            return vs.delete(p["vector_store_id"])
        case "vector_stores.files.create":
            return vs.add_file(p["vector_store_id"], body)
        case "vector_stores.files.list":
            return vs.list_files(p["vector_store_id"], q)
        case "vector_stores.files.retrieve":
            return vs.file(p["vector_store_id"], p["file_id"])
        case "vector_stores.files.delete":
            return vs.remove_file(p["vector_store_id"], p["file_id"])
        case "vector_stores.file_batches.create":
            return vs.create_batch(p["vector_store_id"], body)
        case "vector_stores.file_batches.retrieve":
            return vs.batch(p["vector_store_id"], p["batch_id"])
        case "vector_stores.file_batches.cancel":
            return vs.cancel_batch(p["vector_store_id"], p["batch_id"])
        case "vector_stores.file_batches.list_files":
            return vs.list_files(p["vector_store_id"], q, p["batch_id"])
    raise AssertionError(f"unrouted operation {name}")


def dispatch_v1(
    s: Store, name: str, p: dict[str, str], q: ListQuery, body: Json
) -> Json | StoredFile:
    """The v1 API's JSON operations but responses create/retrieve (streams: the app's) and
    files upload/content (raw bodies)."""
    r, c = s.responses, s.conversations
    match name:
        case "responses.delete":
            return r.delete(p["response_id"])
        case "responses.cancel":
            return response_json(r.cancel(p["response_id"]))
        case "responses.input_items.list":
            return r.input_items(p["response_id"], q)
        case "conversations.create":
            return conversation_json(c.create(body))
        case "conversations.retrieve":
            return conversation_json(c.get(p["conversation_id"]))
        case "conversations.update":
            return conversation_json(c.update(p["conversation_id"], body))
        case "conversations.delete":
            return c.delete(p["conversation_id"])
        case "conversations.items.create":
            return c.add_items(p["conversation_id"], body)
        case "conversations.items.list":
            return c.list_items(p["conversation_id"], q)
        case "conversations.items.retrieve":
            return c.item(p["conversation_id"], p["item_id"])
        case "conversations.items.delete":
            return c.delete_item(p["conversation_id"], p["item_id"])
        case "files.v1.list":
            return s.files.list(q)
        case "files.v1.retrieve":
            return file_json(s.files.get(p["file_id"]))
        case "files.v1.delete":
            return s.files.delete(p["file_id"])
        case "files.v1.content":
            return s.files.get(p["file_id"])
    raise AssertionError(f"unrouted operation {name}")
