"""The v1 API's responses create policy (pure).

Shape: ``OpenAI.CreateResponse`` of ``azure-v1-v1-generated.json`` (the stock SDK's
``ResponseCreateParams``), closed: an unknown field is refused (``prompt``, ``service_tier``
and other fields the gateway does not know are refused too). Per profile:

* ``model`` among ``models`` (empty: any); ``tools`` / ``tool_choice`` types among ``tools``
  (``v1tools``: ``mcp`` only to an exact ``mcp_server_urls`` entry);
* ``input`` (``inputs``: roles, parts, sizes, counts); ``instructions`` (a string of at most
  ``max_instructions_chars``, counted in the request's text budget);
* ``metadata``: 16 pairs / 64 / 512, ``gateway_owner`` reserved, at most 15 of the caller's
  (a response is stamped);
* ``store``: with ``allow_store`` false, ``store: true`` is refused and an absent ``store`` is
  forwarded as ``false``; ``background: true`` needs ``allow_background``;
* ``max_output_tokens`` (at least 16) at most the profile's ceiling; with a ceiling set, an
  absent one is forwarded as the ceiling.
* ``conversation`` (a ``conv_…`` id or ``{"id": …}``) and ``previous_response_id``
  (``resp_…``) are owned references (checked by the ownership layer); both together are
  refused, as the document says ("cannot be used in conjunction").
"""

from __future__ import annotations

from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.operations.row import ID_PATTERNS, RESPONSE_INCLUDE_VALUES
from gateway.policy.fields import (
    BACKGROUND_NOT_ALLOWED,
    INVALID_VALUE,
    MAX_OUTPUT_TOKENS_TOO_LARGE,
    STORE_NOT_ALLOWED,
    as_bool,
    as_choice,
    as_id,
    as_int,
    as_list,
    as_object,
    as_str,
    as_text,
    check_keys,
    check_metadata,
    check_required_tags,
    copy_json,
    refuse,
    require_fields,
)
from gateway.policy.inputs import InputBudget, check_input
from gateway.policy.jsonbody import child_path, item_path
from gateway.policy.limits import MIN_OUTPUT_TOKENS, PolicyLimits
from gateway.policy.tooling import (
    instructions_max_chars,
    model_field,
    name,
    temperature_field,
    top_p_field,
)
from gateway.policy.v1tools import tool_choice_field, tools_field

_FIELDS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "metadata",
        "store",
        "background",
        "stream",
        "stream_options",
        "max_output_tokens",
        "max_tool_calls",
        "temperature",
        "top_p",
        "top_logprobs",
        "text",
        "reasoning",
        "truncation",
        "parallel_tool_calls",
        "previous_response_id",
        "conversation",
        "include",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)
_IDENTIFIER_CHARS = 512


def check_create_response(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    check_keys(body, "", _FIELDS, frozenset())
    require_fields(body, "", "model")
    if body.get("conversation") is not None and body.get("previous_response_id") is not None:
        refuse(
            INVALID_VALUE,
            "previous_response_id",
            "previous_response_id cannot be used together with conversation.",
        )
    budget = InputBudget(limits, version)
    out: dict[str, Any] = {}
    for key, item in body.items():
        where = child_path("", key)
        if item is None and key not in ("model", "input", "metadata"):
            out[key] = None
        elif key == "input":
            out[key] = check_input(item, where, budget)
        elif key == "instructions":
            text = as_text(item, where, instructions_max_chars(version, limits))
            out[key] = budget.text(text, where, allow_empty=True)
        elif key == "metadata":
            out[key] = check_metadata(item, where, limits, thread=True)
        else:
            out[key] = _SCALARS[key](item, where, version, limits)
    check_required_tags(body, "", limits, creating=True)
    _store(out, limits)
    _output_tokens(out, limits)
    return out


def _store(out: dict[str, Any], limits: PolicyLimits) -> None:
    if not limits.allow_store:
        if out.get("store") is True:
            refuse(STORE_NOT_ALLOWED, "store", "Your profile does not allow stored responses.")
        out["store"] = False
    if out.get("background") is True and not limits.allow_background:
        refuse(BACKGROUND_NOT_ALLOWED, "background", "Your profile does not allow background.")


def _output_tokens(out: dict[str, Any], limits: PolicyLimits) -> None:
    ceiling = limits.max_output_tokens
    if ceiling is None:
        return
    given = out.get("max_output_tokens")
    if given is None:
        out["max_output_tokens"] = ceiling
    elif given > ceiling:
        refuse(
            MAX_OUTPUT_TOKENS_TOO_LARGE,
            "max_output_tokens",
            f"Your profile allows at most {ceiling} output tokens.",
        )


def _flag(value: Any, path: str, _v: ApiVersion, _l: PolicyLimits) -> Any:
    return as_bool(value, path)


def _output_tokens_field(value: Any, path: str, _v: ApiVersion, _l: PolicyLimits) -> Any:
    return as_int(value, path, MIN_OUTPUT_TOKENS)


def _count(value: Any, path: str, _v: ApiVersion, _l: PolicyLimits) -> Any:
    return as_int(value, path, 1)


def _top_logprobs(value: Any, path: str, _v: ApiVersion, _l: PolicyLimits) -> Any:
    number = as_int(value, path, 0)
    if number > 20:
        refuse(INVALID_VALUE, path, "Must be between 0 and 20.")
    return number


def _identifier(value: Any, path: str, _v: ApiVersion, _l: PolicyLimits) -> Any:
    return as_text(value, path, _IDENTIFIER_CHARS)


def _previous(value: Any, path: str, _v: ApiVersion, _l: PolicyLimits) -> Any:
    return as_id(value, path, ID_PATTERNS["response_id"], INVALID_VALUE)


def _conversation(value: Any, path: str, _v: ApiVersion, _l: PolicyLimits) -> Any:
    pattern = ID_PATTERNS["conversation_id"]
    if isinstance(value, str):
        return as_id(value, path, pattern, INVALID_VALUE)
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"id"}), frozenset())
    require_fields(obj, path, "id")
    return {"id": as_id(obj["id"], child_path(path, "id"), pattern, INVALID_VALUE)}


def _include(value: Any, path: str, _v: ApiVersion, _l: PolicyLimits) -> Any:
    return [
        as_choice(item, item_path(path, i), RESPONSE_INCLUDE_VALUES)
        for i, item in enumerate(as_list(value, path))
    ]


def _truncation(value: Any, path: str, _v: ApiVersion, _l: PolicyLimits) -> Any:
    return as_choice(value, path, frozenset({"auto", "disabled"}))


def _retention(value: Any, path: str, _v: ApiVersion, _l: PolicyLimits) -> Any:
    return as_choice(value, path, frozenset({"in-memory", "24h"}))


def _stream_options(value: Any, path: str, _v: ApiVersion, _l: PolicyLimits) -> Any:
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"include_obfuscation"}), frozenset())
    return {k: as_bool(v, child_path(path, k)) for k, v in obj.items()}


def _reasoning(value: Any, path: str, _v: ApiVersion, _l: PolicyLimits) -> Any:
    obj = as_object(value, path)
    choices = {
        "effort": frozenset({"none", "minimal", "low", "medium", "high"}),
        "summary": frozenset({"auto", "concise", "detailed"}),
        "generate_summary": frozenset({"auto", "concise", "detailed"}),
    }
    check_keys(obj, path, frozenset(choices), frozenset())
    return {
        k: None if v is None else as_choice(v, child_path(path, k), choices[k])
        for k, v in obj.items()
    }


def _text(value: Any, path: str, _v: ApiVersion, _l: PolicyLimits) -> Any:
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"format", "verbosity"}), frozenset())
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if item is None:
            out[key] = None
        elif key == "verbosity":
            out[key] = as_choice(item, where, frozenset({"low", "medium", "high"}))
        else:
            out[key] = _format(item, where)
    return out


def _format(value: Any, path: str) -> dict[str, Any]:
    obj = as_object(value, path)
    require_fields(obj, path, "type")
    kind = as_choice(
        obj["type"], child_path(path, "type"), frozenset({"text", "json_object", "json_schema"})
    )
    if kind != "json_schema":
        check_keys(obj, path, frozenset({"type"}), frozenset())
        return {"type": kind}
    check_keys(
        obj, path, frozenset({"type", "name", "schema", "description", "strict"}), frozenset()
    )
    require_fields(obj, path, "name", "schema")
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "type":
            out[key] = item
        elif key == "name":
            out[key] = name(item, where)
        elif key == "schema":
            out[key] = copy_json(as_object(item, where), where)
        elif key == "description":
            out[key] = as_str(item, where)
        else:
            out[key] = None if item is None else as_bool(item, where)
    return out


_SCALARS = {
    "model": model_field,
    "tools": tools_field,
    "tool_choice": tool_choice_field,
    "store": _flag,
    "background": _flag,
    "stream": _flag,
    "stream_options": _stream_options,
    "max_output_tokens": _output_tokens_field,
    "max_tool_calls": _count,
    "temperature": temperature_field,
    "top_p": top_p_field,
    "top_logprobs": _top_logprobs,
    "text": _text,
    "reasoning": _reasoning,
    "truncation": _truncation,
    "parallel_tool_calls": _flag,
    "previous_response_id": _previous,
    "conversation": _conversation,
    "include": _include,
    "user": _identifier,
    "safety_identifier": _identifier,
    "prompt_cache_key": _identifier,
    "prompt_cache_retention": _retention,
}
