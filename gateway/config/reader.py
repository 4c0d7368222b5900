"""Reading a declared section from parsed TOML, every problem collected with its path (pure).

See ``gateway.config.schema`` for what a declaration says; ``read`` walks the type annotations.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar, cast, get_args, get_origin

from gateway.config.schema import (
    Check,
    at,
    fields,
    hints,
    is_section,
    is_table,
    keys,
    missing_message,
    optional_of,
    problem,
    refused_keys,
    require_declared,
    required,
    toml_key,
)

T = TypeVar("T")
_BAD: Any = object()  # a value that failed to read


class Problems:
    """Problem lines (``path: message``), in the order found."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._paths: set[str] = set()

    def add(self, path: str, message: str) -> None:
        self.items.append(problem(path, message))
        self._paths.add(path)

    def extend(self, lines: Iterable[str]) -> None:
        """Lines from a cross-field check: one about a path with a problem already is dropped."""
        for line in lines:
            if not any(line.startswith(f"{p}: ") for p in self._paths):
                self.items.append(line)

    def __bool__(self) -> bool:
        return bool(self.items)


def read(cls: type[T], data: object, path: str, problems: Problems) -> T:
    """Read a section; every problem goes to ``problems``. Always returns an instance (a key
    with a problem keeps its default, or a blank value when required), so checks that depend
    on it can still run."""
    if not isinstance(data, Mapping):
        problems.add(path, "must be a table")
        data = {}
    return cast(T, _section(cls, data, path, problems, None))


def _section(
    cls: type, data: Mapping[str, Any], path: str, problems: Problems, name: str | None
) -> Any:
    out = _fields_of(cls, data, path, problems, name)
    refused = refused_keys(cls)
    known = keys(cls)
    for key in data:
        if key in refused:
            problems.add(at(path, key), refused[key])
        elif key not in known:
            problems.add(at(path, key), "unknown key")
    return out


def _fields_of(
    cls: type, data: Mapping[str, Any], path: str, problems: Problems, name: str | None
) -> Any:
    types_of = hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        meta, kind = f.metadata, types_of[f.name]
        if meta.get("table_name"):
            values[f.name] = name or ""
            continue
        require_declared(cls, f)
        if meta["inline"]:
            inner = _fields_of(meta["shape"] or kind, data, path, problems, None)
            values[f.name] = inner.build() if meta["shape"] else inner
            continue
        key = toml_key(f)
        where = at(path, key)
        if key in data:
            value = _value(kind, data[key], where, problems, meta)
        elif is_table(kind, meta):
            value = _value(kind, {}, where, problems, meta)
        elif required(f):
            problems.add(where, missing_message(meta))
            value = _BAD
        else:
            continue
        if value is not _BAD:
            values[f.name] = value
        elif required(f):
            values[f.name] = _blank(kind)
    out = cls(**values)
    check = getattr(out, "__check__", None)
    if check is not None:
        problems.extend(check(path))
    return out


def _value(kind: Any, raw: Any, where: str, problems: Problems, meta: Mapping[str, Any]) -> Any:
    value = _typed(kind, raw, where, problems, meta)
    if value is _BAD or value is None:
        return value
    check: Check | None = meta["check"]
    if check is not None and (message := check(value)) is not None:
        problems.add(where, message)
        return _BAD
    return value


def _typed(kind: Any, raw: Any, where: str, problems: Problems, meta: Mapping[str, Any]) -> Any:
    origin, args = get_origin(kind), get_args(kind)
    if origin in (types.UnionType, typing.Union):
        inner = optional_of(kind)
        if is_table(inner, meta) and not isinstance(raw, Mapping):  # optional: left out
            problems.add(where, "must be a table")
            return _BAD
        return _typed(inner, raw, where, problems, meta)
    if origin is Literal:
        if not any(type(raw) is type(choice) and raw == choice for choice in args):
            problems.add(where, "must be one of " + ", ".join(map(str, args)))
            return _BAD
        return raw
    if origin in (tuple, frozenset) and args[0] is str:
        return _strings(raw, where, problems, meta, origin)
    if origin is tuple:
        if not isinstance(raw, list):
            problems.add(where, "must be an array of tables")
            return _BAD
        items = (
            _item(args[0], item, at(where, i), problems, meta, None) for i, item in enumerate(raw)
        )
        return tuple(item for item in items if item is not _BAD)
    if origin in (dict, Mapping):
        if not isinstance(raw, Mapping):
            problems.add(where, "must be a table")
            return _BAD
        out = {}
        for name, item in raw.items():
            if meta["names"] is not None and (message := meta["names"](name)) is not None:
                problems.add(at(where, name), message)
            value = _item(args[1], item, at(where, name), problems, meta, name)
            if value is not _BAD:
                out[name] = value
        return out
    if is_table(kind, meta):
        if not isinstance(raw, Mapping):  # a lone table: still read, so its checks run
            problems.add(where, "must be a table")
            raw = {}
        return _item(kind, raw, where, problems, meta, None)
    return _scalar(kind, raw, where, problems)


def _item(
    kind: Any, raw: Any, where: str, problems: Problems, meta: Mapping[str, Any], name: str | None
) -> Any:
    """One table of an array or of a table of tables (skipped when it is not a table)."""
    shape = meta["shape"]
    if shape is None and not is_section(kind):
        raise TypeError(f"{where}: {kind!r} is neither a section nor given a shape")
    if not isinstance(raw, Mapping):
        problems.add(where, "must be a table")
        return _BAD
    section = _section(shape or kind, raw, where, problems, name)
    return section.build() if shape is not None else section


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _scalar(kind: Any, raw: Any, where: str, problems: Problems) -> Any:
    if kind not in _NAMES:
        raise TypeError(f"{where}: cannot read a {kind!r}")
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        raw = float(raw)
    ok = isinstance(raw, kind) and not (kind is not bool and isinstance(raw, bool))
    if not ok or (isinstance(raw, float) and not math.isfinite(raw)):
        problems.add(where, f"must be {_NAMES[kind]}")
        return _BAD
    return raw


def _strings(
    raw: Any, where: str, problems: Problems, meta: Mapping[str, Any], container: Any
) -> Any:
    if not isinstance(raw, list):
        problems.add(where, "must be a list of strings")
        return _BAD
    allowed: frozenset[str] | None = meta["allowed"]
    each: Check | None = meta["each"]
    bad = False
    for i, item in enumerate(raw):
        message = None
        if not isinstance(item, str) or not item:
            message = "must be a non-empty string"
        elif allowed is not None and item not in allowed:
            message = f"unknown value {item!r}"
        elif each is not None:
            message = each(item)
        if message is not None:
            problems.add(at(where, i), message)
            bad = True
    return _BAD if bad else container(raw)


def _blank(kind: Any) -> Any:
    """The value of a required key that failed to read (the section is refused anyway)."""
    origin = get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        return None
    if origin is Literal:
        return get_args(kind)[0]
    if origin in (tuple, frozenset, dict, Mapping):
        return {tuple: (), frozenset: frozenset()}.get(origin, {})
    if kind in _NAMES:
        return kind()
    raise TypeError(f"no blank value for {kind!r}")
