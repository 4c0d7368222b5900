"""One part of a file upload's ``multipart/form-data`` body: its headers, its filename, its
content type (pure; the rules are numbered in ``multipart``)."""

from __future__ import annotations

import re
import unicodedata

from gateway.errors import BadRequestError
from gateway.ownership.filenames import FILENAME_STAMP_PREFIX

INVALID_MULTIPART = "invalid_multipart"
INVALID_FILENAME = "invalid_filename"

MAX_PART_HEADER_BYTES = 2048
MAX_FILENAME_CHARS = 200
OCTET_STREAM = "application/octet-stream"

_CRLF = b"\r\n"
BCHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"({_TCHARS})/({_TCHARS})", re.ASCII)
_CONTENT_TYPE = re.compile(
    rf"multipart/form-data[ \t]*;[ \t]*boundary=(?:\"([^\"]*)\"|({_TCHARS}))[ \t]*",
    re.IGNORECASE | re.ASCII,
)
# One ``; name=value`` parameter of a Content-Disposition header (value quoted or a token).
_PARAM = re.compile(rb'[ \t]*;[ \t]*([A-Za-z*]+)=(?:"([^"\r\n]*)"|([!#$%&\'*+.^_`|~0-9A-Za-z-]+))')
_HEADER_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FORBIDDEN_CHARS = frozenset({"/", "\\", "\u2028", "\u2029"}) | {
    chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))
}


def refuse(
    message: str, param: str | None = None, code: str = INVALID_MULTIPART
) -> BadRequestError:
    return BadRequestError(message, code=code, param=param)


def boundary_of(content_type: str | None) -> bytes:
    """The caller's boundary (rule 1)."""
    found = _CONTENT_TYPE.fullmatch(content_type or "")
    boundary = None if found is None else (found.group(1) or found.group(2))
    if not boundary or not BCHARS.fullmatch(boundary):
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
        raise refuse("The filename must be UTF-8.", "file", INVALID_FILENAME) from None
    if not 1 <= len(text) <= MAX_FILENAME_CHARS:
        raise refuse(
            f"The filename must have 1 to {MAX_FILENAME_CHARS} characters.",
            "file",
            INVALID_FILENAME,
        )
    if text in (".", "..") or any(
        ch in _FORBIDDEN_CHARS or unicodedata.category(ch) == "Cc" for ch in text
    ):
        raise refuse(
            "The filename may not hold path separators or control characters.",
            "file",
            INVALID_FILENAME,
        )
    if text[: len(FILENAME_STAMP_PREFIX)].lower() == FILENAME_STAMP_PREFIX:
        raise refuse(
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
        raise refuse("A file part may not be multipart itself.", "file")
    return text


class Part:
    """One part's parsed headers."""

    def __init__(self, name: str, filename: bytes | None, content_type: bytes | None) -> None:
        self.name, self.filename, self.content_type = name, filename, content_type


def parse_part_headers(block: bytes) -> Part:
    """A part's header block (without its final CRLF CRLF) → its name, filename, type (rule 4)."""
    disposition: bytes | None = None
    content_type: bytes | None = None
    for line in block.split(_CRLF):
        if b"\r" in line or b"\n" in line:
            raise refuse("Multipart lines must end with CRLF.")
        name, colon, value = line.partition(b":")
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise refuse("Malformed multipart part header.")
        value = value.strip(b" \t")
        lowered = name.lower()
        if lowered == b"content-disposition" and disposition is None:
            disposition = value
        elif lowered == b"content-type" and content_type is None:
            content_type = value
        else:
            raise refuse("A multipart part may carry only Content-Disposition and Content-Type.")
    if disposition is None:
        raise refuse("A multipart part needs a Content-Disposition header.")
    return _disposition(disposition, content_type)


def _disposition(value: bytes, content_type: bytes | None) -> Part:
    head, sep, _ = value.partition(b";")
    if head.strip(b" \t").lower() != b"form-data" or not sep:
        raise refuse("A multipart part must be form-data with a name.")
    params: dict[bytes, bytes] = {}
    at = len(head)
    while at < len(value):
        found = _PARAM.match(value, at)
        if found is None:
            raise refuse("Malformed Content-Disposition parameters.")
        key = found.group(1).lower()
        if key in params or key not in (b"name", b"filename"):
            raise refuse("Content-Disposition may name only name and filename, each once.")
        params[key] = found.group(2) if found.group(2) is not None else found.group(3)
        at = found.end()
    name = params.get(b"name")
    if name is None:
        raise refuse("A multipart part must be form-data with a name.")
    return Part(name.decode("latin-1"), params.get(b"filename"), content_type)
