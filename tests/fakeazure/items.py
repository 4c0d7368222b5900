"""Items of the v1 API (``/openai/v1/``): what a response's ``input`` and a conversation's
``items`` hold, parsed from a request and rendered as the API answers them.

An input item is a message (``{"role", "content"}``, ``type`` ``message`` or absent: the
"easy" form), or one of the tool-call items a client sends back (``function_call``,
``function_call_output``, ...), or an ``item_reference``. Messages get an id (``msg_`` + 48
hex digits, as the service's) and ``status: completed``; a string ``content`` becomes one
``input_text`` part (``output_text`` for the assistant role). ``input_file`` and
``input_image`` parts may name an uploaded file (``file_id``): the caller checks it exists.

Rules: no I/O, no state; refusals are ``shapes.invalid`` (400) and ``v1_not_found``, the
param a JSON path.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Container
from typing import Any

from tests.fakeazure.shapes import Json, invalid, v1_not_found

#: Roles a message item may have in a request (the OpenAI reference's EasyInputMessage).
ROLES = ("user", "assistant", "system", "developer")
#: Item types other than ``message`` accepted as input, kept as sent (plus an id).
TOOL_ITEM_TYPES = frozenset(
    {
        "function_call",
        "function_call_output",
        "file_search_call",
        "web_search_call",
        "computer_call",
        "computer_call_output",
        "reasoning",
        "code_interpreter_call",
        "image_generation_call",
        "local_shell_call",
        "local_shell_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "custom_tool_call",
        "custom_tool_call_output",
    }
)
_PREFIX = {
    "message": "msg_",
    "function_call": "fc_",
    "function_call_output": "fco_",
    "file_search_call": "fs_",
    "web_search_call": "ws_",
    "computer_call": "cu_",
    "computer_call_output": "cuo_",
    "reasoning": "rs_",
    "code_interpreter_call": "ci_",
    "image_generation_call": "ig_",
    "local_shell_call": "lsh_",
    "local_shell_call_output": "lsho_",
    "mcp_list_tools": "mcpl_",
    "mcp_approval_request": "mcpr_",
    "mcp_approval_response": "mcpa_",
    "mcp_call": "mcp_",
    "custom_tool_call": "ctc_",
    "custom_tool_call_output": "ctco_",
}
_INPUT_PARTS = frozenset({"input_text", "input_image", "input_file"})
_OUTPUT_PARTS = frozenset({"output_text", "refusal"})
#: Azure's limit on the items of one conversations.create / conversations.items.create.
MAX_ITEMS_PER_REQUEST = 20


def item_id(kind: str) -> str:
    """An id like the service's: a type prefix and 48 hex digits (``msg_68af…``)."""
    return _PREFIX.get(kind, "item_") + secrets.token_hex(24)


def output_text(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _part(part: Any, role: str, param: str) -> Json:
    kind = part.get("type") if isinstance(part, dict) else None
    allowed = _OUTPUT_PARTS if role == "assistant" else _INPUT_PARTS
    if kind not in allowed:
        raise invalid(
            f"Invalid value: {kind!r}. Supported values are: {sorted(allowed)}.",
            f"{param}.type",
            "invalid_value",
        )
    assert isinstance(part, dict)
    out = copy.deepcopy(part)
    if kind in ("input_text", "output_text", "refusal"):
        field = "refusal" if kind == "refusal" else "text"
        if not isinstance(part.get(field), str):
            raise invalid(
                f"Missing required parameter: '{param}.{field}'.",
                f"{param}.{field}",
                "missing_required_parameter",
            )
        if kind == "output_text":
            out.setdefault("annotations", [])
    elif kind == "input_image":
        if not isinstance(part.get("image_url"), str) and not isinstance(part.get("file_id"), str):
            raise invalid(
                f"Invalid '{param}': an input_image needs an 'image_url' or a 'file_id'.",
                param,
                "invalid_value",
            )
        out.setdefault("detail", "auto")
        if out["detail"] not in ("low", "high", "auto"):  # ItemContentInputImage.detail
            raise invalid(
                f"Invalid value: {out['detail']!r}. Supported values are: 'low', 'high', 'auto'.",
                f"{param}.detail",
                "invalid_value",
            )
    elif not any(isinstance(part.get(k), str) for k in ("file_id", "file_data", "file_url")):
        raise invalid(
            f"Invalid '{param}': an input_file needs a 'file_id', 'file_data' or 'file_url'.",
            param,
            "invalid_value",
        )
    return out


def _message(raw: Json, param: str) -> Json:
    for key in raw:
        if key not in ("type", "role", "content", "id", "status"):
            raise invalid(
                f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}", "unknown_parameter"
            )
    role = raw.get("role")
    if role not in ROLES:
        raise invalid(
            f"Invalid value: {role!r}. Supported values are: {list(ROLES)}.",
            f"{param}.role",
            "invalid_value",
        )
    content = raw.get("content")
    if isinstance(content, str):
        parts = [
            output_text(content) if role == "assistant" else {"type": "input_text", "text": content}
        ]
    elif isinstance(content, list):
        parts = [_part(p, role, f"{param}.content[{i}]") for i, p in enumerate(content)]
    else:
        raise invalid(
            f"Invalid type for '{param}.content': expected a string or an array.",
            f"{param}.content",
            "invalid_type",
        )
    return {
        "id": raw["id"] if isinstance(raw.get("id"), str) else item_id("message"),
        "type": "message",
        "status": "completed",
        "role": role,
        "content": parts,
    }


def parse_items(value: Any, param: str, *, limit: int | None = None) -> list[Json]:
    """A request's ``input`` (string or array) or ``items`` (array) → stored items."""
    if isinstance(value, str):
        return [_message({"role": "user", "content": value}, param)]
    if not isinstance(value, list):
        raise invalid(
            f"Invalid type for '{param}': expected a string or an array.", param, "invalid_type"
        )
    if limit is not None and len(value) > limit:
        raise invalid(
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{limit}, but got an array with length {len(value)} instead.",
            param,
            "array_above_max_length",
        )
    out: list[Json] = []
    for i, raw in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(raw, dict):
            raise invalid(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
        kind = raw.get("type", "message")
        if kind == "message":
            out.append(_message(raw, where))
        elif kind in TOOL_ITEM_TYPES:
            item = copy.deepcopy(raw)
            if not isinstance(item.get("id"), str):
                item["id"] = item_id(kind)
            item.setdefault("status", "completed")
            out.append(item)
        elif kind == "item_reference" and isinstance(raw.get("id"), str):
            out.append(copy.deepcopy(raw))
        else:
            raise invalid(f"Invalid value: {kind!r}.", f"{where}.type", "invalid_value")
    return out


def check_file_refs(known: Container[str], items: list[Json], param: str) -> None:
    """404 (``param`` the JSON path) for an ``input_file`` / ``input_image`` part naming a
    file that was never uploaded (``known``: the uploaded ids)."""
    for i, item in enumerate(items):
        for j, part in enumerate(item.get("content") or []):
            file_id = part.get("file_id") if isinstance(part, dict) else None
            if isinstance(file_id, str) and file_id not in known:
                raise v1_not_found("File", file_id, f"{param}[{i}].content[{j}].file_id")


def last_user_text(items: list[Json]) -> str:
    """The text of the last user message (what the fake answers about)."""
    for item in reversed(items):
        if item.get("type") == "message" and item.get("role") == "user":
            texts = [
                p["text"]
                for p in item.get("content") or []
                if isinstance(p, dict) and p.get("type") == "input_text"
            ]
            if texts:
                return " ".join(texts)
    return ""
