"""Files of the fake: a multipart/form-data upload (``purpose`` + ``file``), list (``purpose``
filter, paginated), retrieve, delete and content.

The filename is stored exactly as sent in the part's ``Content-Disposition`` (the gateway stamps
it with a ``gwo-<digest>-`` prefix; tests read it back here). Ids follow Azure: ``assistant-``
+ alphanumerics for purpose ``assistants``, ``file-`` + hex otherwise. The multipart parser is
this module's own (RFC 7578, no python-multipart): the fake must see the bytes as sent.
No I/O; callers hold ``Store.lock``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from tests.fakeazure.shapes import (
    Json,
    ListQuery,
    invalid,
    list_json,
    new_id,
    not_found,
    paginate,
)

PURPOSES = frozenset({"assistants", "fine-tune", "batch", "assistants_output", "vision"})
#: The v1 API's upload purposes (``AzureCreateFileRequestMultiPart.purpose``, GA document).
V1_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "evals"})
_EXPIRY = ("expires_after[seconds]", "expires_after[anchor]")
#: What ``files.content`` sends per body chunk (the response is streamed, never one write).
CONTENT_CHUNK = 64 * 1024
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_PARAM = re.compile(r';\s*([A-Za-z*]+)="((?:[^"\\]|\\.)*)"|;\s*([A-Za-z*]+)=([^;\s]+)')


@dataclass(eq=False)
class StoredFile:
    id: str
    created_at: int
    seq: int
    filename: str
    purpose: str
    content: bytes
    content_type: str | None
    expires_at: int | None = None


def file_json(f: StoredFile) -> Json:
    """The ``File`` of the authoring document (2024-05-01-preview): ``status_details`` is a
    non-nullable string sent only when processing failed, so a processed file has none."""
    out: Json = {
        "id": f.id,
        "object": "file",
        "bytes": len(f.content),
        "created_at": f.created_at,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
    }
    if f.expires_at is not None:  # v1 uploads with expires_after (a non-nullable integer)
        out["expires_at"] = f.expires_at
    return out


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_multipart(content_type: str | None, body: bytes) -> list[Part]:
    """The parts of a ``multipart/form-data`` body; a malformed one is a 400."""
    if not content_type or not content_type.lower().startswith("multipart/form-data"):
        raise invalid("Invalid Content-Type header: expected multipart/form-data.")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise invalid("Invalid multipart body: no boundary.")
    delimiter = b"--" + (found.group(1) or found.group(2)).encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise invalid("Invalid multipart body: no closing boundary.")
    parts: list[Part] = []
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise invalid("Invalid multipart body: bad delimiter line.")
        head, sep, data = chunk[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise invalid("Invalid multipart body: a part without headers.")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "surrogateescape").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        params = _params(disposition)
        if not disposition.lower().startswith("form-data") or "name" not in params:
            raise invalid("Invalid multipart body: a part without a form-data name.")
        parts.append(
            Part(params["name"], params.get("filename"), headers.get("content-type"), data)
        )
    return parts


def _params(disposition: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for quoted_key, quoted, bare_key, bare in _PARAM.findall(disposition):
        key = (quoted_key or bare_key).lower()
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted_key else bare
        out.setdefault(key, value)
    return out


class Files:
    """The files of one fake resource."""

    def __init__(self, now: Callable[[], int], next_seq: Callable[[], int]) -> None:
        self._now, self._next_seq = now, next_seq
        self.items: dict[str, StoredFile] = {}

    def upload(self, content_type: str | None, body: bytes, *, v1: bool = False) -> StoredFile:
        """A dated ``files.upload`` (``purpose`` + ``file``), or with ``v1`` the v1 API's: its
        purposes, and the optional ``expires_after[seconds]`` / ``expires_after[anchor]``
        fields (the GA document lists ``expires_after`` as required; the stock SDK sends it
        only when given, and the fake accepts both)."""
        parts = parse_multipart(content_type, body)
        fields = {p.name: p for p in parts}
        known = ("purpose", "file", *(_EXPIRY if v1 else ()))
        for name in fields:
            if name not in known:
                raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
        for name in ("purpose", "file"):
            if name not in fields:
                raise invalid(
                    f"Missing required parameter: '{name}'.", name, "missing_required_parameter"
                )
        purpose = fields["purpose"].data.decode("utf-8", "replace")
        if purpose not in (V1_PURPOSES if v1 else PURPOSES):
            raise invalid(f"Invalid value for 'purpose': {purpose!r}.", "purpose", "invalid_value")
        part = fields["file"]
        if not part.filename:
            raise invalid("Invalid 'file': a file part needs a filename.", "file")
        expires_at = self._expiry(fields) if v1 else None
        file_id = (
            new_id("assistant-") if purpose == "assistants" else f"file-{secrets.token_hex(16)}"
        )
        stored = StoredFile(
            file_id,
            self._now(),
            self._next_seq(),
            part.filename,
            purpose,
            part.data,
            part.content_type,
            expires_at,
        )
        self.items[stored.id] = stored
        return stored

    def _expiry(self, fields: dict[str, Part]) -> int | None:
        given = [name for name in _EXPIRY if name in fields]
        if not given:
            return None
        if len(given) != 2 or fields[_EXPIRY[1]].data != b"created_at":
            raise invalid(
                "Invalid 'expires_after': 'seconds' and 'anchor' ('created_at') are required.",
                "expires_after",
                "invalid_value",
            )
        try:
            seconds = int(fields[_EXPIRY[0]].data)
        except ValueError:
            seconds = -1
        if not 3600 <= seconds <= 2_592_000:
            raise invalid(
                "Invalid 'expires_after.seconds': between 3600 and 2592000.",
                "expires_after.seconds",
                "invalid_value",
            )
        return self._now() + seconds

    def get(self, file_id: str) -> StoredFile:
        if file_id not in self.items:
            raise not_found("file", file_id)
        return self.items[file_id]

    def delete(self, file_id: str) -> Json:
        self.get(file_id)
        del self.items[file_id]
        return {"id": file_id, "object": "file", "deleted": True}

    def list(self, q: ListQuery) -> Json:
        items = [f for f in self.items.values() if q.purpose is None or f.purpose == q.purpose]
        page, more = paginate(items, q, lambda f: (f.created_at, f.seq), lambda f: f.id)
        return list_json([file_json(f) for f in page], more)
