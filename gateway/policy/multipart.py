"""A file upload's ``multipart/form-data`` body: parsed as it streams in, re-emitted canonical
(pure: no I/O, no clock, no randomness; the gateway's boundary is handed in).

Rules (anything else is refused, 400 ``invalid_multipart`` unless a rule names another code):

1. ``Content-Type`` is ``multipart/form-data`` with exactly one parameter, ``boundary``
   (1 to 70 of RFC 2046's boundary characters, quoted or not, no trailing space).
2. The body starts with the first delimiter, ``--<boundary>`` CRLF: no preamble, no padding
   after a boundary. Every line ends with CRLF (a lone CR or LF in part headers is refused).
3. Exactly two parts, in this order: ``purpose`` then ``file``. A missing, extra, duplicate or
   reordered part is refused, so ``purpose`` is checked before any file byte is forwarded.
4. Part headers: ``Content-Disposition: form-data`` with ``name`` (and, for ``file`` only,
   ``filename``), each parameter once, quoted or a token, no ``filename*``; an optional
   ``Content-Type``; no other header (no ``Content-Transfer-Encoding``), no folded lines; at
   most ``MAX_PART_HEADER_BYTES`` per part.
5. ``purpose``: at most ``MAX_PURPOSE_BYTES``, ASCII, one of the allowed purposes, else 400
   ``purpose_not_allowed`` (param ``purpose``). Its ``Content-Type``, if any, is ``text/plain``.
6. ``filename`` (else 400 ``invalid_filename``, param ``file``): UTF-8, 1 to
   ``MAX_FILENAME_CHARS`` code points, no ``/`` or ``\\``, no control or bidirectional-override
   characters (NUL, CR, LF, DEL, C1, U+202A-U+202E, U+2066-U+2069, line separators), not ``.``
   or ``..``, and never starting with the owner stamp prefix ``gwo-`` (in any case).
7. The file's ``Content-Type``: a plain ``type/subtype`` is passed on lower-cased without its
   parameters; none or anything else becomes ``application/octet-stream``; ``multipart/*``
   (a nested multipart) is refused.
8. The file's content is any bytes up to ``max_file_bytes`` (413 ``file_too_large``), ended by
   the delimiter CRLF ``--<boundary>``, which must be the close delimiter (``--``), followed by
   at most one CRLF and nothing else: no epilogue, no part after it.

What is emitted: ``--<gateway boundary>``, the ``purpose`` part with only its
``Content-Disposition``, the ``file`` part with ``Content-Disposition`` (the filename stamped
with the owner: ``ownership.filenames.stamp_filename``) and ``Content-Type``, the content bytes
as they arrive, and the close delimiter — only from ``finish()``, so Azure never holds a
complete body the gateway has not checked to its end. The owner is read (once) when the file
part's header is first emitted, or when ``output_length`` is asked, whichever comes first.

``hold=True`` keeps every emitted byte inside until ``release()``: the policy stage reads the
body's head (up to the file part's header) before anything goes upstream, and the stamp is
read later, when the forwarder pulls the body. One part's rules (headers, filename, content
type: rules 1, 4, 6, 7) are in ``formparts``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from gateway.errors import PayloadTooLargeError
from gateway.ownership.filenames import stamp_filename
from gateway.policy.formparts import (
    BCHARS,
    INVALID_FILENAME,
    INVALID_MULTIPART,
    MAX_FILENAME_CHARS,
    MAX_PART_HEADER_BYTES,
    boundary_of,
    check_filename,
    file_content_type,
    parse_part_headers,
    refuse,
)

PURPOSE_NOT_ALLOWED = "purpose_not_allowed"
FILE_TOO_LARGE = "file_too_large"
MAX_PURPOSE_BYTES = 64
_CRLF = b"\r\n"
_BARE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")

__all__ = [
    "FILE_TOO_LARGE",
    "INVALID_FILENAME",
    "INVALID_MULTIPART",
    "MAX_FILENAME_CHARS",
    "MAX_PART_HEADER_BYTES",
    "PURPOSE_NOT_ALLOWED",
    "MultipartRewriter",
]


# Parser states.
_START, _HEADERS, _PURPOSE, _AFTER, _FILE, _CLOSE, _DONE = range(7)
_HEADER_MARK = object()  # the file part's header, rendered when it is emitted


class MultipartRewriter:
    """Feed the caller's body in chunks of any size; each call returns the bytes to forward."""

    def __init__(
        self,
        content_type: str | None,
        *,
        boundary: bytes,
        purposes: frozenset[str],
        max_file_bytes: int,
        owner: Callable[[], str | None] = lambda: None,
        hold: bool = False,
    ) -> None:
        if not BCHARS.fullmatch(boundary.decode("ascii")) or boundary.endswith(b" "):
            raise ValueError("the gateway's boundary must be a valid multipart boundary")
        self.source = boundary_of(content_type)
        self.boundary = boundary
        self.purposes = purposes
        self.max_file_bytes = max_file_bytes
        self._owner_of = owner
        self._owner_read = False
        self._owner: str | None = None
        self.hold = hold
        self._delimiter = _CRLF + b"--" + self.source
        self._ours = b"--" + boundary
        self._buf = bytearray()
        self._state = _START
        self._held: list[bytes | object] = []
        self._tail = b""  # the end of the content emitted so far (for the boundary check)
        self.consumed = 0  # caller bytes read up to the end of the head
        self.head_bytes = 0  # caller bytes of the head (through the file part's headers)
        self.purpose: str | None = None
        self.filename: str | None = None
        self.content_type: str | None = None
        self.file_bytes = 0
        self._seen_file = False
        self._final_crlf = False

    # ------------------------------------------------------------------ public

    @property
    def head_done(self) -> bool:
        """The purpose and the file part's header have been read and checked."""
        return self._seen_file

    @property
    def complete(self) -> bool:
        return self._state == _CLOSE

    def owner(self) -> str | None:
        if not self._owner_read:
            self._owner, self._owner_read = self._owner_of(), True
        return self._owner

    def feed(self, chunk: bytes) -> bytes:
        if self._state == _DONE:
            raise ValueError("feed after finish")
        self._buf += chunk
        self._parse()
        return self._drain()

    def finish(self) -> bytes:
        """The end of the caller's body: the close delimiter, or 400 if the body is cut short."""
        if self._state != _CLOSE or self._buf == b"\r":
            raise refuse("The multipart body ended early.")
        self._state = _DONE
        self._emit(_CRLF + self._ours + b"--" + (_CRLF if self._final_crlf else b""))
        return self._drain()

    def release(self) -> bytes:
        """Stop holding: everything emitted so far."""
        self.hold = False
        return self._drain()

    def least_file_bytes(self, input_length: int) -> int:
        """The smallest file a body of ``input_length`` bytes can hold (once the head is done):
        what is left after the head and the longest close delimiter."""
        if not self.head_done:
            raise ValueError("the head is not read yet")
        return input_length - self.head_bytes - len(self._delimiter) - 4

    def output_length(self, input_length: int) -> int:
        """The exact length of the output for a caller body of ``input_length`` bytes (once
        the head is done): the framing differs, the content is the same bytes."""
        if not self.head_done:
            raise ValueError("the head is not read yet")
        head_out = len(self._purpose_part()) + len(self._file_header())
        # Caller: head, content, CRLF--boundary--[CRLF]; ours: head, content, CRLF--ours--[CRLF].
        return (
            input_length - self.head_bytes + head_out + len(self._ours) - len(self._delimiter) + 2
        )

    # ------------------------------------------------------------------ parsing

    def _parse(self) -> None:
        while True:
            state = self._state
            if state == _START:
                progressed = self._start()
            elif state == _HEADERS:
                progressed = self._headers()
            elif state == _PURPOSE:
                progressed = self._purpose()
            elif state == _AFTER:
                progressed = self._after()
            elif state == _FILE:
                progressed = self._content()
            else:
                progressed = self._close()
            if not progressed:
                return

    def _start(self) -> bool:
        first = b"--" + self.source + _CRLF
        if not first.startswith(bytes(self._buf[: len(first)])):
            raise refuse("The multipart body must start with its boundary (no preamble).")
        if len(self._buf) < len(first):
            return False
        self._take(len(first))
        self._state = _HEADERS
        return True

    def _headers(self) -> bool:
        end = self._buf.find(b"\r\n\r\n", 0, MAX_PART_HEADER_BYTES + 4)
        seen = bytes(self._buf[: MAX_PART_HEADER_BYTES + 4 if end < 0 else end])
        bare = _BARE_EOL.search(seen)
        if bare is not None and not (
            end < 0 and bare.start() == len(seen) - 1 == len(self._buf) - 1
        ):
            raise refuse("Multipart lines must end with CRLF.")
        if end < 0:
            if len(self._buf) >= MAX_PART_HEADER_BYTES + 4:
                raise refuse("Multipart part headers are too long.")
            return False
        part = parse_part_headers(bytes(self._buf[:end]))
        self._take(end + 4)
        if self.purpose is None:
            if part.name != "purpose" or part.filename is not None:
                raise refuse("The first part must be purpose (before the file).", "purpose")
            if part.content_type is not None and not (
                part.content_type.split(b";")[0].strip().lower() == b"text/plain"
            ):
                raise refuse("The purpose part must be text.", "purpose")
            self._state = _PURPOSE
            return True
        if part.name != "file" or part.filename is None or self._seen_file:
            raise refuse("After purpose, the only part is file (with a filename).", "file")
        self.filename = check_filename(part.filename)
        self.content_type = file_content_type(part.content_type)
        self._seen_file = True
        self.head_bytes = self.consumed
        self._emit(self._purpose_part())
        self._held.append(_HEADER_MARK)
        self._state = _FILE
        return True

    def _purpose(self) -> bool:
        end = self._buf.find(self._delimiter, 0, MAX_PURPOSE_BYTES + len(self._delimiter))
        if end < 0:
            if len(self._buf) >= MAX_PURPOSE_BYTES + len(self._delimiter):
                raise refuse(
                    "The purpose is not one this profile may upload for.",
                    "purpose",
                    PURPOSE_NOT_ALLOWED,
                )
            return False
        value = bytes(self._buf[:end])
        text = value.decode("latin-1")
        if not value.isascii() or text not in self.purposes:
            raise refuse(
                "The purpose is not one this profile may upload for.",
                "purpose",
                PURPOSE_NOT_ALLOWED,
            )
        self.purpose = text
        self._take(end + len(self._delimiter))
        self._state = _AFTER
        return True

    def _after(self) -> bool:
        if len(self._buf) < 2:
            if self._buf and bytes(self._buf) not in (b"\r", b"-"):
                raise refuse("Malformed multipart delimiter.")
            return False
        two = bytes(self._buf[:2])
        self._take(2)
        if two == _CRLF and not self._seen_file:
            self._state = _HEADERS
            return True
        if two == b"--" and self._seen_file:
            self._state = _CLOSE
            return True
        if two == b"--":
            raise refuse("The upload has no file part.", "file")
        if two == _CRLF:
            raise refuse("After the file, a multipart upload may hold no other part.")
        raise refuse("Malformed multipart delimiter.")

    def _content(self) -> bool:
        buf, delimiter = self._buf, self._delimiter
        end = buf.find(delimiter)
        if end >= 0:
            self._content_bytes(end)
            del buf[: len(delimiter)]
            self.consumed += len(delimiter)
            self._state = _AFTER
            return True
        safe = len(buf) - len(delimiter) + 1
        if safe > 0:
            self._content_bytes(safe)
        return False

    def _content_bytes(self, count: int) -> None:
        self.file_bytes += count
        if self.file_bytes > self.max_file_bytes:
            raise PayloadTooLargeError(
                f"The file is larger than {self.max_file_bytes} bytes.",
                code=FILE_TOO_LARGE,
                param="file",
            )
        data = bytes(self._buf[:count])
        self._take(count)
        # Defence in depth: the gateway's boundary (random per request) never in the content.
        seam = self._tail + data[: len(self._ours) - 1]
        if self._ours in data or self._ours in seam:
            raise refuse("The file holds the multipart boundary.", "file")
        keep = len(self._ours) - 1
        self._tail = data[-keep:] if len(data) >= keep else (self._tail + data)[-keep:]
        self._emit(data)

    def _close(self) -> bool:
        buf = bytes(self._buf)
        if buf in (b"", b"\r"):
            return False
        if buf == _CRLF and not self._final_crlf:
            self._final_crlf = True
            self._take(2)
            return False
        raise refuse("Nothing may follow the multipart close delimiter.")

    # ------------------------------------------------------------------ output

    def _take(self, count: int) -> None:
        del self._buf[:count]
        self.consumed += count

    def _emit(self, data: bytes) -> None:
        if data:
            self._held.append(data)

    def _drain(self) -> bytes:
        if self.hold or not self._held:
            return b""
        out = b"".join(p if isinstance(p, bytes) else self._file_header() for p in self._held)
        self._held.clear()
        return out

    def _purpose_part(self) -> bytes:
        assert self.purpose is not None
        return (
            self._ours
            + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            + self.purpose.encode("ascii")
            + _CRLF
        )

    def _file_header(self) -> bytes:
        assert self.filename is not None and self.content_type is not None
        owner = self.owner()
        name = self.filename if owner is None else stamp_filename(owner, self.filename)
        return (
            self._ours
            + b'\r\nContent-Disposition: form-data; name="file"; filename="'
            + name.encode("utf-8")
            + b'"\r\nContent-Type: '
            + self.content_type.encode("ascii")
            + b"\r\n\r\n"
        )
