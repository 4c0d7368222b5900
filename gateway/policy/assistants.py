"""Assistant bodies: create, modify, and (v1) attach a file (pure).

Per the documents (``createAssistantRequest``, ``modifyAssistantRequest``,
``createAssistantFileRequest``; closed schemas):

* every version: ``model`` (required on create; the profile's ``models``), ``name``
  (<= 256), ``description`` (<= 512), ``instructions`` (the version's maximum and the profile's
  ``max_instructions_chars``), ``tools`` (<= 128; types per version and the profile's
  ``tools``), ``metadata`` (at most 15 of the caller's pairs: the gateway stamps the 16th);
* v1 (2024-02-15-preview): ``file_ids`` (<= 20 and the profile's ``max_assistant_files``);
* v2: ``tool_resources`` (as on threads; a store made inside takes ``chunking_strategy``;
  modify names existing stores only), ``temperature`` (0..2), ``top_p`` (0..1),
  ``response_format``;
* v1 assistant file: ``{"file_id"}``.
"""

from __future__ import annotations

from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.policy.fields import (
    FIELD_NOT_ALLOWED_IN_VERSION,
    FILE_ID,
    INVALID_FILE_ID,
    INVALID_VALUE,
    Field,
    as_id,
    as_str,
    build,
    nullable,
    refuse,
    stamped_metadata_field,
)
from gateway.policy.limits import AZURE_ASSISTANT_FILES, PolicyLimits
from gateway.policy.threads import tool_resources_checker
from gateway.policy.tooling import (
    instructions_field,
    model_field,
    response_format_field,
    temperature_field,
    tools_checker,
    top_p_field,
)
from gateway.policy.vectorstores import file_id_list

MAX_ASSISTANT_TOOLS = 128
MAX_NAME_CHARS = 256
MAX_DESCRIPTION_CHARS = 512


def _name(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    return _short_text(value, path, MAX_NAME_CHARS)


def _description(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    return _short_text(value, path, MAX_DESCRIPTION_CHARS)


def _short_text(value: Any, path: str, most: int) -> str:
    text = as_str(value, path)
    if len(text) > most:
        refuse(INVALID_VALUE, path, f"At most {most} characters are allowed.")
    return text


def _file_ids(value: Any, path: str, _v: ApiVersion, limits: PolicyLimits) -> Any:
    return file_id_list(value, path, min(AZURE_ASSISTANT_FILES, limits.max_assistant_files))


def _fields(*, creating: bool) -> dict[str, Field]:
    return {
        "model": model_field,
        "name": nullable(_name),
        "description": nullable(_description),
        "instructions": nullable(instructions_field),
        "tools": tools_checker(MAX_ASSISTANT_TOOLS),
        "file_ids": _file_ids,
        "tool_resources": tool_resources_checker(new_stores=creating, assistant=True),
        "metadata": stamped_metadata_field,
        "temperature": nullable(temperature_field),
        "top_p": nullable(top_p_field),
        "response_format": nullable(response_format_field),
    }


_CREATE = _fields(creating=True)
_MODIFY = _fields(creating=False)
_V2_ONLY = frozenset({"tool_resources", "temperature", "top_p", "response_format"})


def _version_fields(version: ApiVersion) -> frozenset[str]:
    """Fields of the other generation (refused as ``field_not_allowed_in_version``)."""
    return _V2_ONLY if version.is_v1 else frozenset({"file_ids"})


def check_create_assistant(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    return _check(body, version, limits, _CREATE, ("model",))


def check_modify_assistant(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    return _check(body, version, limits, _MODIFY, ())


def _check(
    body: dict[str, Any],
    version: ApiVersion,
    limits: PolicyLimits,
    fields: dict[str, Field],
    required: tuple[str, ...],
) -> dict[str, Any]:
    other = _version_fields(version)
    if version.is_v1:
        return build(body, "", version, limits, fields, other, required)
    # ``build`` refuses v2-only fields on v1; on v2 the v1-only ``file_ids`` is refused here.
    if "file_ids" in body:
        refuse(
            FIELD_NOT_ALLOWED_IN_VERSION,
            "file_ids",
            "This field is not accepted in this api-version.",
        )
    return build(body, "", version, limits, fields, required=required)


def _file_id(value: Any, path: str, _v: ApiVersion, _limits: PolicyLimits) -> Any:
    return as_id(value, path, FILE_ID, INVALID_FILE_ID)


def check_create_assistant_file(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    return build(body, "", version, limits, {"file_id": _file_id}, required=("file_id",))
