"""The v1 API's input items, wherever they enter (pure): responses create ``input``,
conversations create ``items`` and conversation items create ``items``. One checker: there is
no second, laxer path (as ``messages`` is for the Assistants API).

Shapes: ``OpenAI.InputItem`` of ``azure-v1-v1-generated.json`` (the stock SDK's
``ResponseInputItemParam``), closed: unknown fields are refused.

* ``message`` items (``type`` may be omitted when ``role`` is given): ``role`` one of the
  profile's ``input_roles``; ``content`` a string or a list of parts: ``input_text``,
  ``input_image`` (an ``image_url`` under the image URL rules, or a ``file_id``),
  ``input_file`` (a ``file_id``, inline ``file_data``, or a ``file_url`` under the same URL
  rules); an ``assistant`` message may also carry ``output_text`` (without annotations: they
  can name files) and ``refusal`` parts.
* ``function_call`` and ``function_call_output`` items (a function output is text or input
  parts, counted the same way).
* Items naming stored items (an ``id`` on an input item, ``item_reference``, ``reasoning``
  items, MCP approvals) are refused (``input_item_id_not_allowed``): item ids are not owned
  objects the gateway can tell apart by tenant. ``previous_response_id`` and ``conversation``
  (owned, checked) carry a stored context instead.

Budgets per request (``InputBudget``): code points of every text (``max_content_chars`` per
text, ``max_request_content_chars`` in all, instructions included), ``input_file`` parts
(``max_input_files``), ``input_image`` parts (``max_input_images``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.operations.row import ID_PATTERNS
from gateway.policy.fields import (
    CONTENT_EMPTY,
    CONTENT_PART_NOT_ALLOWED,
    CONTENT_TOO_LONG,
    FILE_ID,
    INPUT_ITEM_ID_NOT_ALLOWED,
    INVALID_CONTENT_PART,
    INVALID_FILE_ID,
    INVALID_VALUE,
    REQUEST_CONTENT_TOO_LONG,
    ROLE_NOT_ALLOWED,
    TOO_MANY_FILES,
    TOO_MANY_IMAGES,
    TOO_MANY_INPUT_ITEMS,
    as_choice,
    as_id,
    as_list,
    as_object,
    as_str,
    check_keys,
    refuse,
    require_fields,
)
from gateway.policy.jsonbody import child_path, item_path
from gateway.policy.limits import PolicyLimits
from gateway.policy.messages import check_image_url, content_max_chars
from gateway.policy.tooling import name

_DETAILS = frozenset({"auto", "low", "high"})
_STATUSES = frozenset({"in_progress", "completed", "incomplete"})
#: Item types that name stored items (refused: see the module's rules).
_BY_ID_TYPES = frozenset(
    {"item_reference", "reasoning", "mcp_approval_response", "mcp_approval_request"}
)
_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MAX_FILENAME_CHARS = 256
ITEM_ID = ID_PATTERNS["item_id"]


@dataclass(slots=True)
class InputBudget:
    """What one request has spent of the profile's per-request limits."""

    limits: PolicyLimits
    version: ApiVersion
    chars: int = 0
    files: int = 0
    images: int = 0

    def text(self, text: str, path: str, *, allow_empty: bool = False) -> str:
        most = content_max_chars(self.version, self.limits)
        if not text and not allow_empty:
            refuse(CONTENT_EMPTY, path, "Text must not be empty.")
        if len(text) > most:
            refuse(CONTENT_TOO_LONG, path, f"A text may have at most {most} characters.")
        self.chars += len(text)
        total = self.limits.max_request_content_chars
        if total is not None and self.chars > total:
            refuse(
                REQUEST_CONTENT_TOO_LONG,
                path,
                f"One request may carry at most {total} characters of text.",
            )
        return text

    def file(self, path: str) -> None:
        self.files += 1
        if self.files > self.limits.max_input_files:
            refuse(
                TOO_MANY_FILES,
                path,
                f"At most {self.limits.max_input_files} input files are allowed per request.",
            )

    def image(self, path: str) -> None:
        self.images += 1
        if self.images > self.limits.max_input_images:
            refuse(
                TOO_MANY_IMAGES,
                path,
                f"At most {self.limits.max_input_images} input images are allowed per request.",
            )


def check_input(value: Any, path: str, budget: InputBudget) -> Any:
    """Responses create ``input``: a string, or a list of input items."""
    if isinstance(value, str):
        return budget.text(value, path)
    return check_items(value, path, budget, budget.limits.max_input_items, allow_empty=True)


def check_items(
    value: Any, path: str, budget: InputBudget, most: int, *, allow_empty: bool
) -> list[dict[str, Any]]:
    items = as_list(value, path)
    if len(items) > most:
        refuse(TOO_MANY_INPUT_ITEMS, path, f"At most {most} items are allowed per request.")
    if not items and not allow_empty:
        refuse(INVALID_VALUE, path, "At least one item is required.")
    return [_item(item, item_path(path, i), budget) for i, item in enumerate(items)]


def _item(value: Any, path: str, budget: InputBudget) -> dict[str, Any]:
    obj = as_object(value, path)
    kind = obj.get("type", "message" if "role" in obj else None)
    where = child_path(path, "type")
    if kind is None:
        require_fields(obj, path, "type")
    if isinstance(kind, str) and kind in _BY_ID_TYPES:
        refuse(INPUT_ITEM_ID_NOT_ALLOWED, where, "Items naming stored items are not accepted.")
    kind = as_choice(kind, where, frozenset({"message", "function_call", "function_call_output"}))
    if "id" in obj:
        refuse(
            INPUT_ITEM_ID_NOT_ALLOWED,
            child_path(path, "id"),
            "Input items may not name stored items (use previous_response_id or conversation).",
        )
    if kind == "message":
        return _message(obj, path, budget)
    if kind == "function_call":
        return _function_call(obj, path, budget)
    return _function_output(obj, path, budget)


def _status(value: Any, path: str) -> str:
    return as_choice(value, path, _STATUSES)


def _message(obj: dict[str, Any], path: str, budget: InputBudget) -> dict[str, Any]:
    check_keys(obj, path, frozenset({"type", "role", "content", "status"}), frozenset())
    require_fields(obj, path, "role", "content")
    out: dict[str, Any] = {}
    role = ""
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "type":
            out[key] = item
        elif key == "role":
            role = as_str(item, where)
            if role not in budget.limits.input_roles:
                allowed = ", ".join(sorted(budget.limits.input_roles))
                refuse(ROLE_NOT_ALLOWED, where, f"Role must be one of: {allowed}.")
            out[key] = role
        elif key == "status":
            out[key] = _status(item, where)
    content, where = obj["content"], child_path(path, "content")
    if isinstance(content, str):
        out["content"] = budget.text(content, where)
    else:
        parts = as_list(content, where)
        if not parts:
            refuse(CONTENT_EMPTY, where, "Message content must not be empty.")
        out["content"] = [
            _part(part, item_path(where, i), budget, assistant=role == "assistant")
            for i, part in enumerate(parts)
        ]
    return {key: out[key] for key in obj}


def _function_call(obj: dict[str, Any], path: str, budget: InputBudget) -> dict[str, Any]:
    check_keys(
        obj, path, frozenset({"type", "call_id", "name", "arguments", "status"}), frozenset()
    )
    require_fields(obj, path, "call_id", "name", "arguments")
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "type":
            out[key] = item
        elif key == "call_id":
            out[key] = as_id(item, where, _CALL_ID, INVALID_VALUE)
        elif key == "name":
            out[key] = name(item, where)
        elif key == "arguments":
            out[key] = budget.text(as_str(item, where), where, allow_empty=True)
        else:
            out[key] = _status(item, where)
    return out


def _function_output(obj: dict[str, Any], path: str, budget: InputBudget) -> dict[str, Any]:
    check_keys(obj, path, frozenset({"type", "call_id", "output", "status"}), frozenset())
    require_fields(obj, path, "call_id", "output")
    out: dict[str, Any] = {}
    for key, item in obj.items():
        where = child_path(path, key)
        if key == "type":
            out[key] = item
        elif key == "call_id":
            out[key] = as_id(item, where, _CALL_ID, INVALID_VALUE)
        elif key == "output":
            if isinstance(item, str):
                out[key] = budget.text(item, where, allow_empty=True)
            else:
                out[key] = [
                    _part(part, item_path(where, i), budget, assistant=False)
                    for i, part in enumerate(as_list(item, where))
                ]
        else:
            out[key] = _status(item, where)
    return out


def _part(value: Any, path: str, budget: InputBudget, *, assistant: bool) -> dict[str, Any]:
    if not isinstance(value, dict):
        refuse(INVALID_CONTENT_PART, path, "A content part must be an object.")
    require_fields(value, path, "type")
    where = child_path(path, "type")
    kinds = {"input_text", "input_image", "input_file"}
    if assistant:
        kinds |= {"output_text", "refusal"}
    kind = value["type"]
    if not isinstance(kind, str) or kind not in kinds:
        refuse(INVALID_CONTENT_PART, where, "Unknown content part type.")
    if kind == "input_image":
        return _image(value, path, budget)
    if kind == "input_file":
        return _file(value, path, budget)
    field = "refusal" if kind == "refusal" else "text"
    extra = frozenset({"annotations"}) if kind == "output_text" else frozenset()
    check_keys(value, path, frozenset({"type", field}) | extra, frozenset())
    require_fields(value, path, field)
    out: dict[str, Any] = {"type": kind}
    for key, item in value.items():
        at = child_path(path, key)
        if key == field:
            out[key] = budget.text(as_str(item, at), at, allow_empty=kind != "input_text")
        elif key == "annotations" and as_list(item, at):
            refuse(INVALID_VALUE, at, "Annotations are not accepted in input.")
        elif key == "annotations":
            out[key] = []
    return out


def _image(value: dict[str, Any], path: str, budget: InputBudget) -> dict[str, Any]:
    check_keys(value, path, frozenset({"type", "image_url", "file_id", "detail"}), frozenset())
    limits = budget.limits
    sources = [key for key in ("image_url", "file_id") if value.get(key) is not None]
    if len(sources) != 1:
        refuse(INVALID_CONTENT_PART, path, "An input image has exactly one of image_url, file_id.")
    budget.image(path)
    out: dict[str, Any] = {"type": "input_image"}
    for key, item in value.items():
        at = child_path(path, key)
        if key == "detail":
            out[key] = as_choice(item, at, _DETAILS)
        elif key == "image_url" and item is not None:
            if not limits.allow_image_url:
                refuse(CONTENT_PART_NOT_ALLOWED, at, "Image URLs are not allowed.")
            out[key] = check_image_url(item, at, limits)
        elif key == "file_id" and item is not None:
            if not limits.allow_image_file:
                refuse(CONTENT_PART_NOT_ALLOWED, at, "Image files are not allowed.")
            out[key] = as_id(item, at, FILE_ID, INVALID_FILE_ID)
        elif key != "type":
            out[key] = None
    return out


def _file(value: dict[str, Any], path: str, budget: InputBudget) -> dict[str, Any]:
    fields = frozenset({"type", "file_id", "file_data", "file_url", "filename"})
    check_keys(value, path, fields, frozenset())
    sources = [k for k in ("file_id", "file_data", "file_url") if value.get(k) is not None]
    if len(sources) != 1:
        refuse(
            INVALID_CONTENT_PART,
            path,
            "An input file has exactly one of file_id, file_data, file_url.",
        )
    budget.file(path)
    out: dict[str, Any] = {"type": "input_file"}
    for key, item in value.items():
        at = child_path(path, key)
        if item is None and key != "type":
            out[key] = None
        elif key == "file_id":
            out[key] = as_id(item, at, FILE_ID, INVALID_FILE_ID)
        elif key == "file_url":
            out[key] = check_image_url(item, at, budget.limits)
        elif key == "file_data":
            out[key] = as_str(item, at)
        elif key == "filename":
            text = as_str(item, at)
            if not 1 <= len(text) <= _MAX_FILENAME_CHARS or any(c in text for c in "/\\\x00"):
                refuse(INVALID_VALUE, at, "A file name has 1 to 256 characters, no path.")
            out[key] = text
    return out
