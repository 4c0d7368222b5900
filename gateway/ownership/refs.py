"""The owned objects a request names besides its path's: body references and list cursors
(pure).

* Body references: every value at each of the row's ``refs`` paths (``Ref.path``, walked
  over the validated body, ``paths.find``), with the concrete path of each
  (``attachments[0].file_id``). A string there is a reference; so is an object there, by
  its ``id`` (``conversation: {"id": "conv_…"}``, path ``conversation.id``): an object
  without a string ``id`` is refused as malformed, never forwarded unchecked. Anything else
  names nothing (the body policy has checked the types).
* List cursors: a ``lists`` row's ``after`` / ``before`` query values name objects of the
  listed kind (the path is the parameter's name).

Each must be the caller's tenant's (``rules.may_use``; the ``unknown`` switch applies), else
400 ``reference_not_found`` with that path (``rules.reference_not_found``). A value that is
not an id of its kind at all can be no one's object: it is refused without a lookup.
``distinct`` gives each object once (the first path naming it), so a body that names one
file a thousand times costs one lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.operations.row import Kind, Operation
from gateway.ownership import paths
from gateway.ownership.rules import valid_id

CURSORS = ("after", "before")


@dataclass(frozen=True, slots=True)
class Reference:
    #: Where: a concrete body path, or a cursor's query parameter name.
    path: str
    kind: Kind
    #: The id named; None when the value is not an id of ``kind`` (refused as it stands).
    object_id: str | None


def body_references(row: Operation, body: dict[str, Any] | None) -> list[Reference]:
    """Every reference of ``row.refs`` in ``body``, in the order of the refs, then the body."""
    if body is None:
        return []
    found: list[Reference] = []
    for ref in row.refs:
        if body.get(paths.root(ref.path)) is None:
            continue  # what ``paths.find`` would find first: nothing there (the common case)
        for where, value in paths.find(body, ref.path):
            if isinstance(value, dict):
                where, value = f"{where}.id", value.get("id")
                if not isinstance(value, str):
                    found.append(Reference(where, ref.kind, None))
                    continue
            if isinstance(value, str):
                found.append(Reference(where, ref.kind, valid_id(ref.kind, value)))
    return found


def cursor_references(row: Operation, query: Iterable[tuple[str, str]]) -> list[Reference]:
    """A ``lists`` row's cursors (``after``, ``before``) as references to the listed kind."""
    if row.lists is None:
        return []
    kind = row.lists
    return [Reference(k, kind, valid_id(kind, v)) for k, v in query if k in CURSORS]


def distinct(references: Iterable[Reference]) -> list[Reference]:
    """Each named object once (its first reference), in order."""
    seen: set[str] = set()
    out: list[Reference] = []
    for ref in references:
        if ref.object_id is None or ref.object_id in seen:
            continue
        seen.add(ref.object_id)
        out.append(ref)
    return out


def first_malformed(references: Iterable[Reference]) -> Reference | None:
    """The first reference whose value is not an id of its kind."""
    return next((r for r in references if r.object_id is None), None)
