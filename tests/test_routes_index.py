"""The operation table's dict lookup finds exactly the rows a scan of every row finds, in
table order (``OperationTable._candidates``): the same 200/404/405 and the same row for every
path, whether built from a template (each placeholder a valid id, or not) or mutated. The
target backstop's shortcuts (``_split_target``, ``_quoted``) answer as ``urlsplit`` and
``quote`` do."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.operations.apiversions import KNOWN_VERSIONS
from gateway.operations.row import ID_PATTERNS, Operation
from gateway.operations.table import (
    _KEPT_MATCHES,
    _KEPT_TARGET_BYTES,
    OPERATIONS,
    OperationMatch,
    OperationTable,
    _quoted,
    _split_path,
    _split_target,
)

TABLE = OperationTable(KNOWN_VERSIONS)
METHODS = sorted({r.method for r in OPERATIONS})
IDS = {
    "thread_id": "thread_abc123",
    "message_id": "msg_abc123",
    "run_id": "run_abc123",
    "step_id": "step_abc123",
    "assistant_id": "asst_abc123",
    "file_id": "file-abc123",
    "vector_store_id": "vs_abc123",
    "batch_id": "vsfb_abc123",
    "response_id": "resp_abc123",
    "conversation_id": "conv_abc123",
    "item_id": "msg_abc123",
}
WORDS = sorted({s for r in OPERATIONS for s in r.segments if not s.startswith("{")})


def _match(route: Operation, segments: list[str]) -> dict[str, str] | None:
    """A route against a path by walking every segment (the table's match before its index
    and ``_ids``): the reference the table is checked against."""
    if len(segments) != len(route.segments):
        return None
    ids: dict[str, str] = {}
    for want, got in zip(route.segments, segments, strict=True):
        if want.startswith("{"):
            name = want[1:-1]
            if not ID_PATTERNS[name].fullmatch(got):
                return None
            ids[name] = got
        elif want != got:
            return None
    return ids


def _scan(segments: list[str]) -> list[Operation]:
    return [r for r in OPERATIONS if _match(r, segments) is not None]


def _outcome(method: str, path: str) -> tuple[str, str]:
    try:
        found = TABLE.match(method, path.encode(), b"api-version=2024-05-01-preview")
    except GatewayError as exc:
        return "error", exc.code
    return "row", found.row.name


@st.composite
def paths(draw: st.DrawFn) -> str:
    row = draw(st.sampled_from(OPERATIONS))
    segments = []
    for s in row.segments:
        if s.startswith("{"):
            s = draw(st.sampled_from([IDS.get(s[1:-1], "x_1"), *IDS.values(), "bad"]))
        elif draw(st.integers(0, 9)) == 0:
            s = draw(st.sampled_from(WORDS))
        segments.append(s)
    if draw(st.integers(0, 9)) == 0:
        segments.append(draw(st.sampled_from(WORDS)))
    return "/" + "/".join(segments)


@settings(max_examples=600, deadline=None)
@given(paths(), st.sampled_from(METHODS))
def test_the_index_finds_what_a_scan_finds(path: str, method: str) -> None:
    segments = _split_path(path.encode())
    found = [r for r in TABLE._candidates(segments) if _match(r, segments) is not None]
    assert found == _scan(segments)
    # a candidate's ids, checked at its placeholders alone, are what the full match finds
    for row in TABLE._candidates(segments):
        assert TABLE._ids(row, segments) == _match(row, segments)
    expected: tuple[str, str]
    if not found:
        expected = ("error", "route_not_found")
    else:
        same = [r for r in found if r.method == method]
        expected = ("row", same[0].name) if same else ("error", "method_not_allowed")
    outcome = _outcome(method, path)
    # A matched row may still refuse the query (its api-version): the route decision is what
    # the index changes, so compare the row or the routing refusal only.
    if expected[0] == "row" and outcome[0] == "error":
        assert outcome[1] not in ("route_not_found", "method_not_allowed")
    else:
        assert outcome == expected


def test_every_row_is_found_by_its_own_template() -> None:
    for row in OPERATIONS:
        path = "/" + "/".join(IDS.get(s[1:-1], s) if s.startswith("{") else s for s in row.segments)
        candidates = TABLE._candidates(_split_path(path.encode()))
        assert row in candidates, row.name
        assert candidates == sorted(candidates, key=OPERATIONS.index)  # table order


#: Plain characters and every one ``urlsplit`` or ``quote`` treats apart.
TARGET_TEXT = st.text(st.sampled_from("aZ09_-.~/?#&=%+ \t\r\n;:@[]\x00\x7fé"), max_size=12)


@settings(max_examples=1000, deadline=None)
@given(TARGET_TEXT, TARGET_TEXT)
def test_the_target_split_is_urlsplits(path: str, query: str) -> None:
    def outcome(split: Callable[[], tuple[str, str, str]]) -> object:
        try:
            return split()
        except ValueError as exc:  # "Invalid IPv6 URL": a "[" in what urlsplit takes as host
            return repr(exc)

    for p in (path, "/" + path):

        def by_urlsplit(p: str = p) -> tuple[str, str, str]:
            parts = urlsplit(f"https://upstream.invalid{p}?{query}")
            return parts.path, parts.query, parts.fragment

        def ours(p: str = p) -> tuple[str, str, str]:
            return _split_target(p, query)

        assert outcome(ours) == outcome(by_urlsplit)


@settings(max_examples=500, deadline=None)
@given(TARGET_TEXT)
def test_quoted_is_quote(text: str) -> None:
    assert _quoted(text) == quote(text, safe="")


QUERIES = st.sampled_from(
    [
        b"api-version=2024-05-01-preview",
        b"api-version=2024-02-15-preview",
        b"api-version=2024-05-01-preview&limit=5&order=asc",
        b"limit=5",
        b"",
        b"api-version=2024-05-01-preview&api-version=2024-05-01-preview",
        b"api-version=2024-05-01-preview&nope=1",
    ]
)


def _fresh_outcome(
    table: OperationTable, method: str, path: bytes, query: bytes
) -> OperationMatch | tuple[str, str]:
    try:
        return table.match(method, path, query)
    except GatewayError as exc:
        return exc.code, exc.message


@settings(max_examples=400, deadline=None)
@given(paths(), st.sampled_from(METHODS), QUERIES)
def test_a_kept_match_is_the_match_worked_out_again(path: str, method: str, query: bytes) -> None:
    """The kept matches change nothing: asked twice, the table answers what a new table
    answers (the same row, ids, query and upstream target; the same refusal)."""
    first = _fresh_outcome(TABLE, method, path.encode(), query)
    again = _fresh_outcome(TABLE, method, path.encode(), query)
    fresh = _fresh_outcome(OperationTable(KNOWN_VERSIONS), method, path.encode(), query)
    assert first == again == fresh
    if isinstance(first, OperationMatch):
        assert again is first  # kept, not worked out again
        with pytest.raises(TypeError):
            first.ids["thread_id"] = "thread_other"  # type: ignore[index]


def test_kept_matches_are_bounded_oldest_first_and_long_targets_are_not_kept() -> None:
    table = OperationTable(KNOWN_VERSIONS)
    query = b"api-version=2024-05-01-preview"
    first = table.match("GET", b"/openai/threads/thread_0", query)
    for n in range(1, _KEPT_MATCHES + 10):
        table.match("GET", f"/openai/threads/thread_{n}".encode(), query)
    assert len(table._kept) == _KEPT_MATCHES
    assert ("GET", b"/openai/threads/thread_0", query) not in table._kept
    latest = ("GET", f"/openai/threads/thread_{_KEPT_MATCHES + 9}".encode(), query)
    assert latest in table._kept
    again = table.match("GET", b"/openai/threads/thread_0", query)
    assert again == first and again is not first  # worked out again after it was dropped
    # A long target that matches: a repeated query parameter (up to the query's 2 KiB).
    include = b"&include[]=step_details.tool_calls[*].file_search.results[*].content" * 8
    long_query = b"api-version=2025-01-01-preview" + include
    long_path = b"/openai/threads/thread_0/runs/run_0/steps"
    assert len(long_path) + len(long_query) > _KEPT_TARGET_BYTES
    assert table.match("GET", long_path, long_query).row.name == "runs.steps.list"
    assert all(len(path) + len(q) <= _KEPT_TARGET_BYTES for _, path, q in table._kept)
