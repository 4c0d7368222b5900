"""Run bodies: create run, create thread and run, submit tool outputs (pure).

Field sets follow the Azure specs (2024-02-15-preview for v1, 2024-05-01-preview for v2): a
v1 run takes only ``assistant_id, model, instructions, tools, metadata`` (plus ``thread`` on
create-and-run); every sampling, token, streaming, ``additional_*`` and ``tool_resources``
field is v2-only and refused on v1 with ``field_not_allowed_in_version``.
``parallel_tool_calls``, ``tool_choice: "required"`` and ``response_format`` ``json_schema``
come from later v2 versions and are accepted on every v2 version (Azure decides).
``instructions`` and ``additional_instructions`` share the message content limit, so a profile's
``max_content_chars`` cannot be bypassed through them. Free-form JSON (function
``parameters``, ``json_schema.schema``) is copied as is; its depth is bounded by the JSON intake.
"""

from __future__ import annotations

from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.policy.fields import (
    ASSISTANT_ID,
    INVALID_VALUE,
    Field,
    as_bool,
    as_choice,
    as_id,
    as_int,
    as_list,
    as_number,
    as_object,
    as_str,
    as_text,
    build,
    check_keys,
    check_required_tags,
    copy_json,
    metadata_field,
    nullable,
    refuse,
    require_fields,
)
from gateway.policy.jsonbody import child_path, item_path
from gateway.policy.limits import PolicyLimits
from gateway.policy.messages import content_max_chars
from gateway.policy.threads import TOOL_RESOURCES, check_thread, messages_field

MAX_RUN_TOOLS = 20
MAX_MODEL_CHARS = 256
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_TOOL_TYPES_V1 = frozenset({"code_interpreter", "retrieval", "function"})
_TOOL_TYPES_V2 = frozenset({"code_interpreter", "file_search", "function"})
_RANKERS = frozenset({"auto", "default_2024_08_21"})


def _name(value: Any, path: str) -> str:
    name = as_str(value, path)
    if not 1 <= len(name) <= 64 or not _NAME_CHARS.issuperset(name):
        refuse(INVALID_VALUE, path, "Names have 1 to 64 characters a-z, A-Z, 0-9, _ or -.")
    return name


def _assistant_id(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    return as_id(value, path, ASSISTANT_ID, INVALID_VALUE)


def _model(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    if not 1 <= len(as_str(value, path)) <= MAX_MODEL_CHARS:
        refuse(INVALID_VALUE, path, f"A model name has 1 to {MAX_MODEL_CHARS} characters.")
    return value


def _instructions(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> Any:
    return as_text(value, path, content_max_chars(version, limits))


def _temperature(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    return as_number(value, path, 0, 2)


def _top_p(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    return as_number(value, path, 0, 1)


def _flag(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    return as_bool(value, path)


def _token_budget(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    return as_int(value, path, 256)


def _truncation(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"type", "last_messages"}), frozenset())
    require_fields(obj, path, "type")
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "type":
            out[key] = as_choice(item, where, frozenset({"auto", "last_messages"}))
        else:
            out[key] = None if item is None else as_int(item, where, 1)
    return out


def _tool_choice(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    if isinstance(value, str):
        return as_choice(value, path, frozenset({"none", "auto", "required"}))
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"type", "function"}), frozenset())
    require_fields(obj, path, "type")
    kind = as_choice(obj["type"], child_path(path, "type"), _TOOL_TYPES_V2)
    if kind != "function":
        check_keys(obj, path, frozenset({"type"}), frozenset())
        return {"type": kind}
    require_fields(obj, path, "function")
    where = child_path(path, "function")
    function = as_object(obj["function"], where)
    check_keys(function, where, frozenset({"name"}), frozenset())
    require_fields(function, where, "name")
    return {"type": kind, "function": {"name": _name(function["name"], child_path(where, "name"))}}


def _response_format(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    if isinstance(value, str):
        return as_choice(value, path, frozenset({"none", "auto"}))
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"type", "json_schema"}), frozenset())
    require_fields(obj, path, "type")
    kind = as_choice(
        obj["type"], child_path(path, "type"), frozenset({"text", "json_object", "json_schema"})
    )
    if kind != "json_schema":
        check_keys(obj, path, frozenset({"type"}), frozenset())
        return {"type": kind}
    require_fields(obj, path, "json_schema")
    where = child_path(path, "json_schema")
    spec = as_object(obj["json_schema"], where)
    check_keys(spec, where, frozenset({"name", "description", "schema", "strict"}), frozenset())
    require_fields(spec, where, "name")
    out: dict[str, Any] = {}
    for key, item in spec.items():
        at = child_path(where, key)
        if key == "name":
            out[key] = _name(item, at)
        elif key == "description":
            out[key] = as_str(item, at)
        elif key == "schema":
            out[key] = copy_json(as_object(item, at), at)
        else:
            out[key] = None if item is None else as_bool(item, at)
    return {"type": kind, "json_schema": out}


def _function(value: Any, path: str) -> dict[str, Any]:
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"name", "description", "parameters", "strict"}), frozenset())
    require_fields(obj, path, "name")
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "name":
            out[key] = _name(item, where)
        elif key == "description":
            out[key] = as_str(item, where)
        elif key == "parameters":
            out[key] = copy_json(as_object(item, where), where)
        else:
            out[key] = None if item is None else as_bool(item, where)
    return out


def _file_search(value: Any, path: str) -> dict[str, Any]:
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"max_num_results", "ranking_options"}), frozenset())
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "max_num_results":
            out[key] = as_int(item, where, 1)
            if item > 50:
                refuse(INVALID_VALUE, where, "Must be between 1 and 50.")
            continue
        ranking = as_object(item, where)
        check_keys(ranking, where, frozenset({"ranker", "score_threshold"}), frozenset())
        out[key] = {
            name: as_choice(option, child_path(where, name), _RANKERS)
            if name == "ranker"
            else as_number(option, child_path(where, name), 0, 1)
            for name, option in ranking.items()
        }
    return out


def _tool(value: Any, path: str, version: ApiVersion) -> dict[str, Any]:
    obj = as_object(value, path)
    require_fields(obj, path, "type")
    kind = as_choice(
        obj["type"], child_path(path, "type"), _TOOL_TYPES_V1 if version.is_v1 else _TOOL_TYPES_V2
    )
    extra = frozenset({kind}) if kind in {"function", "file_search"} else frozenset()
    check_keys(obj, path, frozenset({"type"}) | extra, frozenset())
    if kind == "function":
        require_fields(obj, path, "function")
        return {"type": kind, "function": _function(obj["function"], child_path(path, kind))}
    if kind == "file_search" and kind in obj:
        return {"type": kind, kind: _file_search(obj[kind], child_path(path, kind))}
    return {"type": kind}


def _tools(value: Any, path: str, version: ApiVersion, _limits: PolicyLimits) -> Any:
    items = as_list(value, path)
    if len(items) > MAX_RUN_TOOLS:
        refuse(INVALID_VALUE, path, f"At most {MAX_RUN_TOOLS} tools are allowed.")
    return [_tool(item, item_path(path, i), version) for i, item in enumerate(items)]


_RUN_FIELDS: dict[str, Field] = {
    "assistant_id": _assistant_id,
    "model": nullable(_model),
    "instructions": nullable(_instructions),
    "tools": nullable(_tools),
    "metadata": metadata_field,
    "temperature": nullable(_temperature),
    "top_p": nullable(_top_p),
    "stream": nullable(_flag),
    "max_prompt_tokens": nullable(_token_budget),
    "max_completion_tokens": nullable(_token_budget),
    "truncation_strategy": nullable(_truncation),
    "tool_choice": nullable(_tool_choice),
    "response_format": nullable(_response_format),
    "parallel_tool_calls": _flag,
}
_RUN_V2_ONLY = frozenset(_RUN_FIELDS) - {
    "assistant_id",
    "model",
    "instructions",
    "tools",
    "metadata",
}

_CREATE_RUN_FIELDS: dict[str, Field] = {
    **_RUN_FIELDS,
    "additional_instructions": nullable(_instructions),
    "additional_messages": nullable(messages_field),
}


def _thread(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> Any:
    return check_thread(as_object(value, path), path, version, limits)


_CREATE_AND_RUN_FIELDS: dict[str, Field] = {
    **_RUN_FIELDS,
    "thread": _thread,
    "tool_resources": TOOL_RESOURCES,
}


def check_create_run(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    v2_only = _RUN_V2_ONLY | {"additional_instructions", "additional_messages"}
    out = build(body, "", version, limits, _CREATE_RUN_FIELDS, v2_only, ("assistant_id",))
    check_required_tags(body, "", limits, creating=True)
    return out


def check_create_thread_and_run(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    v2_only = _RUN_V2_ONLY | {"tool_resources"}
    out = build(body, "", version, limits, _CREATE_AND_RUN_FIELDS, v2_only, ("assistant_id",))
    check_required_tags(body, "", limits, creating=True)
    if "thread" not in body:  # Azure creates an empty thread: it must carry the tags too
        check_required_tags({}, "thread", limits, creating=True)
    return out


def _tool_output(value: Any, path: str, limits: PolicyLimits) -> dict[str, str]:
    """One function result. Azure documents no size limit; a profile's content limit applies."""
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"tool_call_id", "output"}), frozenset())
    require_fields(obj, path, "tool_call_id", "output")
    out: dict[str, str] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "tool_call_id":
            out[key] = _name(item, where)
        elif limits.max_content_chars is None:
            out[key] = as_str(item, where)
        else:
            out[key] = as_text(item, where, limits.max_content_chars)
    return out


def _tool_outputs(value: Any, path: str, _v: ApiVersion, limits: PolicyLimits) -> Any:
    outputs = [
        _tool_output(item, item_path(path, i), limits)
        for i, item in enumerate(as_list(value, path))
    ]
    ids = [output["tool_call_id"] for output in outputs]
    if len(set(ids)) != len(ids):
        refuse(INVALID_VALUE, path, "Each tool call may be answered once.")
    return outputs


def check_submit_tool_outputs(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    fields: dict[str, Field] = {"tool_outputs": _tool_outputs, "stream": nullable(_flag)}
    return build(body, "", version, limits, fields, frozenset({"stream"}), ("tool_outputs",))
