"""Property tests: what the policy accepts re-parses to itself, stays within every limit and
holds only allowed keys; a valid body broken in one place is refused with the expected code;
no input makes the policy fail with anything but a 400 (checklist B12)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import BadRequestError
from gateway.operations.apiversions import KNOWN_VERSIONS, ApiVersion
from gateway.ownership.rules import STAMP_KEY
from gateway.policy.checks import POLICY_REASONS, PolicyLimits, limit_problems
from gateway.policy.jsonbody import dump_json, parse_json_object
from tests.policycases import check_request

V1 = KNOWN_VERSIONS["2024-02-15-preview"]
V2 = KNOWN_VERSIONS["2024-05-01-preview"]
CT = "application/json"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Written out independently of the implementation: the keys each body may hold.
MESSAGE_KEYS = {
    "v1": {"role", "content", "file_ids", "metadata"},
    "v2": {"role", "content", "attachments", "metadata"},
}
RUN_KEYS_V1 = {"assistant_id", "model", "instructions", "tools", "metadata"}
RUN_KEYS_V2 = RUN_KEYS_V1 | {
    "temperature",
    "top_p",
    "stream",
    "max_prompt_tokens",
    "max_completion_tokens",
    "truncation_strategy",
    "tool_choice",
    "response_format",
    "parallel_tool_calls",
}
TOP_KEYS = {
    "messages.create": MESSAGE_KEYS,
    "threads.create": {
        "v1": {"messages", "metadata"},
        "v2": {"messages", "metadata", "tool_resources"},
    },
    "runs.create": {
        "v1": RUN_KEYS_V1,
        "v2": RUN_KEYS_V2 | {"additional_instructions", "additional_messages"},
    },
    "threads.create_and_run": {
        "v1": RUN_KEYS_V1 | {"thread"},
        "v2": RUN_KEYS_V2 | {"thread", "tool_resources"},
    },
}

# No NUL and no surrogates: the JSON intake refuses those before the policy runs.
TEXT = st.characters(codec="utf-8", exclude_characters="\x00")
KEY_TEXT = st.characters(codec="utf-8", exclude_characters="\x00")


@st.composite
def limits_st(draw: st.DrawFn) -> PolicyLimits:
    """Any profile that check-config accepts, with "user" allowed so v1 messages exist."""
    limits = PolicyLimits(
        roles=draw(st.sampled_from([frozenset({"user"}), frozenset({"user", "assistant"})])),
        max_content_chars=draw(st.none() | st.integers(1, 300)),
        allow_content_parts=draw(st.booleans()),
        max_files=draw(st.integers(0, 10)),
        attachment_tools=draw(st.frozensets(st.sampled_from(["code_interpreter", "file_search"]))),
        max_metadata_pairs=draw(st.integers(1, 16)),
        max_metadata_key_chars=draw(st.integers(1, 64)),
        max_metadata_value_chars=draw(st.integers(1, 512)),
        required_metadata_keys=draw(st.sampled_from([frozenset(), frozenset({"c"})])),
        max_thread_messages=draw(st.integers(0, 4)),
    )
    assert limit_problems(limits, "p") == []
    return limits


def content_limit(version: ApiVersion, limits: PolicyLimits) -> int:
    if limits.max_content_chars is None:
        return version.max_content_chars
    return min(limits.max_content_chars, version.max_content_chars)


@st.composite
def metadata_st(draw: st.DrawFn, limits: PolicyLimits) -> dict[str, str] | None:
    required = {key: "t" for key in limits.required_metadata_keys}
    room = limits.max_metadata_pairs - len(required)
    if not required and draw(st.booleans()):
        return None
    keys = draw(
        st.lists(
            # the gateway's reserved key (hypothesis draws the code's own string constants)
            st.text(KEY_TEXT, min_size=1, max_size=limits.max_metadata_key_chars).filter(
                lambda key: key != STAMP_KEY
            ),
            max_size=min(room, 6),
            unique=True,
        )
    )
    values = st.text(TEXT, max_size=min(limits.max_metadata_value_chars, 40))
    return {**{key: draw(values) for key in keys}, **required}


FILE_IDS = st.from_regex(r"(?:file|assistant)-[A-Za-z0-9_-]{1,12}", fullmatch=True)


@st.composite
def message_st(draw: st.DrawFn, version: ApiVersion, limits: PolicyLimits) -> dict[str, Any]:
    roles = sorted(limits.roles & ({"user"} if version.is_v1 else {"user", "assistant"}))
    max_chars = min(content_limit(version, limits), 60)
    content: Any = draw(st.text(TEXT, min_size=1, max_size=max_chars))
    if not version.is_v1 and limits.allow_content_parts and draw(st.booleans()):
        content = [{"type": "text", "text": content}]
        if draw(st.booleans()):
            content.append({"type": "image_file", "image_file": {"file_id": draw(FILE_IDS)}})
    msg: dict[str, Any] = {"role": draw(st.sampled_from(roles)), "content": content}
    files = draw(st.lists(FILE_IDS, max_size=min(limits.max_files, 3), unique=True))
    if version.is_v1 and files:
        msg["file_ids"] = files
    elif not version.is_v1 and draw(st.booleans()):
        tools = sorted(limits.attachment_tools)
        msg["attachments"] = [
            {"file_id": f, "tools": [{"type": t} for t in draw(st.sets(st.sampled_from(tools)))]}
            if tools
            else {"file_id": f, "tools": []}
            for f in files
        ]
    metadata = draw(metadata_st(limits))
    if metadata is not None or draw(st.booleans()):
        msg["metadata"] = metadata
    return msg


@st.composite
def request_st(draw: st.DrawFn) -> tuple[str, ApiVersion, dict[str, Any], PolicyLimits]:
    version = draw(st.sampled_from([V1, V2]))
    limits = draw(limits_st())
    op = draw(st.sampled_from(sorted(TOP_KEYS)))
    messages = st.lists(message_st(version, limits), max_size=min(limits.max_thread_messages, 3))
    tags = {key: "t" for key in limits.required_metadata_keys}
    body: dict[str, Any]
    if op == "messages.create":
        body = draw(message_st(version, limits))
    elif op == "threads.create":
        body = {"messages": draw(messages), "metadata": tags}
    else:
        body = {
            "assistant_id": "asst_" + draw(st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True)),
            "metadata": tags,
        }
        if op == "threads.create_and_run":
            body["thread"] = {"messages": draw(messages), "metadata": tags}
        elif not version.is_v1:
            body["additional_messages"] = draw(messages)
        if not version.is_v1:
            body["stream"] = draw(st.booleans())
    return op, version, body, limits


def nested_messages(op: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    if op == "messages.create":
        return [body]
    if op == "threads.create":
        return list(body.get("messages", []))
    if op == "threads.create_and_run":
        return list(body.get("thread", {}).get("messages", []))
    return list(body.get("additional_messages") or [])


def assert_metadata_within(metadata: Any, limits: PolicyLimits) -> None:
    if metadata is None:
        assert not limits.required_metadata_keys
        return
    assert len(metadata) <= limits.max_metadata_pairs
    assert limits.required_metadata_keys <= metadata.keys()
    for key, value in metadata.items():
        assert 1 <= len(key) <= limits.max_metadata_key_chars
        assert isinstance(value, str)
        assert len(value) <= limits.max_metadata_value_chars


def assert_within_limits(
    op: str, version: ApiVersion, result: dict[str, Any], limits: PolicyLimits
) -> None:
    gen = version.generation
    assert set(result) <= TOP_KEYS[op][gen]
    if op != "messages.create":
        assert len(nested_messages(op, result)) <= limits.max_thread_messages
    for message in nested_messages(op, result):
        assert set(message) <= MESSAGE_KEYS[gen]
        assert message["role"] in limits.roles
        content = message["content"]
        texts = [content] if isinstance(content, str) else [p.get("text", "") for p in content]
        assert 0 < sum(len(t) for t in texts) <= content_limit(version, limits)
        files = message.get("file_ids") or message.get("attachments") or []
        assert len(files) <= limits.max_files
        assert_metadata_within(message.get("metadata"), limits)
    if op != "messages.create":
        assert_metadata_within(result.get("metadata"), limits)
    if op == "threads.create_and_run":
        assert_metadata_within(result.get("thread", {}).get("metadata"), limits)


@SETTINGS
@given(request_st())
def test_accepted_bodies_round_trip_and_stay_within_limits(
    request: tuple[str, ApiVersion, dict[str, Any], PolicyLimits],
) -> None:
    op, version, body, limits = request
    parsed = parse_json_object(dump_json(body), CT)
    result = check_request(op, version, parsed, limits)
    assert result is not None
    assert result is not parsed
    assert json.loads(dump_json(result)) == result == body
    assert_within_limits(op, version, result, limits)


# --- one broken limit, one expected refusal -------------------------------------------------


def _break(message: dict[str, Any], kind: str, version: ApiVersion, limits: PolicyLimits) -> str:
    """Break ``message`` in one way; return the expected "code param-suffix".

    Metadata is replaced whole: a shape error is reported before missing required keys.
    """
    if kind == "pairs":
        message["metadata"] = {f"k{i}": "v" for i in range(limits.max_metadata_pairs + 1)}
        return "metadata_too_many_pairs metadata"
    if kind == "key":
        message["metadata"] = {"k" * (limits.max_metadata_key_chars + 1): "v"}
        return "metadata_key_too_long metadata"
    if kind == "value":
        message["metadata"] = {"k": "😀" * (limits.max_metadata_value_chars + 1)}
        return "metadata_value_too_long metadata.k"
    if kind == "files":
        ids = [f"file-{i}" for i in range(limits.max_files + 1)]
        if version.is_v1:
            message["file_ids"] = ids
            return "too_many_files file_ids"
        message["attachments"] = [{"file_id": f, "tools": []} for f in ids]
        return "too_many_files attachments"
    if kind == "role":
        message["role"] = "system"
        return "role_not_allowed role"
    if kind == "content":
        message["content"] = "x" * (content_limit(version, limits) + 1)
        return "content_too_long content"
    message["x_extra"] = 1
    return "unknown_field x_extra"


@SETTINGS
@given(
    request_st().filter(lambda r: bool(nested_messages(r[0], r[2]))),
    st.sampled_from(["pairs", "key", "value", "files", "role", "content", "unknown"]),
    st.data(),
)
def test_breaking_one_limit_is_refused_with_its_code(
    request: tuple[str, ApiVersion, dict[str, Any], PolicyLimits], kind: str, data: st.DataObject
) -> None:
    op, version, body, limits = request
    messages = nested_messages(op, body)
    index = data.draw(st.integers(0, len(messages) - 1))
    code, suffix = _break(messages[index], kind, version, limits).split()
    prefix = {
        "messages.create": "",
        "threads.create": f"messages[{index}].",
        "threads.create_and_run": f"thread.messages[{index}].",
        "runs.create": f"additional_messages[{index}].",
    }[op]
    with pytest.raises(BadRequestError) as info:
        check_request(op, version, parse_json_object(dump_json(body), CT), limits)
    assert (info.value.code, info.value.param) == (code, prefix + suffix)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 16), st.integers(1, 64), st.integers(1, 512))
def test_metadata_boundaries_are_exact_in_code_points(
    pairs: int, key_chars: int, value_chars: int
) -> None:
    limits = PolicyLimits(
        max_metadata_pairs=pairs,
        max_metadata_key_chars=key_chars,
        max_metadata_value_chars=value_chars,
    )

    def body(n: int, key_len: int, value_len: int) -> dict[str, Any]:
        keys = [chr(0x4E00 + i) + "😀" * (key_len - 1) for i in range(n)]
        return {"role": "user", "content": "hi", "metadata": {k: "😀" * value_len for k in keys}}

    at_limit = body(pairs, key_chars, value_chars)
    assert check_request("messages.create", V2, at_limit, limits) == at_limit
    for over, code in [
        (body(pairs + 1, key_chars, value_chars), "metadata_too_many_pairs"),
        (body(pairs, key_chars + 1, value_chars), "metadata_key_too_long"),
        (body(pairs, key_chars, value_chars + 1), "metadata_value_too_long"),
    ]:
        with pytest.raises(BadRequestError) as info:
            check_request("messages.create", V2, over, limits)
        assert info.value.code == code


# --- arbitrary input: a 400 with a known code, or an accepted body within limits ------------

FIELD_NAMES = sorted(
    set().union(*MESSAGE_KEYS.values(), *(k for v in TOP_KEYS.values() for k in v.values()))
    | {
        "type",
        "text",
        "image_file",
        "image_url",
        "file_id",
        "url",
        "tools",
        "tool_resources",
        "code_interpreter",
        "file_search",
        "vector_store_ids",
        "detail",
        "temperature",
    }
)
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(10**19), 10**19)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(TEXT, max_size=20)
    | st.sampled_from(
        [
            "user",
            "assistant",
            "system",
            "file-abc",
            "asst_1",
            "vs_1",
            "text",
            "image_file",
            "code_interpreter",
            "https://a.example/x.png",
        ]
    )
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(FIELD_NAMES) | st.text(KEY_TEXT, max_size=8), inner, max_size=5
        )
    ),
    max_leaves=25,
)


OTHER_OPERATIONS = {
    "threads.modify": {"metadata", "tool_resources"},
    "messages.modify": {"metadata"},
    "runs.modify": {"metadata"},
    "runs.submit_tool_outputs": {"tool_outputs", "stream"},
    "messages.list": set(),
}


@st.composite
def arbitrary_request_st(draw: st.DrawFn) -> tuple[str, ApiVersion, dict[str, Any]]:
    """Mostly the operation's own field names (so values, not names, get exercised)."""
    op = draw(st.sampled_from(sorted(TOP_KEYS) + sorted(OTHER_OPERATIONS)))
    version = draw(st.sampled_from([V1, V2]))
    own = sorted(TOP_KEYS[op][version.generation] if op in TOP_KEYS else OTHER_OPERATIONS[op])
    keys = (
        st.sampled_from(own)
        if own and draw(st.integers(0, 4)) != 0
        else st.sampled_from(FIELD_NAMES)
    )
    return op, version, draw(st.dictionaries(keys, JSON_VALUES, max_size=6))


@settings(max_examples=200, deadline=None)
@given(arbitrary_request_st(), limits_st())
def test_arbitrary_bodies_are_refused_cleanly_or_accepted_within_limits(
    request: tuple[str, ApiVersion, dict[str, Any]], limits: PolicyLimits
) -> None:
    op, version, body = request
    try:
        parsed = parse_json_object(dump_json(body), CT)
    except BadRequestError:
        return  # the intake's own refusals are tested in test_jsonbody
    result = outcome(op, version, parsed, limits)
    if isinstance(result, BadRequestError):
        assert result.code in POLICY_REASONS
    elif result is not None:
        assert json.loads(dump_json(result)) == result
        if op in TOP_KEYS:
            assert_within_limits(op, version, result, limits)


def outcome(
    op: str, version: ApiVersion, body: dict[str, Any], limits: PolicyLimits
) -> dict[str, Any] | BadRequestError | None:
    try:
        return check_request(op, version, body, limits)
    except BadRequestError as err:
        return err
