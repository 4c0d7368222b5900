"""The fake's wire, as pure data: api-versions, ids, Azure-shaped errors, request validation,
list pagination and the route table.

Rules of this module:
- No I/O, no clock, no state; only the standard library.
- Every refusal is a ``FakeError``: the HTTP status plus the exact Azure-shaped body. Azure's
  front door answers ``{"error": {"code", "message"}}`` (``apim_error``: bad key, unknown
  api-version or path); the Assistants service answers ``{"error": {"code", "message",
  "param", "type"}}`` (``invalid``, ``not_found``).
- Validation is Azure's, loosely: required fields, types, documented limits, unknown fields
  refused (``additionalProperties: false``). Strict policy is the gateway's job, not the fake's.
- Routes are matched on the raw path's percent-decoded segments and the version's generation
  (v1 = 2024-02-15-preview has message and assistant files; v2 has vector stores and
  message DELETE). A path no route matches answers Azure's JSON 404.
"""

from __future__ import annotations

import copy
import json
import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import unquote

Json = dict[str, Any]
Generation = Literal["v1", "v2"]
T = TypeVar("T")

VERSIONS: dict[str, Generation] = {
    "2024-02-15-preview": "v1",
    "2024-05-01-preview": "v2",
    "2024-07-01-preview": "v2",
    "2024-08-01-preview": "v2",
    "2024-09-01-preview": "v2",
    "2024-10-01-preview": "v2",
    "2024-12-01-preview": "v2",
    "2025-01-01-preview": "v2",
    "2025-02-01-preview": "v2",
    "2025-03-01-preview": "v2",
    "2025-04-01-preview": "v2",
}
_ALNUM = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """``prefix`` + 24 random alphanumerics, like ``thread_v7V4csrNOxtNmgcwGg496Smx``."""
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(24))


class CutStreamError(Exception):
    """Raised by a body iterator to end the response without its final body message."""


class FakeError(Exception):
    """A refusal: the HTTP ``status`` and the JSON ``body`` to answer with."""

    def __init__(self, status: int, body: Json) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


def invalid(message: str, param: str | None = None, code: str | None = None) -> FakeError:
    error = {"code": code, "message": message, "param": param, "type": "invalid_request_error"}
    return FakeError(400, {"error": error})


def not_found(kind: str, obj_id: str) -> FakeError:
    message = f"No {kind} found with id '{obj_id}'."
    error = {"code": "NotFound", "message": message, "param": None, "type": "invalid_request_error"}
    return FakeError(404, {"error": error})


def v1_not_found(kind: str, obj_id: str, param: str | None = None) -> FakeError:
    """The v1 service's 404 for an id it does not have (the OpenAI reference's wording)."""
    error = {
        "code": "not_found",
        "message": f"{kind} with id '{obj_id}' not found.",
        "param": param,
        "type": "invalid_request_error",
    }
    return FakeError(404, {"error": error})


def v1_error(body: Json) -> Json:
    """An error body as the v1 API documents it (``AzureErrorResponse``: ``code``,
    ``message``, ``param`` strings, ``type`` always ``"error"``): the Assistants-shaped
    ``invalid_request_error`` becomes ``"error"`` and a ``null`` code or param is left out.
    The front door's short ``{code, message}`` passes unchanged."""
    inner = body.get("error")
    if not isinstance(inner, dict) or "type" not in inner:
        return body
    out = {k: v for k, v in inner.items() if v is not None and k != "type"}
    return {"error": {**out, "type": "error"}}


def apim_error(status: int, code: str, message: str) -> FakeError:
    """The short ``{"error": {"code", "message"}}`` shape Azure's front door answers with."""
    return FakeError(status, {"error": {"code": code, "message": message}})


def reject_unknown(body: Json, allowed: frozenset[str] | set[str]) -> None:
    for key in body:
        if key not in allowed:
            raise invalid(f"Unknown parameter: '{key}'.", key, "unknown_parameter")


def check_metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"Invalid type for '{param}': expected an object.", param, "invalid_type")
    if len(value) > 16:
        raise invalid(f"Invalid '{param}': at most 16 key-value pairs.", param, "invalid_value")
    for key, item in value.items():
        if len(key) > 64 or not isinstance(item, str) or len(item) > 512:
            message = f"Invalid '{param}.{key}': keys up to 64 and string values up to 512 chars."
            raise invalid(message, f"{param}.{key}", "invalid_value")
    return dict(value)


def text_part(value: str) -> Json:
    return {"type": "text", "text": {"value": value, "annotations": []}}


def _content(value: Any, gen: Generation, param: str) -> list[Json]:
    limit = 32_768 if gen == "v1" else 256_000
    if isinstance(value, str):
        if not 1 <= len(value) <= limit:
            raise invalid(
                f"Invalid '{param}': string length must be 1..{limit}.", param, "invalid_value"
            )
        return [text_part(value)]
    if gen == "v1" or not isinstance(value, list) or not value:
        raise invalid(
            f"Invalid type for '{param}': expected a string or a non-empty array.",
            param,
            "invalid_type",
        )
    parts: list[Json] = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        inner = part.get(kind) if isinstance(part, dict) and isinstance(kind, str) else None
        if kind == "text" and isinstance(inner, str) and inner:
            parts.append(text_part(inner))
        elif (
            kind in ("image_file", "image_url")
            and isinstance(inner, dict)
            and isinstance(inner.get("file_id" if kind == "image_file" else "url"), str)
        ):
            parts.append({"type": kind, kind: {"detail": "auto", **inner}})
        else:
            raise invalid(f"Invalid content part '{param}[{i}]'.", f"{param}[{i}]", "invalid_value")
    return parts


def parse_new_message(body: Any, gen: Generation, param: str = "") -> Json:
    """A create-message body (reference section 1.1) → the fields of a ``Message``."""
    if not isinstance(body, dict):
        raise invalid(f"Invalid type for '{param or 'body'}': expected an object.", param or None)
    reject_unknown(
        body, {"role", "content", "metadata", "file_ids" if gen == "v1" else "attachments"}
    )
    for name in ("role", "content"):
        if name not in body:
            raise invalid(
                f"Missing required parameter: '{param}{name}'.",
                param + name,
                "missing_required_parameter",
            )
    roles = ("user",) if gen == "v1" else ("user", "assistant")
    if body["role"] not in roles:
        raise invalid(
            f"Invalid value: {body['role']!r}. Supported values are: {roles}.",
            param + "role",
            "invalid_value",
        )
    fields: Json = {
        "role": body["role"],
        "content": _content(body["content"], gen, param + "content"),
        "metadata": check_metadata(body.get("metadata"), param + "metadata"),
    }
    files = body.get("file_ids") if gen == "v1" else body.get("attachments")
    if files is not None and not isinstance(files, list):
        raise invalid(
            "Invalid type: expected an array.",
            param + ("file_ids", "attachments")[gen == "v2"],
            "invalid_type",
        )
    if gen == "v1":
        if files and (len(files) > 10 or not all(isinstance(f, str) for f in files)):
            raise invalid("Invalid 'file_ids': up to 10 strings.", param + "file_ids")
        fields["file_ids"] = list(files or [])
    else:
        fields["attachments"] = copy.deepcopy(files or [])
    return fields


@dataclass(frozen=True)
class ListQuery:
    limit: int = 20
    order: str = "desc"
    after: str | None = None
    before: str | None = None
    run_id: str | None = None
    purpose: str | None = None  # files.list
    filter: str | None = None  # vector store (batch) files: a status


def parse_list_query(query: dict[str, str], gen: Generation) -> ListQuery:
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise invalid("Invalid 'limit': expected an integer.", "limit", "invalid_type") from None
    if not 1 <= limit <= 100:
        raise invalid("Invalid 'limit': must be between 1 and 100.", "limit", "invalid_value")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid("Invalid 'order': expected 'asc' or 'desc'.", "order", "invalid_value")
    return ListQuery(
        limit,
        order,
        query.get("after"),
        query.get("before"),
        query.get("run_id") if gen == "v2" else None,
        query.get("purpose"),
        query.get("filter"),
    )


def paginate(
    items: Sequence[T], q: ListQuery, key: Callable[[T], tuple[int, int]], id_of: Callable[[T], str]
) -> tuple[list[T], bool]:
    """One page of ``items`` in ``q.order`` (by ``key``), cursors ``after``/``before`` by id."""
    ordered = sorted(items, key=key, reverse=q.order == "desc")
    ids = [id_of(x) for x in ordered]
    start, end = 0, len(ordered)
    if q.after is not None:
        start = ids.index(q.after) + 1 if q.after in ids else len(ordered)
    if q.before is not None:
        end = ids.index(q.before) if q.before in ids else 0
    window = ordered[start:end]
    page = window[-q.limit :] if q.before is not None and q.after is None else window[: q.limit]
    return page, len(window) > q.limit


def list_json(data: list[Json], has_more: bool) -> Json:
    """A list page. Every list response schema in Microsoft's documents (vendored under
    tests/specs) has ``first_id`` and ``last_id`` *required* and typed ``string``, not nullable:
    an empty page answers ``""`` for both, the one string that names no object."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else "",
        "last_id": data[-1]["id"] if data else "",
        "has_more": has_more,
    }


_BAD_JSON = (
    "We could not parse the JSON body of your request. The OpenAI API expects a JSON "
    "payload, but what was sent was not valid JSON."
)
_T = "threads/{thread_id}"
_M = _T + "/messages/{message_id}"
_R = _T + "/runs/{run_id}"
_A = "assistants/{assistant_id}"
_F = "files/{file_id}"
_VS = "vector_stores/{vector_store_id}"
_B = _VS + "/file_batches/{batch_id}"
#: (method, path template, generation it exists in or None for both, operation name). The
#: names are the gateway's operation names (gateway/operations), except the thread/message/run
#: ones kept from before. v1 = 2024-02-15-preview: assistant files and message files, no
#: vector stores, no message DELETE; runs, steps and create_and_run exist in both.
_ROUTES: tuple[tuple[str, str, Generation | None, str], ...] = (
    ("POST", "threads", None, "create_thread"),
    ("POST", "threads/runs", None, "create_thread_and_run"),
    ("GET", _T, None, "get_thread"),
    ("POST", _T, None, "modify_thread"),
    ("DELETE", _T, None, "delete_thread"),
    ("GET", _T + "/messages", None, "list_messages"),
    ("POST", _T + "/messages", None, "create_message"),
    ("GET", _M, None, "get_message"),
    ("POST", _M, None, "modify_message"),
    ("DELETE", _M, "v2", "delete_message"),
    ("GET", _M + "/files", "v1", "list_message_files"),
    ("GET", _M + "/files/{file_id}", "v1", "get_message_file"),
    ("GET", _T + "/runs", None, "list_runs"),
    ("POST", _T + "/runs", None, "create_run"),
    ("GET", _R, None, "get_run"),
    ("POST", _R, None, "modify_run"),
    ("POST", _R + "/submit_tool_outputs", None, "submit_tool_outputs"),
    ("POST", _R + "/cancel", None, "cancel_run"),
    ("GET", _R + "/steps", None, "list_steps"),
    ("GET", _R + "/steps/{step_id}", None, "get_step"),
    ("POST", "assistants", None, "assistants.create"),
    ("GET", "assistants", None, "assistants.list"),
    ("GET", _A, None, "assistants.retrieve"),
    ("POST", _A, None, "assistants.modify"),
    ("DELETE", _A, None, "assistants.delete"),
    ("POST", _A + "/files", "v1", "assistants.files.create"),
    ("GET", _A + "/files", "v1", "assistants.files.list"),
    ("GET", _A + "/files/{file_id}", "v1", "assistants.files.retrieve"),
    ("DELETE", _A + "/files/{file_id}", "v1", "assistants.files.delete"),
    ("POST", "files", None, "files.upload"),
    ("GET", "files", None, "files.list"),
    ("GET", _F, None, "files.retrieve"),
    ("DELETE", _F, None, "files.delete"),
    ("GET", _F + "/content", None, "files.content"),
    ("POST", "vector_stores", "v2", "vector_stores.create"),
    ("GET", "vector_stores", "v2", "vector_stores.list"),
    ("GET", _VS, "v2", "vector_stores.retrieve"),
    ("POST", _VS, "v2", "vector_stores.modify"),
    ("DELETE", _VS, "v2", "vector_stores.delete"),
    ("POST", _VS + "/files", "v2", "vector_stores.files.create"),
    ("GET", _VS + "/files", "v2", "vector_stores.files.list"),
    ("GET", _VS + "/files/{file_id}", "v2", "vector_stores.files.retrieve"),
    ("DELETE", _VS + "/files/{file_id}", "v2", "vector_stores.files.delete"),
    ("POST", _VS + "/file_batches", "v2", "vector_stores.file_batches.create"),
    ("GET", _B, "v2", "vector_stores.file_batches.retrieve"),
    ("POST", _B + "/cancel", "v2", "vector_stores.file_batches.cancel"),
    ("GET", _B + "/files", "v2", "vector_stores.file_batches.list_files"),
)
#: Literal path segments: a placeholder never takes one of these (``POST /threads/runs`` is
#: create_and_run, never "modify thread 'runs'").
_LITERALS = frozenset(
    part for _, template, _, _ in _ROUTES for part in template.split("/") if "{" not in part
)


#: The v1 API (``/openai/v1/``): api-version optional, ``v1`` or ``preview``.
V1_PREFIX = "/openai/v1/"
V1_API_VERSIONS = frozenset({"v1", "preview"})
_RS = "responses/{response_id}"
_CV = "conversations/{conversation_id}"
#: (method, path template under /openai/v1/, operation name as gateway/operations names it).
_V1_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("POST", "responses", "responses.create"),
    ("GET", _RS, "responses.retrieve"),
    ("DELETE", _RS, "responses.delete"),
    ("POST", _RS + "/cancel", "responses.cancel"),
    ("GET", _RS + "/input_items", "responses.input_items.list"),
    ("POST", "conversations", "conversations.create"),
    ("GET", _CV, "conversations.retrieve"),
    ("POST", _CV, "conversations.update"),
    ("DELETE", _CV, "conversations.delete"),
    ("POST", _CV + "/items", "conversations.items.create"),
    ("GET", _CV + "/items", "conversations.items.list"),
    ("GET", _CV + "/items/{item_id}", "conversations.items.retrieve"),
    ("DELETE", _CV + "/items/{item_id}", "conversations.items.delete"),
    ("POST", "files", "files.v1.upload"),
    ("GET", "files", "files.v1.list"),
    ("GET", _F, "files.v1.retrieve"),
    ("DELETE", _F, "files.v1.delete"),
    ("GET", _F + "/content", "files.v1.content"),
)
_V1_LITERALS = frozenset(
    part for _, template, _ in _V1_ROUTES for part in template.split("/") if "{" not in part
)


def _match(
    method: str,
    segments: list[str],
    routes: Sequence[tuple[str, str, str]],
    literals: frozenset[str],
) -> tuple[str, dict[str, str]] | None:
    for route_method, template, name in routes:
        parts = template.split("/")
        if route_method != method or len(parts) != len(segments):
            continue
        params: dict[str, str] = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{") and segment and segment not in literals:
                params[part[1:-1]] = segment
            elif part != segment:
                break
        else:
            return name, params
    return None


def match_route(method: str, raw_path: str, gen: Generation) -> tuple[str, dict[str, str]] | None:
    if not raw_path.startswith("/openai/"):
        return None
    segments = [unquote(s) for s in raw_path[len("/openai/") :].split("/")]
    routes = [(m, t, n) for m, t, needs, n in _ROUTES if needs in (None, gen)]
    return _match(method, segments, routes, _LITERALS)


def match_v1_route(method: str, raw_path: str) -> tuple[str, dict[str, str]] | None:
    """A route of the v1 API; ``raw_path`` starts with ``V1_PREFIX``."""
    segments = [unquote(s) for s in raw_path[len(V1_PREFIX) :].split("/")]
    return _match(method, segments, _V1_ROUTES, _V1_LITERALS)


def parse_body(method: str, body: bytes) -> Json:
    if method != "POST" or not body.strip():
        return {}
    try:
        parsed = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise invalid(_BAD_JSON) from None
    if not isinstance(parsed, dict):
        raise invalid("Invalid body: expected a JSON object.")
    return parsed


def _reject_constant(name: str) -> Any:
    raise ValueError(name)
