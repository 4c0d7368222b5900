"""The operation table is the one place an operation is described: every row is complete and
consistent, and no module outside ``gateway/operations`` compares operation names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gateway.operations.row import KINDS, Operation
from gateway.operations.table import BY_NAME, OPERATIONS

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
    modules = ("assistants.py", "files.py", "vector_stores.py")
    written = {value for m in modules for _, value in string_constants(PACKAGE / "operations" / m)}
    assert written >= NAMES


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
    if row.creates is not None:
        assert row.body is not None and row.owner is None
        assert row.creates.stamp_at and row.creates.stamp_at[-1] == "metadata"
        assert row.creates.sse_event is None or row.streams
    if row.restamp_at is not None:
        assert row.owner is not None and row.body is not None
    if row.streams:
        assert row.body is not None, "a stream is asked for in the body"


def test_every_kind_has_its_lookup_row() -> None:
    for kind in KINDS.values():
        lookup = BY_NAME[kind.lookup]
        assert lookup.method == "GET" and lookup.owner is kind and lookup.returns is kind


def test_rows_are_unique_by_method_and_template() -> None:
    keys = [(op.method, op.template) for op in OPERATIONS]
    assert len(keys) == len(set(keys))
