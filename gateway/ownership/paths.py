"""Body paths of the rows (``Ref.path``, ``Inline.at``): finding and changing what they name
(pure).

A path is dotted keys where a key ending in ``[]`` steps into every item of that list:
``attachments[].file_id``, ``tool_resources.file_search.vector_store_ids[]``,
``thread.messages[].attachments[].file_id``. What a path finds is reported with the concrete
path of each value, indices filled in, in the policy's error-``param`` style
(``thread.messages[0].attachments[1].file_id``). A missing key, a null, or a value of another
shape than the path expects finds nothing (the body policy has already checked the shapes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

#: One step of a path: a key, and whether it steps into each item of the list there.
Step = tuple[str, bool]


@cache
def parse(path: str) -> tuple[Step, ...]:
    steps: list[Step] = []
    for part in path.split("."):
        each = part.endswith("[]")
        key = part[:-2] if each else part
        if not key or "[" in key or "]" in key:
            raise ValueError(f"bad body path {path!r}")
        steps.append((key, each))
    return tuple(steps)


@cache
def root(path: str) -> str:
    """The first key of ``path``: where ``find`` looks first (a body with nothing there, or
    null, has nothing at the path)."""
    return parse(path)[0][0]


def find(body: Any, path: str) -> Iterator[tuple[str, Any]]:
    """``(concrete path, value)`` of every value ``path`` names in ``body``, in body order."""
    yield from _find(body, parse(path), "")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _find(node: Any, steps: tuple[Step, ...], prefix: str) -> Iterator[tuple[str, Any]]:
    if not steps:
        yield prefix, node
        return
    (key, each), rest = steps[0], steps[1:]
    if not isinstance(node, dict) or node.get(key) is None:
        return
    value, where = node[key], _join(prefix, key)
    if not each:
        yield from _find(value, rest, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _find(item, rest, f"{where}[{index}]")


def update(body: dict[str, Any], path: str, change: Callable[[Any], Any]) -> dict[str, Any]:
    """A copy of ``body`` where every value ``path`` names is replaced by ``change(value)``;
    the last step's key is created when its parent exists (``change`` gets None then).
    Nothing else is copied or changed; ``body`` itself is never changed."""
    changed = _update(body, parse(path), change)
    assert isinstance(changed, dict)
    return changed


def _update(node: Any, steps: tuple[Step, ...], change: Callable[[Any], Any]) -> Any:
    (key, each), rest = steps[0], steps[1:]
    if not isinstance(node, dict):
        return node
    if each:
        items = node.get(key)
        if not isinstance(items, list):
            return node
        if rest:
            new_items = [_update(item, rest, change) for item in items]
        else:
            new_items = [change(item) for item in items]
        return {**node, key: new_items}
    if not rest:
        return {**node, key: change(node.get(key))}
    if not isinstance(node.get(key), dict):
        return node
    return {**node, key: _update(node[key], rest, change)}
