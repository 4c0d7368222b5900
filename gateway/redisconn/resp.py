"""RESP2, the little of it the limiter's pipe speaks (pure: bytes in, values out; no I/O).

``command`` packs one command; :class:`ReplyReader` turns the bytes a connection receives
into whole replies, in order, however they were split: bulk and simple strings as ``bytes``,
integers as ``int``, arrays as ``list``, nil as ``None``, and an error as an
:class:`ErrorReply` value (returned, not raised: the pipe decides whose call it was).
Anything else is a :class:`ProtocolError` (the connection is not usable after it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_CRLF = b"\r\n"
_BULK, _ARRAY, _SIMPLE, _ERROR, _INTEGER = 36, 42, 43, 45, 58  # $ * + - :


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A ``-`` reply: the error's whole text (``NOSCRIPT No matching script…``)."""

    message: str


class ProtocolError(ValueError):
    """Bytes that are not a RESP2 reply."""


def command(*args: bytes) -> bytes:
    """One command as a RESP2 array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    parts += [b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args]
    return b"".join(parts)


def _parse(buf: bytes, pos: int) -> tuple[Any, int] | None:
    """The reply starting at ``pos`` and where the next one starts; None if incomplete."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        return None
    kind = buf[pos]
    line = buf[pos + 1 : end]
    if kind == _BULK:
        size = int(line)
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buf) < stop + 2:
            return None
        return buf[end + 2 : stop], stop + 2
    if kind == _ARRAY:
        count = int(line)
        if count < 0:
            return None, end + 2
        items: list[Any] = []
        at = end + 2
        for _ in range(count):
            parsed = _parse(buf, at)
            if parsed is None:
                return None
            items.append(parsed[0])
            at = parsed[1]
        return items, at
    if kind == _SIMPLE:
        return line, end + 2
    if kind == _ERROR:
        return ErrorReply(line.decode("utf-8", "replace")), end + 2
    if kind == _INTEGER:
        return int(line), end + 2
    raise ProtocolError(f"not a RESP2 reply: {bytes(buf[pos : pos + 1])!r}")


class ReplyReader:
    """Whole replies out of a stream of bytes, in order."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Any]:
        """The replies ``data`` completes (the rest is kept for the next call)."""
        buf = self._buffer + data if self._buffer else data
        replies: list[Any] = []
        pos = 0
        size = len(buf)
        try:
            while pos < size:
                parsed = _parse(buf, pos)
                if parsed is None:
                    break
                replies.append(parsed[0])
                pos = parsed[1]
        except (ValueError, IndexError) as exc:
            raise ProtocolError(str(exc)) from exc
        self._buffer = buf[pos:]
        return replies
