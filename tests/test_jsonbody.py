"""Strict JSON intake: checklist B2-B8 cases, table-driven, plus accepted inputs round-tripping."""

from __future__ import annotations

import codecs
import json
from typing import Any

import pytest

from gateway.errors import BadRequestError, GatewayError, UnsupportedMediaTypeError
from gateway.policy.jsonbody import (
    JSON_REASONS,
    MAX_INT_DIGITS,
    child_path,
    dump_json,
    parse_json_object,
)

CT = "application/json"
SMALL = '{"role":"user","content":"héllo 😀"}'


def refusal(raw: bytes, content_type: str | None = CT, **kwargs: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse_json_object(raw, content_type, **kwargs)
    assert info.value.code in JSON_REASONS
    return info.value


def nest(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    """A top-level object whose deepest value sits at ``depth`` levels."""
    return ('{"a":' + opener * (depth - 1) + "0" + closer * (depth - 1) + "}").encode()


# --- B2: Content-Type ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "APPLICATION/JSON",
        "application/json; charset=utf-8",
        "Application/Json;Charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/json ; charset=utf-8 ; foo=bar",
        "application/json; foo=bar",
        "application/json;",
    ],
)
def test_json_content_types_are_accepted(content_type: str) -> None:
    assert parse_json_object(b'{"a":1}', content_type) == {"a": 1}


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "text/json",
        "multipart/form-data; boundary=xyz",
        "application/x-www-form-urlencoded",
        "application/jsonx",
        "application/json-patch+json",
        "application/json; charset=utf-16",
        "application/json; charset=latin-1",
        "application/json; charset=utf8",
        'application/json; charset="utf-32"',
        "application/json; charset",
        "application/json; =utf-8",
    ],
)
def test_other_content_types_are_415(content_type: str | None) -> None:
    err = refusal(b'{"a":1}', content_type)
    assert isinstance(err, UnsupportedMediaTypeError)
    assert (err.status, err.code) == (415, "unsupported_media_type")


def test_content_type_is_checked_before_the_body() -> None:
    assert refusal(b"", "text/plain").code == "unsupported_media_type"


# --- B3: encoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(SMALL.encode("utf-16"), id="utf-16-bom"),
        pytest.param(SMALL.encode("utf-16-le"), id="utf-16-le"),
        pytest.param(SMALL.encode("utf-16-be"), id="utf-16-be"),
        pytest.param(SMALL.encode("utf-32"), id="utf-32-bom"),
        pytest.param(SMALL.encode("utf-32-le"), id="utf-32-le"),
        pytest.param(SMALL.encode("utf-32-be"), id="utf-32-be"),
        pytest.param(codecs.BOM_UTF8 + SMALL.encode(), id="utf-8-bom"),
        pytest.param(b'{"a":"\xff"}', id="invalid-byte"),
        pytest.param(b'{"a":"\xc0\xaf"}', id="overlong"),
        pytest.param(b'{"a":"\xed\xa0\x80"}', id="encoded-surrogate"),
        pytest.param(b'{"a":"\xe2\x82"}', id="truncated-sequence"),
        pytest.param(b'{"a":"\xf4\x90\x80\x80"}', id="above-u10ffff"),
        pytest.param(b'{"a":"x\x00"}', id="raw-nul-byte"),
        pytest.param(SMALL.encode("latin-1", errors="replace").replace(b"?", b"\xe9"), id="latin1"),
    ],
)
def test_non_utf8_bodies_are_400_invalid_encoding(raw: bytes) -> None:
    err = refusal(raw)
    assert (err.status, err.code) == (400, "invalid_encoding")


# --- B4: depth -------------------------------------------------------------------------------


@pytest.mark.parametrize(("opener", "closer"), [("[", "]"), ('{"k":', "}")])
def test_depth_32_is_accepted(opener: str, closer: str) -> None:
    raw = nest(32, opener, closer)
    assert isinstance(parse_json_object(raw, CT), dict)


@pytest.mark.parametrize("depth", [33, 1_000, 100_000])
@pytest.mark.parametrize(("opener", "closer"), [("[", "]"), ('{"k":', "}")])
def test_deeper_nesting_is_400_json_too_deep(depth: int, opener: str, closer: str) -> None:
    err = refusal(nest(depth, opener, closer))
    assert (err.status, err.code) == (400, "json_too_deep")


def test_unclosed_deep_nesting_is_400_not_500() -> None:
    assert refusal(b'{"a":' + b"[" * 100_000).code == "json_too_deep"


def test_max_depth_is_configurable() -> None:
    assert parse_json_object(nest(5), CT, max_depth=5)
    assert refusal(nest(6), max_depth=5).code == "json_too_deep"


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    text = '{"a":"' + "[{" * 5_000 + '\\"]]"}'
    assert parse_json_object(text.encode(), CT) == {"a": "[{" * 5_000 + '"]]'}


def test_many_shallow_brackets_are_accepted() -> None:
    # More opening brackets than ``max_depth`` in all, none deeper than 2: the depth scan runs.
    raw = ('{"a":[' + ",".join(["[]"] * 40) + '],"b":{"c":{}}}').encode()
    assert parse_json_object(raw, CT, max_depth=3) == {"a": [[]] * 40, "b": {"c": {}}}


# --- B5: numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "literal",
    [
        "1" * 5_000,
        "-" + "9" * 5_000,
        "1" * (MAX_INT_DIGITS + 1),
        "1e400",
        "-1e400",
        "NaN",
        "Infinity",
        "-Infinity",
        "[1, NaN]",
    ],
)
def test_bad_numbers_are_400_invalid_number(literal: str) -> None:
    err = refusal(f'{{"n":{literal}}}'.encode())
    assert (err.status, err.code) == (400, "invalid_number")


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("9" * MAX_INT_DIGITS, int("9" * MAX_INT_DIGITS)),
        ("-" + "9" * MAX_INT_DIGITS, -int("9" * MAX_INT_DIGITS)),
        ("0", 0),
        ("1.5", 1.5),
        ("1e308", 1e308),
        ("1e-400", 0.0),
        ("-0.0", -0.0),
    ],
)
def test_in_range_numbers_are_accepted(literal: str, value: float) -> None:
    assert parse_json_object(f'{{"n":{literal}}}'.encode(), CT) == {"n": value}


# --- B6: duplicate keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ('{"role":"user","role":"assistant"}', "role"),
        ('{"metadata":{"a":"1","b":"2","a":"3"}}', "metadata.a"),
        ('{"messages":[{"role":"user"},{"content":"x","content":"y"}]}', "messages[1].content"),
        ('{"a":[[{"x":{"k":1,"k":1}}]]}', "a[0][0].x.k"),
        ('{"a b":1,"a b":2}', "<key>"),
    ],
)
def test_duplicate_keys_are_400_with_their_path(raw: str, param: str) -> None:
    err = refusal(raw.encode())
    assert (err.status, err.code, err.param) == (400, "duplicate_key", param)


# --- B7: lone surrogates and NUL -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (r'{"a":"\ud800"}', "a"),
        (r'{"a":"x\udfffy"}', "a"),
        (r'{"a":"\ude00\ud83d"}', "a"),
        (r'{"a":"\u0000"}', "a"),
        (r'{"a":["ok",{"b":"\u0000"}]}', "a[1].b"),
        (r'{"a":{"k\ud800":"v"}}', "a.<key>"),
        (r'{"k\u0000":"v"}', "<key>"),
    ],
)
def test_lone_surrogates_and_nul_are_400_invalid_string(raw: str, param: str) -> None:
    err = refusal(raw.encode())
    assert (err.status, err.code, err.param) == (400, "invalid_string", param)


@pytest.mark.parametrize(
    ("raw", "code", "param"),
    [
        # A parse fault after a repeated key wins, as in one parse; between a repeated key
        # and a bad string, the tree walk's order decides.
        (b'{"m":{"a":1,"a":2},"n":NaN}', "invalid_number", None),
        (b'{"m":{"a":1,"a":2},"n":1,}', "invalid_json", None),
        (b'{"m":{"a":1,"a":2},"n":' + b"9" * (MAX_INT_DIGITS + 1) + b"}", "invalid_number", None),
        (b'{"a":1,"a":2,"s":"\\u0000"}', "duplicate_key", "a"),
        (b'{"s":"\\ud800","a":1,"a":2}', "duplicate_key", "a"),
        (b'{"s":"\\ud800","m":{"a":1,"a":2}}', "duplicate_key", "m.a"),
        (b'{"m":{"a":1,"a":2},"s":"\\ud800"}', "invalid_string", "s"),
    ],
)
def test_a_repeated_key_and_another_fault(raw: bytes, code: str, param: str | None) -> None:
    err = refusal(raw)
    assert (err.code, err.param) == (code, param)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (rb'{"a":"\\u0000"}', "\\u0000"),  # an escaped backslash, then "u0000": no NUL
        (rb'{"a":"x\\ud800"}', "x\\ud800"),
        (rb'{"a":"\\","b":"u0000"}', None),
    ],
)
def test_an_escaped_backslash_before_u_is_no_escape(raw: bytes, value: str | None) -> None:
    parsed = parse_json_object(raw, CT)
    assert parsed == json.loads(raw)
    if value is not None:
        assert parsed["a"] == value


def test_escaped_surrogate_pair_is_one_code_point() -> None:
    assert parse_json_object(rb'{"a":"\ud83d\ude00"}', CT) == {"a": "😀"}


# --- B8: top level and syntax ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "invalid_body"),
        (b" \r\n\t", "invalid_body"),
        (b"null", "invalid_body"),
        (b"[]", "invalid_body"),
        (b'[{"a":1}]', "invalid_body"),
        (b'"string"', "invalid_body"),
        (b"42", "invalid_body"),
        (b"true", "invalid_body"),
        (b"{", "invalid_json"),
        (b'{"a":1,}', "invalid_json"),
        (b'{"a":1} {"b":2}', "invalid_json"),
        (b"{'a':1}", "invalid_json"),
        (b'{"a":"tab\there"}', "invalid_json"),
    ],
)
def test_non_objects_and_malformed_json_are_400(raw: bytes, code: str) -> None:
    err = refusal(raw)
    assert isinstance(err, BadRequestError)
    assert (err.status, err.code) == (400, code)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":"SECRET-1234"} trailing',
        b'{"a":"SECRET-1234","n":NaN}',
        b'{"a":"SECRET-1234\\u0000"}',
        b'{"a":"SECRET-1234","n":1e999}',
        b'{"SECRET 1234":1,"SECRET 1234":2}',
    ],
)
def test_errors_never_echo_the_input(raw: bytes) -> None:
    err = refusal(raw)
    assert b"SECRET" not in err.render()


def test_a_duplicate_identifier_key_is_named_only_in_param() -> None:
    err = refusal(b'{"team":1,"team":2}')
    assert err.param == "team"
    assert "team" not in err.message


# --- accepted inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        ' \n{ "a" : 1 }\n ',
        SMALL,
        '{"metadata":{"k":"v"},"n":[1,2.5,-3,true,false,null],"s":"\\"\\\\\\/\\b\\f\\n\\r\\t"}',
        '{"emoji":"😀👨‍👩‍👧é\u0301","cjk":"漢字","rtl":"שלום"}',
        '{"u":"\\u00e9\\u2028\\u2029\\uffff"}',
    ],
)
def test_accepted_bodies_round_trip(text: str) -> None:
    parsed = parse_json_object(text.encode(), CT)
    again = parse_json_object(dump_json(parsed), CT)
    assert again == parsed == json.loads(text)


def test_dump_json_is_compact_utf8_without_escaping() -> None:
    assert dump_json({"a": "é😀", "b": [1, None]}) == '{"a":"é😀","b":[1,null]}'.encode()


def test_dump_json_refuses_non_finite_numbers() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        dump_json({"a": float("nan")})


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    [
        ("", "role", "role"),
        ("metadata", "cost_centre", "metadata.cost_centre"),
        ("a", "with space", "a.<key>"),
        ("a", "x" * 65, "a.<key>"),
        ("a", 3, "a.<key>"),
    ],
)
def test_child_path_hides_unusual_keys(path: str, key: object, expected: str) -> None:
    assert child_path(path, key) == expected


@pytest.mark.parametrize(
    "value",
    [
        {"a": 'é😀\u2028"\\\n', "b": [1, None, True, False, -0.0, 1.5e300, 2**64], "c": {}},
        {"nested": {"x": [[], {}, [{"y": "z"}]]}, "": "empty key"},
        {"k": "\x00\x1f\x7f", "n": -12345678901234567890},
    ],
)
def test_dump_json_is_the_bytes_of_json_dumps(value: Any) -> None:
    """The reused C encoder writes what ``json.dumps`` with the same options writes."""
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert dump_json(value) == expected.encode()


def test_dump_json_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dump_json({"a": object()})
    with pytest.raises(ValueError, match="JSON compliant"):
        dump_json({"a": [float("inf")]})
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(RecursionError):  # no markers: a cycle (never a parsed tree) fails
        dump_json(cycle)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"a":"back\\\\slash \\" \\/ \\n"}', {"a": 'back\\slash " / \n'}),
        (b'{"a":"\\t"}', {"a": "\t"}),
    ],
)
def test_backslashes_without_u_escapes_are_accepted(raw: bytes, value: dict[str, Any]) -> None:
    """A backslash that starts no ``\\u`` escape makes no NUL or surrogate (no tree walk)."""
    assert parse_json_object(raw, CT) == value


@pytest.mark.parametrize(
    "raw",
    [
        b'\xef\xbb\xbf{"a":1}',
        b'{"a":1}\x00',
        b'\x00{"a":1}',
        b"\xef\xbb\xbf\xff",  # a BOM and invalid UTF-8: the same refusal
    ],
)
def test_a_bom_or_nul_is_found_on_the_decoded_text(raw: bytes) -> None:
    assert refusal(raw).code == "invalid_encoding"


def test_a_bom_inside_the_body_is_only_a_character() -> None:
    assert parse_json_object('{"a":"\ufeff"}'.encode(), CT) == {"a": "\ufeff"}


@pytest.mark.parametrize(
    "raw",
    [
        '{"a":1} x',
        ' \n {"a":1}\n\n  ]',
        '{"a":1}{}',
        "{",
        '{"a":}',
        '\t{"a":[1,]}',
        '{"a":1}\n\t ',
    ],
)
def test_the_scan_reports_json_decoders_positions(raw: str) -> None:
    """The strict parse calls the decoder's scanner itself (no ``decode`` frame and
    whitespace regexes): a malformed body's line and column are ``json``'s own."""
    try:
        json.JSONDecoder().decode(raw)
    except json.JSONDecodeError as exc:
        expected = f"(line {exc.lineno}, column {exc.colno})"
        assert expected in refusal(raw.encode()).message
    else:
        assert parse_json_object(raw.encode(), CT) == json.loads(raw)
