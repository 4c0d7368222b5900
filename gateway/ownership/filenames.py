"""The owner stamp of objects without metadata (files): a reserved prefix of the filename (pure).

A file uploaded through the gateway is sent to Azure as ``gwo-<owner digest>-<filename>``: the
stamp survives anything that happens to the gateway's own records (Redis flushed, restarted,
another replica), as the metadata stamp of threads, assistants and vector stores does. Callers
never see it: every answer carrying a file object has it taken off (``split_filename``), and
a caller's filename can never itself look stamped (policy refuses names that start with
``FILENAME_STAMP_PREFIX``).
"""

from __future__ import annotations

import re

FILENAME_STAMP_PREFIX = "gwo-"
#: ``gwo-`` + the owner digest (``rules.tenant_digest``: 32 lowercase hex) + ``-`` + the name.
_STAMPED = re.compile(r"gwo-([0-9a-f]{32})-(.*)", re.DOTALL)


def stamp_filename(owner: str, filename: str) -> str:
    """The filename Azure stores for ``owner``'s upload of ``filename``."""
    if not re.fullmatch(r"[0-9a-f]{32}", owner):
        raise ValueError("an owner digest is 32 lowercase hex characters")
    return f"{FILENAME_STAMP_PREFIX}{owner}-{filename}"


def split_filename(stored: str) -> tuple[str | None, str]:
    """``(owner digest, the caller's filename)`` of a stored filename; ``(None, stored)`` when
    it carries no stamp."""
    found = _STAMPED.fullmatch(stored)
    if found is None:
        return None, stored
    return found.group(1), found.group(2)
