"""A bounded cache of verified tokens (pure: ``now`` passed in).

Keyed by the SHA-256 of the ``Authorization`` header's value that carried the token (the token
itself is never stored), an entry lives until the token's ``exp`` and is dropped when the key
that verified it is no longer served. A service that reuses its token for an hour pays one
signature check, not one per request, and its header is not parsed again: a value equal byte
for byte to one that was accepted carries the same token.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import jwt

from gateway.auth.caller import Caller


@dataclass(frozen=True, slots=True)
class CachedToken:
    caller: Caller
    kid: str | None
    key: jwt.PyJWK
    expires_at: float


def header_digest(value: bytes) -> bytes:
    """The cache key of an ``Authorization`` header value."""
    return hashlib.sha256(value).digest()


class TokenCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, CachedToken] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes, now: float) -> CachedToken | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return entry

    def put(self, digest: bytes, entry: CachedToken, now: float) -> None:
        if self.max_entries <= 0 or entry.expires_at <= now:
            return
        self._entries[digest] = entry
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, digest: bytes) -> None:
        self._entries.pop(digest, None)
