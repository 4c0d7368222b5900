"""Vector store bodies: create, modify, add a file, add a file batch (pure).

Per the documents (2024-05-01-preview and later; vector stores are v2 only):

* create: ``file_ids`` (<= 500, and <= the profile's ``max_vector_store_files``), ``name``,
  ``expires_after`` (``{"anchor": "last_active_at", "days": 1..365}``), ``chunking_strategy``,
  ``metadata`` (at most 15 of the caller's pairs: the gateway stamps the 16th);
* modify: ``name``, ``expires_after``, ``metadata`` (each nullable);
* a file: ``file_id`` (required), ``chunking_strategy``;
* a file batch: ``file_ids`` (required, 1..500, <= ``max_vector_store_files``),
  ``chunking_strategy``.

``chunking_strategy`` is ``{"type": "auto"}`` or ``{"type": "static", "static":
{"max_chunk_size_tokens": 100..4096, "chunk_overlap_tokens": 0..max/2}}``.
"""

from __future__ import annotations

from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.policy.fields import (
    DUPLICATE_FILE_ID,
    FILE_ID,
    INVALID_FILE_ID,
    INVALID_VALUE,
    TOO_MANY_FILES,
    Field,
    as_choice,
    as_id,
    as_id_list,
    as_int,
    as_object,
    as_str,
    build,
    check_keys,
    nullable,
    refuse,
    require_fields,
    stamped_metadata_field,
)
from gateway.policy.jsonbody import child_path
from gateway.policy.limits import PolicyLimits

#: ``file_ids`` in one create-vector-store or file-batch request.
MAX_REQUEST_FILES = 500


def file_id_list(value: Any, path: str, max_items: int) -> list[str]:
    return as_id_list(
        value,
        path,
        pattern=FILE_ID,
        max_items=max_items,
        too_many=TOO_MANY_FILES,
        malformed=INVALID_FILE_ID,
        duplicate=DUPLICATE_FILE_ID,
    )


def chunking_strategy(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    obj = as_object(value, path)
    require_fields(obj, path, "type")
    kind = as_choice(obj["type"], child_path(path, "type"), frozenset({"auto", "static"}))
    if kind == "auto":
        check_keys(obj, path, frozenset({"type"}), frozenset())
        return {"type": kind}
    check_keys(obj, path, frozenset({"type", "static"}), frozenset())
    require_fields(obj, path, "static")
    where = child_path(path, "static")
    static = as_object(obj["static"], where)
    sizes = frozenset({"max_chunk_size_tokens", "chunk_overlap_tokens"})
    check_keys(static, where, sizes, frozenset())
    require_fields(static, where, *sorted(sizes))
    size_at = child_path(where, "max_chunk_size_tokens")
    size = as_int(static["max_chunk_size_tokens"], size_at, 100)
    if size > 4096:
        refuse(INVALID_VALUE, size_at, "Must be between 100 and 4096.")
    overlap_at = child_path(where, "chunk_overlap_tokens")
    overlap = as_int(static["chunk_overlap_tokens"], overlap_at, 0)
    if overlap > size // 2:
        refuse(INVALID_VALUE, overlap_at, "Must not exceed half of max_chunk_size_tokens.")
    return {
        "type": kind,
        "static": {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap},
    }


def _expires_after(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"anchor", "days"}), frozenset())
    require_fields(obj, path, "anchor", "days")
    days_at = child_path(path, "days")
    days = as_int(obj["days"], days_at, 1)
    if days > 365:
        refuse(INVALID_VALUE, days_at, "Must be between 1 and 365.")
    anchor = as_choice(obj["anchor"], child_path(path, "anchor"), frozenset({"last_active_at"}))
    return {"anchor": anchor, "days": days}


def _name(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    """A string; the documents give it no maximum (the body size limit bounds it)."""
    return as_str(value, path)


def _request_files(value: Any, path: str, _v: ApiVersion, limits: PolicyLimits) -> Any:
    return file_id_list(value, path, min(MAX_REQUEST_FILES, limits.max_vector_store_files))


def _file_id(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    return as_id(value, path, FILE_ID, INVALID_FILE_ID)


_CREATE: dict[str, Field] = {
    "file_ids": _request_files,
    "name": _name,
    "expires_after": _expires_after,
    "chunking_strategy": chunking_strategy,
    "metadata": stamped_metadata_field,
}
_MODIFY: dict[str, Field] = {
    "name": nullable(_name),
    "expires_after": nullable(_expires_after),
    "metadata": stamped_metadata_field,
}


def check_create_vector_store(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    return build(body, "", version, limits, _CREATE)


def check_modify_vector_store(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    return build(body, "", version, limits, _MODIFY)


def check_create_vector_store_file(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    fields: dict[str, Field] = {"file_id": _file_id, "chunking_strategy": chunking_strategy}
    return build(body, "", version, limits, fields, required=("file_id",))


def check_create_file_batch(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    fields: dict[str, Field] = {"file_ids": _request_files, "chunking_strategy": chunking_strategy}
    out = build(body, "", version, limits, fields, required=("file_ids",))
    if not out["file_ids"]:
        refuse(INVALID_VALUE, "file_ids", "Give at least one file.")
    return out
