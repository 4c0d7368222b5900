"""The v1 API's tools and tool choice (pure): responses create ``tools`` / ``tool_choice``.

Shapes: ``OpenAI.Tool`` of ``azure-v1-v1-generated.json`` (the stock SDK's ``ToolParam``),
closed. Every tool type must be in the profile's ``tools``. Rules beyond the shapes:

* ``mcp``: ``server_url`` is required (``connector_id`` is refused) and must be exactly one of
  the profile's ``mcp_server_urls`` (empty: no ``mcp`` tool at all): Azure would otherwise call
  any server a caller names.
* ``code_interpreter``: ``container`` must be ``{"type": "auto", "file_ids": [...]}`` (its
  files are owned references); a container id is refused (containers are not owned objects).
* ``image_generation``: the scalar options only (``input_image_mask`` is refused).
"""

from __future__ import annotations

from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.policy.fields import (
    FILE_ID,
    INVALID_FILE_ID,
    INVALID_VALUE,
    MCP_SERVER_NOT_ALLOWED,
    VECTOR_STORE_ID,
    as_bool,
    as_choice,
    as_id_list,
    as_int,
    as_list,
    as_number,
    as_object,
    as_str,
    as_text,
    check_keys,
    copy_json,
    refuse,
    require_fields,
)
from gateway.policy.jsonbody import child_path, item_path
from gateway.policy.limits import PolicyLimits
from gateway.policy.tooling import name, tool_type_allowed

#: Tools per request (OpenAI's documented 128 functions bound the list).
MAX_RESPONSE_TOOLS = 128
#: Vector stores one ``file_search`` tool may search (a gateway bound).
MAX_TOOL_VECTOR_STORES = 16
#: Files of one ``code_interpreter`` container (as for an assistant's code interpreter).
MAX_CONTAINER_FILES = 20
_RANKERS = frozenset({"auto", "default-2024-11-15", "default_2024_08_21"})
_HOSTED_CHOICES = frozenset(
    {
        "file_search",
        "web_search",
        "web_search_preview",
        "computer_use_preview",
        "code_interpreter",
        "image_generation",
        "local_shell",
    }
)
_IMAGE_OPTIONS: dict[str, frozenset[str]] = {
    "background": frozenset({"transparent", "opaque", "auto"}),
    "input_fidelity": frozenset({"high", "low"}),
    "moderation": frozenset({"auto", "low"}),
    "output_format": frozenset({"png", "webp", "jpeg"}),
    "quality": frozenset({"low", "medium", "high", "auto"}),
    "size": frozenset({"1024x1024", "1024x1536", "1536x1024", "auto"}),
}


def _function(obj: dict[str, Any], path: str) -> dict[str, Any]:
    check_keys(
        obj, path, frozenset({"type", "name", "description", "parameters", "strict"}), frozenset()
    )
    require_fields(obj, path, "name")
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "type":
            out[key] = item
        elif key == "name":
            out[key] = name(item, where)
        elif key == "description":
            out[key] = None if item is None else as_str(item, where)
        elif key == "parameters":
            out[key] = None if item is None else copy_json(as_object(item, where), where)
        else:
            out[key] = None if item is None else as_bool(item, where)
    return out


def _file_search(obj: dict[str, Any], path: str) -> dict[str, Any]:
    fields = frozenset(
        {"type", "vector_store_ids", "max_num_results", "ranking_options", "filters"}
    )
    check_keys(obj, path, fields, frozenset())
    require_fields(obj, path, "vector_store_ids")
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "type":
            out[key] = item
        elif key == "vector_store_ids":
            out[key] = as_id_list(
                item,
                where,
                pattern=VECTOR_STORE_ID,
                max_items=MAX_TOOL_VECTOR_STORES,
                too_many=INVALID_VALUE,
                malformed=INVALID_VALUE,
                duplicate=INVALID_VALUE,
            )
        elif key == "max_num_results":
            out[key] = as_int(item, where, 1)
            if out[key] > 50:
                refuse(INVALID_VALUE, where, "Must be between 1 and 50.")
        elif key == "ranking_options":
            ranking = as_object(item, where)
            check_keys(ranking, where, frozenset({"ranker", "score_threshold"}), frozenset())
            out[key] = {
                k: as_choice(v, child_path(where, k), _RANKERS)
                if k == "ranker"
                else as_number(v, child_path(where, k), 0, 1)
                for k, v in ranking.items()
            }
        else:
            out[key] = None if item is None else copy_json(as_object(item, where), where)
    return out


def _web_search(obj: dict[str, Any], path: str) -> dict[str, Any]:
    fields = frozenset({"type", "user_location", "search_context_size", "filters"})
    check_keys(obj, path, fields, frozenset())
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "type":
            out[key] = item
        elif key == "search_context_size":
            out[key] = as_choice(item, where, frozenset({"low", "medium", "high"}))
        elif key == "user_location":
            out[key] = None if item is None else _location(item, where)
        else:
            out[key] = None if item is None else _domains(item, where)
    return out


def _location(value: Any, path: str) -> dict[str, Any]:
    obj = as_object(value, path)
    fields = frozenset({"type", "city", "country", "region", "timezone"})
    check_keys(obj, path, fields, frozenset())
    return {
        k: as_choice(v, child_path(path, k), frozenset({"approximate"}))
        if k == "type"
        else (None if v is None else as_text(v, child_path(path, k), 128))
        for k, v in obj.items()
    }


def _domains(value: Any, path: str) -> dict[str, Any]:
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"allowed_domains"}), frozenset())
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        out[key] = (
            None
            if item is None
            else [as_text(d, item_path(where, i), 253) for i, d in enumerate(as_list(item, where))]
        )
    return out


def _code_interpreter(obj: dict[str, Any], path: str) -> dict[str, Any]:
    check_keys(obj, path, frozenset({"type", "container"}), frozenset())
    require_fields(obj, path, "container")
    where = child_path(path, "container")
    if isinstance(obj["container"], str):
        refuse(INVALID_VALUE, where, "A container id is not accepted: use {type: auto}.")
    container = as_object(obj["container"], where)
    check_keys(container, where, frozenset({"type", "file_ids"}), frozenset())
    require_fields(container, where, "type")
    out: dict[str, Any] = {}
    for key, item in container.items():
        at = child_path(where, key)
        if key == "type":
            out[key] = as_choice(item, at, frozenset({"auto"}))
        else:
            out[key] = as_id_list(
                item,
                at,
                pattern=FILE_ID,
                max_items=MAX_CONTAINER_FILES,
                too_many=INVALID_VALUE,
                malformed=INVALID_FILE_ID,
                duplicate=INVALID_VALUE,
            )
    return {"type": obj["type"], "container": out}


def _mcp(obj: dict[str, Any], path: str, limits: PolicyLimits) -> dict[str, Any]:
    fields = frozenset(
        {
            "type",
            "server_label",
            "server_url",
            "server_description",
            "allowed_tools",
            "headers",
            "require_approval",
        }
    )
    check_keys(obj, path, fields, frozenset())
    require_fields(obj, path, "server_label", "server_url")
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "type":
            out[key] = item
        elif key == "server_label":
            out[key] = name(item, where)
        elif key == "server_url":
            url = as_str(item, where)
            if url not in limits.mcp_server_urls:
                refuse(MCP_SERVER_NOT_ALLOWED, where, "Your profile does not allow this server.")
            out[key] = url
        elif key == "server_description":
            out[key] = None if item is None else as_text(item, where, 1024)
        elif key == "allowed_tools":
            out[key] = None if item is None else _allowed_tools(item, where)
        elif key == "headers":
            out[key] = None if item is None else _headers(item, where)
        else:
            out[key] = _approval(item, where)
    return out


def _allowed_tools(value: Any, path: str) -> Any:
    if isinstance(value, list):
        return [name(item, item_path(path, i)) for i, item in enumerate(value)]
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"tool_names", "read_only"}), frozenset())
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "read_only":
            out[key] = as_bool(item, where)
        else:
            out[key] = [name(n, item_path(where, i)) for i, n in enumerate(as_list(item, where))]
    return out


def _headers(value: Any, path: str) -> dict[str, str]:
    obj = as_object(value, path)
    if len(obj) > 16:
        refuse(INVALID_VALUE, path, "At most 16 headers.")
    out: dict[str, str] = {}
    for key, item in obj.items():
        if not 1 <= len(key) <= 64 or not key.replace("-", "").isalnum() or not key.isascii():
            refuse(INVALID_VALUE, path, "Header names are 1 to 64 letters, digits or -.")
        out[key] = as_text(item, child_path(path, key), 4096)
    return out


def _approval(value: Any, path: str) -> Any:
    if isinstance(value, str) or value is None:
        return None if value is None else as_choice(value, path, frozenset({"always", "never"}))
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"always", "never"}), frozenset())
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        names = as_object(item, where)
        check_keys(names, where, frozenset({"tool_names"}), frozenset())
        out[key] = {
            k: [
                name(n, item_path(child_path(where, k), i))
                for i, n in enumerate(as_list(v, child_path(where, k)))
            ]
            for k, v in names.items()
        }
    return out


def _image_generation(obj: dict[str, Any], path: str) -> dict[str, Any]:
    fields = frozenset({"type", "model", "output_compression", "partial_images", *_IMAGE_OPTIONS})
    check_keys(obj, path, fields, frozenset())
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "type":
            out[key] = item
        elif key in _IMAGE_OPTIONS:
            out[key] = as_choice(item, where, _IMAGE_OPTIONS[key])
        elif key == "model":
            out[key] = as_text(item, where, 256)
        elif key == "output_compression":
            out[key] = _bounded(item, where, 0, 100)
        else:
            out[key] = _bounded(item, where, 0, 3)
    return out


def _bounded(value: Any, path: str, low: int, high: int) -> int:
    number = as_int(value, path, low)
    if number > high:
        refuse(INVALID_VALUE, path, f"Must be between {low} and {high}.")
    return number


def _computer(obj: dict[str, Any], path: str) -> dict[str, Any]:
    fields = frozenset({"type", "display_width", "display_height", "environment"})
    check_keys(obj, path, fields, frozenset())
    require_fields(obj, path, "display_width", "display_height", "environment")
    environments = frozenset({"windows", "mac", "linux", "ubuntu", "browser"})
    return {
        k: v
        if k == "type"
        else as_choice(v, child_path(path, k), environments)
        if k == "environment"
        else _bounded(v, child_path(path, k), 1, 2**31 - 1)
        for k, v in obj.items()
    }


def _tool(value: Any, path: str, limits: PolicyLimits) -> dict[str, Any]:
    obj = as_object(value, path)
    require_fields(obj, path, "type")
    where = child_path(path, "type")
    kind = as_choice(obj["type"], where, frozenset(_CHECKS) | {"mcp", "local_shell"})
    tool_type_allowed(kind, where, limits)
    if kind == "mcp":
        return _mcp(obj, path, limits)
    if kind == "local_shell":
        check_keys(obj, path, frozenset({"type"}), frozenset())
        return {"type": kind}
    return _CHECKS[kind](obj, path)


_CHECKS = {
    "function": _function,
    "file_search": _file_search,
    "web_search": _web_search,
    "web_search_preview": _web_search,
    "code_interpreter": _code_interpreter,
    "image_generation": _image_generation,
    "computer_use_preview": _computer,
}


def tools_field(value: Any, path: str, _v: ApiVersion, limits: PolicyLimits) -> Any:
    items = as_list(value, path)
    if len(items) > MAX_RESPONSE_TOOLS:
        refuse(INVALID_VALUE, path, f"At most {MAX_RESPONSE_TOOLS} tools are allowed.")
    return [_tool(item, item_path(path, i), limits) for i, item in enumerate(items)]


def tool_choice_field(value: Any, path: str, _v: ApiVersion, limits: PolicyLimits) -> Any:
    if isinstance(value, str):
        return as_choice(value, path, frozenset({"none", "auto", "required"}))
    obj = as_object(value, path)
    require_fields(obj, path, "type")
    where = child_path(path, "type")
    kind = as_choice(obj["type"], where, _HOSTED_CHOICES | {"function", "mcp"})
    tool_type_allowed(kind, where, limits)
    if kind == "function":
        check_keys(obj, path, frozenset({"type", "name"}), frozenset())
        require_fields(obj, path, "name")
        return {"type": kind, "name": name(obj["name"], child_path(path, "name"))}
    if kind == "mcp":
        check_keys(obj, path, frozenset({"type", "server_label", "name"}), frozenset())
        require_fields(obj, path, "server_label")
        return {
            k: v if k == "type" else (None if v is None else name(v, child_path(path, k)))
            for k, v in obj.items()
        }
    check_keys(obj, path, frozenset({"type"}), frozenset())
    return {"type": kind}
