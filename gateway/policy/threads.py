"""Thread bodies: create thread (also inside create-and-run), modify thread, metadata-only
modifies (pure).

v1 threads carry ``messages`` and ``metadata``; v2 adds ``tool_resources``:
``code_interpreter.file_ids`` (<= ``max_code_interpreter_files``; on an assistant
``max_assistant_files``) and ``file_search`` with exactly one of ``vector_store_ids`` or (on
creation only) ``vector_stores`` (each <= ``max_vector_stores``; a new store takes ``file_ids``
<= 10,000 and <= ``max_vector_store_files``, ``chunking_strategy`` and ``metadata``). A tool
resource for a tool the profile's ``tools`` leaves out is ``tool_not_allowed``. The same
checker serves assistants (``tool_resources_checker``).
Every created thread must carry the profile's required metadata keys; a modify may leave
metadata out but may not set it to null or drop a required key. A thread's metadata holds at
most 15 of the caller's pairs: the gateway adds its owner stamp as the 16th.
"""

from __future__ import annotations

from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.policy.fields import (
    DUPLICATE_FILE_ID,
    FILE_ID,
    INVALID_FILE_ID,
    INVALID_VALUE,
    MISSING_FIELD,
    TOO_MANY_CODE_INTERPRETER_FILES,
    TOO_MANY_FILES,
    TOO_MANY_MESSAGES,
    TOO_MANY_VECTOR_STORES,
    VECTOR_STORE_ID,
    Field,
    as_id_list,
    as_list,
    as_object,
    build,
    check_keys,
    check_metadata,
    check_required_tags,
    metadata_field,
    nullable,
    refuse,
    thread_metadata_field,
)
from gateway.policy.jsonbody import child_path, item_path
from gateway.policy.limits import PolicyLimits
from gateway.policy.messages import check_message
from gateway.policy.tooling import tool_type_allowed
from gateway.policy.vectorstores import chunking_strategy

MAX_VECTOR_STORE_FILES = 10_000


def messages_field(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> Any:
    items = as_list(value, path)
    if len(items) > limits.max_thread_messages:
        refuse(
            TOO_MANY_MESSAGES, path, f"At most {limits.max_thread_messages} messages are allowed."
        )
    return [
        check_message(item, item_path(path, i), version, limits) for i, item in enumerate(items)
    ]


def _file_id_list(value: Any, path: str, max_items: int, too_many: str) -> list[str]:
    return as_id_list(
        value,
        path,
        pattern=FILE_ID,
        max_items=max_items,
        too_many=too_many,
        malformed=INVALID_FILE_ID,
        duplicate=DUPLICATE_FILE_ID,
    )


def _code_interpreter_checker(*, assistant: bool) -> Field:
    def code_interpreter(value: Any, path: str, _v: ApiVersion, limits: PolicyLimits) -> Any:
        obj = as_object(value, path)
        check_keys(obj, path, frozenset({"file_ids"}), frozenset())
        most = limits.max_code_interpreter_files
        if assistant:
            most = min(most, limits.max_assistant_files)
        return {
            key: _file_id_list(item, child_path(path, key), most, TOO_MANY_CODE_INTERPRETER_FILES)
            for key, item in obj.items()
        }

    return code_interpreter


def _vector_store_ids(value: Any, path: str, _v: ApiVersion, limits: PolicyLimits) -> Any:
    return as_id_list(
        value,
        path,
        pattern=VECTOR_STORE_ID,
        max_items=limits.max_vector_stores,
        too_many=TOO_MANY_VECTOR_STORES,
        malformed=INVALID_VALUE,
        duplicate=INVALID_VALUE,
    )


def _new_vector_store(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> Any:
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"file_ids", "chunking_strategy", "metadata"}), frozenset())
    most = min(MAX_VECTOR_STORE_FILES, limits.max_vector_store_files)
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "metadata":
            out[key] = check_metadata(as_object(item, where), where, limits, thread=True)
        elif key == "chunking_strategy":
            out[key] = chunking_strategy(item, where, version, limits)
        else:
            out[key] = _file_id_list(item, where, most, TOO_MANY_FILES)
    return out


def _vector_stores(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> Any:
    items = as_list(value, path)
    if len(items) > limits.max_vector_stores:
        refuse(
            TOO_MANY_VECTOR_STORES,
            path,
            f"At most {limits.max_vector_stores} vector stores are allowed.",
        )
    return [
        _new_vector_store(item, item_path(path, i), version, limits) for i, item in enumerate(items)
    ]


def tool_resources_checker(*, new_stores: bool, assistant: bool = False) -> Field:
    search_fields: dict[str, Field] = {"vector_store_ids": _vector_store_ids}
    if new_stores:
        search_fields["vector_stores"] = _vector_stores

    def file_search(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> Any:
        obj = as_object(value, path)
        out = build(obj, path, version, limits, search_fields)
        if not out:
            refuse(
                MISSING_FIELD, child_path(path, "vector_store_ids"), "A required field is missing."
            )
        if len(out) > 1:
            refuse(INVALID_VALUE, path, "Give vector_store_ids or vector_stores, not both.")
        return out

    resources: dict[str, Field] = {
        "code_interpreter": _code_interpreter_checker(assistant=assistant),
        "file_search": file_search,
    }

    def tool_resources(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> Any:
        obj = as_object(value, path)
        for key in obj:
            if key in resources:
                tool_type_allowed(key, child_path(path, key), limits)
        return build(obj, path, version, limits, resources)

    return nullable(tool_resources)


_THREAD_FIELDS: dict[str, Field] = {
    "messages": messages_field,
    "tool_resources": tool_resources_checker(new_stores=True),
    "metadata": thread_metadata_field,
}
TOOL_RESOURCES = tool_resources_checker(new_stores=False)
_MODIFY_THREAD_FIELDS: dict[str, Field] = {
    "tool_resources": TOOL_RESOURCES,
    "metadata": thread_metadata_field,
}
_V2_THREAD = frozenset({"tool_resources"})


def check_thread(
    body: dict[str, Any], path: str, version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    out = build(body, path, version, limits, _THREAD_FIELDS, _V2_THREAD)
    check_required_tags(body, path, limits, creating=True)
    return out


def check_modify_thread(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    out = build(body, "", version, limits, _MODIFY_THREAD_FIELDS, _V2_THREAD)
    check_required_tags(body, "", limits, creating=False)
    return out


def check_modify_metadata(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    out = build(body, "", version, limits, {"metadata": metadata_field})
    check_required_tags(body, "", limits, creating=False)
    return out
