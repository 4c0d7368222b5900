"""What a tenant may build with: models, tools, response formats, instructions (pure).

Shared by assistants (create/modify) and runs (create, create-and-run), so one profile rule
holds wherever a model or a tool can be named:

* ``model``: 1 to 256 characters; a profile's ``models`` (deployment names, empty = any) must
  hold it, else ``model_not_allowed``.
* ``tools``: v1 types ``code_interpreter``, ``retrieval``, ``function``; v2 types
  ``code_interpreter``, ``file_search``, ``function`` (another version's type is
  ``field_not_allowed_in_version``); a type outside the profile's ``tools`` is
  ``tool_not_allowed``.
* ``instructions``: at most the api-version's maximum (v1 32,768, v2 256,000 code points), a
  profile's ``max_content_chars`` and its ``max_instructions_chars``.
* ``tool_choice``: a string (``none``, ``auto``, ``required``) or ``{"type", "function"?}``:
  the documents require only ``type`` (``assistantsNamedToolChoice``), so
  ``{"type": "function"}`` is accepted and forwarded as given.
* ``response_format``: ``none``, ``auto`` or ``{"type": text | json_object | json_schema}``.
"""

from __future__ import annotations

from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.policy.fields import (
    FIELD_NOT_ALLOWED_IN_VERSION,
    INVALID_VALUE,
    MODEL_NOT_ALLOWED,
    TOOL_NOT_ALLOWED,
    as_bool,
    as_choice,
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
from gateway.policy.limits import MAX_MODEL_CHARS, PolicyLimits
from gateway.policy.messages import content_max_chars

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
TOOL_TYPES_V1 = frozenset({"code_interpreter", "retrieval", "function"})
TOOL_TYPES_V2 = frozenset({"code_interpreter", "file_search", "function"})
_RANKERS = frozenset({"auto", "default_2024_08_21"})


def name(value: Any, path: str) -> str:
    text = as_str(value, path)
    if not 1 <= len(text) <= 64 or not _NAME_CHARS.issuperset(text):
        refuse(INVALID_VALUE, path, "Names have 1 to 64 characters a-z, A-Z, 0-9, _ or -.")
    return text


def model_field(value: Any, path: str, _v: ApiVersion, limits: PolicyLimits) -> Any:
    model = as_str(value, path)
    if not 1 <= len(model) <= MAX_MODEL_CHARS:
        refuse(INVALID_VALUE, path, f"A model name has 1 to {MAX_MODEL_CHARS} characters.")
    if limits.models and model not in limits.models:
        refuse(MODEL_NOT_ALLOWED, path, "Your profile does not allow this model (deployment).")
    return model


def instructions_max_chars(version: ApiVersion, limits: PolicyLimits) -> int:
    most = content_max_chars(version, limits)
    if limits.max_instructions_chars is not None:
        most = min(most, limits.max_instructions_chars)
    return most


def instructions_field(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> Any:
    return as_text(value, path, instructions_max_chars(version, limits))


def temperature_field(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    return as_number(value, path, 0, 2)


def top_p_field(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    return as_number(value, path, 0, 1)


def tool_type_allowed(kind: str, path: str, limits: PolicyLimits) -> None:
    """A tool (or a tool resource) the profile does not allow: ``tool_not_allowed``."""
    if kind not in limits.tools:
        refuse(TOOL_NOT_ALLOWED, path, "Your profile does not allow this tool.")


def tool_choice_field(value: Any, path: str, _v: ApiVersion, limits: PolicyLimits) -> Any:
    if isinstance(value, str):
        return as_choice(value, path, frozenset({"none", "auto", "required"}))
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"type", "function"}), frozenset())
    require_fields(obj, path, "type")
    where = child_path(path, "type")
    kind = as_choice(obj["type"], where, TOOL_TYPES_V2)
    tool_type_allowed(kind, where, limits)
    if kind != "function":
        check_keys(obj, path, frozenset({"type"}), frozenset())
        return {"type": kind}
    if "function" not in obj:
        return {"type": kind}
    at = child_path(path, "function")
    function = as_object(obj["function"], at)
    check_keys(function, at, frozenset({"name"}), frozenset())
    require_fields(function, at, "name")
    return {"type": kind, "function": {"name": name(function["name"], child_path(at, "name"))}}


def response_format_field(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
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
    spec = _named_schema(obj["json_schema"], child_path(path, "json_schema"), "schema")
    return {"type": kind, "json_schema": spec}


def _named_schema(value: Any, path: str, schema_key: str) -> dict[str, Any]:
    """``{name, description?, <schema_key>?, strict?}``: a function definition
    (``parameters``) or a response format's ``json_schema`` (``schema``), the same rules."""
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"name", "description", schema_key, "strict"}), frozenset())
    require_fields(obj, path, "name")
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "name":
            out[key] = name(item, where)
        elif key == "description":
            out[key] = as_str(item, where)
        elif key == schema_key:
            out[key] = copy_json(as_object(item, where), where)
        else:
            out[key] = None if item is None else as_bool(item, where)
    return out


def _function(value: Any, path: str) -> dict[str, Any]:
    return _named_schema(value, path, "parameters")


def _file_search(value: Any, path: str) -> dict[str, Any]:
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"max_num_results", "ranking_options"}), frozenset())
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "max_num_results":
            out[key] = as_int(item, where, 1)
            if out[key] > 50:
                refuse(INVALID_VALUE, where, "Must be between 1 and 50.")
            continue
        ranking = as_object(item, where)
        check_keys(ranking, where, frozenset({"ranker", "score_threshold"}), frozenset())
        out[key] = {
            key: as_choice(option, child_path(where, key), _RANKERS)
            if key == "ranker"
            else as_number(option, child_path(where, key), 0, 1)
            for key, option in ranking.items()
        }
    return out


def _tool(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> dict[str, Any]:
    obj = as_object(value, path)
    require_fields(obj, path, "type")
    where = child_path(path, "type")
    types, other = (
        (TOOL_TYPES_V1, TOOL_TYPES_V2) if version.is_v1 else (TOOL_TYPES_V2, TOOL_TYPES_V1)
    )
    kind = as_str(obj["type"], where)
    if kind in other - types:
        refuse(
            FIELD_NOT_ALLOWED_IN_VERSION, where, "This tool is not accepted in this api-version."
        )
    kind = as_choice(kind, where, types)
    tool_type_allowed(kind, where, limits)
    extra = frozenset({kind}) if kind in {"function", "file_search"} else frozenset()
    check_keys(obj, path, frozenset({"type"}) | extra, frozenset())
    if kind == "function":
        require_fields(obj, path, "function")
        return {"type": kind, "function": _function(obj["function"], child_path(path, kind))}
    if kind == "file_search" and kind in obj:
        return {"type": kind, kind: _file_search(obj[kind], child_path(path, kind))}
    return {"type": kind}


def tools_checker(max_tools: int) -> Any:
    def tools(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> Any:
        items = as_list(value, path)
        if len(items) > max_tools:
            refuse(INVALID_VALUE, path, f"At most {max_tools} tools are allowed.")
        return [_tool(item, item_path(path, i), version, limits) for i, item in enumerate(items)]

    return tools
