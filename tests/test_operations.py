"""The operation table is the one place an operation is described: every row is complete and
consistent, and no module outside ``gateway/operations`` compares operation names."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from gateway.operations.apiversions import KNOWN_VERSIONS
from gateway.operations.row import KINDS, Operation
from gateway.operations.table import BY_NAME, OPERATIONS
from gateway.policy.checks import PolicyLimits, check_body

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"
NAMES = frozenset(BY_NAME)


def string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_no_module_outside_the_table_names_an_operation() -> None:
    """Policy, ownership, limits, metrics and the forwarder read the row: an operation's name
    written anywhere else would be a second table."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "operations":
            continue
        found += [
            f"{path.relative_to(PACKAGE)}:{line}: {value!r}"
            for line, value in string_constants(path)
            if value in NAMES
        ]
    assert not found, "\n".join(found)


def test_the_check_sees_a_name_where_one_is_written() -> None:
    """The check above can fail: the rows themselves name every operation."""
    rows = [p for p in (PACKAGE / "operations").glob("*.py")]
    assert {value for path in rows for _, value in string_constants(path)} >= NAMES


@pytest.mark.parametrize("row", OPERATIONS, ids=[op.name for op in OPERATIONS])
def test_every_row_is_consistent(row: Operation) -> None:
    placeholders = [s[1:-1] for s in row.segments if s.startswith("{")]
    assert row.method in {"GET", "POST", "DELETE"}
    assert row.generations
    owned = [p for p in placeholders if p in KINDS]
    assert row.owner is (KINDS[owned[0]] if owned else None)
    if row.method == "GET" or row.method == "DELETE":
        assert row.body is None, "reads and deletes take no body"
    if row.method == "GET":
        assert row.op_class == "read"
    else:
        assert row.op_class == "write"
    if row.upload:
        assert row.body is None and row.method == "POST" and not row.streams
    if row.creates is not None and row.creates.kind.stamp == "filename":
        assert row.upload and row.owner is None and row.creates.stamp_at == ()
    elif row.creates is not None:
        assert row.body is not None and row.owner is None
        assert row.creates.stamp_at and row.creates.stamp_at[-1] == "metadata"
        assert row.creates.sse_event is None or row.streams
    if row.restamp_at is not None:
        assert row.owner is not None and row.body is not None
    if row.streams:
        assert row.body is not None, "a stream is asked for in the body"
    if row.stream_query is not None:
        assert row.method == "GET" and any(p.name == row.stream_query for p in row.query)


def test_every_kind_has_its_lookup_row() -> None:
    for kind in KINDS.values():
        lookup = BY_NAME[kind.lookup]
        assert lookup.method == "GET" and lookup.owner is kind and lookup.returns is kind


def test_rows_are_unique_by_method_and_template() -> None:
    keys = [(op.method, op.template) for op in OPERATIONS]
    assert len(keys) == len(set(keys))


# --- refs: the validated body keeps every reference at the row's path ---------------------

V1 = KNOWN_VERSIONS["2024-02-15-preview"]
V2 = KNOWN_VERSIONS["2024-05-01-preview"]
_MSG_V1 = {"role": "user", "content": "hi", "file_ids": ["file-m1"]}
_MSG_V2 = {
    "role": "user",
    "content": "hi",
    "attachments": [{"file_id": "file-m2", "tools": [{"type": "file_search"}]}],
}
_NEW = {
    "code_interpreter": {"file_ids": ["file-ci"]},
    "file_search": {"vector_stores": [{"file_ids": ["file-vs"]}]},
}
_OLD = {
    "code_interpreter": {"file_ids": ["file-ci"]},
    "file_search": {"vector_store_ids": ["vs_1"]},
}

V1_API = KNOWN_VERSIONS["v1"]
#: Input items naming files: a message's ``input_file``/``input_image`` parts and a function
#: output's parts.
_V1_ITEMS = [
    {"role": "user", "content": [{"type": "input_file", "file_id": "file-a"}]},
    {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": [{"type": "input_image", "file_id": "file-b"}],
    },
]

#: A body per (row, version) that names something at every one of the row's ref paths that the
#: version has (several bodies per row where one object cannot hold all: vector_stores vs ids).
REF_BODIES: list[tuple[str, Any, dict[str, Any]]] = [
    ("assistants.create", V1, {"model": "m", "file_ids": ["file-a"]}),
    ("assistants.create", V2, {"model": "m", "tool_resources": _NEW}),
    ("assistants.create", V2, {"model": "m", "tool_resources": _OLD}),
    ("assistants.modify", V1, {"file_ids": ["file-a"]}),
    ("assistants.modify", V2, {"tool_resources": _OLD}),
    ("assistants.files.create", V1, {"file_id": "file-a"}),
    ("threads.create", V1, {"messages": [_MSG_V1]}),
    ("threads.create", V2, {"messages": [_MSG_V2], "tool_resources": _NEW}),
    ("threads.create", V2, {"tool_resources": _OLD}),
    ("threads.modify", V2, {"tool_resources": _OLD}),
    ("messages.create", V1, _MSG_V1),
    ("messages.create", V2, _MSG_V2),
    ("runs.create", V1, {"assistant_id": "asst_1"}),
    ("runs.create", V2, {"assistant_id": "asst_1", "additional_messages": [_MSG_V2]}),
    ("threads.create_and_run", V1, {"assistant_id": "asst_1", "thread": {"messages": [_MSG_V1]}}),
    (
        "threads.create_and_run",
        V2,
        {
            "assistant_id": "asst_1",
            "tool_resources": _OLD,
            "thread": {"messages": [_MSG_V2], "tool_resources": _NEW},
        },
    ),
    ("threads.create_and_run", V2, {"assistant_id": "asst_1", "thread": {"tool_resources": _OLD}}),
    ("vector_stores.create", V2, {"file_ids": ["file-a"]}),
    ("vector_stores.files.create", V2, {"file_id": "file-a"}),
    ("vector_stores.file_batches.create", V2, {"file_ids": ["file-a"]}),
    (
        "responses.create",
        V1_API,
        {
            "model": "m",
            "conversation": "conv_1",
            "input": _V1_ITEMS,
            "tools": [
                {"type": "file_search", "vector_store_ids": ["vs_1"]},
                {"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-c"]}},
            ],
        },
    ),
    ("responses.create", V1_API, {"model": "m", "conversation": {"id": "conv_1"}}),
    ("responses.create", V1_API, {"model": "m", "previous_response_id": "resp_1"}),
    ("conversations.create", V1_API, {"items": _V1_ITEMS}),
    ("conversations.items.create", V1_API, {"items": _V1_ITEMS}),
]


def _walk(value: Any, steps: list[str]) -> list[Any]:
    if not steps:
        return [value]
    step, rest = steps[0], steps[1:]
    name, many = (step[:-2], True) if step.endswith("[]") else (step, False)
    if not isinstance(value, dict) or name not in value:
        return []
    inner = value[name]
    items = inner if many else [inner]
    return [found for item in items for found in _walk(item, rest)]


def test_every_ref_path_is_kept_by_the_checker() -> None:
    seen: set[tuple[str, str]] = set()
    for name, version, body in REF_BODIES:
        row = BY_NAME[name]
        assert row.refs, name
        out = check_body(row.body, version, body, PolicyLimits())
        assert out is not None
        for ref in row.refs:
            # only strings are references (``conversation`` may also be an object: its id is
            # the ``conversation.id`` ref)
            values = [v for v in _walk(out, ref.path.split(".")) if isinstance(v, str)]
            if values:
                assert all(ref.kind.pattern.fullmatch(v) for v in values), (name, ref.path)
                assert values == [v for v in _walk(body, ref.path.split(".")) if isinstance(v, str)]
                seen.add((name, ref.path))
    every = {(row.name, ref.path) for row in OPERATIONS for ref in row.refs}
    # v1-only and v2-only paths are each covered by a body of their version
    assert every == seen, sorted(every - seen)
