"""Thread-ownership rules and the owner stamp (pure)."""

from __future__ import annotations

import hashlib
import json

import pytest

from gateway.errors import NotFoundError
from gateway.operations.table import BY_NAME
from gateway.ownership.rules import (
    STAMP_KEY,
    check_owner,
    created_id,
    owned_by,
    owner_key,
    tenant_digest,
)
from gateway.ownership.stamp import (
    SseStampFilter,
    StampFilterError,
    strip_object_json,
)
from gateway.ownership.stamp import stamp_request as stamp_row


def thread_id_from_json(operation: str, body: bytes) -> str | None:
    creation = BY_NAME[operation].creates
    assert creation is not None
    return created_id(creation, body)


def stamp_request(operation: str, body: object, owner: str | None) -> object:
    return stamp_row(BY_NAME[operation], body, owner)  # type: ignore[arg-type]


strip_thread_json = strip_object_json

A = tenant_digest("team-a")


def test_owner_check() -> None:
    check_owner(A, "team-a", "deny")
    check_owner(None, "team-a", "allow")
    assert owned_by(A, "team-a") and not owned_by(A, "team-b")
    assert not owned_by("\u00e9" * 32, "team-a")  # never raises on a malformed owner
    for owner, unknown in ((tenant_digest("team-b"), "allow"), (None, "deny")):
        with pytest.raises(NotFoundError) as err:
            check_owner(owner, "team-a", unknown)  # type: ignore[arg-type]
        assert err.value.status == 404
        assert err.value.code == "thread_not_found"


def test_keys_and_digests_hide_tenants() -> None:
    assert owner_key("thread_abc") == "gw:own:{thread_abc}"
    assert "team-a" not in A
    assert tenant_digest("team-b") != A
    assert len(STAMP_KEY) <= 64


@pytest.mark.parametrize(
    ("operation", "body", "expected"),
    [
        ("threads.create", b'{"id":"thread_abc","object":"thread"}', "thread_abc"),
        ("threads.create_and_run", b'{"id":"run_1","thread_id":"thread_xyz"}', "thread_xyz"),
        ("threads.create", b'{"id":"thread_../x"}', None),
        ("threads.create", b'{"id":7}', None),
        ("threads.create", b"[]", None),
        ("threads.create", b"not json", None),
    ],
)
def test_thread_id_from_json(operation: str, body: bytes, expected: str | None) -> None:
    assert thread_id_from_json(operation, body) == expected


@pytest.mark.parametrize(
    ("chunks", "opened"),
    [
        ([b"event: thread.created\ndata: {}"], False),
        ([b'event: thread.created\ndata: {"id":"thread_1"}\n\nevent: x'], True),
        ([b"event: thread.created\r\ndata: {}\r\n\r\n"], True),  # no id, but an event
        ([b"event: thread.created\rdata: {}\r\r", b"e"], True),
        ([b": keep-alive\n\n", b": again\n\n"], False),  # comments open nothing
        ([b": keep-alive\n\nevent: thread.run.created\ndata: {}\n\n"], True),
    ],
)
def test_a_stream_opens_with_its_first_event(chunks: list[bytes], opened: bool) -> None:
    sse = SseStampFilter()
    for chunk in chunks:
        sse.feed(chunk)
    assert sse.opened is opened


# -- putting the stamp on requests


@pytest.mark.parametrize(
    ("operation", "body", "expected"),
    [
        ("threads.create", {}, {"metadata": {STAMP_KEY: A}}),
        ("threads.create", {"metadata": None}, {"metadata": {STAMP_KEY: A}}),
        (
            "threads.create",
            {"messages": [], "metadata": {"k": "v"}},
            {"messages": [], "metadata": {"k": "v", STAMP_KEY: A}},
        ),
        (
            "threads.create_and_run",
            {"assistant_id": "asst_1"},
            {"assistant_id": "asst_1", "thread": {"metadata": {STAMP_KEY: A}}},
        ),
        (
            "threads.create_and_run",
            {
                "assistant_id": "asst_1",
                "metadata": {"run": "1"},
                "thread": {"messages": [], "metadata": {"k": "v"}},
            },
            {
                "assistant_id": "asst_1",
                "metadata": {"run": "1"},
                "thread": {"messages": [], "metadata": {"k": "v", STAMP_KEY: A}},
            },
        ),
        ("threads.modify", {"metadata": {"k": "v"}}, {"metadata": {"k": "v", STAMP_KEY: A}}),
        ("threads.modify", {"metadata": None}, {"metadata": {STAMP_KEY: A}}),
        ("threads.modify", {"tool_resources": {}}, {"tool_resources": {}}),  # metadata untouched
        (
            "messages.create",
            {"role": "user", "content": "x", "metadata": {"k": "v"}},
            {"role": "user", "content": "x", "metadata": {"k": "v"}},
        ),
    ],
)
def test_stamp_request(
    operation: str, body: dict[str, object], expected: dict[str, object]
) -> None:
    assert stamp_request(operation, body, A) == expected


def test_no_owner_no_stamp() -> None:
    assert stamp_request("threads.modify", {"metadata": {}}, None) == {"metadata": {}}
    assert stamp_request("threads.retrieve", None, A) is None


# -- taking it off responses


def test_strip_thread_json() -> None:
    stamped = json.dumps(
        {"id": "thread_1", "object": "thread", "metadata": {"k": "v", STAMP_KEY: A}}
    ).encode()
    assert json.loads(strip_thread_json(stamped)) == {
        "id": "thread_1",
        "object": "thread",
        "metadata": {"k": "v"},
    }
    plain = b'{"id":"thread_1", "metadata": {"k": "v"}}'
    assert strip_thread_json(plain) is plain  # relayed byte for byte
    # A duplicate key the parser collapses still never lets the stamp through.
    dup = b'{"metadata":{"%s":"%s"},"metadata":{}}' % (STAMP_KEY.encode(), A.encode())
    assert STAMP_KEY.encode() not in strip_thread_json(dup)
    escaped = b'{"metadata":{"gateway\\u005fowner":"%s"}}' % A.encode()
    assert json.loads(strip_thread_json(escaped)) == {"metadata": {}}
    for bad in (b"not json", b"[]", b"\x1f\x8b\x08\x00gzip"):
        with pytest.raises(StampFilterError):
            strip_thread_json(bad)


def _created(metadata: dict[str, str], eol: bytes = b"\n") -> bytes:
    data = json.dumps({"id": "thread_new1", "object": "thread", "metadata": metadata})
    return b"event: thread.created" + eol + b"data: " + data.encode() + eol + eol


REST = (
    b'event: thread.run.created\ndata: {"id":"run_1","metadata":{}}\n\n'
    b'event: thread.message.delta\ndata: {"delta":{"content":[]}}\n\n'
    b"event: done\ndata: [DONE]\n\n"
)


def _events(stream: bytes) -> list[tuple[str, str]]:
    out = []
    for block in stream.replace(b"\r\n", b"\n").split(b"\n\n"):
        if block:
            lines = dict(line.split(b": ", 1) for line in block.split(b"\n"))
            out.append((lines[b"event"].decode(), lines[b"data"].decode()))
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_sse_filter_strips_the_stamp_whatever_the_chunking(size: int) -> None:
    stream = _created({"k": "v", STAMP_KEY: A}) + REST
    sse = SseStampFilter()
    out = b"".join(sse.feed(stream[i : i + size]) for i in range(0, len(stream), size))
    out += sse.finish()
    assert STAMP_KEY.encode() not in out
    assert out.endswith(REST)  # everything after the thread passes byte for byte
    events = _events(out)
    assert events[0][0] == "thread.created"
    assert json.loads(events[0][1])["metadata"] == {"k": "v"}
    assert sse.object_id == "thread_new1"


def test_sse_filter_passes_other_events_at_once() -> None:
    sse = SseStampFilter()
    assert sse.feed(b"event: thread.message.delta\nda") == b"event: thread.message.delta\nda"
    assert sse.feed(b"ta: {}\n\nevent: thread.created\n") == b"ta: {}\n\n"  # held: its type
    assert sse.feed(b'data: {"id":"thread_a"}\n\n') == (
        b'event: thread.created\ndata: {"id":"thread_a"}\n\n'
    )  # no stamp: as it was


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_sse_filter_line_endings(eol: bytes) -> None:
    sse = SseStampFilter()
    stream = _created({STAMP_KEY: A}, eol) + b"event: x" + eol + b"data: {}" + eol + eol
    out = b"".join(sse.feed(stream[i : i + 5]) for i in range(0, len(stream), 5)) + sse.finish()
    assert STAMP_KEY.encode() not in out
    assert out.endswith(b"event: x" + eol + b"data: {}" + eol + eol)


def test_sse_filter_holds_an_event_whose_type_comes_late() -> None:
    sse = SseStampFilter()
    data = json.dumps({"id": "thread_b", "metadata": {STAMP_KEY: A}}).encode()
    out = sse.feed(b"id: 1\ndata: " + data + b"\nevent: thread.created\n\n")
    assert STAMP_KEY.encode() not in out and b"event: thread.created" in out


def test_sse_filter_refuses_what_it_cannot_check() -> None:
    with pytest.raises(StampFilterError):
        SseStampFilter().feed(b"event: thread.created\ndata: {not json\n\n")
    with pytest.raises(StampFilterError):
        SseStampFilter(limit=100).feed(b"event: thread.created\ndata: " + b"x" * 200)
    # An incomplete thread.created at the end of the stream is dropped, as SSE clients do.
    sse = SseStampFilter()
    assert sse.feed(b'event: thread.created\ndata: {"metadata":{"%s":"' % _b(STAMP_KEY)) == b""
    assert sse.finish() == b""


def _b(text: str) -> bytes:
    return text.encode()


def test_the_tenant_digest_is_memoised_and_bounded() -> None:
    tenant = "iss-0123456789ab:memo-team"
    expected = hashlib.sha256(tenant.encode()).hexdigest()[:32]
    assert tenant_digest(tenant) == expected
    hits = tenant_digest.cache_info().hits
    assert tenant_digest(tenant) == expected
    assert tenant_digest.cache_info().hits == hits + 1
    assert tenant_digest.cache_info().maxsize == 4096
