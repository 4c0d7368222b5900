"""Ownership of every kind, the pure parts: body paths, references, stamps on assistants,
vector stores (also made inline) and files, and lists built for one tenant out of upstream
pages (``listing.ListScan``)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import pytest

from gateway.errors import BadRequestError
from gateway.operations.apiversions import Generation
from gateway.operations.row import (
    ASSISTANT,
    FILE,
    NEW_THREAD_VECTOR_STORES,
    NEW_VECTOR_STORES,
    THREAD,
    VECTOR_STORE,
    Creation,
    Kind,
    Operation,
    Ref,
)
from gateway.ownership import paths
from gateway.ownership.filenames import stamp_filename
from gateway.ownership.listing import PAGE_SIZE, Answer, ListPageError, ListScan, NextPage
from gateway.ownership.refs import (
    Reference,
    body_references,
    cursor_references,
    distinct,
    first_malformed,
)
from gateway.ownership.rules import (
    STAMP_KEY,
    created_id,
    created_id_in,
    may_use,
    reference_not_found,
    tenant_digest,
)
from gateway.ownership.stamp import (
    UNREADABLE,
    StampFilterError,
    inline_described,
    parse_answer,
    stamp_in_object,
    stamp_request,
    strip_object_json,
    strip_parsed_object,
    without_stamp,
)

A, B = "team-a", "team-b"
DA, DB = tenant_digest(A), tenant_digest(B)
GENS: frozenset[Generation] = frozenset({"v2"})


def row(name: str, **fields: Any) -> Operation:
    return Operation(name, "POST", "/openai/" + name.replace(".", "/"), GENS, "write", **fields)


# ------------------------------------------------------------------------- body paths


def test_paths_find_every_value_with_its_indices() -> None:
    body = {
        "thread": {
            "messages": [
                {"attachments": [{"file_id": "file-1"}, {"file_id": "file-2"}]},
                {"content": "no attachments"},
                {"attachments": None},
                {"attachments": [{"file_id": "file-3"}]},
            ]
        }
    }
    assert list(paths.find(body, "thread.messages[].attachments[].file_id")) == [
        ("thread.messages[0].attachments[0].file_id", "file-1"),
        ("thread.messages[0].attachments[1].file_id", "file-2"),
        ("thread.messages[3].attachments[0].file_id", "file-3"),
    ]
    assert list(paths.find({"file_ids": ["file-a", "file-b"]}, "file_ids[]")) == [
        ("file_ids[0]", "file-a"),
        ("file_ids[1]", "file-b"),
    ]
    # Shapes the path does not expect find nothing (the policy has checked the shapes).
    assert list(paths.find({"file_ids": "file-a"}, "file_ids[]")) == []
    assert list(paths.find({"thread": []}, "thread.messages[].file_ids[]")) == []
    assert list(paths.find({}, "assistant_id")) == []
    with pytest.raises(ValueError, match="bad body path"):
        paths.parse("a..b")


def test_paths_update_copies_and_never_changes_the_body() -> None:
    body: dict[str, Any] = {"a": {"items": [{"x": 1}, {"x": 2}]}, "other": [1]}
    changed = paths.update(body, "a.items[]", lambda item: {**item, "y": True})
    assert changed == {"a": {"items": [{"x": 1, "y": True}, {"x": 2, "y": True}]}, "other": [1]}
    assert body == {"a": {"items": [{"x": 1}, {"x": 2}]}, "other": [1]}
    assert changed["other"] is body["other"]
    assert paths.update(body, "missing.items[]", lambda item: 0) == body


# ------------------------------------------------------------------------- references

MESSAGE = row(
    "messages.create",
    refs=(Ref("file_ids[]", FILE), Ref("attachments[].file_id", FILE)),
)
RUN = row(
    "threads.create_and_run",
    refs=(
        Ref("assistant_id", ASSISTANT),
        Ref("thread.messages[].attachments[].file_id", FILE),
        Ref("thread.tool_resources.code_interpreter.file_ids[]", FILE),
        Ref("thread.tool_resources.file_search.vector_store_ids[]", VECTOR_STORE),
        Ref("thread.tool_resources.file_search.vector_stores[].file_ids[]", FILE),
    ),
)


def test_body_references_name_each_path_with_indices() -> None:
    body = {
        "assistant_id": "asst_1",
        "thread": {
            "messages": [{"attachments": [{"file_id": "file-x"}, {"file_id": "file-y"}]}],
            "tool_resources": {
                "code_interpreter": {"file_ids": ["file-x"]},
                "file_search": {"vector_stores": [{"file_ids": ["file-z"]}]},
            },
        },
    }
    assert body_references(RUN, body) == [
        Reference("assistant_id", ASSISTANT, "asst_1"),
        Reference("thread.messages[0].attachments[0].file_id", FILE, "file-x"),
        Reference("thread.messages[0].attachments[1].file_id", FILE, "file-y"),
        Reference("thread.tool_resources.code_interpreter.file_ids[0]", FILE, "file-x"),
        Reference("thread.tool_resources.file_search.vector_stores[0].file_ids[0]", FILE, "file-z"),
    ]
    # Each object once, at its first path: one lookup for file-x.
    assert [r.object_id for r in distinct(body_references(RUN, body))] == [
        "asst_1",
        "file-x",
        "file-y",
        "file-z",
    ]
    assert body_references(RUN, None) == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"role": "user", "content": "hi"},
        {"assistant_id": None, "thread": None},
        {"thread": {"messages": None}},
        {"thread": "not an object", "assistant_id": 7},
    ],
)
def test_a_body_without_the_paths_roots_names_nothing(body: dict[str, Any]) -> None:
    """The roots checked first (``paths.root``) skip what ``paths.find`` would find nothing
    under: absent or null roots, and shapes that do not fit."""
    assert body_references(RUN, body) == []
    assert [paths.root(ref.path) for ref in RUN.refs] == ["assistant_id", *["thread"] * 4]


def test_a_value_that_is_no_id_of_its_kind_is_malformed() -> None:
    refs = body_references(MESSAGE, {"attachments": [{"file_id": "file-ok"}, {"file_id": "x/.."}]})
    assert refs[1] == Reference("attachments[1].file_id", FILE, None)
    assert first_malformed(refs) == refs[1]
    assert first_malformed(refs[:1]) is None
    assert body_references(MESSAGE, {"file_ids": [7, None]}) == []  # no strings: no ids


def test_cursors_of_a_list_are_references_to_the_listed_kind() -> None:
    listing = Operation(
        "assistants.list", "GET", "/openai/assistants", GENS, "read", lists=ASSISTANT
    )
    query = [("api-version", "v"), ("limit", "5"), ("after", "asst_1"), ("before", "vs_1")]
    assert cursor_references(listing, query) == [
        Reference("after", ASSISTANT, "asst_1"),
        Reference("before", ASSISTANT, None),  # not an assistant id
    ]
    assert cursor_references(MESSAGE, query) == []


def test_reference_refusal_is_a_stable_400_naming_the_path() -> None:
    err = reference_not_found(FILE, "attachments[0].file_id")
    assert isinstance(err, BadRequestError)
    assert (err.status, err.code, err.param) == (
        400,
        "reference_not_found",
        "attachments[0].file_id",
    )
    assert err.message == "No file found with the id given at attachments[0].file_id."


def test_the_unknown_switch_decides_unowned_objects_only() -> None:
    assert may_use(DA, A, "deny") and not may_use(DB, A, "allow")
    assert may_use(None, A, "allow") and not may_use(None, A, "deny")


# ------------------------------------------------------------------------- stamps

ASSISTANTS_CREATE = row(
    "assistants.create",
    creates=Creation(ASSISTANT, id_field="id", stamp_at=("metadata",), inline=(NEW_VECTOR_STORES,)),
    returns=ASSISTANT,
)
UPLOAD = row("files.upload", creates=Creation(FILE, id_field="id", stamp_at=()), returns=FILE)
CREATE_AND_RUN = row(
    "threads.create_and_run",
    creates=Creation(
        THREAD,
        id_field="thread_id",
        stamp_at=("thread", "metadata"),
        inline=(NEW_THREAD_VECTOR_STORES,),
    ),
)


def test_creates_stamp_the_object_and_the_vector_stores_made_inline() -> None:
    body = {
        "model": "gpt-4o",
        "metadata": {"team": "x"},
        "tool_resources": {
            "file_search": {"vector_stores": [{"file_ids": ["file-1"]}, {"metadata": {"k": "v"}}]}
        },
    }
    stamped = stamp_request(ASSISTANTS_CREATE, body, DA)
    assert stamped is not None
    assert stamped["metadata"] == {"team": "x", STAMP_KEY: DA}
    assert stamped["tool_resources"]["file_search"]["vector_stores"] == [
        {"file_ids": ["file-1"], "metadata": {STAMP_KEY: DA}},
        {"metadata": {"k": "v", STAMP_KEY: DA}},
    ]
    assert body["metadata"] == {"team": "x"}  # the caller's body itself is not changed
    assert inline_described(ASSISTANTS_CREATE, body)
    assert not inline_described(ASSISTANTS_CREATE, {"model": "gpt-4o"})
    run = stamp_request(
        CREATE_AND_RUN,
        {"thread": {"tool_resources": {"file_search": {"vector_stores": [{}]}}}},
        DA,
    )
    assert run == {
        "thread": {
            "metadata": {STAMP_KEY: DA},
            "tool_resources": {"file_search": {"vector_stores": [{"metadata": {STAMP_KEY: DA}}]}},
        }
    }


def test_files_are_never_stamped_in_a_body_their_filename_is() -> None:
    assert stamp_request(UPLOAD, None, DA) is None
    assert stamp_request(UPLOAD, {"purpose": "assistants"}, DA) == {"purpose": "assistants"}
    stored = {"id": "file-1", "object": "file", "filename": stamp_filename(DA, "notes.txt")}
    assert stamp_in_object(stored, FILE) == DA
    assert stamp_in_object({"id": "file-2", "filename": "plain.txt"}, FILE) is None
    assert without_stamp(stored, FILE) == ({**stored, "filename": "notes.txt"}, True)
    stripped = json.loads(strip_object_json(json.dumps(stored).encode(), FILE))
    assert stripped["filename"] == "notes.txt"


@pytest.mark.parametrize("kind", [THREAD, ASSISTANT, VECTOR_STORE])
def test_answers_of_metadata_kinds_lose_the_stamp(kind: Kind) -> None:
    obj = {"id": "x", "metadata": {"a": "1", STAMP_KEY: DA}}
    assert json.loads(strip_object_json(json.dumps(obj).encode(), kind))["metadata"] == {"a": "1"}
    assert stamp_in_object(obj, kind) == DA
    unstamped = b'{"id":"x","metadata":{}}'
    assert strip_object_json(unstamped, kind) is unstamped


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":"thread_1","metadata":{"a":"1","gateway_owner":"d"}}',
        b'{"id":"thread_1","metadata":{}}',
        b'{"id":"thread_1","metadata":{"gateway_owner":"d","gateway_owner":"e"}}',
        b"[1]",
        b'"thread_1"',
        b"{not json",
        b"[" * 5000,
    ],
)
def test_a_create_answer_parsed_once_gives_what_each_parse_gave(body: bytes) -> None:
    """The create path parses its answer once (``parse_answer``) for the new id and the
    strip: the same id, the same bytes or the same refusal, and the parsed value unchanged."""
    creation = Creation(THREAD, id_field="id", stamp_at=("metadata",))
    answer = parse_answer(body)
    before = json.dumps(answer) if answer is not UNREADABLE else None
    assert created_id_in(creation, answer) == created_id(creation, body)
    try:
        expected: bytes | type[StampFilterError] = strip_object_json(body, THREAD)
    except StampFilterError:
        expected = StampFilterError
    if expected is StampFilterError:
        with pytest.raises(StampFilterError):
            strip_parsed_object(answer, body, THREAD)
    else:
        assert strip_parsed_object(answer, body, THREAD) == expected
    if before is not None:
        assert json.dumps(answer) == before


# ------------------------------------------------------------------------- lists


def item(kind: Kind, number: int, owner: str | None) -> dict[str, Any]:
    prefix = {"assistant": "asst_", "vector store": "vs_", "file": "file-"}[kind.name]
    obj: dict[str, Any] = {"id": f"{prefix}{number:03d}", "created_at": number}
    if kind is FILE:
        name = f"f{number}.txt"
        obj["filename"] = stamp_filename(owner, name) if owner else name
    else:
        obj["metadata"] = {"n": str(number), **({STAMP_KEY: owner} if owner else {})}
    return obj


class Upstream:
    """Azure's list of every tenant's objects, paged as the fake (and Azure) page them."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects
        self.queries: list[dict[str, str]] = []

    def page(self, query: str) -> bytes:
        q = dict(parse_qsl(query))
        self.queries.append(q)
        ids = [o["id"] for o in self.objects]
        start, end = 0, len(ids)
        if "after" in q:
            start = ids.index(q["after"]) + 1
        if "before" in q:
            end = ids.index(q["before"])
        window = self.objects[start:end]
        limit = int(q["limit"])
        data = window[-limit:] if "before" in q and "after" not in q else window[:limit]
        body = {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else "",
            "last_id": data[-1]["id"] if data else "",
            "has_more": len(window) > limit,
        }
        return json.dumps(body).encode()


def scan_all(
    upstream: Upstream, scan: ListScan, *, max_rounds: int = 1000
) -> tuple[dict[str, Any], int]:
    step: NextPage | Answer = NextPage(scan.first_query())
    rounds = 0
    while isinstance(step, NextPage):
        rounds += 1
        assert rounds <= max_rounds
        step = scan.add(upstream.page(step.query))
    return json.loads(step.body), rounds


def new_scan(
    kind: Kind, query: list[tuple[str, str]], unknown: str = "deny", pages: int = 10
) -> ListScan:
    return ListScan(kind, query, tenant=A, unknown=unknown, max_pages=pages)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", [ASSISTANT, VECTOR_STORE, FILE])
def test_a_list_shows_only_the_callers_objects_paged_right(kind: Kind) -> None:
    # 450 objects, team-a's every third one (150), interleaved with team-b's.
    objects = [item(kind, n, DA if n % 3 == 0 else DB) for n in range(450)]
    mine = [o["id"] for o in objects if stamp_in_object(o, kind) == DA]
    upstream = Upstream(objects)
    seen: list[str] = []
    query: list[tuple[str, str]] = [("api-version", "2024-05-01-preview"), ("limit", "40")]
    while True:
        answer, _ = scan_all(upstream, new_scan(kind, query))
        ids = [o["id"] for o in answer["data"]]
        assert len(ids) <= 40
        assert (answer["first_id"], answer["last_id"]) == (ids[0], ids[-1])
        for obj in answer["data"]:
            assert stamp_in_object(obj, kind) is None  # no stamp reaches the caller
        seen += ids
        if not answer["has_more"]:
            break
        query = [("api-version", "2024-05-01-preview"), ("limit", "40"), ("after", ids[-1])]
    assert seen == mine
    # Upstream was asked for full pages, with the caller's api-version.
    assert {q["limit"] for q in upstream.queries} == {str(PAGE_SIZE)}
    assert {q["api-version"] for q in upstream.queries} == {"2024-05-01-preview"}


def test_has_more_is_false_exactly_when_nothing_is_left() -> None:
    objects = [item(ASSISTANT, n, DA if n in (5, 150) else DB) for n in range(200)]
    upstream = Upstream(objects)
    answer, rounds = scan_all(upstream, new_scan(ASSISTANT, [("limit", "1")]))
    assert [o["id"] for o in answer["data"]] == ["asst_005"]
    assert answer["has_more"] is True and rounds == 1  # upstream had more
    answer, rounds = scan_all(
        upstream, new_scan(ASSISTANT, [("limit", "1"), ("after", "asst_005")])
    )
    assert [o["id"] for o in answer["data"]] == ["asst_150"]
    assert rounds == 2  # page 1 (6..105) held none of team-a's
    answer, _ = scan_all(upstream, new_scan(ASSISTANT, [("limit", "5"), ("after", "asst_150")]))
    assert answer == {
        "object": "list",
        "data": [],
        "first_id": "",
        "last_id": "",
        "has_more": False,
    }
    # Two kept, limit 2, upstream exhausted: no more.
    answer, _ = scan_all(upstream, new_scan(ASSISTANT, [("limit", "2")]))
    assert [o["id"] for o in answer["data"]] == ["asst_005", "asst_150"]
    assert answer["has_more"] is False


def test_before_walks_back_and_keeps_the_objects_nearest_the_cursor() -> None:
    objects = [item(VECTOR_STORE, n, DA if n % 10 == 0 else DB) for n in range(300)]
    upstream = Upstream(objects)
    answer, rounds = scan_all(
        upstream, new_scan(VECTOR_STORE, [("limit", "3"), ("before", "vs_250")])
    )
    assert [o["id"] for o in answer["data"]] == ["vs_220", "vs_230", "vs_240"]
    assert answer["has_more"] is True and rounds == 1
    assert upstream.queries[-1]["before"] == "vs_250" and "after" not in upstream.queries[-1]
    answer, rounds = scan_all(
        upstream, new_scan(VECTOR_STORE, [("limit", "20"), ("before", "vs_250")])
    )
    assert [o["id"] for o in answer["data"]] == [f"vs_{n:03d}" for n in range(50, 250, 10)]
    assert rounds == 2 and upstream.queries[-1]["before"] == "vs_150"  # the page's first id
    assert answer["has_more"] is True  # vs_000 .. vs_040 are left
    answer, _ = scan_all(upstream, new_scan(VECTOR_STORE, [("limit", "100"), ("before", "vs_250")]))
    assert len(answer["data"]) == 25 and answer["has_more"] is False


def test_after_and_before_together_page_forward_within_the_window() -> None:
    objects = [item(FILE, n, DA if n % 2 == 0 else DB) for n in range(400)]
    upstream = Upstream(objects)
    query = [("limit", "100"), ("after", "file-010"), ("before", "file-300")]
    answer, rounds = scan_all(upstream, new_scan(FILE, query))
    assert [o["id"] for o in answer["data"]] == [f"file-{n:03d}" for n in range(12, 212, 2)]
    assert answer["has_more"] is True and rounds == 2
    assert all(q["before"] == "file-300" for q in upstream.queries)


def test_the_scan_bound_answers_what_it_found_with_has_more() -> None:
    objects = [item(ASSISTANT, n, DA if n in (3, 950) else DB) for n in range(1000)]
    upstream = Upstream(objects)
    answer, rounds = scan_all(upstream, new_scan(ASSISTANT, [("limit", "20")], pages=3))
    assert rounds == 3
    assert [o["id"] for o in answer["data"]] == ["asst_003"]
    assert answer["has_more"] is True
    answer, rounds = scan_all(
        upstream, new_scan(ASSISTANT, [("limit", "20"), ("after", "asst_003")], pages=3)
    )
    assert (answer["data"], answer["has_more"], rounds) == ([], True, 3)
    answer, _ = scan_all(upstream, new_scan(ASSISTANT, [("limit", "20")], pages=10))
    assert [o["id"] for o in answer["data"]] == ["asst_003", "asst_950"]


def test_unstamped_objects_follow_the_unknown_switch_and_bad_stamps_are_no_ones() -> None:
    objects = [item(ASSISTANT, 1, None), item(ASSISTANT, 2, DA), item(ASSISTANT, 3, DB)]
    objects.append({"id": "asst_004", "metadata": {STAMP_KEY: "not a digest!"}})
    for unknown, expected in (("deny", ["asst_002"]), ("allow", ["asst_001", "asst_002"])):
        answer, _ = scan_all(Upstream(objects), new_scan(ASSISTANT, [], unknown=unknown))
        assert [o["id"] for o in answer["data"]] == expected


@pytest.mark.parametrize(
    "page",
    [
        b"not json",
        b"[]",
        b'{"object":"list","data":{}}',
        b'{"object":"list","data":[{"id":"thread_1"}],"has_more":false}',
        b'{"object":"list","data":["asst_1"],"has_more":false}',
        b'{"object":"list","data":[],"has_more":"no"}',
    ],
)
def test_an_unreadable_page_is_never_shown(page: bytes) -> None:
    with pytest.raises(ListPageError):
        new_scan(ASSISTANT, []).add(page)


def test_the_upstream_query_keeps_the_callers_parameters_and_encodes_cursors() -> None:
    scan = new_scan(
        FILE,
        [
            ("api-version", "2024-05-01-preview"),
            ("order", "asc"),
            ("limit", "7"),
            ("purpose", "assistants"),
        ],
    )
    assert (
        scan.first_query()
        == "api-version=2024-05-01-preview&order=asc&purpose=assistants&limit=100"
    )
    assert scan.limit == 7


def test_an_unpaged_list_is_asked_once_and_shows_only_the_callers_objects() -> None:
    objects = [item(FILE, n, DA if n % 2 else DB) for n in range(30)]
    scan = ListScan(
        FILE,
        [("api-version", "2024-05-01-preview"), ("purpose", "assistants")],
        tenant=A,
        unknown="deny",
        max_pages=10,
        paged=False,
    )
    assert scan.first_query() == "api-version=2024-05-01-preview&purpose=assistants"
    step = scan.add(json.dumps({"object": "list", "data": objects}).encode())
    assert isinstance(step, Answer)
    answer = json.loads(step.body)
    assert answer == {
        "object": "list",
        "data": [{**o, "filename": f"f{n}.txt"} for n, o in enumerate(objects) if n % 2],
    }
    step = ListScan(FILE, [], tenant=B, unknown="deny", max_pages=1, paged=False).add(
        json.dumps(
            {
                "object": "list",
                "data": objects[:1],
                "first_id": "x",
                "last_id": "x",
                "has_more": True,
            }
        ).encode()
    )
    assert isinstance(step, Answer)
    assert json.loads(step.body)["first_id"] == objects[0]["id"]
    assert json.loads(step.body)["has_more"] is True
