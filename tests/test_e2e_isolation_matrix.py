"""The cross-tenant matrix (issue 14, items 2 and 7), driven by the operation table.

Two tenants (namespaces ``team-a`` and ``team-b``) each make one object of every kind through a
real gateway (real uvicorn, the session's real Redis, ownership on) in front of the recording
fake Azure. Then, for every row of ``OPERATIONS``:

* a row with an ``owner`` (the path names an owned object): tenant B sending A's ids answers
  404 with the kind's ``not_found_code`` and nothing reaches Azure; A's own read of the same
  target does reach it (the refusal is about the owner, not a bad request);
* a row with ``refs`` (body fields naming owned objects): tenant B's valid body with A's object
  put at each reference answers 400 ``reference_not_found`` whose ``param`` is the JSON path with
  indices, and nothing reaches Azure; the same body naming B's own objects is forwarded;
* a row with ``lists`` (a list of top-level owned objects): each tenant sees only its own, and a
  cursor naming the other tenant's object is refused.

The rows are read, never listed here: a new row with an owner, references or a list is in the
matrix at once, and a row whose references no sample body below reaches fails
``test_every_reference_is_exercised`` until one is written for it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.operations.row import Operation, Ref
from gateway.operations.table import OPERATIONS
from tests.servers import RedisServer
from tests.stack import V1, V2, Stack, running_stack
from tests.tenantobjects import Json, Tenant, make_tenant, ok

A, B = "team-a", "team-b"
NEWEST = "2025-04-01-preview"
#: The api-versions a row is tried on: the first of each generation, and the newest (the v1
#: API's ``v1``: its rows are tried given it; ``tests/test_e2e_v1_rows.py`` holds that an
#: absent one is the same row).
VERSIONS: dict[str, str] = {V1: "v1", V2: "v2", NEWEST: "v2", "v1": "openai-v1"}
#: Ownership of every kind, unknown objects refused; no limiter (this is about ownership).
OWNED: dict[str, Any] = {
    "threads": {"ownership": True, "unknown": "deny"},
    "rate_limit": {"enabled": False},
}


@dataclass(frozen=True)
class World:
    stack: Stack
    a: Tenant
    b: Tenant
    clients: dict[str, httpx.Client]

    def call(
        self,
        namespace: str,
        method: str,
        path: str,
        version: str,
        body: Json | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[httpx.Response, list[Any]]:
        """One request as ``namespace``; the answer and what reached the fake Azure."""
        since = len(self.stack.fake.requests)
        response = self.clients[namespace].request(
            method, path, params={"api-version": version, **(query or {})}, json=body
        )
        return response, list(self.stack.fake.requests[since:])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[World]:
    url = os.environ.get("GATEWAY_TEST_REDIS_URL") or redis_server.url
    with running_stack(tmp_path_factory.mktemp("matrix"), redis_url=url, overrides=OWNED) as stack:
        clients = {
            ns: httpx.Client(
                base_url=stack.url,
                headers={**stack.auth(namespace=ns), "Accept-Encoding": "identity"},
                timeout=10,
            )
            for ns in (A, B)
        }
        try:
            a = make_tenant(clients[A], A)
            b = make_tenant(clients[B], B)
            yield World(stack, a, b, clients)
        finally:
            for client in clients.values():
                client.close()


# ------------------------------------------------------------------ sample bodies
#
# Valid bodies per (operation, generation), naming the sending tenant's own objects wherever a
# body may reference one. Several samples where the document forbids fields together
# (``file_search.vector_store_ids`` vs ``vector_stores``).

Sample = Callable[[Tenant], Json]


def _attach(t: Tenant) -> list[Json]:
    return [
        {"file_id": t.files[0], "tools": [{"type": "code_interpreter"}]},
        {"file_id": t.files[1], "tools": [{"type": "file_search"}]},
    ]


def _resources_by_id(t: Tenant) -> Json:
    return {
        "code_interpreter": {"file_ids": [t.files[0], t.files[1]]},
        "file_search": {"vector_store_ids": [t.ids["vector_store_id"]]},
    }


def _resources_new_store(t: Tenant) -> Json:
    return {"file_search": {"vector_stores": [{"file_ids": [t.files[0], t.files[1]]}]}}


def _v2_message(t: Tenant) -> Json:
    return {"role": "user", "content": "see the files", "attachments": _attach(t)}


def _v1_message(t: Tenant) -> Json:
    return {"role": "user", "content": "see the files", "file_ids": [t.files[0], t.files[1]]}


def _v1_api_message(t: Tenant) -> Json:
    """An input message naming the tenant's file (``locate`` tries a list's last item)."""
    return {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "see the files"},
            {"type": "input_file", "file_id": t.files[0]},
        ],
    }


def _v1_api_output(t: Tenant) -> Json:
    """A function output naming the tenant's file."""
    return {
        "type": "function_call_output",
        "call_id": "call_abc",
        "output": [{"type": "input_image", "file_id": t.files[1], "detail": "auto"}],
    }


def _v2_tools() -> list[Json]:
    return [{"type": "code_interpreter"}, {"type": "file_search"}]


SAMPLES: dict[tuple[str, str], tuple[Sample, ...]] = {
    ("threads.create", "v1"): (lambda t: {"messages": [_v1_message(t)]},),
    ("threads.create", "v2"): (
        lambda t: {"messages": [_v2_message(t)], "tool_resources": _resources_by_id(t)},
        lambda t: {"tool_resources": _resources_new_store(t)},
    ),
    ("threads.modify", "v1"): (lambda t: {"metadata": {"k": "v"}},),
    ("threads.modify", "v2"): (
        lambda t: {"tool_resources": _resources_by_id(t)},
        lambda t: {"metadata": {"k": "v"}},
    ),
    ("messages.create", "v1"): (_v1_message,),
    ("messages.create", "v2"): (_v2_message,),
    ("messages.modify", "v1"): (lambda t: {"metadata": {"k": "v"}},),
    ("messages.modify", "v2"): (lambda t: {"metadata": {"k": "v"}},),
    ("runs.create", "v1"): (lambda t: {"assistant_id": t.ids["assistant_id"]},),
    ("runs.create", "v2"): (
        lambda t: {
            "assistant_id": t.ids["assistant_id"],
            "additional_messages": [_v2_message(t)],
        },
    ),
    ("runs.modify", "v1"): (lambda t: {"metadata": {"k": "v"}},),
    ("runs.modify", "v2"): (lambda t: {"metadata": {"k": "v"}},),
    ("runs.submit_tool_outputs", "v1"): (
        lambda t: {"tool_outputs": [{"tool_call_id": "call_abc", "output": "42"}]},
    ),
    ("runs.submit_tool_outputs", "v2"): (
        lambda t: {"tool_outputs": [{"tool_call_id": "call_abc", "output": "42"}]},
    ),
    ("threads.create_and_run", "v1"): (
        lambda t: {"assistant_id": t.ids["assistant_id"], "thread": {"messages": [_v1_message(t)]}},
    ),
    ("threads.create_and_run", "v2"): (
        lambda t: {
            "assistant_id": t.ids["assistant_id"],
            "thread": {"messages": [_v2_message(t)], "tool_resources": _resources_by_id(t)},
            "tool_resources": _resources_by_id(t),
        },
        lambda t: {
            "assistant_id": t.ids["assistant_id"],
            "thread": {"tool_resources": _resources_new_store(t)},
        },
    ),
    ("assistants.create", "v1"): (
        lambda t: {
            "model": "gpt-4",
            "tools": [{"type": "retrieval"}],
            "file_ids": [t.files[0], t.files[1]],
        },
    ),
    ("assistants.create", "v2"): (
        lambda t: {"model": "gpt-4o", "tools": _v2_tools(), "tool_resources": _resources_by_id(t)},
        lambda t: {
            "model": "gpt-4o",
            "tools": _v2_tools(),
            "tool_resources": _resources_new_store(t),
        },
    ),
    ("assistants.modify", "v1"): (
        lambda t: {"tools": [{"type": "retrieval"}], "file_ids": [t.files[0], t.files[1]]},
    ),
    ("assistants.modify", "v2"): (
        lambda t: {"tools": _v2_tools(), "tool_resources": _resources_by_id(t)},
    ),
    ("assistants.files.create", "v1"): (lambda t: {"file_id": t.files[2]},),
    ("vector_stores.create", "v2"): (
        lambda t: {"name": "mine", "file_ids": [t.files[0], t.files[1]]},
    ),
    ("vector_stores.modify", "v2"): (lambda t: {"name": "renamed"},),
    ("vector_stores.files.create", "v2"): (lambda t: {"file_id": t.files[2]},),
    ("vector_stores.file_batches.create", "v2"): (
        lambda t: {"file_ids": [t.files[1], t.files[2]]},
    ),
    ("responses.create", "openai-v1"): (
        lambda t: {
            "model": "gpt-4o",
            "conversation": t.ids["conversation_id"],
            "input": [_v1_api_message(t)],
            "tools": [{"type": "file_search", "vector_store_ids": [t.ids["vector_store_id"]]}],
        },
        lambda t: {
            "model": "gpt-4o",
            "input": "run it",
            "tools": [
                {
                    "type": "code_interpreter",
                    "container": {"type": "auto", "file_ids": [t.files[2]]},
                }
            ],
        },
        lambda t: {
            "model": "gpt-4o",
            "conversation": {"id": t.ids["conversation_id"]},
            "input": [_v1_api_output(t)],
        },
        lambda t: {"model": "gpt-4o", "previous_response_id": t.ids["response_id"], "input": "on"},
    ),
    ("conversations.create", "openai-v1"): (
        lambda t: {"items": [_v1_api_message(t)]},
        lambda t: {"items": [_v1_api_output(t)]},
    ),
    ("conversations.update", "openai-v1"): (lambda t: {"metadata": {"k": "v"}},),
    ("conversations.items.create", "openai-v1"): (
        lambda t: {"items": [_v1_api_message(t)]},
        lambda t: {"items": [_v1_api_output(t)]},
    ),
}


def versions_of(row: Operation) -> list[str]:
    return [v for v, gen in VERSIONS.items() if gen in row.generations]


def sample_bodies(row: Operation, version: str, tenant: Tenant) -> list[Json]:
    """The row's valid bodies on ``version`` for ``tenant`` (``[None]``-like empty for rows
    without a body)."""
    samples = SAMPLES.get((row.name, VERSIONS[version]))
    if samples is None:
        raise AssertionError(
            f"no sample body for {row.name} on {VERSIONS[version]}: add one to SAMPLES"
        )
    return [sample(tenant) for sample in samples]


def path_of(row: Operation, tenant: Tenant) -> str:
    return row.template.format(**tenant.ids)


# ------------------------------------------------------------------ reference paths

_STEP = re.compile(r"([A-Za-z_]+)(\[\])?")


def locate(body: Any, path: str) -> tuple[str, Callable[[str], None]] | None:
    """Where ``path`` (``a.b[].c``) is in ``body``: its concrete path (the last item of every
    list: ``a.b[1].c``) and a setter for the value there; None when the body lacks it."""
    steps = [_STEP.fullmatch(part) for part in path.split(".")]
    assert all(steps), f"bad reference path {path!r}"
    node = body
    concrete: list[str] = []
    parent: Any = None
    slot: Any = None
    for step in steps:
        assert step is not None
        key, is_list = step.group(1), step.group(2) is not None
        if not isinstance(node, dict) or key not in node:
            return None
        parent, slot, node = node, key, node[key]
        concrete.append(key)
        if is_list:
            if not isinstance(node, list) or not node:
                return None
            index = len(node) - 1
            parent, slot, node = node, index, node[index]
            concrete[-1] += f"[{index}]"

    def put(value: str) -> None:
        parent[slot] = value

    return ".".join(concrete), put


@dataclass(frozen=True)
class RefCase:
    row: Operation
    version: str
    ref: Ref
    sample: int


def _ref_cases() -> list[RefCase]:
    cases = []
    for row in OPERATIONS:
        for version in versions_of(row):
            if not row.refs:
                continue
            probe = Tenant("probe", _PROBE_IDS, ("file-p0", "file-p1", "file-p2"))
            for i, body in enumerate(sample_bodies(row, version, probe)):
                cases += [
                    RefCase(row, version, ref, i) for ref in row.refs if locate(body, ref.path)
                ]
    return cases


_PROBE_IDS = {
    "thread_id": "thread_p",
    "message_id": "msg_p",
    "run_id": "run_p",
    "step_id": "step_p",
    "assistant_id": "asst_p",
    "file_id": "file-p0",
    "vector_store_id": "vs_p",
    "batch_id": "vsfb_p",
    "conversation_id": "conv_p",
    "item_id": "msg_p",
    "response_id": "resp_p",
}
REF_CASES = _ref_cases()
OWNED_ROWS = [row for row in OPERATIONS if row.owner is not None]
LIST_ROWS = [row for row in OPERATIONS if row.lists is not None]
CURSOR_CASES = [
    (row, q.name) for row in LIST_ROWS for q in row.query if q.name in ("after", "before")
]


def _owned_cases() -> list[tuple[Operation, str]]:
    return [(row, version) for row in OWNED_ROWS for version in versions_of(row)]


def test_every_reference_is_exercised() -> None:
    """Every ``Ref`` of every row is reached by some sample body (so the matrix below tries
    it), and the table does have references, owned rows and lists to try."""
    covered = {(c.row.name, c.ref.path) for c in REF_CASES}
    missing = [(row.name, ref.path) for row in OPERATIONS for ref in row.refs]
    assert [m for m in missing if m not in covered] == []
    assert REF_CASES and OWNED_ROWS and LIST_ROWS and CURSOR_CASES


def owned_id_paths(body: Any, ids: set[str], at: str = "") -> set[str]:
    """The reference-style paths (``a.b[].c``) of every string in ``body`` that is one of
    ``ids``."""
    if isinstance(body, str):
        return {at} if body in ids else set()
    if isinstance(body, list):
        return set().union(*(owned_id_paths(item, ids, f"{at}[]") for item in body))
    if isinstance(body, dict):
        prefix = f"{at}." if at else ""
        return set().union(*(owned_id_paths(v, ids, prefix + k) for k, v in body.items()))
    return set()


@pytest.mark.parametrize("key", sorted(SAMPLES), ids=[f"{n}@{g}" for n, g in sorted(SAMPLES)])
def test_every_owned_id_a_sample_names_is_a_declared_reference(key: tuple[str, str]) -> None:
    """The other way round: wherever a valid body names an owned object, the row declares
    that field a reference (a field the table forgot would otherwise never be tried)."""
    rows = [row for row in OPERATIONS if row.name == key[0]]
    assert rows, f"SAMPLES names {key[0]}, which is no row"
    (row,) = rows
    assert key[1] in row.generations
    probe = Tenant("probe", _PROBE_IDS, ("file-p0", "file-p1", "file-p2"))
    named = set().union(
        *(
            owned_id_paths(s(probe), set(_PROBE_IDS.values()) | set(probe.files))
            for s in SAMPLES[key]
        )
    )
    assert named - {ref.path for ref in row.refs} == set()


def test_locate_renders_indices() -> None:
    body = {"a": {"b": [{"c": "x"}, {"c": "y"}]}, "ids": ["p", "q", "r"]}
    found = locate(body, "a.b[].c")
    assert found is not None and found[0] == "a.b[1].c"
    found[1]("z")
    assert body["a"] == {"b": [{"c": "x"}, {"c": "z"}]}
    ids = locate(body, "ids[]")
    assert ids is not None and ids[0] == "ids[2]"
    assert locate(body, "a.missing[].c") is None
    assert locate({"a": []}, "a[].c") is None


# ------------------------------------------------------------------ by path


@pytest.mark.parametrize(
    ("row", "version"),
    _owned_cases(),
    ids=[f"{row.name}@{version}" for row, version in _owned_cases()],
)
def test_foreign_object_in_the_path_is_404_not_forwarded(
    world: World, row: Operation, version: str
) -> None:
    assert row.owner is not None
    bodies = sample_bodies(row, version, world.b) if row.has_body else [None]
    target = path_of(row, world.a)
    response, reached = world.call(B, row.method, target, version, bodies[0])
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == row.owner.not_found_code
    assert error["type"] == "invalid_request_error"
    assert reached == []
    if row.method == "GET":
        # The owner's same read is forwarded: the 404 above was about the tenant.
        mine, reached = world.call(A, row.method, target, version)
        assert [r.path for r in reached] == [target], mine.text
    if row.deletes:
        lookup = next(r for r in OPERATIONS if r.name == row.owner.lookup)
        # files.v1.delete's kind is looked up by the Assistants' files.retrieve
        seen_on = version if VERSIONS[version] in lookup.generations else versions_of(lookup)[-1]
        still, _ = world.call(A, "GET", path_of(lookup, world.a), seen_on)
        assert still.status_code == 200, still.text


# ------------------------------------------------------------------ by reference


@pytest.mark.parametrize(
    "case",
    REF_CASES,
    ids=[f"{c.row.name}@{c.version}:{c.ref.path}#{c.sample}" for c in REF_CASES],
)
def test_foreign_reference_in_the_body_is_refused_not_forwarded(
    world: World, case: RefCase
) -> None:
    row, ref = case.row, case.ref
    target = path_of(row, world.b)
    body = sample_bodies(row, case.version, world.b)[case.sample]
    found = locate(body, ref.path)
    assert found is not None
    param, put = found
    put(world.a.of(ref.kind))
    response, reached = world.call(B, row.method, target, case.version, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {
        "code": "reference_not_found",
        "message": f"No {ref.kind.name} found with the id given at {param}.",
        "param": param,
        "type": "invalid_request_error",
    }
    assert reached == []
    # The same body naming B's own object is forwarded.
    own = sample_bodies(row, case.version, world.b)[case.sample]
    answer, reached = world.call(B, row.method, target, case.version, own)
    assert [r.path for r in reached][:1] == [target], answer.text
    assert reached[0].json() is not None


# ------------------------------------------------------------------ lists


@pytest.mark.parametrize("row", LIST_ROWS, ids=[row.name for row in LIST_ROWS])
def test_lists_show_only_the_callers_objects(world: World, row: Operation) -> None:
    assert row.lists is not None
    version = versions_of(row)[-1]
    seen = {}
    for tenant in (world.a, world.b):
        response, reached = world.call(tenant.namespace, "GET", row.template, version)
        assert reached, "a list is forwarded"
        seen[tenant.namespace] = {item["id"] for item in ok(response)["data"]}
    mine, theirs = world.a.of(row.lists), world.b.of(row.lists)
    assert mine in seen[A] and theirs not in seen[A]
    assert theirs in seen[B] and mine not in seen[B]
    assert not seen[A] & seen[B]


@pytest.mark.parametrize(
    ("row", "cursor"), CURSOR_CASES, ids=[f"{row.name}-{c}" for row, c in CURSOR_CASES]
)
def test_a_foreign_cursor_is_refused(world: World, row: Operation, cursor: str) -> None:
    assert row.lists is not None
    version = versions_of(row)[-1]
    response, reached = world.call(
        B, "GET", row.template, version, query={cursor: world.a.of(row.lists)}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("reference_not_found", cursor)
    assert reached == []
    own, reached = world.call(
        B, "GET", row.template, version, query={cursor: world.b.of(row.lists)}
    )
    assert own.status_code == 200 and reached, own.text
