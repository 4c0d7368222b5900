"""The key-lookup port the token verifier consumes (implemented by ``jwks.py``)."""

from __future__ import annotations

from typing import Protocol

import jwt


class KeyProvider(Protocol):
    """Gives the verification key for a token's ``kid``.

    Raises ``errors.AuthenticationError(reason="unknown_kid")`` when no key matches (after at
    most one refresh per cooldown), and ``errors.ServiceUnavailableError(code="jwks_unavailable")``
    when the key set could not be fetched and the last good one is past its stale period.
    """

    async def get_key(self, kid: str | None) -> jwt.PyJWK: ...

    def key_now(self, kid: str | None) -> jwt.PyJWK | None:
        """The key ``get_key(kid)`` would give at once (no I/O, no refresh, no side effect),
        or None when only ``get_key`` can tell (the cached-token check's fast path)."""
        ...

    def ready(self) -> bool: ...
