"""The owner stamp on Azure threads: put on requests, taken off responses (pure).

Rules:

* Thread-creating requests carry the stamp, ``{STAMP_KEY: owner digest}`` in the thread's
  metadata: ``threads.create`` in ``metadata``, ``threads.create_and_run`` in
  ``thread.metadata`` (``thread: {}`` is added when absent: Azure then creates an empty thread).
* ``threads.modify`` with ``metadata`` gets the thread's stamp back: Azure replaces the whole
  metadata map on modify, so a caller's map without it would drop it (were Azure to merge
  instead, re-adding the same value changes nothing). A modify without ``metadata`` leaves
  Azure's map as it is. A thread with no known owner is never stamped by a modify.
* Policy has already refused any metadata naming ``STAMP_KEY`` and limited thread metadata to
  15 pairs, so the stamp always fits in Azure's 16.
* Every response that carries the thread object has the stamp removed: the JSON thread of
  ``threads.create`` / ``retrieve`` / ``modify`` (``strip_thread_json``) and each
  ``thread.created`` event of a streamed ``threads.create_and_run`` (``SseStampFilter``, event
  by event as they pass, never the whole stream).
* Nothing that cannot be read is relayed unchecked: ``StampFilterError`` (the proxy answers 502,
  or cuts a stream that has started).
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.operations.row import THREAD, Kind, Operation
from gateway.ownership.rules import SSE_PEEK_LIMIT, STAMP_KEY, valid_id

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
    operation at its ``creates.stamp_at`` (missing objects on the way are created), a
    metadata-replacing one at ``restamp_at`` when the body has that field."""
    if owner is None or body is None:
        return body
    if row.creates is not None:
        return _stamp_at(body, row.creates.stamp_at, owner)
    if row.restamp_at is not None and _has(body, row.restamp_at):
        return _stamp_at(body, row.restamp_at, owner)
    return body


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


def _without_stamp(obj: Any) -> tuple[Any, bool]:
    """``obj`` (a parsed thread object) without the stamp; True when it carried one."""
    if not isinstance(obj, dict):
        return obj, False
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or STAMP_KEY not in metadata:
        return obj, False
    return {**obj, "metadata": {k: v for k, v in metadata.items() if k != STAMP_KEY}}, True


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def strip_object_json(body: bytes) -> bytes:
    """An owned object's JSON without the stamp (the same bytes when it has none)."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        raise StampFilterError("unreadable thread object") from None
    if not isinstance(obj, dict):
        raise StampFilterError("the thread object is not a JSON object")
    stripped, had = _without_stamp(obj)
    # The bytes may name the key where the parsed object no longer shows it (a duplicate key
    # that the parser collapsed): re-serialise then too.
    return _dump(stripped) if had or _STAMP_BYTES in body else body


def stamp_in_object(obj: Any) -> Any:
    """The stamp's raw value in a parsed owned object, or None."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    return metadata.get(STAMP_KEY) if isinstance(metadata, dict) else None


def _field(line: bytes) -> tuple[bytes, bytes]:
    """An SSE line (terminator removed) as (field, value), per the SSE parsing rules."""
    name, colon, value = line.partition(b":")
    if colon and value.startswith(b" "):
        value = value[1:]
    return name, value


class SseStampFilter:
    """Removes the stamp from the ``thread.created`` events of a stream as they pass.

    Events are delimited by a blank line (CRLF, LF or CR line ends). An event whose first line
    names another event type passes through at once, byte for byte; a ``thread.created`` event
    (or one whose type is not known from its first line) is held until complete, at most
    ``limit`` bytes, and relayed without the stamp. ``object_id`` is the id of the first
    ``thread.created`` event. An incomplete event at the end of the stream is dropped, as an
    SSE client would.
    """

    def __init__(
        self, event: str = "thread.created", kind: Kind = THREAD, limit: int = SSE_PEEK_LIMIT
    ) -> None:
        self.event = event.encode("ascii")
        self.kind = kind
        self.limit = limit
        #: The id of the first ``event`` (the new object's), once it has passed.
        self.object_id: str | None = None
        self._buffer = bytearray()  # bytes not yet split into lines
        self._held: list[bytes] = []  # lines of the event being held
        self._held_size = 0
        self._passing = False  # the current event passes through
        self._mid_line = False  # part of the current line has already passed through

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        out = bytearray()
        start = 0
        for eol in _EOL.finditer(self._buffer):
            if eol.group() == b"\r" and eol.end() == len(self._buffer):
                break  # perhaps the first half of a CRLF
            line = bytes(self._buffer[start : eol.end()])
            blank = eol.start() == start and not self._mid_line
            self._mid_line = False
            out += self._line(line, blank)
            start = eol.end()
        del self._buffer[:start]
        if self._passing and self._buffer:
            # Relay the unfinished line of a passing event now, not when it ends.
            tail = self._buffer[:-1] if self._buffer.endswith(b"\r") else self._buffer[:]
            if tail:
                out += tail
                del self._buffer[: len(tail)]
                self._mid_line = True
        if self._held_size + len(self._buffer) > self.limit:
            raise StampFilterError("a thread.created event is too large to check")
        return bytes(out)

    def finish(self) -> bytes:
        """What is left at the end of the stream (a passing event's last bytes)."""
        rest = bytes(self._buffer) if self._passing else b""
        self._buffer.clear()
        self._held, self._held_size = [], 0
        return rest

    def _line(self, line: bytes, blank: bool) -> bytes:
        if self._passing:
            self._passing = not blank
            return line
        if blank and not self._held:
            return line  # a blank line between events
        if not self._held and not blank:
            name, value = _field(_EOL.sub(b"", line))
            if name == b"event" and value != self.event:
                self._passing = True
                return line
        self._held.append(line)
        self._held_size += len(line)
        return self._close() if blank else b""

    def _close(self) -> bytes:
        lines, self._held, self._held_size = self._held, [], 0
        raw = b"".join(lines)
        fields = [_field(_EOL.sub(b"", line)) for line in lines[:-1]]
        events = [value for name, value in fields if name == b"event"]
        if not events or events[-1] != self.event:
            return raw
        data = b"\n".join(value for name, value in fields if name == b"data")
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            raise StampFilterError("unreadable thread.created event") from None
        if self.object_id is None and isinstance(obj, dict):
            self.object_id = valid_id(self.kind, obj.get("id"))
        stripped, had = _without_stamp(obj)
        if not had and _STAMP_BYTES not in data:
            return raw
        eol = _EOL.search(lines[-1])
        end = eol.group() if eol else b"\n"
        out, replaced = [], False
        for line, (name, _value) in zip(lines[:-1], fields, strict=True):
            if name != b"data":
                out.append(line)
            elif not replaced:
                out.append(b"data: " + _dump(stripped) + end)
                replaced = True
        return b"".join(out) + lines[-1]
