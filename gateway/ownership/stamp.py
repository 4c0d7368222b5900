"""The owner stamp on Azure objects: put on requests, taken off answers (pure).

Rules:

* Creating requests carry the stamp, ``{STAMP_KEY: owner digest}`` in the new object's
  metadata at the row's ``creates.stamp_at`` (``threads.create``, ``assistants.create`` and
  ``vector_stores.create`` in ``metadata``, ``threads.create_and_run`` in
  ``thread.metadata``: ``thread: {}`` is added when absent, Azure then creates an empty
  thread). Files have no metadata: the upload rewriter puts the stamp in the filename
  (``filenames``). Vector stores a create describes inline (``creates.inline``: a new
  thread's or assistant's ``tool_resources.file_search.vector_stores[]``) get the stamp in
  each description's ``metadata``.
* A modify with the row's ``restamp_at`` field (``metadata``) gets the object's stamp back:
  Azure replaces the whole metadata map on modify, so a caller's map without it would drop it
  (were Azure to merge instead, re-adding the same value changes nothing). A modify without
  ``metadata`` leaves Azure's map as it is. An object with no known owner is never stamped by
  a modify.
* Policy has already refused any metadata naming ``STAMP_KEY`` and limited the metadata of
  stamped kinds to 15 pairs, so the stamp always fits in Azure's 16.
* Every answer that carries an owned object has the stamp removed: the JSON object of a row's
  ``returns`` (``strip_object_json``), each item of a ``lists`` answer (``listing``), and each
  event of a stream that carries one (``SseStampFilter``, event by event as they pass, never
  the whole stream): the opening event of a streamed create (``thread.created``), and every
  event of a response's stream, created or retrieved (``response.created`` …
  ``response.completed``, the response at ``data.response``: the kind's ``EventShape``). A
  file's filename is given back without its prefix.
* Nothing that cannot be read is relayed unchecked: ``StampFilterError`` (the proxy answers 502,
  or cuts a stream that has started).
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.operations.row import THREAD, EventShape, Kind, Operation
from gateway.ownership import paths
from gateway.ownership.filenames import FILENAME_STAMP_PREFIX, split_filename
from gateway.ownership.rules import STAMP_KEY, valid_id

_STAMP_BYTES = STAMP_KEY.encode()
_EOL = re.compile(rb"\r\n|\n|\r")


class StampFilterError(Exception):
    """A response that may carry the stamp could not be read, so it must not be relayed."""


def _stamped(metadata: Any, owner: str) -> dict[str, Any]:
    return {**(metadata if isinstance(metadata, dict) else {}), STAMP_KEY: owner}


def stamp_request(
    row: Operation, body: dict[str, Any] | None, owner: str | None
) -> dict[str, Any] | None:
    """The validated body to forward, with the owner stamp where the row puts one: a creating
    operation at its ``creates.stamp_at`` (missing objects on the way are created) and in
    each inline object's description, a metadata-replacing one at ``restamp_at`` when the
    body has that field."""
    if owner is None or body is None:
        return body
    if row.creates is not None:
        if row.creates.kind.stamp == "metadata" and row.creates.stamp_at:
            body = _stamp_at(body, row.creates.stamp_at, owner)
        for inline in row.creates.inline:
            body = paths.update(body, inline.at, lambda item: _stamp_description(item, owner))
        return body
    if row.restamp_at is not None and _has(body, row.restamp_at):
        return _stamp_at(body, row.restamp_at, owner)
    return body


def _stamp_description(item: Any, owner: str) -> Any:
    if not isinstance(item, dict):
        return item
    return {**item, "metadata": _stamped(item.get("metadata"), owner)}


def inline_described(row: Operation, body: dict[str, Any] | None) -> bool:
    """Whether a creating request's body describes inline objects (whose ids its answer
    then lists: ``inline.ids_at``)."""
    if row.creates is None or body is None:
        return False
    return any(any(True for _ in paths.find(body, i.at)) for i in row.creates.inline)


def _has(body: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = body
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _stamp_at(body: dict[str, Any], path: tuple[str, ...], owner: str) -> dict[str, Any]:
    head, *rest = path
    if not rest:
        return {**body, head: _stamped(body.get(head), owner)}
    given = body.get(head)
    return {**body, head: _stamp_at(given if isinstance(given, dict) else {}, tuple(rest), owner)}


def without_stamp(obj: Any, kind: Kind = THREAD) -> tuple[Any, bool]:
    """``obj`` (a parsed object of ``kind``) without the stamp; True when it carried one."""
    if not isinstance(obj, dict):
        return obj, False
    if kind.stamp == "filename":
        filename = obj.get("filename")
        if not isinstance(filename, str) or not filename.startswith(FILENAME_STAMP_PREFIX):
            return obj, False
        return {**obj, "filename": split_filename(filename)[1]}, True
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or STAMP_KEY not in metadata:
        return obj, False
    return {**obj, "metadata": {k: v for k, v in metadata.items() if k != STAMP_KEY}}, True


def dump(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _marker(kind: Kind) -> bytes:
    return FILENAME_STAMP_PREFIX.encode() if kind.stamp == "filename" else _STAMP_BYTES


def strip_object_json(body: bytes, kind: Kind = THREAD) -> bytes:
    """An owned object's JSON without the stamp (the same bytes when it has none)."""
    return strip_parsed_object(parse_answer(body), body, kind)


#: What ``parse_answer`` gives for bytes that are no JSON at all.
UNREADABLE: Any = object()


def parse_answer(body: bytes) -> Any:
    """An answer's JSON value, or ``UNREADABLE`` (parsed once for every use of it)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return UNREADABLE


def strip_parsed_object(obj: Any, body: bytes, kind: Kind = THREAD) -> bytes:
    """``strip_object_json`` of ``body`` parsed already as ``obj`` (``parse_answer``; it is
    not changed)."""
    if obj is UNREADABLE:
        raise StampFilterError(f"unreadable {kind.name} object")
    if not isinstance(obj, dict):
        raise StampFilterError(f"the {kind.name} object is not a JSON object")
    stripped, had = without_stamp(obj, kind)
    # The bytes may name the key where the parsed object no longer shows it (a duplicate key
    # that the parser collapsed): re-serialise then too.
    return dump(stripped) if had or _marker(kind) in body else body


def stamp_in_object(obj: Any, kind: Kind = THREAD) -> Any:
    """The stamp's raw value in a parsed owned object (a metadata value, or a stamped
    filename's owner digest), or None."""
    if not isinstance(obj, dict):
        return None
    if kind.stamp == "filename":
        filename = obj.get("filename")
        return split_filename(filename)[0] if isinstance(filename, str) else None
    metadata = obj.get("metadata")
    return metadata.get(STAMP_KEY) if isinstance(metadata, dict) else None


def _field(line: bytes) -> tuple[bytes, bytes]:
    """An SSE line (terminator removed) as (field, value), per the SSE parsing rules."""
    name, colon, value = line.partition(b":")
    if colon and value.startswith(b" "):
        value = value[1:]
    return name, value


class SseStampFilter:
    """Removes the stamp from the events of a stream that carry an owned object, as they pass.

    Events are delimited by a blank line (CRLF, LF or CR line ends). Which events are checked
    is the kind's ``EventShape`` (``Kind.events``; by default only ``event``, the opening
    event, with the object as its ``data``): a response stream's every event, its object at
    ``data.response``; a thread's ``thread.created``. An event whose first line names a type
    that is not checked passes through at once, byte for byte; a checked event (or one whose
    type is not known from its first line) is held until complete, at most ``limit`` bytes
    (the shape's ``max_event_bytes``), and relayed without the stamp — byte for byte when its
    data cannot hold one (neither the key nor a ``\\u`` escape in it). ``object_id`` is the
    id of the object in the first ``event`` (named by its ``event:`` line or, for a shape
    checking every event, its data's ``type``). An incomplete event at the end of the stream
    is dropped, as an SSE client would.
    """

    def __init__(
        self,
        event: str | None = "thread.created",
        kind: Kind = THREAD,
        limit: int | None = None,
    ) -> None:
        self.event = event.encode("ascii") if event is not None else None
        self.kind = kind
        self.shape = kind.events or EventShape((event,) if event is not None else ())
        self.limit = limit if limit is not None else self.shape.max_event_bytes
        self._checked = (
            None
            if self.shape.events is None
            else frozenset(e.encode("ascii") for e in self.shape.events)
        )
        #: The id of the first ``event`` (the new object's), once it has passed.
        self.object_id: str | None = None
        self._buffer = bytearray()  # bytes not yet split into lines
        self._held: list[bytes] = []  # lines of the event being held
        self._held_size = 0
        self._passing = False  # the current event passes through
        self._mid_line = False  # part of the current line has already passed through
        #: Events that have ended (a comment-only block is no event), passed or held.
        self.events = 0

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        out = self._lines(final=False)
        if self._passing and self._buffer:
            # Relay the unfinished line of a passing event now, not when it ends.
            tail = self._buffer[:-1] if self._buffer.endswith(b"\r") else self._buffer[:]
            if tail:
                out += tail
                del self._buffer[: len(tail)]
                self._mid_line = True
        if self._held_size + len(self._buffer) > self.limit:
            raise StampFilterError(f"a {self.kind.name} event is too large to check")
        return bytes(out)

    def finish(self) -> bytes:
        """What is left at the end of the stream: a passing event's last bytes, or the event
        a last CR completes (at the end of the stream it is a line end, not half a CRLF)."""
        out = self._lines(final=True)
        rest = bytes(self._buffer) if self._passing else b""
        self._buffer.clear()
        self._held, self._held_size = [], 0
        return bytes(out) + rest

    def _lines(self, *, final: bool) -> bytearray:
        """The output of every complete line in the buffer (which keeps the rest)."""
        out = bytearray()
        start = 0
        for eol in _EOL.finditer(self._buffer):
            if not final and eol.group() == b"\r" and eol.end() == len(self._buffer):
                break  # perhaps the first half of a CRLF
            line = bytes(self._buffer[start : eol.end()])
            blank = eol.start() == start and not self._mid_line
            self._mid_line = False
            out += self._line(line, blank)
            start = eol.end()
        del self._buffer[:start]
        return out

    def _line(self, line: bytes, blank: bool) -> bytes:
        if self._passing:
            self._passing = not blank
            self.events += blank
            return line
        if blank and not self._held:
            return line  # a blank line between events
        if not self._held and not blank and self._checked is not None:
            name, value = _field(_EOL.sub(b"", line))
            if name == b"event" and value not in self._checked:
                self._passing = True
                return line
        self._held.append(line)
        self._held_size += len(line)
        return self._close() if blank else b""

    def _close(self) -> bytes:
        lines, self._held, self._held_size = self._held, [], 0
        raw = b"".join(lines)
        fields = [_field(_EOL.sub(b"", line)) for line in lines[:-1]]
        self.events += any(name in (b"data", b"event") for name, _ in fields)
        events = [value for name, value in fields if name == b"event"]
        etype = events[-1] if events else None
        if self._checked is not None and (etype is None or etype not in self._checked):
            return raw
        data = b"\n".join(value for name, value in fields if name == b"data")
        marked = _marker(self.kind) in data or b"\\u" in data
        wants_id = self.object_id is None and self.event is not None
        if not marked and not wants_id:
            return raw  # no stamp can be in it: as it was
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            if marked or (self.event is not None and etype == self.event):
                raise StampFilterError(f"unreadable {self.kind.name} event") from None
            return raw  # not JSON (``[DONE]``), and no stamp in it
        if wants_id and self._opens(etype, obj):
            found = _object_at(obj, self.shape.at)
            if isinstance(found, dict):
                self.object_id = valid_id(self.kind, found.get("id"))
        stripped, had = _without_stamp_at(obj, self.shape.at, self.kind)
        if not had and _marker(self.kind) not in data:
            return raw
        eol = _EOL.search(lines[-1])
        end = eol.group() if eol else b"\n"
        out, replaced = [], False
        for line, (name, _value) in zip(lines[:-1], fields, strict=True):
            if name != b"data":
                out.append(line)
            elif not replaced:
                out.append(b"data: " + dump(stripped) + end)
                replaced = True
        return b"".join(out) + lines[-1]

    @property
    def opened(self) -> bool:
        """Whether the stream's opening is past: the new object's id read, or an event (not
        a comment) has ended without it."""
        return self.object_id is not None or self.events > 0

    def _opens(self, etype: bytes | None, obj: Any) -> bool:
        """Whether an event is the opening one: named so by its ``event:`` line, or (a shape
        that checks every event) by its data's ``type``."""
        if etype is not None and etype == self.event:
            return True
        if self._checked is not None or not isinstance(obj, dict) or self.event is None:
            return False
        return bool(obj.get("type") == self.event.decode("ascii"))


def _object_at(obj: Any, at: tuple[str, ...]) -> Any:
    for key in at:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _without_stamp_at(obj: Any, at: tuple[str, ...], kind: Kind) -> tuple[Any, bool]:
    """``obj`` with the object at ``at`` (``()``: ``obj`` itself) without its stamp."""
    if not at:
        return without_stamp(obj, kind)
    head, rest = at[0], at[1:]
    if not isinstance(obj, dict) or not isinstance(obj.get(head), dict):
        return obj, False
    inner, had = _without_stamp_at(obj[head], rest, kind)
    return ({**obj, head: inner}, True) if had else (obj, False)
