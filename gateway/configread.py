"""A small typed reader over parsed TOML that collects every problem with its path (pure)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, overload

T = TypeVar("T")
_MISSING: Any = object()


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def __bool__(self) -> bool:
        return bool(self.items)


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}


class Section:
    """A TOML table at a path; reads typed keys and reports unknown ones."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: Problems) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.read: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    @overload
    def get(
        self, key: str, kind: type[T], default: T, *, check: Callable[[T], str | None] | None = None
    ) -> T: ...
    @overload
    def get(
        self,
        key: str,
        kind: type[T],
        default: None = None,
        *,
        check: Callable[[T], str | None] | None = None,
    ) -> T | None: ...

    def get(
        self,
        key: str,
        kind: type[T],
        default: T | None = None,
        *,
        check: Callable[[T], str | None] | None = None,
    ) -> T | None:
        self.read.add(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (
            not isinstance(value, kind)
            or (kind is int and isinstance(value, bool))
            or (isinstance(value, float) and not math.isfinite(value))
        ):
            self.problems.add(self.at(key), f"must be {_TYPE_NAMES.get(kind, kind.__name__)}")
            return default
        if check is not None and (message := check(value)) is not None:
            self.problems.add(self.at(key), message)
            return default
        return value

    def require(
        self, key: str, kind: type[T], *, check: Callable[[T], str | None] | None = None
    ) -> T | None:
        if key not in self.data:
            self.read.add(key)
            self.problems.add(self.at(key), "is required")
            return None
        return self.get(key, kind, check=check)

    def strings(
        self,
        key: str,
        default: tuple[str, ...] | None = None,
        *,
        allowed: frozenset[str] | None = None,
    ) -> tuple[str, ...] | None:
        values = self.get(key, list)
        if values is None:
            return default
        out: list[str] = []
        for i, item in enumerate(values):
            if not isinstance(item, str) or not item:
                self.problems.add(f"{self.at(key)}[{i}]", "must be a non-empty string")
            elif allowed is not None and item not in allowed:
                self.problems.add(f"{self.at(key)}[{i}]", f"unknown value {item!r}")
            else:
                out.append(item)
        return tuple(out)

    def section(self, key: str) -> Section:
        self.read.add(key)
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            self.problems.add(self.at(key), "must be a table")
            value = {}
        return Section(value, self.at(key), self.problems)

    def sections(self, key: str) -> Iterator[Section]:
        """An array of tables (``[[key]]``)."""
        self.read.add(key)
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.problems.add(self.at(key), "must be an array of tables")
            return
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                self.problems.add(f"{self.at(key)}[{i}]", "must be a table")
                continue
            yield Section(item, f"{self.at(key)}[{i}]", self.problems)

    def named_sections(self, key: str) -> Iterator[tuple[str, Section]]:
        """A table of tables (``[key.<name>]``)."""
        outer = self.section(key)
        for name, value in outer.data.items():
            outer.read.add(name)
            if not isinstance(value, dict):
                self.problems.add(outer.at(name), "must be a table")
                continue
            yield name, Section(value, outer.at(name), self.problems)

    def finish(self) -> None:
        for key in self.data:
            if key not in self.read:
                self.problems.add(self.at(key), "unknown key")


def positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def between(low: float, high: float) -> Callable[[float], str | None]:
    return lambda v: None if low <= v <= high else f"must be between {low:g} and {high:g}"


def one_of(*choices: str) -> Callable[[str], str | None]:
    return lambda v: None if v in choices else "must be one of " + ", ".join(choices)
