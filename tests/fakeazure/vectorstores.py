"""Vector stores, their files and file batches (v2 only), as ``vectorStoreObject``,
``vectorStoreFileObject`` and ``vectorStoreFileBatchObject`` of the vendored documents.

Files are processed at once (``completed``); a batch starts ``in_progress`` and completes on its
first retrieve (so a poll sees both states), unless cancelled first. A file id must name an
uploaded file (404 otherwise). ``metadata`` is stored as sent and replaced wholesale on modify.
No I/O; callers hold ``Store.lock``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakeazure.files import Files
from tests.fakeazure.shapes import (
    Json,
    ListQuery,
    check_metadata,
    invalid,
    list_json,
    new_id,
    not_found,
    paginate,
    reject_unknown,
)

MAX_CREATE_FILES = 500
_FILE_STATUSES = frozenset({"in_progress", "completed", "failed", "cancelled"})


@dataclass(eq=False)
class VectorStoreFile:
    id: str
    created_at: int
    seq: int
    usage_bytes: int
    batch_id: str | None = None
    status: str = "completed"


@dataclass(eq=False)
class Batch:
    id: str
    created_at: int
    file_ids: list[str]
    status: str = "in_progress"


@dataclass(eq=False)
class VectorStore:
    id: str
    created_at: int
    seq: int
    name: str
    metadata: dict[str, str]
    expires_after: Json | None
    files: dict[str, VectorStoreFile] = field(default_factory=dict)
    batches: dict[str, Batch] = field(default_factory=dict)


def _counts(statuses: list[str]) -> Json:
    counts = {s: statuses.count(s) for s in ("in_progress", "completed", "failed", "cancelled")}
    return {**counts, "total": len(statuses)}


def vector_store_json(vs: VectorStore) -> Json:
    """``bytes`` too: the 2024-05-01-preview document lists it under ``required`` (beside
    ``usage_bytes``) without defining it; the fake sends the same number under both names."""
    usage = sum(f.usage_bytes for f in vs.files.values())
    out: Json = {
        "id": vs.id,
        "object": "vector_store",
        "created_at": vs.created_at,
        "name": vs.name,
        "usage_bytes": usage,
        "bytes": usage,
        "file_counts": _counts([f.status for f in vs.files.values()]),
        "status": "completed",
        "expires_at": None,
        "last_active_at": vs.created_at,
        "metadata": dict(vs.metadata),
    }
    if vs.expires_after is not None:
        out["expires_after"] = copy.deepcopy(vs.expires_after)
        out["expires_at"] = vs.created_at + 86_400 * int(vs.expires_after["days"])
    return out


def vector_store_file_json(vs: VectorStore, f: VectorStoreFile) -> Json:
    return {
        "id": f.id,
        "object": "vector_store.file",
        "usage_bytes": f.usage_bytes,
        "created_at": f.created_at,
        "vector_store_id": vs.id,
        "status": f.status,
        "last_error": None,
    }


def batch_json(vs: VectorStore, b: Batch) -> Json:
    statuses = [vs.files[f].status if f in vs.files else b.status for f in b.file_ids]
    if b.status == "in_progress":
        statuses = ["in_progress"] * len(b.file_ids)
    return {
        "id": b.id,
        "object": "vector_store.files_batch",
        "created_at": b.created_at,
        "vector_store_id": vs.id,
        "status": b.status,
        "file_counts": _counts(statuses),
    }


def _check_expires_after(value: Any) -> Json | None:
    if value is None:
        return None
    days = value.get("days") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or value.get("anchor") != "last_active_at"
        or not isinstance(days, int)
        or not 1 <= days <= 365
        or set(value) - {"anchor", "days"}
    ):
        raise invalid(
            "Invalid 'expires_after': expected {anchor: 'last_active_at', days: 1..365}.",
            "expires_after",
        )
    return dict(value)


def _file_ids(value: Any, param: str, least: int, most: int) -> list[str]:
    if value is None and least == 0:
        return []
    if (
        not isinstance(value, list)
        or not least <= len(value) <= most
        or not all(isinstance(f, str) for f in value)
    ):
        raise invalid(f"Invalid '{param}': an array of {least}..{most} file ids.", param)
    return list(value)


class VectorStores:
    """The vector stores of one fake resource; file ids are checked against ``files``."""

    def __init__(self, now: Callable[[], int], next_seq: Callable[[], int], files: Files) -> None:
        self._now, self._next_seq, self._files = now, next_seq, files
        self.items: dict[str, VectorStore] = {}

    def create(self, body: Json) -> VectorStore:
        reject_unknown(body, {"file_ids", "name", "expires_after", "metadata", "chunking_strategy"})
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise invalid("Invalid 'name': expected a string.", "name")
        ids = _file_ids(body.get("file_ids"), "file_ids", 0, MAX_CREATE_FILES)
        vs = VectorStore(
            new_id("vs_"),
            self._now(),
            self._next_seq(),
            name or "",
            check_metadata(body.get("metadata")),
            _check_expires_after(body.get("expires_after")),
        )
        for file_id in ids:
            self._attach(vs, file_id, None)
        self.items[vs.id] = vs
        return vs

    def expand(self, tool_resources: Json) -> Json:
        """``tool_resources`` with each ``file_search.vector_stores[]`` helper turned into a new
        vector store (its ``file_ids``, ``metadata``, ``chunking_strategy``), named by id in
        ``file_search.vector_store_ids``, as Azure answers it."""
        out = copy.deepcopy(tool_resources)
        search = out.get("file_search")
        if not isinstance(search, dict) or "vector_stores" not in search:
            return out
        helpers = search.pop("vector_stores")
        if not isinstance(helpers, list) or not all(isinstance(h, dict) for h in helpers):
            raise invalid(
                "Invalid 'tool_resources.file_search.vector_stores': an array of objects.",
                "tool_resources.file_search.vector_stores",
            )
        made = [self.create(helper) for helper in helpers]
        search["vector_store_ids"] = [*search.get("vector_store_ids", []), *(v.id for v in made)]
        return out

    def get(self, vector_store_id: str) -> VectorStore:
        if vector_store_id not in self.items:
            raise not_found("vector store", vector_store_id)
        return self.items[vector_store_id]

    def modify(self, vector_store_id: str, body: Json) -> VectorStore:
        vs = self.get(vector_store_id)
        reject_unknown(body, {"name", "expires_after", "metadata"})
        if body.get("name") is not None:
            if not isinstance(body["name"], str):
                raise invalid("Invalid 'name': expected a string.", "name")
            vs.name = body["name"]
        if "expires_after" in body:
            vs.expires_after = _check_expires_after(body["expires_after"])
        if "metadata" in body:
            vs.metadata = check_metadata(body["metadata"])
        return vs

    def delete(self, vector_store_id: str) -> Json:
        self.get(vector_store_id)
        del self.items[vector_store_id]
        return {"id": vector_store_id, "object": "vector_store.deleted", "deleted": True}

    def list(self, q: ListQuery) -> Json:
        page, more = paginate(
            list(self.items.values()), q, lambda v: (v.created_at, v.seq), lambda v: v.id
        )
        return list_json([vector_store_json(v) for v in page], more)

    # files --------------------------------------------------------------------------------
    def _attach(self, vs: VectorStore, file_id: str, batch_id: str | None) -> VectorStoreFile:
        stored = self._files.get(file_id)
        entry = vs.files.get(file_id)
        if entry is None:
            entry = VectorStoreFile(file_id, self._now(), self._next_seq(), len(stored.content))
            vs.files[file_id] = entry
        entry.batch_id = batch_id or entry.batch_id
        return entry

    def add_file(self, vector_store_id: str, body: Json) -> Json:
        vs = self.get(vector_store_id)
        reject_unknown(body, {"file_id", "chunking_strategy", "attributes"})
        file_id = body.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            raise invalid(
                "Missing required parameter: 'file_id'.", "file_id", "missing_required_parameter"
            )
        return vector_store_file_json(vs, self._attach(vs, file_id, None))

    def file(self, vector_store_id: str, file_id: str) -> Json:
        vs = self.get(vector_store_id)
        if file_id not in vs.files:
            raise not_found("file", file_id)
        return vector_store_file_json(vs, vs.files[file_id])

    def remove_file(self, vector_store_id: str, file_id: str) -> Json:
        vs = self.get(vector_store_id)
        if file_id not in vs.files:
            raise not_found("file", file_id)
        del vs.files[file_id]
        return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}

    def list_files(self, vector_store_id: str, q: ListQuery, batch_id: str | None = None) -> Json:
        vs = self.get(vector_store_id)
        if q.filter is not None and q.filter not in _FILE_STATUSES:
            raise invalid(f"Invalid 'filter': one of {sorted(_FILE_STATUSES)}.", "filter")
        items = list(vs.files.values())
        if batch_id is not None:
            wanted = set(self._batch(vs, batch_id).file_ids)
            items = [f for f in items if f.id in wanted]
        items = [f for f in items if q.filter is None or f.status == q.filter]
        page, more = paginate(items, q, lambda f: (f.created_at, f.seq), lambda f: f.id)
        return list_json([vector_store_file_json(vs, f) for f in page], more)

    # file batches ------------------------------------------------------------------------------
    def _batch(self, vs: VectorStore, batch_id: str) -> Batch:
        if batch_id not in vs.batches:
            raise not_found("vector store file batch", batch_id)
        return vs.batches[batch_id]

    def create_batch(self, vector_store_id: str, body: Json) -> Json:
        vs = self.get(vector_store_id)
        reject_unknown(body, {"file_ids", "chunking_strategy", "attributes"})
        ids = _file_ids(body.get("file_ids"), "file_ids", 1, MAX_CREATE_FILES)
        for file_id in ids:
            self._files.get(file_id)
        batch = Batch(new_id("vsfb_"), self._now(), ids)
        vs.batches[batch.id] = batch
        for file_id in ids:
            self._attach(vs, file_id, batch.id)
        return batch_json(vs, batch)

    def batch(self, vector_store_id: str, batch_id: str) -> Json:
        vs = self.get(vector_store_id)
        batch = self._batch(vs, batch_id)
        answer = batch_json(vs, batch)
        if batch.status == "in_progress":
            batch.status = "completed"  # processed between this poll and the next
        return answer

    def cancel_batch(self, vector_store_id: str, batch_id: str) -> Json:
        vs = self.get(vector_store_id)
        batch = self._batch(vs, batch_id)
        if batch.status != "in_progress":
            raise invalid(f"Cannot cancel a batch with status '{batch.status}'.")
        batch.status = "cancelled"
        for file_id in batch.file_ids:
            entry = vs.files.get(file_id)
            if entry is not None and entry.batch_id == batch.id:
                entry.status = "cancelled"
        return batch_json(vs, batch)
