"""Run bodies: create run, create thread and run, submit tool outputs (pure).

Field sets follow the Azure specs (2024-02-15-preview for v1, 2024-05-01-preview for v2): a
v1 run takes only ``assistant_id, model, instructions, tools, metadata`` (plus ``thread`` on
create-and-run); every sampling, token, streaming, ``additional_*`` and ``tool_resources``
field is v2-only and refused on v1 with ``field_not_allowed_in_version``.
``parallel_tool_calls``, ``tool_choice: "required"`` and ``response_format`` ``json_schema``
come from later v2 versions and are accepted on every v2 version (Azure decides);
``stream_options`` (``{"include_usage": bool}``) on create-and-run only on 2025-04-01-preview
(``ApiVersion.create_and_run_stream_options``; issue 14 found it refused there by a run over
that version's document). On v1, ``"stream": false`` (or null) is accepted and dropped: the
stock SDK's polling helpers (``create_and_poll``, ``submit_tool_outputs_and_poll``) send it,
and not streaming is all a v1 run can do; ``"stream": true`` stays refused there.
Models, tools, instructions and formats are checked by ``tooling`` (the profile's
``models``, ``tools``, ``max_instructions_chars``);
``instructions`` and ``additional_instructions`` share the message content limit too, so a
profile's ``max_content_chars`` cannot be bypassed through them. Free-form JSON (function
``parameters``, ``json_schema.schema``) is copied as is; its depth is bounded by the JSON intake.
"""

from __future__ import annotations

from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.policy.fields import (
    ASSISTANT_ID,
    FIELD_NOT_ALLOWED_IN_VERSION,
    INVALID_VALUE,
    Field,
    as_bool,
    as_choice,
    as_id,
    as_int,
    as_list,
    as_object,
    as_str,
    as_text,
    build,
    check_keys,
    check_required_tags,
    metadata_field,
    nullable,
    refuse,
    require_fields,
)
from gateway.policy.jsonbody import child_path, item_path
from gateway.policy.limits import PolicyLimits
from gateway.policy.threads import TOOL_RESOURCES, check_thread, messages_field
from gateway.policy.tooling import (
    instructions_field,
    model_field,
    name,
    response_format_field,
    temperature_field,
    tool_choice_field,
    tools_checker,
    top_p_field,
)

MAX_RUN_TOOLS = 20


def _assistant_id(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    return as_id(value, path, ASSISTANT_ID, INVALID_VALUE)


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


def _stream_options(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    """``{"include_usage": bool}`` (``chatCompletionStreamOptions``)."""
    obj = as_object(value, path)
    check_keys(obj, path, frozenset({"include_usage"}), frozenset())
    return {key: as_bool(item, child_path(path, key)) for key, item in obj.items()}


_RUN_FIELDS: dict[str, Field] = {
    "assistant_id": _assistant_id,
    "model": nullable(model_field),
    "instructions": nullable(instructions_field),
    "tools": nullable(tools_checker(MAX_RUN_TOOLS)),
    "metadata": metadata_field,
    "temperature": nullable(temperature_field),
    "top_p": nullable(top_p_field),
    "stream": nullable(_flag),
    "max_prompt_tokens": nullable(_token_budget),
    "max_completion_tokens": nullable(_token_budget),
    "truncation_strategy": nullable(_truncation),
    "tool_choice": nullable(tool_choice_field),
    "response_format": nullable(response_format_field),
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
    "additional_instructions": nullable(instructions_field),
    "additional_messages": nullable(messages_field),
}


def _thread(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> Any:
    return check_thread(as_object(value, path), path, version, limits)


_CREATE_AND_RUN_FIELDS: dict[str, Field] = {
    **_RUN_FIELDS,
    "thread": _thread,
    "tool_resources": TOOL_RESOURCES,
    "stream_options": nullable(_stream_options),
}


def _without_v1_no_stream(body: dict[str, Any], version: ApiVersion) -> dict[str, Any]:
    """On v1 a run never streams: ``"stream": false`` / null says so and is not forwarded (the
    v1 document has no such field); anything else is left for the field check to refuse."""
    if version.is_v1 and "stream" in body and body["stream"] in (False, None):
        return {k: v for k, v in body.items() if k != "stream"}
    return body


def check_create_run(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    body = _without_v1_no_stream(body, version)
    v2_only = _RUN_V2_ONLY | {"additional_instructions", "additional_messages"}
    out = build(body, "", version, limits, _CREATE_RUN_FIELDS, v2_only, ("assistant_id",))
    check_required_tags(body, "", limits, creating=True)
    return out


def check_create_thread_and_run(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    body = _without_v1_no_stream(body, version)
    v2_only = _RUN_V2_ONLY | {"tool_resources", "stream_options"}
    if "stream_options" in body and not version.create_and_run_stream_options:
        refuse(
            FIELD_NOT_ALLOWED_IN_VERSION,
            "stream_options",
            "This field is not accepted in this api-version.",
        )
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
            out[key] = name(item, where)
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
    body = _without_v1_no_stream(body, version)
    fields: dict[str, Field] = {"tool_outputs": _tool_outputs, "stream": nullable(_flag)}
    return build(body, "", version, limits, fields, frozenset({"stream"}), ("tool_outputs",))
