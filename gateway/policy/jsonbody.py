"""Strict JSON intake for request bodies, and the one serialiser for what is forwarded (pure).

Rules (security checklist B2-B7):

* ``Content-Type`` must be ``application/json``; parameters are allowed, but a ``charset``
  other than ``utf-8`` is refused. Otherwise 415 ``unsupported_media_type``.
* The body is decoded here, strictly, as UTF-8; bytes never reach ``json.loads`` (it would
  auto-detect UTF-16/32 and skip a BOM). A BOM, a NUL byte (UTF-16/32 text always has some)
  or invalid UTF-8 is 400 ``invalid_encoding``.
* The top level must be an object: empty, ``null``, arrays, strings, numbers are 400
  ``invalid_body``; malformed JSON is 400 ``invalid_json``.
* Nesting deeper than ``max_depth`` is 400 ``json_too_deep``. Depth is pre-scanned on the text
  (brackets outside strings), so ``json.loads`` never recurses deeply; a ``RecursionError`` is
  caught anyway. A text with at most ``max_depth`` opening brackets in all (strings included)
  cannot nest deeper, and is not scanned.
* Duplicate keys anywhere: 400 ``duplicate_key``. ``NaN``/``Infinity``, floats that overflow to
  infinity and integers of more than ``MAX_INT_DIGITS`` digits: 400 ``invalid_number``.
* Lone surrogates and U+0000 in any key or string: 400 ``invalid_string``. The raw body has no
  NUL byte and strict UTF-8 has no surrogates, so only a ``\\u`` escape can make one: a text
  without ``\\u`` (without a backslash at all: one C-speed ``memchr``) and without a repeated
  key is not walked again after the parse.

The fast parse calls the decoder's C scanner itself (``_decode_value``), and an exact
``application/json`` is accepted before the Content-Type is taken apart.

``dump_json`` serialises with one C encoder built once (``json.dumps`` with options builds a
``JSONEncoder`` and a C encoder per call): the same bytes in 60 % of the time. It keeps no
circular-reference markers: what it is given is a tree the policy built from a parse.

Every refusal is a ``BadRequestError`` (or ``UnsupportedMediaTypeError``) whose message never
echoes the input. ``param`` is a JSON path (``messages[0].metadata.team``); object keys that are
not short identifiers appear in a path as ``<key>``, so client text never lands in a path.
"""

from __future__ import annotations

import json
import math
import re
from _json import encode_basestring, make_encoder
from collections.abc import Callable
from itertools import accumulate
from typing import Any, NoReturn

from gateway.errors import BadRequestError, UnsupportedMediaTypeError

#: Longest integer literal accepted (unsigned 64-bit values fit).
MAX_INT_DIGITS = 20
DEFAULT_MAX_DEPTH = 32

#: Every code ``parse_json_object`` can emit (bounded metric label set).
JSON_REASONS: frozenset[str] = frozenset(
    {
        "unsupported_media_type",
        "invalid_encoding",
        "invalid_body",
        "invalid_json",
        "json_too_deep",
        "duplicate_key",
        "invalid_number",
        "invalid_string",
    }
)

_JSON_WHITESPACE = " \t\n\r"
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def child_path(path: str, key: object) -> str:
    """``path.key``; a key that is not a short identifier is shown as ``<key>``."""
    segment = key if isinstance(key, str) and _SAFE_KEY.fullmatch(key) else "<key>"
    return f"{path}.{segment}" if path else segment


def field_path(path: str, key: str) -> str:
    """``path.key`` for a key of a closed schema's field list (checked to be one first): the
    gateway's own name, shown as it is, with no pattern test."""
    return f"{path}.{key}" if path else key


def item_path(path: str, index: int) -> str:
    return f"{path}[{index}]"


def parse_json_object(
    raw: bytes, content_type: str | None, *, max_depth: int = DEFAULT_MAX_DEPTH
) -> dict[str, Any]:
    """Parse a request body strictly into a JSON object, or raise a 400/415 ``GatewayError``."""
    _check_content_type(content_type)
    text = _decode(raw)
    stripped = text.lstrip(_JSON_WHITESPACE)
    if not stripped:
        _refuse("invalid_body", "The request body is empty; a JSON object is required.")
    if not stripped.startswith("{"):
        _refuse("invalid_body", "The request body must be a JSON object.")
    if text.count("{") + text.count("[") > max_depth and _nesting_depth(text) > max_depth:
        _refuse("json_too_deep", f"The JSON body is nested deeper than {max_depth} levels.")
    # Only an escape can make a NUL or a lone surrogate ("\\" first: one memchr, and a body
    # rarely has a backslash; "\\u" alone is a two-character search of the whole text).
    walk = "\\" in text and "\\u" in text
    try:
        try:
            value = _decode_value(_FAST_SCAN, text, len(text) - len(stripped))
        except _RepeatedKey:
            # Parsed again, marking the objects with a repeated key, so the tree walk names
            # the first fault (or the parse's own refusal further on wins, as it would have).
            value, walk = _MARKING.decode(text), True
    except RecursionError:
        _refuse("json_too_deep", f"The JSON body is nested deeper than {max_depth} levels.")
    except json.JSONDecodeError as exc:
        _refuse(
            "invalid_json",
            f"The request body is not valid JSON (line {exc.lineno}, column {exc.colno}).",
        )
    except ValueError:  # e.g. int() over the interpreter's digit limit
        _refuse("invalid_number", "The JSON body contains a number out of range.")
    if not isinstance(value, dict):  # defensive: the first character was "{"
        _refuse("invalid_body", "The request body must be a JSON object.")
    if walk:
        _check_tree(value)
    return value


def dump_json(obj: Any) -> bytes:
    """Serialise what the gateway forwards: compact, UTF-8, non-ASCII kept, no NaN (the bytes
    of ``json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)``)."""
    return "".join(_ENCODE(obj, 0)).encode()


def _unserialisable(obj: Any) -> NoReturn:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


#: ``json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)``'s C
#: encoder, without circular-reference markers (a cycle ends in ``RecursionError``).
_ENCODE = make_encoder(
    None, _unserialisable, encode_basestring, None, ":", ",", False, False, False
)


def _refuse(code: str, message: str, param: str | None = None) -> NoReturn:
    raise BadRequestError(message, code=code, param=param)


def _decode_value(scan: Callable[[str, int], tuple[Any, int]], text: str, start: int) -> Any:
    """What ``JSONDecoder.decode`` does (the same errors at the same positions), its scanner
    called directly from ``start``, the first non-whitespace character: no ``decode`` and
    ``raw_decode`` frames, no whitespace regexes."""
    try:
        value, end = scan(text, start)
    except StopIteration as err:
        raise json.JSONDecodeError("Expecting value", text, err.value) from None
    if end != len(text) and text[end:].strip(_JSON_WHITESPACE):
        end = len(text) - len(text[end:].lstrip(_JSON_WHITESPACE))
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _check_content_type(content_type: str | None) -> None:
    if content_type == "application/json":
        return
    message = "Content-Type must be application/json (charset utf-8)."
    if content_type is None:
        raise UnsupportedMediaTypeError(message)
    mime, _, params = content_type.partition(";")
    if mime.strip(" \t").lower() != "application/json":
        raise UnsupportedMediaTypeError(message)
    for param in params.split(";"):
        param = param.strip(" \t")
        if not param:
            continue
        name, sep, value = param.partition("=")
        if not sep or not name.strip(" \t"):
            raise UnsupportedMediaTypeError(message)
        value = value.strip(" \t")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name.strip(" \t").lower() == "charset" and value.lower() != "utf-8":
            raise UnsupportedMediaTypeError(message)


def _decode(raw: bytes) -> str:
    """Strict UTF-8 without a BOM or a NUL (checked on the text: strict UTF-8 decodes the
    bytes ``EF BB BF`` at the start to U+FEFF there, and a NUL byte to U+0000, and makes
    neither from anything else)."""
    message = "The request body must be UTF-8 encoded JSON without a byte order mark."
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        _refuse("invalid_encoding", message)
    if text.startswith("\ufeff") or "\x00" in text:
        _refuse("invalid_encoding", message)
    return text


def _nesting_depth(text: str) -> int:
    """Deepest bracket nesting outside strings (exact for valid JSON; C-speed scan)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if not brackets:
        return 0
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)))


class _DuplicateKeys(dict[str, Any]):
    """Marks an object that had a repeated key; the tree walk reports it with its full path."""

    duplicate: str = ""


def _object_from_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    marked = _DuplicateKeys(obj)
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


class _RepeatedKey(Exception):
    """An object repeats a key (the fast parse stops; the marking parse names it)."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _RepeatedKey
    return obj


def _parse_constant(_name: str) -> NoReturn:
    _refuse("invalid_number", "NaN and Infinity are not valid JSON numbers.")


def _parse_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        _refuse("invalid_number", f"Integers may have at most {MAX_INT_DIGITS} digits.")
    return int(literal)


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        _refuse("invalid_number", "The JSON body contains a number out of range.")
    return value


#: The decoders, built once (``json.loads`` with options builds one per call). ``_FAST``
#: stops at a repeated key; ``_MARKING`` marks it for the tree walk.
_FAST = json.JSONDecoder(
    object_pairs_hook=_unique_pairs,
    parse_constant=_parse_constant,
    parse_int=_parse_int,
    parse_float=_parse_float,
)
#: ``_FAST``'s C scanner, called by ``_decode_value`` (``decode``'s work without its frames).
_FAST_SCAN: Callable[[str, int], tuple[Any, int]] = _FAST.scan_once  # type: ignore[attr-defined]
_MARKING = json.JSONDecoder(
    object_pairs_hook=_object_from_pairs,
    parse_constant=_parse_constant,
    parse_int=_parse_int,
    parse_float=_parse_float,
)


def _check_tree(root: dict[str, Any]) -> None:
    """Walk every value (depth already bounded): duplicate keys, lone surrogates, NUL.

    The walk builds no paths: only a body it refuses is walked again, with them, to name the
    offending place (``param``)."""
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node, _DuplicateKeys) or any(map(_BAD_CHAR.search, node)):
                _refuse_tree(root)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and _BAD_CHAR.search(node):
            _refuse_tree(root)


def _refuse_tree(root: dict[str, Any]) -> NoReturn:
    """The refusal of a body ``_check_tree`` found at fault, with the path of the first fault
    in its walk order."""
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if isinstance(node, _DuplicateKeys):
                _refuse(
                    "duplicate_key",
                    "The JSON body repeats a key in one object.",
                    child_path(path, node.duplicate),
                )
            for key, value in node.items():
                if _BAD_CHAR.search(key):
                    _refuse("invalid_string", _BAD_STRING_MESSAGE, child_path(path, key))
                stack.append((value, child_path(path, key)))
        elif isinstance(node, list):
            stack.extend((value, item_path(path, i)) for i, value in enumerate(node))
        elif isinstance(node, str) and _BAD_CHAR.search(node):
            _refuse("invalid_string", _BAD_STRING_MESSAGE, path)
    raise AssertionError("unreachable: both walks check the same things")


_BAD_STRING_MESSAGE = "Strings may not contain U+0000 or unpaired surrogate escapes."
