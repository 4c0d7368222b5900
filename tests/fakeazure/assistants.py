"""Assistants and (v1) assistant files of the fake, per api-version generation.

Shapes follow ``assistantObject`` / ``assistantFileObject`` of the vendored documents
(tests/specs): v1 (2024-02-15-preview) has ``file_ids`` and the ``retrieval`` tool, v2 has
``tool_resources``, ``file_search``, ``temperature``, ``top_p`` and ``response_format``.
``metadata`` is stored as sent and replaced wholesale on modify (the gateway's ``gateway_owner``
stamp lives there). No I/O; callers hold ``Store.lock``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakeazure.shapes import (
    Generation,
    Json,
    ListQuery,
    check_metadata,
    invalid,
    list_json,
    new_id,
    not_found,
    paginate,
    reject_unknown,
)

_TOOLS: dict[Generation, frozenset[str]] = {
    "v1": frozenset({"code_interpreter", "retrieval", "function"}),
    "v2": frozenset({"code_interpreter", "file_search", "function"}),
}
_COMMON = frozenset({"model", "name", "description", "instructions", "tools", "metadata"})
_FIELDS: dict[Generation, frozenset[str]] = {
    "v1": _COMMON | {"file_ids"},
    "v2": _COMMON | {"tool_resources", "temperature", "top_p", "response_format"},
}
_LIMITS = {"name": 256, "description": 512}
_MAX_INSTRUCTIONS: dict[Generation, int] = {"v1": 32_768, "v2": 256_000}
MAX_ASSISTANT_FILES = 20


@dataclass(eq=False)
class Assistant:
    id: str
    created_at: int
    seq: int
    model: str
    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    tools: list[Json] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    file_ids: list[str] = field(default_factory=list)  # v1
    file_added: dict[str, int] = field(default_factory=dict)  # v1: file id -> created_at
    tool_resources: Json = field(default_factory=dict)  # v2
    temperature: float | None = 1.0
    top_p: float | None = 1.0
    response_format: Any = "auto"


def assistant_json(a: Assistant, gen: Generation) -> Json:
    out: Json = {
        "id": a.id,
        "object": "assistant",
        "created_at": a.created_at,
        "name": a.name,
        "description": a.description,
        "model": a.model,
        "instructions": a.instructions,
        "tools": copy.deepcopy(a.tools),
    }
    if gen == "v1":
        out["file_ids"] = list(a.file_ids)
    else:
        out.update(
            tool_resources=copy.deepcopy(a.tool_resources),
            temperature=a.temperature,
            top_p=a.top_p,
            response_format=copy.deepcopy(a.response_format),
        )
    out["metadata"] = dict(a.metadata)
    return out


def assistant_file_json(a: Assistant, file_id: str) -> Json:
    return {
        "id": file_id,
        "object": "assistant.file",
        "created_at": a.file_added[file_id],
        "assistant_id": a.id,
    }


def check_tools(value: Any, gen: Generation, param: str = "tools", most: int = 128) -> list[Json]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > most:
        raise invalid(f"Invalid '{param}': expected an array of at most {most} tools.", param)
    for i, tool in enumerate(value):
        kind = tool.get("type") if isinstance(tool, dict) else None
        ok = kind in _TOOLS[gen] and (
            kind != "function"
            or (
                isinstance(tool.get("function"), dict)
                and isinstance(tool["function"].get("name"), str)
            )
        )
        if not ok:
            raise invalid(
                f"Invalid value for '{param}[{i}].type': supported are {sorted(_TOOLS[gen])}.",
                f"{param}[{i}].type",
                "invalid_value",
            )
    return copy.deepcopy(value)


def _check_string(body: Json, name: str, most: int) -> None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or len(value) > most):
        raise invalid(f"Invalid '{name}': a string of at most {most} characters.", name)


def _check_file_ids(value: Any, param: str, most: int) -> list[str]:
    if value is None:
        return []
    if (
        not isinstance(value, list)
        or len(value) > most
        or not all(isinstance(f, str) for f in value)
    ):
        raise invalid(f"Invalid '{param}': an array of at most {most} file ids.", param)
    return list(value)


class Assistants:
    """The assistants of one fake resource."""

    def __init__(
        self,
        now: Callable[[], int],
        next_seq: Callable[[], int],
        expand: Callable[[Json], Json] = copy.deepcopy,
    ) -> None:
        """``expand`` turns ``tool_resources`` as sent into what Azure stores (the
        ``file_search.vector_stores`` helper becomes new vector stores)."""
        self._now, self._next_seq, self._expand = now, next_seq, expand
        self.items: dict[str, Assistant] = {}

    def _apply(self, a: Assistant, body: Json, gen: Generation) -> None:
        reject_unknown(body, _FIELDS[gen])
        for name, most in _LIMITS.items():
            _check_string(body, name, most)
        _check_string(body, "instructions", _MAX_INSTRUCTIONS[gen])
        if "model" in body:
            if not isinstance(body["model"], str) or not body["model"]:
                raise invalid("Invalid 'model': expected a deployment name.", "model")
            a.model = body["model"]
        for name in ("name", "description", "instructions"):
            if name in body:
                setattr(a, name, body[name])
        if "tools" in body:
            a.tools = check_tools(body["tools"], gen)
        if "metadata" in body:
            a.metadata = check_metadata(body["metadata"])
        if gen == "v1" and "file_ids" in body:
            ids = _check_file_ids(body["file_ids"], "file_ids", MAX_ASSISTANT_FILES)
            now = self._now()
            a.file_added = {f: a.file_added.get(f, now) for f in ids}
            a.file_ids = ids
        if gen == "v2":
            if body.get("tool_resources") is not None:
                if not isinstance(body["tool_resources"], dict):
                    raise invalid("Invalid 'tool_resources': expected an object.", "tool_resources")
                a.tool_resources = self._expand(body["tool_resources"])
            for name in ("temperature", "top_p"):
                if name in body:
                    value = body[name]
                    if value is not None and not isinstance(value, int | float):
                        raise invalid(f"Invalid '{name}': expected a number.", name)
                    setattr(a, name, value)
            if "response_format" in body:
                a.response_format = copy.deepcopy(body["response_format"])

    def create(self, body: Json, gen: Generation) -> Assistant:
        if not isinstance(body.get("model"), str):
            raise invalid(
                "Missing required parameter: 'model'.", "model", "missing_required_parameter"
            )
        assistant = Assistant(new_id("asst_"), self._now(), self._next_seq(), body["model"])
        self._apply(assistant, body, gen)
        self.items[assistant.id] = assistant
        return assistant

    def get(self, assistant_id: str) -> Assistant:
        if assistant_id not in self.items:
            raise not_found("assistant", assistant_id)
        return self.items[assistant_id]

    def modify(self, assistant_id: str, body: Json, gen: Generation) -> Assistant:
        assistant = self.get(assistant_id)
        self._apply(assistant, body, gen)
        return assistant

    def delete(self, assistant_id: str) -> Json:
        self.get(assistant_id)
        del self.items[assistant_id]
        return {"id": assistant_id, "object": "assistant.deleted", "deleted": True}

    def list(self, q: ListQuery, gen: Generation) -> Json:
        page, more = paginate(list(self.items.values()), q, _by_time, lambda a: a.id)
        return list_json([assistant_json(a, gen) for a in page], more)

    # v1 assistant files ---------------------------------------------------------------------
    def add_file(self, assistant_id: str, body: Json) -> Json:
        assistant = self.get(assistant_id)
        reject_unknown(body, {"file_id"})
        file_id = body.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            raise invalid(
                "Missing required parameter: 'file_id'.", "file_id", "missing_required_parameter"
            )
        if file_id not in assistant.file_ids:
            if len(assistant.file_ids) >= MAX_ASSISTANT_FILES:
                raise invalid(f"An assistant can have at most {MAX_ASSISTANT_FILES} files.")
            assistant.file_ids.append(file_id)
            assistant.file_added[file_id] = self._now()
        return assistant_file_json(assistant, file_id)

    def file(self, assistant_id: str, file_id: str) -> Json:
        assistant = self.get(assistant_id)
        if file_id not in assistant.file_ids:
            raise not_found("file", file_id)
        return assistant_file_json(assistant, file_id)

    def remove_file(self, assistant_id: str, file_id: str) -> Json:
        assistant = self.get(assistant_id)
        if file_id not in assistant.file_ids:
            raise not_found("file", file_id)
        assistant.file_ids.remove(file_id)
        del assistant.file_added[file_id]
        return {"id": file_id, "object": "assistant.file.deleted", "deleted": True}

    def list_files(self, assistant_id: str, q: ListQuery) -> Json:
        assistant = self.get(assistant_id)
        rank = {f: i for i, f in enumerate(assistant.file_ids)}
        page, more = paginate(
            assistant.file_ids, q, lambda f: (assistant.file_added[f], rank[f]), lambda f: f
        )
        return list_json([assistant_file_json(assistant, f) for f in page], more)


def _by_time(a: Assistant) -> tuple[int, int]:
    return (a.created_at, a.seq)
