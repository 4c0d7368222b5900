"""Ownership of the v1 API's objects, the pure parts: a response's stream (the owner stamp
nested at ``data.response`` in every ``response.*`` event, taken off event by event whatever
the chunking and line ends; the id from ``response.created``), references given as an id or
as ``{"id": ...}``, and a response Azure does not keep (``store: false``)."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.operations.apiversions import Generation
from gateway.operations.row import (
    CONVERSATION,
    FILE,
    RESPONSE,
    THREAD,
    VECTOR_STORE,
    Creation,
    Operation,
    Ref,
)
from gateway.operations.table import BY_NAME
from gateway.ownership.refs import Reference, body_references, first_malformed
from gateway.ownership.rules import STAMP_KEY, not_kept, tenant_digest
from gateway.ownership.stamp import SseStampFilter, StampFilterError

OWNER = tenant_digest("team-a")
GENS: frozenset[Generation] = frozenset({"v2"})
RESPONSE_ID = "resp_" + "0a1b2c3d" * 6


def response(status: str, metadata: dict[str, str], output: list[Any] | None = None) -> Any:
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "status": status,
        "metadata": metadata,
        "output": output or [],
    }


def event(kind: str, data: Any, eol: str, *, named: bool = True) -> bytes:
    """One server-sent event as Azure frames it (``event:`` line optional)."""
    head = f"event: {kind}{eol}" if named else ""
    return (head + "data: " + json.dumps(data) + eol + eol).encode()


TEXT = st.text(st.characters(codec="utf-8"), min_size=0, max_size=12)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Any], list[bytes], list[int]]:
    """A response stream: its events' data (as sent), their bytes, and chunk boundaries."""
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    caller_meta = draw(st.dictionaries(st.sampled_from(["a", "b", "topic"]), TEXT, max_size=2))
    stamped = {**caller_meta, STAMP_KEY: OWNER}
    datas: list[tuple[str, Any, bool]] = [
        (
            "response.created",
            {"type": "response.created", "response": response("in_progress", stamped)},
            True,
        ),
        (
            "response.in_progress",
            {"type": "response.in_progress", "response": response("in_progress", stamped)},
            True,
        ),
    ]
    for n, delta in enumerate(draw(st.lists(TEXT, max_size=4))):
        # Text that names the key, in plain and in escaped JSON, is not a stamp.
        if n == 1:
            delta += " gateway_owner "
        datas.append(
            (
                "response.output_text.delta",
                {"type": "response.output_text.delta", "item_id": "msg_1", "delta": delta},
                True,
            )
        )
    final = draw(st.sampled_from(["response.completed", "response.incomplete", "response.failed"]))
    # The last event's type sometimes only in its data (the SDK reads it from there).
    named = draw(st.booleans())
    datas.append((final, {"type": final, "response": response("completed", stamped)}, named))
    events = [event(k, d, eol, named=nm) for k, d, nm in datas]
    raw = b"".join(events)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=12))))
    return [d for _, d, _ in datas], events, cuts


def feed_in_chunks(sse: SseStampFilter, raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(raw)]
    outs = [sse.feed(raw[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
    return [*outs, sse.finish()]


def parsed_events(stream: bytes) -> list[Any]:
    blocks = re.split(rb"\r\n\r\n|\n\n|\r\r", stream)
    out = []
    for block in blocks:
        lines = re.split(rb"\r\n|\n|\r", block)
        data = [line[len(b"data: ") :] for line in lines if line.startswith(b"data: ")]
        if data:
            out.append(json.loads(b"\n".join(data)))
    return out


def unstamped(data: Any) -> Any:
    if "response" not in data:
        return data
    meta = {k: v for k, v in data["response"]["metadata"].items() if k != STAMP_KEY}
    return {**data, "response": {**data["response"], "metadata": meta}}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_response_stream_loses_the_stamp_whatever_the_chunking(
    stream: tuple[list[Any], list[bytes], list[int]],
) -> None:
    sent, events, cuts = stream
    sse = SseStampFilter("response.created", RESPONSE)
    out = b"".join(feed_in_chunks(sse, b"".join(events), cuts))
    assert OWNER.encode() not in out
    assert parsed_events(out) == [unstamped(d) for d in sent]
    assert sse.object_id == RESPONSE_ID


@settings(max_examples=100, deadline=None)
@given(streams())
def test_each_event_passes_as_soon_as_it_is_complete(
    stream: tuple[list[Any], list[bytes], list[int]],
) -> None:
    """Never the whole stream: once an event's bytes (and one more) are in, it is out."""
    sent, events, _ = stream
    raw = b"".join(events)
    ends = [sum(len(e) for e in events[: n + 1]) for n in range(len(events))]
    sse = SseStampFilter("response.created", RESPONSE)
    out, fed = b"", 0
    for k, end in enumerate(ends, start=1):
        upto = min(len(raw), end + 1)
        out += sse.feed(raw[fed:upto])
        fed = upto
        if upto > end:  # a last CR waits for the next byte: perhaps half a CRLF
            assert len(parsed_events(out)) >= k
    out += sse.finish()
    assert len(parsed_events(out)) == len(sent)


def test_events_that_cannot_carry_the_stamp_pass_byte_for_byte() -> None:
    sse = SseStampFilter("response.created", RESPONSE)
    created = event(
        "response.created",
        {"type": "response.created", "response": response("queued", {STAMP_KEY: OWNER})},
        "\n",
    )
    assert OWNER.encode() not in sse.feed(created)
    delta = (
        b"event: response.output_text.delta\n"
        b'data: {"type":"response.output_text.delta", "delta":"hi"}\n\n'
    )
    assert sse.feed(delta) == delta  # not parsed, not re-serialised
    done = b"data: [DONE]\n\n"
    assert sse.feed(done) == done
    assert sse.object_id == RESPONSE_ID


def test_a_stamp_under_any_event_name_is_taken_off() -> None:
    """The SDK reads a Responses event's type from its data: no ``event:`` line lets a stamp
    through, not even an escaped key or a duplicated ``response``."""
    sse = SseStampFilter("response.created", RESPONSE)
    hidden = [
        event(
            "error",
            {"type": "response.completed", "response": response("x", {STAMP_KEY: OWNER})},
            "\n",
        ),
        b'data: {"type":"response.completed","response":{"id":"%s",'
        b'"metadata":{"gateway\\u005fowner":"%s"}}}\n\n' % (RESPONSE_ID.encode(), OWNER.encode()),
        b'event: response.done\ndata: {"response":{"metadata":{"%s":"%s"}},'
        b'"response":{"metadata":{"%s":"%s"}}}\n\n'
        % (STAMP_KEY.encode(), OWNER.encode(), STAMP_KEY.encode(), OWNER.encode()),
    ]
    for chunk in hidden:
        out = sse.feed(chunk)
        assert OWNER.encode() not in out, out
        assert parsed_events(out)  # the event itself still passes


def test_the_id_comes_from_the_opening_event_only() -> None:
    sse = SseStampFilter("response.created", RESPONSE)
    other = {"type": "response.in_progress", "response": {"id": "resp_other", "metadata": {}}}
    sse.feed(event("response.in_progress", other, "\n"))
    assert sse.object_id is None
    opening = {"type": "response.created", "response": {"id": RESPONSE_ID, "metadata": {}}}
    sse.feed(event("response.created", opening, "\n", named=False))  # named by its data
    assert sse.object_id == RESPONSE_ID
    # A retrieved stream (no opening event expected) is filtered but gives no id.
    replay = SseStampFilter(None, RESPONSE)
    out = replay.feed(
        event(
            "response.created",
            {"type": "response.created", "response": response("c", {STAMP_KEY: OWNER})},
            "\r\n",
        )
    )
    assert OWNER.encode() not in out and replay.object_id is None


def test_what_cannot_be_checked_is_not_relayed() -> None:
    with pytest.raises(StampFilterError):
        SseStampFilter("response.created", RESPONSE).feed(
            b'event: response.created\ndata: {"response": \n\n'
        )
    with pytest.raises(StampFilterError):  # names the key but is no JSON
        SseStampFilter("response.created", RESPONSE).feed(
            b'event: response.x\ndata: {"gateway_owner": \n\n'
        )
    with pytest.raises(StampFilterError):  # bounded: an event is held at most this long
        SseStampFilter("response.created", RESPONSE, limit=1000).feed(
            b"event: response.completed\ndata: " + b"x" * 2000
        )
    # A response's events are larger than a thread's (the whole output): 16 MiB by default.
    assert SseStampFilter("response.created", RESPONSE).limit == 16 * 1024 * 1024
    assert SseStampFilter("thread.created", THREAD).limit == 256 * 1024


def test_thread_streams_keep_their_shape() -> None:
    """The Assistants filter still checks ``thread.created`` alone (a run's events pass at
    once, byte for byte, even unfinished)."""
    sse = SseStampFilter("thread.created", THREAD)
    part = b'event: thread.message.delta\ndata: {"delta":{"metadata":{"gateway_owner":"'
    assert sse.feed(part) == part


# ------------------------------------------------------------------------- references


def v1_row(**fields: Any) -> Operation:
    return Operation("responses.create", "POST", "/openai/v1/responses", GENS, "write", **fields)


RESPONSE_REFS = (
    Ref("conversation", CONVERSATION),
    Ref("previous_response_id", RESPONSE),
    Ref("input[].content[].file_id", FILE),
    Ref("tools[].vector_store_ids[]", VECTOR_STORE),
)


@pytest.mark.parametrize(
    ("conversation", "expected"),
    [
        ("conv_abc123", [Reference("conversation", CONVERSATION, "conv_abc123")]),
        ({"id": "conv_abc123"}, [Reference("conversation.id", CONVERSATION, "conv_abc123")]),
        ({"id": "thread_abc"}, [Reference("conversation.id", CONVERSATION, None)]),
        ({"id": 7}, [Reference("conversation.id", CONVERSATION, None)]),
        ({}, [Reference("conversation.id", CONVERSATION, None)]),
        ("../conv_1", [Reference("conversation", CONVERSATION, None)]),
        (None, []),
    ],
)
def test_a_conversation_is_named_by_an_id_or_an_object(conversation: Any, expected: Any) -> None:
    row = v1_row(refs=RESPONSE_REFS)
    assert body_references(row, {"conversation": conversation}) == expected


IDS = st.from_regex(r"conv_[A-Za-z0-9]{1,20}", fullmatch=True)


@given(
    st.lists(
        st.one_of(
            IDS.map(lambda i: ("str", i)),
            IDS.map(lambda i: ("obj", i)),
            st.just(("bad", "")),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_string_or_object_references_anywhere_in_a_list(forms: list[tuple[str, str]]) -> None:
    """Every value at a ``[]`` path is a reference, string or ``{id}``; an object without a
    string id is malformed (refused before any lookup), never skipped."""
    row = v1_row(refs=(Ref("items[].conversation", CONVERSATION),))
    items: list[Any] = []
    for form, value in forms:
        if form == "str":
            items.append({"conversation": value})
        elif form == "obj":
            items.append({"conversation": {"id": value, "extra": 1}})
        else:
            items.append({"conversation": {"name": "x"}})
    found = body_references(row, {"items": items})
    assert len(found) == len(forms)
    for n, ((form, value), ref) in enumerate(zip(forms, found, strict=True)):
        suffix = "" if form == "str" else ".id"
        assert ref.path == f"items[{n}].conversation{suffix}"
        assert ref.object_id == (None if form == "bad" else value)
    bad = [n for n, (form, _) in enumerate(forms) if form == "bad"]
    malformed = first_malformed(found)
    assert (malformed is None) == (not bad)
    if bad:
        assert malformed is not None and malformed.path == f"items[{bad[0]}].conversation.id"


def test_every_v1_body_reference_is_found_with_its_path() -> None:
    body = {
        "conversation": {"id": "conv_1"},
        "previous_response_id": "resp_2",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {
                "role": "user",
                "content": [
                    {"type": "input_file", "file_id": "assistant-f1"},
                    {"type": "input_image", "file_id": "file-i2"},
                ],
            },
        ],
        "tools": [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_3"]}],
    }
    found = body_references(v1_row(refs=RESPONSE_REFS), body)
    assert [(r.path, r.object_id) for r in found] == [
        ("conversation.id", "conv_1"),
        ("previous_response_id", "resp_2"),
        ("input[1].content[0].file_id", "assistant-f1"),
        ("input[1].content[1].file_id", "file-i2"),
        ("tools[1].vector_store_ids[0]", "vs_3"),
    ]
    # ``input`` given as a plain string names nothing.
    assert body_references(v1_row(refs=RESPONSE_REFS), {"input": "hello"}) == []


# ------------------------------------------------------------------------- store: false


@pytest.mark.parametrize(
    ("body", "kept"),
    [({}, True), ({"store": True}, True), ({"store": False}, False), ({"store": 0}, True)],
)
def test_a_response_azure_does_not_keep_is_not_recorded(body: dict[str, Any], kept: bool) -> None:
    creation = Creation(
        RESPONSE, "id", ("metadata",), "response.created", not_kept_when=("store", False)
    )
    assert not_kept(creation, body) is (not kept)
    assert not not_kept(Creation(RESPONSE, "id", ("metadata",)), {"store": False})


# ------------------------------------------------------------------------- the v1 rows


def test_the_v1_rows_carry_what_ownership_and_limits_read() -> None:
    """The real table: what each v1 row acts on, creates, returns and streams, its class."""
    expected = {
        "responses.create": ("write", None, RESPONSE),
        "responses.retrieve": ("read", RESPONSE, RESPONSE),
        "responses.delete": ("write", RESPONSE, None),
        "responses.cancel": ("write", RESPONSE, RESPONSE),
        "responses.input_items.list": ("read", RESPONSE, None),
        "conversations.create": ("write", None, CONVERSATION),
        "conversations.retrieve": ("read", CONVERSATION, CONVERSATION),
        "conversations.update": ("write", CONVERSATION, CONVERSATION),
        "conversations.delete": ("write", CONVERSATION, None),
        "conversations.items.create": ("write", CONVERSATION, None),
        "conversations.items.list": ("read", CONVERSATION, None),
        "conversations.items.retrieve": ("read", CONVERSATION, None),
        "conversations.items.delete": ("write", CONVERSATION, CONVERSATION),
        "files.v1.retrieve": ("read", FILE, FILE),
        "files.v1.delete": ("write", FILE, None),
    }
    for name, (op_class, owner, returns) in expected.items():
        row = BY_NAME[name]
        assert (row.op_class, row.owner, row.returns) == (op_class, owner, returns), name
    create = BY_NAME["responses.create"]
    assert create.creates is not None and create.streams
    assert (create.creates.kind, create.creates.sse_event) == (RESPONSE, "response.created")
    assert create.creates.not_kept_when == ("store", False)
    assert BY_NAME["responses.retrieve"].stream_query == "stream"
    assert RESPONSE.events is not None and RESPONSE.events.at == ("response",)
    assert BY_NAME["conversations.update"].restamp_at == ("metadata",)
    assert BY_NAME["responses.delete"].deletes and BY_NAME["conversations.delete"].deletes
