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
read later, when the forwarder pulls the body.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from gateway.errors import BadRequestError, PayloadTooLargeError
from gateway.ownership.filenames import FILENAME_STAMP_PREFIX, stamp_filename

INVALID_MULTIPART = "invalid_multipart"
INVALID_FILENAME = "invalid_filename"
PURPOSE_NOT_ALLOWED = "purpose_not_allowed"
FILE_TOO_LARGE = "file_too_large"

MAX_PART_HEADER_BYTES = 2048
MAX_PURPOSE_BYTES = 64
MAX_FILENAME_CHARS = 200
OCTET_STREAM = "application/octet-stream"

_CRLF = b"\r\n"
_BCHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"({_TCHARS})/({_TCHARS})", re.ASCII)
_CONTENT_TYPE = re.compile(
    rf"multipart/form-data[ \t]*;[ \t]*boundary=(?:\"([^\"]*)\"|({_TCHARS}))[ \t]*",
    re.IGNORECASE | re.ASCII,
)
# One ``; name=value`` parameter of a Content-Disposition header (value quoted or a token).
_PARAM = re.compile(rb'[ \t]*;[ \t]*([A-Za-z*]+)=(?:"([^"\r\n]*)"|([!#$%&\'*+.^_`|~0-9A-Za-z-]+))')
_BARE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_HEADER_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FORBIDDEN_CHARS = frozenset({"/", "\\", "\u2028", "\u2029"}) | {
    chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))
}


def _refuse(
    message: str, param: str | None = None, code: str = INVALID_MULTIPART
) -> BadRequestError:
    return BadRequestError(message, code=code, param=param)


def boundary_of(content_type: str | None) -> bytes:
    """The caller's boundary (rule 1)."""
    found = _CONTENT_TYPE.fullmatch(content_type or "")
    boundary = None if found is None else (found.group(1) or found.group(2))
    if not boundary or not _BCHARS.fullmatch(boundary):
        raise BadRequestError(
            "A file upload must be multipart/form-data with one boundary parameter.",
            code=INVALID_MULTIPART,
        )
    return boundary.encode("ascii")


def check_filename(name: bytes) -> str:
    """The caller's filename, decoded, or 400 ``invalid_filename`` (rule 6)."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse("The filename must be UTF-8.", "file", INVALID_FILENAME) from None
    if not 1 <= len(text) <= MAX_FILENAME_CHARS:
        raise _refuse(
            f"The filename must have 1 to {MAX_FILENAME_CHARS} characters.",
            "file",
            INVALID_FILENAME,
        )
    if text in (".", "..") or any(
        ch in _FORBIDDEN_CHARS or unicodedata.category(ch) == "Cc" for ch in text
    ):
        raise _refuse(
            "The filename may not hold path separators or control characters.",
            "file",
            INVALID_FILENAME,
        )
    if text[: len(FILENAME_STAMP_PREFIX)].lower() == FILENAME_STAMP_PREFIX:
        raise _refuse(
            f"Filenames starting with {FILENAME_STAMP_PREFIX!r} are reserved for the gateway.",
            "file",
            INVALID_FILENAME,
        )
    return text


def file_content_type(value: bytes | None) -> str:
    """The file part's content type to forward (rule 7)."""
    if value is None:
        return OCTET_STREAM
    text = value.decode("latin-1").split(";", 1)[0].strip().lower()
    found = _MEDIA_TYPE.fullmatch(text)
    if found is None:
        return OCTET_STREAM
    if found.group(1) == "multipart":
        raise _refuse("A file part may not be multipart itself.", "file")
    return text


class _Part:
    """One part's parsed headers."""

    def __init__(self, name: str, filename: bytes | None, content_type: bytes | None) -> None:
        self.name, self.filename, self.content_type = name, filename, content_type


def parse_part_headers(block: bytes) -> _Part:
    """A part's header block (without its final CRLF CRLF) → its name, filename, type (rule 4)."""
    disposition: bytes | None = None
    content_type: bytes | None = None
    for line in block.split(_CRLF):
        if b"\r" in line or b"\n" in line:
            raise _refuse("Multipart lines must end with CRLF.")
        name, colon, value = line.partition(b":")
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise _refuse("Malformed multipart part header.")
        value = value.strip(b" \t")
        lowered = name.lower()
        if lowered == b"content-disposition" and disposition is None:
            disposition = value
        elif lowered == b"content-type" and content_type is None:
            content_type = value
        else:
            raise _refuse("A multipart part may carry only Content-Disposition and Content-Type.")
    if disposition is None:
        raise _refuse("A multipart part needs a Content-Disposition header.")
    return _disposition(disposition, content_type)


def _disposition(value: bytes, content_type: bytes | None) -> _Part:
    head, sep, _ = value.partition(b";")
    if head.strip(b" \t").lower() != b"form-data" or not sep:
        raise _refuse("A multipart part must be form-data with a name.")
    params: dict[bytes, bytes] = {}
    at = len(head)
    while at < len(value):
        found = _PARAM.match(value, at)
        if found is None:
            raise _refuse("Malformed Content-Disposition parameters.")
        key = found.group(1).lower()
        if key in params or key not in (b"name", b"filename"):
            raise _refuse("Content-Disposition may name only name and filename, each once.")
        params[key] = found.group(2) if found.group(2) is not None else found.group(3)
        at = found.end()
    name = params.get(b"name")
    if name is None:
        raise _refuse("A multipart part must be form-data with a name.")
    return _Part(name.decode("latin-1"), params.get(b"filename"), content_type)


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
        if not _BCHARS.fullmatch(boundary.decode("ascii")) or boundary.endswith(b" "):
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
            raise _refuse("The multipart body ended early.")
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
            raise _refuse("The multipart body must start with its boundary (no preamble).")
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
            raise _refuse("Multipart lines must end with CRLF.")
        if end < 0:
            if len(self._buf) >= MAX_PART_HEADER_BYTES + 4:
                raise _refuse("Multipart part headers are too long.")
            return False
        part = parse_part_headers(bytes(self._buf[:end]))
        self._take(end + 4)
        if self.purpose is None:
            if part.name != "purpose" or part.filename is not None:
                raise _refuse("The first part must be purpose (before the file).", "purpose")
            if part.content_type is not None and not (
                part.content_type.split(b";")[0].strip().lower() == b"text/plain"
            ):
                raise _refuse("The purpose part must be text.", "purpose")
            self._state = _PURPOSE
            return True
        if part.name != "file" or part.filename is None or self._seen_file:
            raise _refuse("After purpose, the only part is file (with a filename).", "file")
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
                raise _refuse(
                    "The purpose is not one this profile may upload for.",
                    "purpose",
                    PURPOSE_NOT_ALLOWED,
                )
            return False
        value = bytes(self._buf[:end])
        text = value.decode("latin-1")
        if not value.isascii() or text not in self.purposes:
            raise _refuse(
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
                raise _refuse("Malformed multipart delimiter.")
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
            raise _refuse("The upload has no file part.", "file")
        if two == _CRLF:
            raise _refuse("After the file, a multipart upload may hold no other part.")
        raise _refuse("Malformed multipart delimiter.")

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
            raise _refuse("The file holds the multipart boundary.", "file")
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
        raise _refuse("Nothing may follow the multipart close delimiter.")

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
