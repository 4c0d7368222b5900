"""Building blocks of the payload policy (pure): reason codes and typed field readers.

Every refusal is a ``BadRequestError`` whose ``code`` is one of ``POLICY_REASONS`` (a bounded
metric label set) and whose ``param`` is a JSON path such as ``messages[2].content`` (see
``gateway.jsonbody.child_path``: client-chosen keys never appear verbatim unless they are short
identifiers). Messages name the rule, never the value.

Types are checked exactly as JSON has them: a bool is not an integer or a number.
Lengths are Python ``len``: Unicode code points, which is what JSON Schema ``maxLength``
counts (so "😀" is 1, a combining sequence or a ZWJ emoji is several).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

from gateway.errors import BadRequestError
from gateway.operations.apiversions import ApiVersion
from gateway.ownership.rules import STAMP_KEY
from gateway.policy.jsonbody import child_path, field_path, item_path
from gateway.policy.limits import THREAD_METADATA_PAIRS, PolicyLimits
from gateway.policy.multipart import (
    FILE_TOO_LARGE,
    INVALID_FILENAME,
    INVALID_MULTIPART,
    PURPOSE_NOT_ALLOWED,
)

#: A field checker: (value, JSON path, api-version, limits) -> the value to forward.
Field = Callable[[Any, str, ApiVersion, PolicyLimits], Any]

UNKNOWN_FIELD = "unknown_field"
MISSING_FIELD = "missing_field"
INVALID_TYPE = "invalid_type"
INVALID_VALUE = "invalid_value"
FIELD_NOT_ALLOWED_IN_VERSION = "field_not_allowed_in_version"
ROLE_NOT_ALLOWED = "role_not_allowed"
CONTENT_EMPTY = "content_empty"
CONTENT_TOO_LONG = "content_too_long"
CONTENT_PART_NOT_ALLOWED = "content_part_not_allowed"
INVALID_CONTENT_PART = "invalid_content_part"
TOO_MANY_FILES = "too_many_files"
DUPLICATE_FILE_ID = "duplicate_file_id"
INVALID_FILE_ID = "invalid_file_id"
ATTACHMENT_TOOL_NOT_ALLOWED = "attachment_tool_not_allowed"
METADATA_TOO_MANY_PAIRS = "metadata_too_many_pairs"
METADATA_KEY_EMPTY = "metadata_key_empty"
METADATA_KEY_TOO_LONG = "metadata_key_too_long"
METADATA_VALUE_TOO_LONG = "metadata_value_too_long"
METADATA_VALUE_NOT_STRING = "metadata_value_not_string"
METADATA_REQUIRED_KEY_MISSING = "metadata_required_key_missing"
METADATA_KEY_RESERVED = "metadata_key_reserved"
TOO_MANY_MESSAGES = "too_many_messages"
TOO_MANY_CODE_INTERPRETER_FILES = "too_many_code_interpreter_files"
TOO_MANY_VECTOR_STORES = "too_many_vector_stores"
BODY_NOT_ALLOWED = "body_not_allowed"
MODEL_NOT_ALLOWED = "model_not_allowed"
TOOL_NOT_ALLOWED = "tool_not_allowed"
#: The v1 API's (responses, conversations).
TOO_MANY_INPUT_ITEMS = "too_many_input_items"
TOO_MANY_IMAGES = "too_many_images"
REQUEST_CONTENT_TOO_LONG = "request_content_too_long"
MCP_SERVER_NOT_ALLOWED = "mcp_server_not_allowed"
STORE_NOT_ALLOWED = "store_not_allowed"
BACKGROUND_NOT_ALLOWED = "background_not_allowed"
MAX_OUTPUT_TOKENS_TOO_LARGE = "max_output_tokens_too_large"
INPUT_ITEM_ID_NOT_ALLOWED = "input_item_id_not_allowed"
V1_API_REASONS: frozenset[str] = frozenset(
    {
        TOO_MANY_INPUT_ITEMS,
        TOO_MANY_IMAGES,
        REQUEST_CONTENT_TOO_LONG,
        MCP_SERVER_NOT_ALLOWED,
        STORE_NOT_ALLOWED,
        BACKGROUND_NOT_ALLOWED,
        MAX_OUTPUT_TOKENS_TOO_LARGE,
        INPUT_ITEM_ID_NOT_ALLOWED,
    }
)
#: A file upload's refusals (``gateway.policy.multipart``: 400, ``file_too_large`` 413).
UPLOAD_REASONS: frozenset[str] = frozenset(
    {FILE_TOO_LARGE, PURPOSE_NOT_ALLOWED, INVALID_FILENAME, INVALID_MULTIPART}
)

POLICY_REASONS: frozenset[str] = frozenset(
    {
        UNKNOWN_FIELD,
        MISSING_FIELD,
        INVALID_TYPE,
        INVALID_VALUE,
        FIELD_NOT_ALLOWED_IN_VERSION,
        ROLE_NOT_ALLOWED,
        CONTENT_EMPTY,
        CONTENT_TOO_LONG,
        CONTENT_PART_NOT_ALLOWED,
        INVALID_CONTENT_PART,
        TOO_MANY_FILES,
        DUPLICATE_FILE_ID,
        INVALID_FILE_ID,
        ATTACHMENT_TOOL_NOT_ALLOWED,
        METADATA_TOO_MANY_PAIRS,
        METADATA_KEY_EMPTY,
        METADATA_KEY_TOO_LONG,
        METADATA_VALUE_TOO_LONG,
        METADATA_VALUE_NOT_STRING,
        METADATA_REQUIRED_KEY_MISSING,
        METADATA_KEY_RESERVED,
        TOO_MANY_MESSAGES,
        TOO_MANY_CODE_INTERPRETER_FILES,
        TOO_MANY_VECTOR_STORES,
        BODY_NOT_ALLOWED,
        MODEL_NOT_ALLOWED,
        TOOL_NOT_ALLOWED,
        *UPLOAD_REASONS,
        *V1_API_REASONS,
    }
)

FILE_ID = re.compile(r"(?:file|assistant)-[A-Za-z0-9_-]{1,64}")
VECTOR_STORE_ID = re.compile(r"vs_[A-Za-z0-9_-]{1,64}")
ASSISTANT_ID = re.compile(r"asst_[A-Za-z0-9_-]{1,64}")


def refuse(code: str, param: str, message: str) -> NoReturn:
    raise BadRequestError(message, code=code, param=param or None)


def check_keys(
    obj: dict[str, Any], path: str, allowed: frozenset[str], other_version: frozenset[str]
) -> None:
    """Closed schemas: a key outside ``allowed`` is refused (naming the version if it fits it)."""
    if allowed.issuperset(obj):  # the common case, in one C-speed pass
        return
    for key in obj:
        if key in allowed:
            continue
        if key in other_version:
            refuse(
                FIELD_NOT_ALLOWED_IN_VERSION,
                child_path(path, key),
                "This field is not accepted in this api-version.",
            )
        refuse(UNKNOWN_FIELD, child_path(path, key), "Unrecognized request field.")


def require_fields(obj: dict[str, Any], path: str, *names: str) -> None:
    for name in names:
        if name not in obj:
            refuse(MISSING_FIELD, child_path(path, name), "A required field is missing.")


def as_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        refuse(INVALID_TYPE, path, "Expected an object.")
    return value


def as_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        refuse(INVALID_TYPE, path, "Expected an array.")
    return value


def as_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        refuse(INVALID_TYPE, path, "Expected a string.")
    return value


def as_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        refuse(INVALID_TYPE, path, "Expected true or false.")
    return value


#: Largest float accepted for an integer field (beyond it a float is not exact).
_EXACT_FLOAT = 2**53


def as_int(value: Any, path: str, minimum: int) -> int:
    """An integer; an integral float (``256.0``: JSON Schema's integer includes it) is
    accepted and forwarded as the integer."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_FLOAT:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        refuse(INVALID_TYPE, path, "Expected an integer.")
    if value < minimum:
        refuse(INVALID_VALUE, path, f"Must be at least {minimum}.")
    return value


def as_number(value: Any, path: str, minimum: float, maximum: float) -> int | float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        refuse(INVALID_TYPE, path, "Expected a number.")
    if not (math.isfinite(value) and minimum <= value <= maximum):
        refuse(INVALID_VALUE, path, f"Must be between {minimum:g} and {maximum:g}.")
    return value


def as_choice(value: Any, path: str, choices: frozenset[str]) -> str:
    text = as_str(value, path)
    if text not in choices:
        refuse(INVALID_VALUE, path, f"Must be one of: {', '.join(sorted(choices))}.")
    return text


def as_text(value: Any, path: str, max_chars: int) -> str:
    """A free-text string (may be empty) of at most ``max_chars`` code points."""
    text = as_str(value, path)
    if len(text) > max_chars:
        refuse(CONTENT_TOO_LONG, path, f"Text may have at most {max_chars} characters.")
    return text


def as_id(value: Any, path: str, pattern: re.Pattern[str], code: str) -> str:
    ident = as_str(value, path)
    if not pattern.fullmatch(ident):
        refuse(code, path, "Malformed identifier.")
    return ident


def as_id_list(
    value: Any,
    path: str,
    *,
    pattern: re.Pattern[str],
    max_items: int,
    too_many: str,
    malformed: str,
    duplicate: str,
) -> list[str]:
    items = as_list(value, path)
    if len(items) > max_items:
        refuse(too_many, path, f"At most {max_items} identifiers are allowed here.")
    seen: set[str] = set()
    for i, item in enumerate(items):
        ident = as_id(item, item_path(path, i), pattern, malformed)
        if ident in seen:
            refuse(duplicate, item_path(path, i), "The same identifier is listed twice.")
        seen.add(ident)
    return list(items)


def check_metadata(
    value: Any, path: str, limits: PolicyLimits, *, thread: bool = False
) -> dict[str, str] | None:
    """``metadata``: an object (or null) of string pairs within the profile's limits.

    The key ``ownership.STAMP_KEY`` is reserved for the gateway in every metadata map; the map
    of an object the gateway stamps (``thread``: threads, assistants, vector stores) may hold at
    most ``THREAD_METADATA_PAIRS`` of the caller's pairs.
    """
    if value is None:
        return None
    pairs = as_object(value, path)
    most = limits.max_metadata_pairs
    if thread and most > THREAD_METADATA_PAIRS:
        most = THREAD_METADATA_PAIRS
    if len(pairs) > most:
        reserved = (
            " (the gateway keeps one of Azure's 16 for itself)"
            if most < (limits.max_metadata_pairs)
            else ""
        )
        refuse(
            METADATA_TOO_MANY_PAIRS,
            path,
            f"Metadata may have at most {most} key-value pairs{reserved}.",
        )
    key_chars, value_chars = limits.max_metadata_key_chars, limits.max_metadata_value_chars
    for key, item in pairs.items():
        if (
            not isinstance(key, str)
            or not key
            or key == STAMP_KEY
            or len(key) > key_chars
            or not isinstance(item, str)
            or len(item) > value_chars
        ):
            _refuse_metadata_pair(key, item, path, limits)
    return dict(pairs)


def _refuse_metadata_pair(key: Any, item: Any, path: str, limits: PolicyLimits) -> NoReturn:
    """The refusal of a metadata pair ``check_metadata`` found at fault (its first fault)."""
    if not isinstance(key, str) or not key:
        refuse(METADATA_KEY_EMPTY, path, "Metadata keys must be non-empty strings.")
    if key == STAMP_KEY:
        refuse(METADATA_KEY_RESERVED, path, f"The metadata key {STAMP_KEY} is reserved.")
    if len(key) > limits.max_metadata_key_chars:
        refuse(
            METADATA_KEY_TOO_LONG,
            path,
            f"Metadata keys may have at most {limits.max_metadata_key_chars} characters.",
        )
    if not isinstance(item, str):
        refuse(METADATA_VALUE_NOT_STRING, child_path(path, key), "Metadata values are strings.")
    refuse(
        METADATA_VALUE_TOO_LONG,
        child_path(path, key),
        f"Metadata values may have at most {limits.max_metadata_value_chars} characters.",
    )


def check_required_tags(
    obj: dict[str, Any], path: str, limits: PolicyLimits, *, creating: bool
) -> None:
    """The profile's required metadata keys on a created object, or on a metadata update.

    Creating: metadata must be present and carry every required key. Modifying: absent
    metadata leaves it unchanged (fine); ``null`` would clear the tags and is refused.
    """
    required = limits.required_metadata_keys
    if not required or ("metadata" not in obj and not creating):
        return
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not required <= metadata.keys():
        refuse(
            METADATA_REQUIRED_KEY_MISSING,
            child_path(path, "metadata"),
            f"Metadata must include the keys: {', '.join(sorted(required))}.",
        )


def copy_json(value: Any, path: str) -> Any:
    """A fresh copy of a free-form JSON value (function parameters, JSON schemas)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return as_number(value, path, -math.inf, math.inf)
    if isinstance(value, list):
        return [copy_json(item, item_path(path, i)) for i, item in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: copy_json(item, child_path(path, key)) for key, item in value.items()}
    refuse(INVALID_TYPE, path, "Expected a JSON value.")


def nullable(check: Field) -> Field:
    def field(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> Any:
        return None if value is None else check(value, path, version, limits)

    return field


def build(
    obj: dict[str, Any],
    path: str,
    version: ApiVersion,
    limits: PolicyLimits,
    fields: dict[str, Field],
    v2_only: frozenset[str] = frozenset(),
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Check ``obj`` against a closed field table; ``v2_only`` fields are refused on v1.

    Order of refusals: unknown fields, then missing ones, then each value in input order.
    """
    allowed = frozenset(fields) - v2_only if version.is_v1 else frozenset(fields)
    check_keys(obj, path, allowed, frozenset(fields) - allowed)
    require_fields(obj, path, *required)
    return {
        key: fields[key](item, field_path(path, key), version, limits) for key, item in obj.items()
    }


def metadata_field(value: Any, path: str, _version: ApiVersion, limits: PolicyLimits) -> Any:
    return check_metadata(value, path, limits)


def thread_metadata_field(value: Any, path: str, _version: ApiVersion, limits: PolicyLimits) -> Any:
    """The metadata of an object the gateway stamps (threads, assistants, vector stores): at
    most ``THREAD_METADATA_PAIRS`` of the caller's pairs."""
    return check_metadata(value, path, limits, thread=True)


stamped_metadata_field = thread_metadata_field
