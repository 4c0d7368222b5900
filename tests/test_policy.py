"""Payload policy: every rule and boundary per api-version, with the exact code and param."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from gateway.errors import BadRequestError
from gateway.operations.apiversions import KNOWN_VERSIONS, ApiVersion
from gateway.operations.table import OPERATIONS
from gateway.policy.checks import (
    AZURE_LIMITS,
    POLICY_REASONS,
    PolicyLimits,
    limit_problems,
)
from gateway.policy.fields import UPLOAD_REASONS, V1_API_REASONS
from gateway.policy.jsonbody import dump_json
from tests.policycases import check_request
from tests.test_policy_assistants import BUILD_REFUSALS

BODY_OPERATIONS = frozenset(op.name for op in OPERATIONS if op.has_body)
BODYLESS_OPERATIONS = frozenset(op.name for op in OPERATIONS if not op.has_body and not op.upload)


V1 = KNOWN_VERSIONS["2024-02-15-preview"]
V2 = KNOWN_VERSIONS["2024-05-01-preview"]
D = PolicyLimits()
TAGGED = PolicyLimits(required_metadata_keys=frozenset({"cost_centre"}))
TAGS = {"cost_centre": "cc-42"}
FILES = [f"file-{i:03d}" for i in range(25)]


def msg(**fields: Any) -> dict[str, Any]:
    return {"role": "user", "content": "hi", **fields}


def text(n: int) -> str:
    return "x" * n


def meta(pairs: int, key_chars: int = 4, value_chars: int = 1) -> dict[str, str]:
    return {f"{i:0{key_chars}d}": "v" * value_chars for i in range(pairs)}


def part_text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def image_url(url: object, **extra: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def image_file(file_id: str = "file-img", **extra: Any) -> dict[str, Any]:
    return {"type": "image_file", "image_file": {"file_id": file_id, **extra}}


def attach(file_id: str, *tools: str) -> dict[str, Any]:
    return {"file_id": file_id, "tools": [{"type": t} for t in tools]}


def refused(
    operation: str, version: ApiVersion, body: Any, limits: PolicyLimits = D
) -> BadRequestError:
    with pytest.raises(BadRequestError) as info:
        check_request(operation, version, body, limits)
    err = info.value
    assert err.status == 400
    assert err.code in POLICY_REASONS
    return err


def accepted(
    operation: str, version: ApiVersion, body: Any, limits: PolicyLimits = D
) -> dict[str, Any] | None:
    before = copy.deepcopy(body)
    result = check_request(operation, version, body, limits)
    assert body == before, "the policy must not modify its input"
    return result


def case(
    op: str, version: ApiVersion, body: Any, code: str, param: str | None, limits: PolicyLimits = D
) -> Any:
    return pytest.param(
        op, version, body, limits, code, param, id=f"{op}-{version.generation}-{code}-{param}"
    )


def run_refusal_table(
    op: str, version: ApiVersion, body: Any, limits: PolicyLimits, code: str, param: str | None
) -> None:
    err = refused(op, version, body, limits)
    assert (err.code, err.param) == (code, param)


M = "messages.create"

# --- messages.create ----------------------------------------------------------------------

# fmt: off
MESSAGE_REFUSALS = [
    # fields, both versions
    case(M, V1, {"content": "hi"}, "missing_field", "role"),
    case(M, V2, {"role": "user"}, "missing_field", "content"),
    case(M, V2, msg(foo=1), "unknown_field", "foo"),
    case(M, V1, msg(assistant_id="asst_1"), "unknown_field", "assistant_id"),
    case(M, V2, msg(**{"odd key": 1}), "unknown_field", "<key>"),
    case(M, V1, msg(attachments=[]), "field_not_allowed_in_version", "attachments"),
    case(M, V2, msg(file_ids=["file-a"]), "field_not_allowed_in_version", "file_ids"),
    # role
    case(M, V1, msg(role="assistant"), "role_not_allowed", "role"),
    case(M, V2, msg(role="system"), "role_not_allowed", "role"),
    case(M, V2, msg(role="tool"), "role_not_allowed", "role"),
    case(M, V2, msg(role="User"), "role_not_allowed", "role"),
    case(M, V2, msg(role=1), "invalid_type", "role"),
    case(M, V2, msg(role=None), "invalid_type", "role"),
    # content: strings
    case(M, V1, msg(content=""), "content_empty", "content"),
    case(M, V2, msg(content=""), "content_empty", "content"),
    case(M, V1, msg(content=text(32_769)), "content_too_long", "content"),
    case(M, V2, msg(content=text(256_001)), "content_too_long", "content"),
    case(M, V2, msg(content=5), "invalid_type", "content"),
    case(M, V2, msg(content=None), "invalid_type", "content"),
    case(M, V2, msg(content={"type": "text"}), "invalid_type", "content"),
    case(M, V2, msg(content=True), "invalid_type", "content"),
    # content: parts (v2 only)
    case(M, V1, msg(content=[part_text("hi")]), "field_not_allowed_in_version", "content"),
    case(M, V2, msg(content=[]), "content_empty", "content"),
    case(M, V2, msg(content=[part_text("")]), "content_empty", "content[0].text"),
    case(M, V2, msg(content=["hi"]), "invalid_content_part", "content[0]"),
    case(M, V2, msg(content=[{"type": "video"}]), "invalid_content_part", "content[0].type"),
    case(M, V2, msg(content=[{"type": 3}]), "invalid_content_part", "content[0].type"),
    case(M, V2, msg(content=[{"text": "x"}]), "missing_field", "content[0].type"),
    case(M, V2, msg(content=[{"type": "text"}]), "missing_field", "content[0].text"),
    case(M, V2, msg(content=[{"type": "text", "text": 1}]), "invalid_type", "content[0].text"),
    case(M, V2, msg(content=[{**part_text("x"), "extra": 1}]), "unknown_field", "content[0].extra"),
    case(M, V2, msg(content=[part_text("a"), {**image_file(), "text": "x"}]), "unknown_field",
        "content[1].text"),
    case(M, V2, msg(content=[part_text(text(128_000)), part_text(text(128_001))]),
        "content_too_long", "content"),
    case(M, V2, msg(content=[part_text(text(256_001))]), "content_too_long", "content[0].text"),
    case(M, V2, msg(content=[image_file("img-1")]), "invalid_file_id",
        "content[0].image_file.file_id"),
    case(M, V2, msg(content=[image_file(detail="ultra")]), "invalid_value",
        "content[0].image_file.detail"),
    case(M, V2, msg(content=[image_file(url="https://a.b/c")]), "unknown_field",
        "content[0].image_file.url"),
    case(M, V2, msg(content=[{"type": "image_file", "image_file": "file-a"}]), "invalid_type",
        "content[0].image_file"),
    case(M, V2, msg(content=[{"type": "image_file", "image_file": {}}]), "missing_field",
        "content[0].image_file.file_id"),
    case(M, V2, msg(content=[{"type": "image_url", "image_url": {}}]), "missing_field",
        "content[0].image_url.url"),
    case(M, V2, msg(content=[image_url("https://a.example/x.png", detail=1)]), "invalid_type",
        "content[0].image_url.detail"),
    case(M, V2, msg(content=[image_url(7)]), "invalid_type", "content[0].image_url.url"),
    # image URL schemes and shapes
    *[
        case(M, V2, msg(content=[image_url(url)]), code, "content[0].image_url.url")
        for url, code in [
            ("http://a.example/x.png", "content_part_not_allowed"),
            ("HTTP://a.example/x.png", "content_part_not_allowed"),
            ("file:///etc/passwd", "content_part_not_allowed"),
            ("ftp://a.example/x.png", "content_part_not_allowed"),
            ("javascript:alert(1)", "content_part_not_allowed"),
            ("//a.example/x.png", "content_part_not_allowed"),
            ("a.example/x.png", "content_part_not_allowed"),
            ("", "content_part_not_allowed"),
            ("https://user:pw@a.example/x.png", "invalid_content_part"),
            ("https://@a.example/x.png", "invalid_content_part"),
            ("https:///x.png", "invalid_content_part"),
            ("https://a.example/x y.png", "invalid_content_part"),
            ("https://a.example/x.png\n", "invalid_content_part"),
            ("https://a.example\\@evil.example/", "invalid_content_part"),
            ("https://[::1/x.png", "invalid_content_part"),
            ("https://a.example/" + "x" * 8_200, "invalid_content_part"),
            ("data:text/html;base64,PGI+", "invalid_content_part"),
            ("data:image/svg+xml;base64,PHN2Zz4=", "invalid_content_part"),
            ("data:image/png,rawbytes", "invalid_content_part"),
            ("data:image/png;base64,not base64!", "invalid_content_part"),
            ("data:image/png;base64,", "invalid_content_part"),
        ]
    ],
    # v1 file_ids
    case(M, V1, msg(file_ids=FILES[:11]), "too_many_files", "file_ids"),
    case(M, V1, msg(file_ids=[]), "invalid_value", "file_ids"),
    case(M, V1, msg(file_ids="file-a"), "invalid_type", "file_ids"),
    case(M, V1, msg(file_ids=None), "invalid_type", "file_ids"),
    case(M, V1, msg(file_ids=["file-a", 1]), "invalid_type", "file_ids[1]"),
    case(M, V1, msg(file_ids=["file-a", "vs_1"]), "invalid_file_id", "file_ids[1]"),
    case(M, V1, msg(file_ids=["file-"]), "invalid_file_id", "file_ids[0]"),
    case(M, V1, msg(file_ids=["file-a/../b"]), "invalid_file_id", "file_ids[0]"),
    case(M, V1, msg(file_ids=["file-" + "a" * 65]), "invalid_file_id", "file_ids[0]"),
    case(M, V1, msg(file_ids=["file-a", "file-b", "file-a"]), "duplicate_file_id", "file_ids[2]"),
    # v2 attachments
    case(M, V2, msg(attachments=[attach(f, "file_search") for f in FILES[:11]]), "too_many_files",
        "attachments"),
    case(M, V2, msg(attachments={"file_id": "file-a"}), "invalid_type", "attachments"),
    case(M, V2, msg(attachments=["file-a"]), "invalid_type", "attachments[0]"),
    case(M, V2, msg(attachments=[{"file_id": "file-a"}]), "missing_field", "attachments[0].tools"),
    case(M, V2, msg(attachments=[{"tools": []}]), "missing_field", "attachments[0].file_id"),
    case(M, V2, msg(attachments=[{**attach("file-a"), "x": 1}]), "unknown_field",
        "attachments[0].x"),
    case(M, V2, msg(attachments=[attach("bad")]), "invalid_file_id", "attachments[0].file_id"),
    case(M, V2, msg(attachments=[attach("file-a"), attach("file-a")]), "duplicate_file_id",
        "attachments[1].file_id"),
    case(M, V2, msg(attachments=[attach("file-a", "retrieval")]), "attachment_tool_not_allowed",
        "attachments[0].tools[0].type"),
    case(M, V2, msg(attachments=[attach("file-a", "file_search", "function")]),
        "attachment_tool_not_allowed", "attachments[0].tools[1].type"),
    case(M, V2, msg(attachments=[attach("file-a", "file_search", "file_search")]), "invalid_value",
        "attachments[0].tools[1].type"),
    case(M, V2, msg(attachments=[{"file_id": "file-a", "tools": "file_search"}]), "invalid_type",
        "attachments[0].tools"),
    case(M, V2, msg(attachments=[{"file_id": "file-a", "tools": [{}]}]), "missing_field",
        "attachments[0].tools[0].type"),
    case(M, V2,
        msg(attachments=[{"file_id": "file-a", "tools": [{"type": "code_interpreter", "x": 1}]}]),
        "unknown_field", "attachments[0].tools[0].x"),
    # metadata
    case(M, V2, msg(metadata=meta(17)), "metadata_too_many_pairs", "metadata"),
    case(M, V1, msg(metadata=meta(17)), "metadata_too_many_pairs", "metadata"),
    case(M, V2, msg(metadata={"": "v"}), "metadata_key_empty", "metadata"),
    case(M, V2, msg(metadata={"k" * 65: "v"}), "metadata_key_too_long", "metadata"),
    case(M, V2, msg(metadata={"😀" * 65: "v"}), "metadata_key_too_long", "metadata"),
    case(M, V2, msg(metadata={"k": "v" * 513}), "metadata_value_too_long", "metadata.k"),
    case(M, V2, msg(metadata={"k": "😀" * 513}), "metadata_value_too_long", "metadata.k"),
    case(M, V2, msg(metadata={"k": "e\u0301" * 256 + "e"}), "metadata_value_too_long",
        "metadata.k"),
    case(M, V2, msg(metadata={"k": "👨\u200d👩\u200d👧" * 102 + "abc"}), "metadata_value_too_long",
        "metadata.k"),
    case(M, V2, msg(metadata={"k": 1}), "metadata_value_not_string", "metadata.k"),
    case(M, V2, msg(metadata={"k": None}), "metadata_value_not_string", "metadata.k"),
    case(M, V2, msg(metadata={"k": True}), "metadata_value_not_string", "metadata.k"),
    case(M, V2, msg(metadata={"k": {"nested": "x"}}), "metadata_value_not_string", "metadata.k"),
    case(M, V2, msg(metadata=[]), "invalid_type", "metadata"),
    case(M, V2, msg(metadata="k=v"), "invalid_type", "metadata"),
    # the first faulty pair in order, its first fault (one pass finds it, the refusal names it)
    case(M, V2, msg(metadata={"ok": "v", "k": 1, "": "x"}), "metadata_value_not_string",
        "metadata.k"),
    case(M, V2, msg(metadata={"ok": "v", "k" * 65: 1}), "metadata_key_too_long", "metadata"),
    case(M, V2, msg(metadata={"a": "v" * 513, "gateway_owner": "x"}), "metadata_value_too_long",
        "metadata.a"),
    case(M, V2, msg(metadata={"ok": "v", "gateway_owner": "v" * 513}), "metadata_key_reserved",
        "metadata"),
    # a field's path is the field's own name (checked against the closed field list first)
    case("runs.create", V2, {"assistant_id": "asst_a", "additional_messages": [{"role": "user",
        "content": ""}]}, "content_empty", "additional_messages[0].content"),
]
# fmt: on


@pytest.mark.parametrize(("op", "version", "body", "limits", "code", "param"), MESSAGE_REFUSALS)
def test_message_refusals(
    op: str, version: ApiVersion, body: Any, limits: PolicyLimits, code: str, param: str
) -> None:
    run_refusal_table(op, version, body, limits, code, param)


# fmt: off
MESSAGE_ACCEPTS = [
    (V1, msg()),
    (V1, msg(content=text(32_768))),
    (V2, msg(content=text(256_000))),
    (V2, msg(role="assistant")),
    (V1, msg(file_ids=FILES[:10])),
    (V1, msg(file_ids=["assistant-abc_DEF-1"], metadata=None)),
    (V2, msg(attachments=None)),
    (V2, msg(attachments=[])),
    (V2, msg(attachments=[attach(f, "file_search", "code_interpreter") for f in FILES[:10]])),
    (V2, msg(attachments=[attach("file-a")])),
    (V2, msg(content=[part_text(text(128_000)), part_text(text(128_000))])),
    (
        V2,
        msg(
            content=[
                part_text("a"),
                image_file(detail="high"),
                image_url("https://a.example/x.png?q=1#f", detail="auto"),
            ]
        ),
    ),
    (V2, msg(content=[image_url("HTTPS://A.EXAMPLE:8443/x.png")])),
    (V2, msg(content=[image_url("data:image/png;base64,iVBORw0KGgo=")])),
    (V2, msg(content=[image_url("data:image/webp;base64,UklGRg==")])),
    (V2, msg(metadata=meta(16))),
    (V2, msg(metadata={"k" * 64: "v" * 512})),
    (V2, msg(metadata={"😀" * 64: "😀" * 512})),
    (V2, msg(metadata={"k": "e\u0301" * 256})),
    (V2, msg(metadata={"k": "👨\u200d👩\u200d👧" * 102 + "ab"})),
    (V2, msg(metadata={"k": ""})),
    (V2, msg(metadata={})),
    (V2, msg(metadata=None)),
]
# fmt: on


@pytest.mark.parametrize(("version", "body"), MESSAGE_ACCEPTS)
def test_message_accepts(version: ApiVersion, body: dict[str, Any]) -> None:
    result = accepted(M, version, body)
    assert result == body
    assert result is not body


def test_unicode_lengths_are_code_points() -> None:
    family = "👨\u200d👩\u200d👧"
    assert len(family) == 5
    assert len("e\u0301") == 2
    assert len("😀" * 512) == 512
    assert len(("😀" * 512).encode("utf-16-le")) == 2048
    assert len(("😀" * 512).encode()) == 2048


# --- every place a message can enter: no bypass ---------------------------------------------

# fmt: off
BAD_MESSAGES = [
    (msg(role="system"), "role_not_allowed", "role"),
    (msg(content=""), "content_empty", "content"),
    (msg(content=text(256_001)), "content_too_long", "content"),
    (msg(foo=1), "unknown_field", "foo"),
    (msg(file_ids=["file-a"]), "field_not_allowed_in_version", "file_ids"),
    (msg(attachments=[attach(f) for f in FILES[:11]]), "too_many_files", "attachments"),
    (msg(attachments=[attach("file-a", "function")]), "attachment_tool_not_allowed",
        "attachments[0].tools[0].type"),
    (msg(metadata=meta(17)), "metadata_too_many_pairs", "metadata"),
    (msg(metadata={"k": "v" * 513}), "metadata_value_too_long", "metadata.k"),
    (msg(content=[image_url("http://a.example/x.png")]), "content_part_not_allowed",
        "content[0].image_url.url"),
    ({"content": "hi"}, "missing_field", "role"),
]
# fmt: on

ENTRY_POINTS = [
    ("messages.create", lambda m: m, ""),
    ("threads.create", lambda m: {"messages": [msg(), m]}, "messages[1]"),
    (
        "threads.create_and_run",
        lambda m: {"assistant_id": "asst_1", "thread": {"messages": [m]}},
        "thread.messages[0]",
    ),
    (
        "runs.create",
        lambda m: {"assistant_id": "asst_1", "additional_messages": [msg(), msg(), m]},
        "additional_messages[2]",
    ),
]


@pytest.mark.parametrize(("op", "wrap", "prefix"), ENTRY_POINTS, ids=[e[0] for e in ENTRY_POINTS])
@pytest.mark.parametrize(("bad", "code", "param"), BAD_MESSAGES, ids=[b[1] for b in BAD_MESSAGES])
def test_every_entry_point_applies_the_message_policy(
    op: str, wrap: Any, prefix: str, bad: Any, code: str, param: str | None
) -> None:
    err = refused(op, V2, wrap(bad))
    joined = ".".join(p for p in (prefix, param) if p) or None
    assert (err.code, err.param) == (code, joined)


@pytest.mark.parametrize(
    ("op", "wrap", "prefix"), ENTRY_POINTS[1:], ids=[e[0] for e in ENTRY_POINTS[1:]]
)
def test_nested_messages_must_be_objects(op: str, wrap: Any, prefix: str) -> None:
    err = refused(op, V2, wrap("hello"))
    assert (err.code, err.param) == ("invalid_type", prefix)


@pytest.mark.parametrize(
    ("op", "wrap", "prefix"), ENTRY_POINTS[1:], ids=[e[0] for e in ENTRY_POINTS[1:]]
)
def test_every_entry_point_applies_profile_limits(op: str, wrap: Any, prefix: str) -> None:
    limits = PolicyLimits(roles=frozenset({"user"}), max_content_chars=10)
    assert refused(op, V2, wrap(msg(role="assistant")), limits).param == f"{prefix}.role"
    err = refused(op, V2, wrap(msg(content=text(11))), limits)
    assert (err.code, err.param) == ("content_too_long", f"{prefix}.content")


def test_v1_threads_apply_v1_message_rules() -> None:
    err = refused("threads.create", V1, {"messages": [msg(role="assistant")]})
    assert (err.code, err.param) == ("role_not_allowed", "messages[0].role")
    err = refused(
        "threads.create_and_run",
        V1,
        {"assistant_id": "asst_1", "thread": {"messages": [msg(content=[part_text("x")])]}},
    )
    assert (err.code, err.param) == ("field_not_allowed_in_version", "thread.messages[0].content")


# --- profile-tightened limits ---------------------------------------------------------------

USER_ONLY = PolicyLimits(roles=frozenset({"user"}))
SHORT = PolicyLimits(max_content_chars=10)
NO_PARTS = PolicyLimits(allow_content_parts=False)
NO_IMAGE_FILE = PolicyLimits(allow_image_file=False)
NO_IMAGE_URL = PolicyLimits(allow_image_url=False)
DATA_ONLY = PolicyLimits(allow_external_image_urls=False)
TWO_FILES = PolicyLimits(max_files=2)
NO_FILES = PolicyLimits(max_files=0)
SEARCH_ONLY = PolicyLimits(attachment_tools=frozenset({"file_search"}))
SMALL_META = PolicyLimits(
    max_metadata_pairs=2, max_metadata_key_chars=8, max_metadata_value_chars=4
)
TWO_MESSAGES = PolicyLimits(max_thread_messages=2)
FEW_RESOURCES = PolicyLimits(max_code_interpreter_files=1, max_vector_stores=0)

# fmt: off
PROFILE_REFUSALS = [
    case(M, V2, msg(role="assistant"), "role_not_allowed", "role", USER_ONLY),
    case(M, V2, msg(content=text(11)), "content_too_long", "content", SHORT),
    case(M, V1, msg(content=text(11)), "content_too_long", "content", SHORT),
    case(M, V2, msg(content=[part_text(text(6)), part_text(text(5))]), "content_too_long",
        "content", SHORT),
    case(M, V2, msg(content=[part_text("x")]), "content_part_not_allowed", "content", NO_PARTS),
    case(M, V2, msg(content=[part_text("x"), image_file()]), "content_part_not_allowed",
        "content[1].type", NO_IMAGE_FILE),
    case(M, V2, msg(content=[image_url("https://a.example/x.png")]), "content_part_not_allowed",
        "content[0].type", NO_IMAGE_URL),
    case(M, V2, msg(content=[image_url("data:image/png;base64,AAAA")]), "content_part_not_allowed",
        "content[0].type", NO_IMAGE_URL),
    case(M, V2, msg(content=[image_url("https://a.example/x.png")]), "content_part_not_allowed",
        "content[0].image_url.url", DATA_ONLY),
    case(M, V2, msg(attachments=[attach(f) for f in FILES[:3]]), "too_many_files", "attachments",
        TWO_FILES),
    case(M, V1, msg(file_ids=FILES[:3]), "too_many_files", "file_ids", TWO_FILES),
    case(M, V1, msg(file_ids=FILES[:1]), "too_many_files", "file_ids", NO_FILES),
    case(M, V2, msg(attachments=[attach("file-a", "code_interpreter")]),
        "attachment_tool_not_allowed", "attachments[0].tools[0].type", SEARCH_ONLY),
    case(M, V2, msg(metadata=meta(3)), "metadata_too_many_pairs", "metadata", SMALL_META),
    case(M, V2, msg(metadata={"k" * 9: "v"}), "metadata_key_too_long", "metadata", SMALL_META),
    case(M, V2, msg(metadata={"k": "v" * 5}), "metadata_value_too_long", "metadata.k", SMALL_META),
    case(M, V2, msg(), "metadata_required_key_missing", "metadata", TAGGED),
    case(M, V2, msg(metadata=None), "metadata_required_key_missing", "metadata", TAGGED),
    case(M, V2, msg(metadata={"team": "x"}), "metadata_required_key_missing", "metadata", TAGGED),
    case("threads.create", V2, {"messages": [msg()] * 3}, "too_many_messages", "messages",
        TWO_MESSAGES),
    case("runs.create", V2, {"assistant_id": "asst_1", "additional_messages": [msg()] * 3},
        "too_many_messages", "additional_messages", TWO_MESSAGES),
    case("threads.create_and_run", V2,
        {"assistant_id": "asst_1", "thread": {"messages": [msg()] * 3}}, "too_many_messages",
        "thread.messages", TWO_MESSAGES),
    case("threads.create", V2, {"tool_resources": {"code_interpreter": {"file_ids": FILES[:2]}}},
        "too_many_code_interpreter_files", "tool_resources.code_interpreter.file_ids",
        FEW_RESOURCES),
    case("threads.create", V2, {"tool_resources": {"file_search": {"vector_store_ids": ["vs_1"]}}},
        "too_many_vector_stores", "tool_resources.file_search.vector_store_ids", FEW_RESOURCES),
    case("threads.create", V2, {"tool_resources": {"file_search": {"vector_stores": [{}]}}},
        "too_many_vector_stores", "tool_resources.file_search.vector_stores", FEW_RESOURCES),
    case("runs.create", V2, {"assistant_id": "asst_1", "instructions": text(11)},
        "content_too_long", "instructions", SHORT),
    case("runs.create", V2, {"assistant_id": "asst_1", "additional_instructions": text(11)},
        "content_too_long", "additional_instructions", SHORT),
    case("runs.submit_tool_outputs", V2,
        {"tool_outputs": [{"tool_call_id": "call_1", "output": text(11)}]}, "content_too_long",
        "tool_outputs[0].output", SHORT),
    # required tags on every created object, and on metadata updates
    case("threads.create", V2, {}, "metadata_required_key_missing", "metadata", TAGGED),
    case("threads.create", V2, {"metadata": TAGS, "messages": [msg()]},
        "metadata_required_key_missing", "messages[0].metadata", TAGGED),
    case("runs.create", V2, {"assistant_id": "asst_1"}, "metadata_required_key_missing", "metadata",
        TAGGED),
    case("runs.create", V2,
        {"assistant_id": "asst_1", "metadata": TAGS, "additional_messages": [msg()]},
        "metadata_required_key_missing", "additional_messages[0].metadata", TAGGED),
    case("threads.create_and_run", V2, {"assistant_id": "asst_1", "metadata": TAGS},
        "metadata_required_key_missing", "thread.metadata", TAGGED),
    case("threads.create_and_run", V2, {"assistant_id": "asst_1", "metadata": TAGS, "thread": {}},
        "metadata_required_key_missing", "thread.metadata", TAGGED),
    case("threads.create_and_run", V2, {"assistant_id": "asst_1", "thread": {"metadata": TAGS}},
        "metadata_required_key_missing", "metadata", TAGGED),
    case("messages.modify", V2, {"metadata": None}, "metadata_required_key_missing", "metadata",
        TAGGED),
    case("runs.modify", V2, {"metadata": {"team": "x"}}, "metadata_required_key_missing",
        "metadata", TAGGED),
    case("threads.modify", V2, {"metadata": {}}, "metadata_required_key_missing", "metadata",
        TAGGED),
]
# fmt: on


@pytest.mark.parametrize(("op", "version", "body", "limits", "code", "param"), PROFILE_REFUSALS)
def test_profile_refusals(
    op: str, version: ApiVersion, body: Any, limits: PolicyLimits, code: str, param: str
) -> None:
    run_refusal_table(op, version, body, limits, code, param)


# fmt: off
PROFILE_ACCEPTS = [
    (M, V2, msg(content=text(10)), SHORT),
    (M, V2, msg(content=[part_text(text(5)), part_text(text(5))]), SHORT),
    (M, V2, msg(content=[image_url("data:image/jpeg;base64,/9j/4AAQ")]), DATA_ONLY),
    (M, V2, msg(attachments=[attach(f) for f in FILES[:2]]), TWO_FILES),
    (M, V2, msg(metadata={"k" * 8: "v" * 4, "b": ""}), SMALL_META),
    (M, V2, msg(metadata={**TAGS, "team": "x"}), TAGGED),
    ("threads.create", V2, {"metadata": TAGS, "messages": [msg(metadata=TAGS)]}, TAGGED),
    ("threads.create_and_run", V2,
        {"assistant_id": "asst_1", "metadata": TAGS, "thread": {"metadata": TAGS}}, TAGGED),
    ("threads.modify", V2, {"tool_resources": None}, TAGGED),
    ("messages.modify", V2, {}, TAGGED),
    ("runs.modify", V2, {"metadata": TAGS}, TAGGED),
    ("threads.create", V2, {"messages": [msg()] * 2}, TWO_MESSAGES),
    ("runs.submit_tool_outputs", V2,
        {"tool_outputs": [{"tool_call_id": "call_1", "output": text(10)}]}, SHORT),
]
# fmt: on


@pytest.mark.parametrize(("op", "version", "body", "limits"), PROFILE_ACCEPTS)
def test_profile_accepts(op: str, version: ApiVersion, body: Any, limits: PolicyLimits) -> None:
    assert accepted(op, version, body, limits) == body


def test_unchecked_loose_limits_are_still_clamped_to_azure() -> None:
    loose = dataclasses.replace(
        D, max_files=50, max_metadata_pairs=40, roles=frozenset({"user", "assistant", "system"})
    )
    assert (
        refused(M, V2, msg(attachments=[attach(f) for f in FILES[:11]]), loose).code
        == "too_many_files"
    )
    assert refused(M, V2, msg(metadata=meta(17)), loose).code == "metadata_too_many_pairs"
    assert refused(M, V2, msg(role="system"), loose).code == "role_not_allowed"
    huge = dataclasses.replace(D, max_content_chars=10**9)
    assert refused(M, V1, msg(content=text(32_769)), huge).code == "content_too_long"


# --- threads --------------------------------------------------------------------------------

T, TM, CR = "threads.create", "threads.modify", "threads.create_and_run"


def resources(**kinds: Any) -> dict[str, Any]:
    return {"tool_resources": kinds}


# fmt: off
THREAD_REFUSALS = [
    case(T, V2, {"messages": msg()}, "invalid_type", "messages"),
    case(T, V2, {"messages": [msg()] * 101}, "too_many_messages", "messages"),
    case(T, V2, {"messages": [], "title": "x"}, "unknown_field", "title"),
    case(T, V1, resources(), "field_not_allowed_in_version", "tool_resources"),
    case(T, V2, {"tool_resources": []}, "invalid_type", "tool_resources"),
    case(T, V2, resources(retrieval={}), "unknown_field", "tool_resources.retrieval"),
    case(T, V2, resources(code_interpreter={"file_ids": FILES[:21]}),
        "too_many_code_interpreter_files", "tool_resources.code_interpreter.file_ids"),
    case(T, V2, resources(code_interpreter={"file_ids": ["file-a", "x"]}), "invalid_file_id",
        "tool_resources.code_interpreter.file_ids[1]"),
    case(T, V2, resources(code_interpreter={"file_ids": ["file-a", "file-a"]}), "duplicate_file_id",
        "tool_resources.code_interpreter.file_ids[1]"),
    case(T, V2, resources(code_interpreter={"vector_store_ids": []}), "unknown_field",
        "tool_resources.code_interpreter.vector_store_ids"),
    case(T, V2, resources(code_interpreter=None), "invalid_type",
        "tool_resources.code_interpreter"),
    case(T, V2, resources(file_search={}), "missing_field",
        "tool_resources.file_search.vector_store_ids"),
    case(T, V2, resources(file_search={"vector_store_ids": [], "vector_stores": []}),
        "invalid_value", "tool_resources.file_search"),
    case(T, V2, resources(file_search={"vector_store_ids": ["vs_1", "vs_2"]}),
        "too_many_vector_stores", "tool_resources.file_search.vector_store_ids"),
    case(T, V2, resources(file_search={"vector_store_ids": ["file-1"]}), "invalid_value",
        "tool_resources.file_search.vector_store_ids[0]"),
    case(T, V2, resources(file_search={"vector_stores": [{}, {}]}), "too_many_vector_stores",
        "tool_resources.file_search.vector_stores"),
    case(T, V2, resources(file_search={"vector_stores": [{"chunking_strategy": {}}]}),
        "missing_field", "tool_resources.file_search.vector_stores[0].chunking_strategy.type"),
    case(T, V2, resources(file_search={"vector_stores": [{"file_ids": ["bad"]}]}),
        "invalid_file_id", "tool_resources.file_search.vector_stores[0].file_ids[0]"),
    case(T, V2, resources(file_search={"vector_stores": [{"metadata": meta(17)}]}),
        "metadata_too_many_pairs", "tool_resources.file_search.vector_stores[0].metadata"),
    case(T, V2, resources(file_search={"vector_stores": [{"metadata": None}]}), "invalid_type",
        "tool_resources.file_search.vector_stores[0].metadata"),
    case(T, V2, {"metadata": {"k": "v" * 513}}, "metadata_value_too_long", "metadata.k"),
    case(TM, V2, {"messages": []}, "unknown_field", "messages"),
    case(TM, V1, resources(), "field_not_allowed_in_version", "tool_resources"),
    case(TM, V2, resources(file_search={"vector_stores": []}), "unknown_field",
        "tool_resources.file_search.vector_stores"),
    case(TM, V2, {"metadata": meta(17)}, "metadata_too_many_pairs", "metadata"),
    # A thread's metadata keeps one of Azure's 16 pairs for the gateway's owner stamp.
    case(T, V2, {"metadata": meta(16)}, "metadata_too_many_pairs", "metadata"),
    case(TM, V2, {"metadata": meta(16)}, "metadata_too_many_pairs", "metadata"),
    case(CR, V2, {"assistant_id": "asst_1", "thread": {"metadata": meta(16)}},
         "metadata_too_many_pairs", "thread.metadata"),
    # The stamp's key is the gateway's in every metadata map a caller sends.
    case(T, V2, {"metadata": {"a": "b", "gateway_owner": "x"}}, "metadata_key_reserved",
         "metadata"),
    case(TM, V1, {"metadata": {"gateway_owner": "x"}}, "metadata_key_reserved", "metadata"),
    case(CR, V2, {"assistant_id": "asst_1", "thread": {"metadata": {"gateway_owner": "x"}}},
         "metadata_key_reserved", "thread.metadata"),
    case(CR, V2, {"assistant_id": "asst_1", "metadata": {"gateway_owner": "x"}},
         "metadata_key_reserved", "metadata"),
    case(T, V2, {"messages": [msg(metadata={"gateway_owner": ""})]}, "metadata_key_reserved",
         "messages[0].metadata"),
    case(T, V2, resources(file_search={"vector_stores": [{"metadata": {"gateway_owner": "x"}}]}),
         "metadata_key_reserved", "tool_resources.file_search.vector_stores[0].metadata"),
    case("messages.modify", V2, {"metadata": {"gateway_owner": "x"}}, "metadata_key_reserved",
         "metadata"),
    case("runs.modify", V2, {"metadata": {"gateway_owner": "x"}}, "metadata_key_reserved",
         "metadata"),
    case("messages.modify", V2, {"role": "user"}, "unknown_field", "role"),
    case("messages.modify", V2, {"metadata": {"k": 1}}, "metadata_value_not_string", "metadata.k"),
    case("runs.modify", V1, {"assistant_id": "asst_1"}, "unknown_field", "assistant_id"),
    case("runs.modify", V2, {"metadata": "x"}, "invalid_type", "metadata"),
]
# fmt: on


@pytest.mark.parametrize(("op", "version", "body", "limits", "code", "param"), THREAD_REFUSALS)
def test_thread_refusals(
    op: str, version: ApiVersion, body: Any, limits: PolicyLimits, code: str, param: str
) -> None:
    run_refusal_table(op, version, body, limits, code, param)


# fmt: off
THREAD_ACCEPTS = [
    (T, V1, {}),
    (T, V1, {"messages": [msg(file_ids=["file-a"])], "metadata": {"a": "b"}}),
    (T, V2, {"messages": [msg(role="assistant")] * 32, "metadata": None}),
    (
        T,
        V2,
        resources(
            code_interpreter={"file_ids": FILES[:20]}, file_search={"vector_store_ids": ["vs_abc"]}
        ),
    ),
    (
        T,
        V2,
        resources(
            code_interpreter={},
            file_search={"vector_stores": [{"file_ids": FILES[:3], "metadata": {"k": "v"}}]},
        ),
    ),
    (T, V2, {"tool_resources": None}),
    (TM, V1, {"metadata": {"k": "v"}}),
    (TM, V2, resources(file_search={"vector_store_ids": []})),
    ("messages.modify", V1, {"metadata": None}),
    ("messages.modify", V2, {"metadata": meta(16)}),
    (M, V2, msg(metadata=meta(16))),
    (T, V2, {"metadata": meta(15)}),
    (TM, V2, {"metadata": meta(15)}),
    (CR, V2, {"assistant_id": "asst_1", "thread": {"metadata": meta(15)}}),
    (T, V2, {"metadata": {"Gateway_Owner": "x", "gateway_owner2": "y"}}),  # other keys
    ("messages.modify", V2, {}),
    ("runs.modify", V2, {"metadata": {"k": "v"}}),
]
# fmt: on


def test_thread_metadata_messages_say_why() -> None:
    err = refused(T, V2, {"metadata": meta(16)})
    assert err.message == (
        "Metadata may have at most 15 key-value pairs (the gateway keeps one "
        "of Azure's 16 for itself)."
    )
    tight = dataclasses.replace(D, max_metadata_pairs=4)
    assert refused(T, V2, {"metadata": meta(5)}, tight).message == (
        "Metadata may have at most 4 key-value pairs."
    )
    assert "reserved" in refused(M, V2, msg(metadata={"gateway_owner": "x"})).message


@pytest.mark.parametrize(("op", "version", "body"), THREAD_ACCEPTS)
def test_thread_accepts(op: str, version: ApiVersion, body: Any) -> None:
    assert accepted(op, version, body) == body


# --- runs -----------------------------------------------------------------------------------

R, S = "runs.create", "runs.submit_tool_outputs"


def run(**fields: Any) -> dict[str, Any]:
    return {"assistant_id": "asst_abc123", **fields}


def fn(name: str = "lookup", **extra: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, **extra}}


# fmt: off
RUN_REFUSALS = [
    case(R, V2, {}, "missing_field", "assistant_id"),
    case(R, V2, {"assistant_id": "asst_1", "bogus": 1, "assistant": 1}, "unknown_field", "bogus"),
    case(R, V2, {"model": "gpt-4o"}, "missing_field", "assistant_id"),
    case(R, V2, run(assistant_id="asst-1"), "invalid_value", "assistant_id"),
    case(R, V2, run(assistant_id="asst_1/../x"), "invalid_value", "assistant_id"),
    case(R, V2, run(assistant_id=1), "invalid_type", "assistant_id"),
    case(R, V2, run(assistant_id=None), "invalid_type", "assistant_id"),
    case(R, V2, run(model=""), "invalid_value", "model"),
    case(R, V2, run(model="m" * 257), "invalid_value", "model"),
    case(R, V2, run(model=4), "invalid_type", "model"),
    case(R, V2, run(instructions=text(256_001)), "content_too_long", "instructions"),
    case(R, V1, run(instructions=text(32_769)), "content_too_long", "instructions"),
    case(R, V2, run(additional_instructions=5), "invalid_type", "additional_instructions"),
    case(R, V2, run(temperature=2.0001), "invalid_value", "temperature"),
    case(R, V2, run(temperature=-0.1), "invalid_value", "temperature"),
    case(R, V2, run(temperature=True), "invalid_type", "temperature"),
    case(R, V2, run(temperature="1"), "invalid_type", "temperature"),
    case(R, V2, run(top_p=1.01), "invalid_value", "top_p"),
    case(R, V2, run(top_p=float("nan")), "invalid_value", "top_p"),
    case(R, V2, run(max_prompt_tokens=255), "invalid_value", "max_prompt_tokens"),
    case(R, V2, run(max_completion_tokens=256.5), "invalid_type", "max_completion_tokens"),
    case(R, V2, run(max_completion_tokens=False), "invalid_type", "max_completion_tokens"),
    case(R, V2, run(stream="true"), "invalid_type", "stream"),
    case(R, V2, run(stream=1), "invalid_type", "stream"),
    case(R, V2, run(parallel_tool_calls=None), "invalid_type", "parallel_tool_calls"),
    case(R, V2, run(tool_resources={}), "unknown_field", "tool_resources"),
    case(R, V2, run(thread={}), "unknown_field", "thread"),
    case(R, V2, run(additional_messages=msg()), "invalid_type", "additional_messages"),
    case(R, V2, run(additional_messages=[msg()] * 101), "too_many_messages",
        "additional_messages"),
    case(R, V2, run(truncation_strategy={}), "missing_field", "truncation_strategy.type"),
    case(R, V2, run(truncation_strategy={"type": "first"}), "invalid_value",
        "truncation_strategy.type"),
    case(R, V2, run(truncation_strategy={"type": "last_messages", "last_messages": 0}),
        "invalid_value", "truncation_strategy.last_messages"),
    case(R, V2, run(truncation_strategy={"type": "auto", "x": 1}), "unknown_field",
        "truncation_strategy.x"),
    case(R, V2, run(tool_choice="always"), "invalid_value", "tool_choice"),
    case(R, V2, run(tool_choice=1), "invalid_type", "tool_choice"),
    case(R, V2, run(tool_choice={"type": "function", "function": {}}), "missing_field",
        "tool_choice.function.name"),
    case(R, V2, run(tool_choice={"type": "function", "function": {"name": "a b"}}), "invalid_value",
        "tool_choice.function.name"),
    case(R, V2, run(tool_choice={"type": "file_search", "function": {"name": "f"}}),
        "unknown_field", "tool_choice.function"),
    case(R, V2, run(tool_choice={"type": "retrieval"}), "invalid_value", "tool_choice.type"),
    case(R, V2, run(response_format="json"), "invalid_value", "response_format"),
    case(R, V2, run(response_format={"type": "xml"}), "invalid_value", "response_format.type"),
    case(R, V2, run(response_format={"type": "json_schema"}), "missing_field",
        "response_format.json_schema"),
    case(R, V2, run(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
        "missing_field", "response_format.json_schema.name"),
    case(R, V2,
        run(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": []}}),
        "invalid_type", "response_format.json_schema.schema"),
    case(R, V2, run(response_format={"type": "text", "json_schema": {}}), "unknown_field",
        "response_format.json_schema"),
    case(R, V2, run(tools={"type": "code_interpreter"}), "invalid_type", "tools"),
    case(R, V2, run(tools=[{"type": "code_interpreter"}] * 21), "invalid_value", "tools"),
    case(R, V2, run(tools=[{}]), "missing_field", "tools[0].type"),
    case(R, V2, run(tools=[{"type": "retrieval"}]), "field_not_allowed_in_version",
        "tools[0].type"),
    case(R, V1, run(tools=[{"type": "file_search"}]), "field_not_allowed_in_version",
        "tools[0].type"),
    case(R, V2, run(tools=[{"type": "browser"}]), "invalid_value", "tools[0].type"),
    case(R, V2, run(tools=[{"type": "code_interpreter", "function": {}}]), "unknown_field",
        "tools[0].function"),
    case(R, V2, run(tools=[{"type": "function"}]), "missing_field", "tools[0].function"),
    case(R, V2, run(tools=[fn("a b")]), "invalid_value", "tools[0].function.name"),
    case(R, V2, run(tools=[fn("f" * 65)]), "invalid_value", "tools[0].function.name"),
    case(R, V2, run(tools=[fn(x=1)]), "unknown_field", "tools[0].function.x"),
    case(R, V2, run(tools=[fn(parameters="{}")]), "invalid_type", "tools[0].function.parameters"),
    case(R, V2, run(tools=[fn(strict="yes")]), "invalid_type", "tools[0].function.strict"),
    case(R, V2, run(tools=[{"type": "file_search", "file_search": {"max_num_results": 51}}]),
        "invalid_value", "tools[0].file_search.max_num_results"),
    case(
        R,
        V2,
        run(
            tools=[
                {"type": "file_search", "file_search": {"ranking_options": {"score_threshold": 2}}}
            ]
        ),
        "invalid_value",
        "tools[0].file_search.ranking_options.score_threshold",
    ),
    case(R, V2, run(metadata=meta(17)), "metadata_too_many_pairs", "metadata"),
    # v1 run bodies: only assistant_id, model, instructions, tools, metadata
    *[
        case(R, V1, run(**{field: value}), "field_not_allowed_in_version", field)
        for field, value in [
            ("stream", True),
            ("temperature", 1),
            ("top_p", 1),
            ("additional_instructions", "x"),
            ("additional_messages", []),
            ("max_prompt_tokens", 256),
            ("truncation_strategy", None),
            ("tool_choice", "auto"),
            ("response_format", "auto"),
            ("parallel_tool_calls", True),
        ]
    ],
    # create thread and run
    case(CR, V2, {"thread": {}}, "missing_field", "assistant_id"),
    case(CR, V2, run(thread=[]), "invalid_type", "thread"),
    case(CR, V2, run(thread=None), "invalid_type", "thread"),
    case(CR, V2, run(thread={"foo": 1}), "unknown_field", "thread.foo"),
    case(CR, V2, run(thread={"metadata": meta(17)}), "metadata_too_many_pairs", "thread.metadata"),
    case(CR, V2, run(thread={"tool_resources": {"code_interpreter": {"file_ids": FILES[:21]}}}),
        "too_many_code_interpreter_files", "thread.tool_resources.code_interpreter.file_ids"),
    case(CR, V2, run(additional_instructions="x"), "unknown_field", "additional_instructions"),
    case(CR, V2, run(additional_messages=[]), "unknown_field", "additional_messages"),
    case(CR, V2, run(tool_resources={"file_search": {"vector_stores": []}}), "unknown_field",
        "tool_resources.file_search.vector_stores"),
    case(CR, V2, run(tool_resources={"file_search": {"vector_store_ids": ["vs_1", "vs_2"]}}),
        "too_many_vector_stores", "tool_resources.file_search.vector_store_ids"),
    case(CR, V1, run(tool_resources=None), "field_not_allowed_in_version", "tool_resources"),
    case(CR, V1, run(thread={"tool_resources": None}), "field_not_allowed_in_version",
        "thread.tool_resources"),
    case(CR, V1, run(stream=True), "field_not_allowed_in_version", "stream"),
    # submit tool outputs
    case(S, V2, {}, "missing_field", "tool_outputs"),
    case(S, V2, {"tool_outputs": {}}, "invalid_type", "tool_outputs"),
    case(S, V2, {"tool_outputs": [], "run_id": "run_1"}, "unknown_field", "run_id"),
    case(S, V2, {"tool_outputs": [{"tool_call_id": "call_1"}]}, "missing_field",
        "tool_outputs[0].output"),
    case(S, V2, {"tool_outputs": [{"output": "x"}]}, "missing_field",
        "tool_outputs[0].tool_call_id"),
    case(S, V2, {"tool_outputs": [{"tool_call_id": "call_1", "output": {"a": 1}}]}, "invalid_type",
        "tool_outputs[0].output"),
    case(S, V2, {"tool_outputs": [{"tool_call_id": "call 1", "output": "x"}]}, "invalid_value",
        "tool_outputs[0].tool_call_id"),
    case(S, V2, {"tool_outputs": [{"tool_call_id": "c", "output": "x", "x": 1}]}, "unknown_field",
        "tool_outputs[0].x"),
    case(
        S,
        V2,
        {
            "tool_outputs": [
                {"tool_call_id": "c", "output": "x"},
                {"tool_call_id": "c", "output": "y"},
            ]
        },
        "invalid_value",
        "tool_outputs",
    ),
    case(S, V2, {"tool_outputs": [], "stream": "no"}, "invalid_type", "stream"),
    case(S, V1, {"tool_outputs": [], "stream": True}, "field_not_allowed_in_version", "stream"),
]
# fmt: on


@pytest.mark.parametrize(("op", "version", "body", "limits", "code", "param"), RUN_REFUSALS)
def test_run_refusals(
    op: str, version: ApiVersion, body: Any, limits: PolicyLimits, code: str, param: str
) -> None:
    run_refusal_table(op, version, body, limits, code, param)


FULL_V2_RUN = run(
    model="gpt-4o-deploy",
    instructions="Be brief.",
    additional_instructions="",
    additional_messages=[msg(), msg(role="assistant", content=[part_text("ok")])],
    tools=[
        {"type": "code_interpreter"},
        {
            "type": "file_search",
            "file_search": {
                "max_num_results": 50,
                "ranking_options": {"ranker": "auto", "score_threshold": 0.5},
            },
        },
        fn(
            "get_weather",
            description="d",
            parameters={"type": "object", "properties": {"city": {"type": "string"}}},
            strict=True,
        ),
    ],
    metadata={"k": "v"},
    temperature=0,
    top_p=1.0,
    stream=True,
    max_prompt_tokens=256,
    max_completion_tokens=100_000,
    truncation_strategy={"type": "last_messages", "last_messages": 1},
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
    parallel_tool_calls=False,
    response_format={
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": None},
    },
)

# fmt: off
RUN_ACCEPTS = [
    (R, V1, run()),
    (R, V1, run(model=None, instructions=None, tools=None, metadata=None)),
    (R, V1, run(tools=[{"type": "retrieval"}, {"type": "code_interpreter"}, fn()])),
    (R, V2, FULL_V2_RUN),
    (R, V2,
        run(temperature=2, top_p=0, stream=None, tool_choice="required", response_format="auto")),
    (
        R,
        V2,
        run(
            tool_choice="none",
            response_format={"type": "json_object"},
            truncation_strategy={"type": "auto", "last_messages": None},
        ),
    ),
    (R, V2, run(tools=[{"type": "code_interpreter"}] * 20, additional_messages=[msg()] * 32)),
    (CR, V1,
        run(thread={"messages": [msg(file_ids=["file-a"])], "metadata": {"k": "v"}}, model="m")),
    (CR, V2, run()),
    (
        CR,
        V2,
        run(
            thread={
                "messages": [msg()],
                "tool_resources": {"file_search": {"vector_stores": [{"file_ids": ["file-a"]}]}},
            },
            tool_resources={
                "code_interpreter": {"file_ids": ["file-b"]},
                "file_search": {"vector_store_ids": ["vs_1"]},
            },
            stream=True,
            parallel_tool_calls=True,
        ),
    ),
    (CR, V2, run(tool_resources=None, thread={})),
    (S, V1, {"tool_outputs": [{"tool_call_id": "call_abc", "output": ""}]}),
    (
        S,
        V2,
        {
            "tool_outputs": [
                {"tool_call_id": "call_a", "output": "{}"},
                {"tool_call_id": "call_b", "output": text(300_000)},
            ],
            "stream": True,
        },
    ),
    (S, V2, {"tool_outputs": [], "stream": None}),
]
# fmt: on


@pytest.mark.parametrize(("op", "version", "body"), RUN_ACCEPTS)
def test_run_accepts(op: str, version: ApiVersion, body: Any) -> None:
    result = accepted(op, version, body)
    assert result == body
    assert dump_json(result)


def test_result_is_a_fresh_object_built_from_the_input() -> None:
    body = copy.deepcopy(FULL_V2_RUN)
    result = check_request(R, V2, body, D)
    assert result == body
    assert result is not body
    assert result is not None
    result["tools"][2]["function"]["parameters"]["properties"]["city"]["type"] = "number"
    result["additional_messages"][0]["content"] = "changed"
    result["metadata"]["k"] = "changed"
    assert body == FULL_V2_RUN


def test_a_missing_body_is_an_empty_object() -> None:
    assert check_request(T, V2, None, D) == {}
    assert check_request("messages.modify", V2, None, D) == {}
    assert refused(R, V2, None).param == "assistant_id"
    assert refused(M, V2, None).param == "role"


def test_a_non_object_body_is_refused() -> None:
    err = refused(T, V2, ["not", "an", "object"])
    assert (err.code, err.param) == ("invalid_type", None)


# --- bodyless operations and the operation table --------------------------------------------


@pytest.mark.parametrize("op", sorted(BODYLESS_OPERATIONS))
@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
def test_bodyless_operations(op: str, version: ApiVersion) -> None:
    assert check_request(op, version, None, D) is None
    assert check_request(op, version, {}, D) is None
    err = refused(op, version, {"metadata": {}})
    assert (err.code, err.param) == ("body_not_allowed", None)


def test_operation_table_matches_the_route_names() -> None:
    assert {
        "threads.create",
        "threads.modify",
        "messages.create",
        "messages.modify",
        "runs.create",
        "threads.create_and_run",
        "runs.modify",
        "runs.submit_tool_outputs",
        "assistants.create",
        "assistants.modify",
        "assistants.files.create",
        "vector_stores.create",
        "vector_stores.modify",
        "vector_stores.files.create",
        "vector_stores.file_batches.create",
        "responses.create",
        "conversations.create",
        "conversations.update",
        "conversations.items.create",
    } == BODY_OPERATIONS
    # 31 Assistants-API rows, 13 of the v1 API's (its reads, deletes and cancel)
    assert len(BODYLESS_OPERATIONS) == 31 + 13
    assert not BODY_OPERATIONS & BODYLESS_OPERATIONS


@pytest.mark.parametrize("op", ["", "messages.update", "assistant.create", "Messages.create"])
def test_unknown_operations_are_a_programming_error(op: str) -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        check_request(op, V2, {}, D)


@pytest.mark.parametrize("version", list(KNOWN_VERSIONS.values()), ids=list(KNOWN_VERSIONS))
def test_every_known_version_has_a_message_policy(version: ApiVersion) -> None:
    assert check_request(M, version, msg(), D) == msg()
    role = "user" if version.is_v1 else "assistant"
    assert check_request(M, version, msg(role=role), D) == msg(role=role)


# --- limit_problems -------------------------------------------------------------------------


def test_default_and_azure_limits_have_no_problems() -> None:
    assert limit_problems(D, "profiles.x.policy") == []
    assert limit_problems(AZURE_LIMITS, "profiles.x.policy") == []
    tight = PolicyLimits(
        roles=frozenset({"user"}),
        max_content_chars=1,
        max_files=0,
        attachment_tools=frozenset(),
        max_metadata_pairs=1,
        max_metadata_key_chars=1,
        max_metadata_value_chars=1,
        required_metadata_keys=frozenset({"c"}),
        max_thread_messages=0,
        max_code_interpreter_files=0,
        max_vector_stores=0,
        allow_content_parts=False,
    )
    assert limit_problems(tight, "p") == []


P = "profiles.x.policy"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"max_metadata_pairs": 17},
            f"{P}.max_metadata_pairs: must be an integer between 0 and 16",
        ),
        ({"max_files": 11}, f"{P}.max_files: must be an integer between 0 and 10"),
        ({"max_files": -1}, f"{P}.max_files: must be an integer between 0 and 10"),
        ({"max_files": True}, f"{P}.max_files: must be an integer between 0 and 10"),
        ({"max_files": 2.0}, f"{P}.max_files: must be an integer between 0 and 10"),
        (
            {"max_metadata_key_chars": 65},
            f"{P}.max_metadata_key_chars: must be an integer between 1 and 64",
        ),
        (
            {"max_metadata_key_chars": 0},
            f"{P}.max_metadata_key_chars: must be an integer between 1 and 64",
        ),
        (
            {"max_metadata_value_chars": 513},
            f"{P}.max_metadata_value_chars: must be an integer between 1 and 512",
        ),
        (
            {"max_thread_messages": 101},
            f"{P}.max_thread_messages: must be an integer between 0 and 100",
        ),
        (
            {"max_code_interpreter_files": 21},
            f"{P}.max_code_interpreter_files: must be an integer between 0 and 20",
        ),
        ({"max_vector_stores": 2}, f"{P}.max_vector_stores: must be an integer between 0 and 1"),
        (
            {"max_content_chars": 256_001},
            f"{P}.max_content_chars: must be null or an integer between 1 and 256000",
        ),
        (
            {"max_content_chars": 0},
            f"{P}.max_content_chars: must be null or an integer between 1 and 256000",
        ),
        (
            {"max_content_chars": True},
            f"{P}.max_content_chars: must be null or an integer between 1 and 256000",
        ),
        (
            {"roles": frozenset({"user", "system"})},
            f"{P}.roles: must be a non-empty subset of ['assistant', 'user']",
        ),
        ({"roles": frozenset()}, f"{P}.roles: must be a non-empty subset of ['assistant', 'user']"),
        ({"roles": {"user"}}, f"{P}.roles: must be a non-empty subset of ['assistant', 'user']"),
        (
            {"attachment_tools": frozenset({"retrieval"})},
            f"{P}.attachment_tools: must be a subset of ['code_interpreter', 'file_search']",
        ),
        ({"allow_image_url": "yes"}, f"{P}.allow_image_url: must be true or false"),
        ({"deny_private_image_urls": 1}, f"{P}.deny_private_image_urls: must be true or false"),
        (
            {"required_metadata_keys": frozenset({"k" * 65})},
            f"{P}.required_metadata_keys: keys must have 1 to 64 characters",
        ),
        (
            {"required_metadata_keys": frozenset({""})},
            f"{P}.required_metadata_keys: keys must have 1 to 64 characters",
        ),
        (
            {"required_metadata_keys": frozenset({"a", "b"}), "max_metadata_pairs": 1},
            f"{P}.required_metadata_keys: more keys than max_metadata_pairs (1)",
        ),
        (
            {"required_metadata_keys": frozenset(meta(16))},
            f"{P}.required_metadata_keys: more keys than a thread's metadata can hold (15: the "
            "gateway keeps one pair)",
        ),
        (
            {"required_metadata_keys": frozenset({"gateway_owner"})},
            f"{P}.required_metadata_keys: gateway_owner is reserved for the gateway",
        ),
        (
            {"required_metadata_keys": frozenset({1})},
            f"{P}.required_metadata_keys: must be a set of strings",
        ),
    ],
)
def test_limit_problems_reject_loosening_and_bad_types(
    changes: dict[str, Any], problem: str
) -> None:
    assert limit_problems(dataclasses.replace(D, **changes), P) == [problem]


def test_limit_problems_reports_everything_at_once() -> None:
    loose = dataclasses.replace(D, max_metadata_pairs=17, max_files=11, roles=frozenset({"system"}))
    assert limit_problems(loose, "p") == [
        "p.max_files: must be an integer between 0 and 10",
        "p.max_metadata_pairs: must be an integer between 0 and 16",
        "p.roles: must be a non-empty subset of ['assistant', 'user']",
    ]


# --- the reason set -------------------------------------------------------------------------


def test_the_tables_cover_every_reason_code() -> None:
    tables = [
        *MESSAGE_REFUSALS,
        *PROFILE_REFUSALS,
        *THREAD_REFUSALS,
        *RUN_REFUSALS,
        *BUILD_REFUSALS,
    ]
    table_codes = {p.values[4] for p in tables} | {code for _, code, _ in BAD_MESSAGES}
    # The upload codes have their own table (tests/test_multipart.py), the v1 API's theirs
    # (tests/test_policy_responses.py holds that it covers every one).
    assert table_codes | {"body_not_allowed"} | UPLOAD_REASONS | V1_API_REASONS == POLICY_REASONS


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("runs.create", {"assistant_id": "asst_a", "stream": False}),
        ("threads.create_and_run", {"assistant_id": "asst_a", "stream": None}),
        ("runs.submit_tool_outputs", {"tool_outputs": [], "stream": False}),
    ],
)
def test_v1_runs_take_the_sdks_stream_false_and_do_not_forward_it(
    operation: str, body: dict[str, Any]
) -> None:
    """The stock SDK's ``create_and_poll`` / ``submit_tool_outputs_and_poll`` send
    ``"stream": false``; a v1 run cannot stream, so it is accepted and dropped (the v1
    document has no such field), while ``"stream": true`` stays refused there."""
    out = check_request(operation, V1, body, PolicyLimits())
    assert out is not None and "stream" not in out
    with pytest.raises(BadRequestError) as err:
        check_request(operation, V1, {**body, "stream": True}, PolicyLimits())
    assert (err.value.code, err.value.param) == ("field_not_allowed_in_version", "stream")
