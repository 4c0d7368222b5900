"""Turns an ``Authorization`` header into a ``Caller``: the pure verifier plus key providers.

The only async step is the key lookup (``KeyProvider``); everything else is ``auth.py`` and
``identity.py``. A verified token is cached until its ``exp``; on every cache hit the key that
verified it must still be the one its issuer serves for that ``kid``, so a removed key stops
the cached tokens it signed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from gateway.auth.cache import CachedToken, TokenCache, header_digest
from gateway.auth.caller import Caller
from gateway.auth.identity import CallerRule, to_caller
from gateway.auth.keys import KeyProvider
from gateway.auth.tokens import IssuerPolicy, extract_bearer, peek, select_issuer, verify
from gateway.errors import AuthenticationError


class Authenticator:
    def __init__(
        self,
        issuers: Mapping[str, tuple[IssuerPolicy, KeyProvider]],
        *,
        rules: Sequence[CallerRule],
        default_profile: str | None,
        max_token_bytes: int,
        cache_size: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policies = {name: policy for name, (policy, _) in issuers.items()}
        self.keys = {name: keys for name, (_, keys) in issuers.items()}
        self.rules = tuple(rules)
        self.default_profile = default_profile
        self.max_token_bytes = max_token_bytes
        self.cache = TokenCache(cache_size)
        self.clock = clock

    def ready(self) -> bool:
        return all(k.ready() for k in self.keys.values())

    async def authenticate(self, authorization: Sequence[bytes]) -> Caller:
        now = self.clock()
        digest = None
        # Only one header of a size extract_bearer accepts can be a hit (every entry is a
        # header value that passed it); any other is refused below as it always was.
        if len(authorization) == 1 and len(authorization[0]) <= self.max_token_bytes + 16:
            digest = header_digest(authorization[0])
            cached = self.cache.get(digest, now)
            if cached is not None:
                keys = self.keys[cached.caller.issuer]
                if keys.key_now(cached.kid) is cached.key:  # no coroutine: the common case
                    return cached.caller
                try:
                    current = await keys.get_key(cached.kid)
                except AuthenticationError:
                    current = None
                if current is cached.key:
                    return cached.caller
                self.cache.discard(digest)
        token = extract_bearer(authorization, max_token_bytes=self.max_token_bytes)
        assert digest is not None  # extract_bearer took exactly one header of that size
        header, iss = peek(token)
        policy = select_issuer(self.policies, iss)
        key = await self.keys[iss].get_key(header.kid)
        claims = verify(token, header, key, policy, now=now)
        caller = to_caller(claims, policy, self.rules, self.default_profile)
        self.cache.put(digest, CachedToken(caller, header.kid, key, caller.expires_at), now)
        return caller
