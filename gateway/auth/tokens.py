"""Bearer-token extraction and JWT verification (pure: pyjwt only, ``now`` passed in).

Rules (RFC 8725 and section A of the security checklist):

* Exactly one ``Authorization`` header, scheme ``Bearer`` (any case), a token of the JWS
  compact form, at most ``max_token_bytes`` long — checked before anything is decoded.
* The issuer is chosen by exact match of the (unverified) ``iss`` claim against the
  configured issuers; the key by the header's ``kid`` from that issuer's key set only.
  ``jku``/``x5u``/``jwk``/``x5c`` are never read.
* The header ``alg`` must be in the issuer's list (asymmetric only: HMAC is never
  accepted) and equal the key's own algorithm; pyjwt verifies the signature and ``crit``.
* ``exp``, ``iat``, ``iss``, ``aud``, ``sub`` (and any configured extra claims) are required.
  Times must be numbers (not bools); ``exp`` in the past by more than the leeway, or ``nbf``/
  ``iat`` in the future by more than the leeway, is refused; a time claim outside
  ``[0, MAX_TIME_CLAIM]`` (a 400-digit ``exp``) is a ``bad_claim``. Audience is strict: every entry
  of ``aud`` must be an accepted audience.
* Every failure is an ``AuthenticationError`` with a fixed reason (``AUTH_REASONS``) for logs
  and metrics; the client always gets the same generic 401.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from gateway.errors import AuthenticationError

ASYMMETRIC_ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    }
)
DEFAULT_REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
AUTH_REASONS = frozenset(
    {
        "missing_token",
        "malformed_header",
        "duplicate_header",
        "token_too_large",
        "malformed_token",
        "unknown_issuer",
        "unknown_kid",
        "bad_algorithm",
        "bad_signature",
        "missing_claim",
        "bad_claim",
        "expired",
        "not_yet_valid",
        "bad_audience",
        "bad_issuer",
        "no_profile",
        "operation_not_allowed",
        "jwks_unavailable",
    }
)

_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_SCHEME = re.compile(r"(?i:bearer) +(\S+)")


@dataclass(frozen=True, slots=True)
class IssuerPolicy:
    issuer: str
    audiences: frozenset[str]
    algorithms: frozenset[str]
    required_claims: tuple[str, ...] = DEFAULT_REQUIRED_CLAIMS
    leeway_s: float = 30.0
    #: Derive the caller from the ``kubernetes.io`` claims (projected service-account tokens).
    kubernetes: bool = False
    #: Claim naming the tenant for non-Kubernetes issuers (defaults to ``sub``).
    tenant_claim: str | None = None
    #: The tenant namespace of this issuer: a caller's tenant is ``<tenant_domain>:<name>``,
    #: so equal names from two issuers are two tenants. Issuers share tenants only when the
    #: config gives them the same domain. Empty: derived from the issuer (``default_domain``).
    tenant_domain: str = ""
    #: Ownership records written before tenants were qualified (a bare tenant name) belong to
    #: this issuer's tenants (``auth.legacy_tenant_issuer``).
    legacy_tenants: bool = False

    @property
    def domain(self) -> str:
        return self.tenant_domain or default_domain(self.issuer)


#: A tenant domain as written in the config (no ``:``, so ``<domain>:<name>`` is unambiguous).
TENANT_DOMAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def default_domain(issuer: str) -> str:
    """The tenant domain of an issuer whose config names none: stable, unique per issuer."""
    return "iss-" + hashlib.sha256(issuer.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class TokenHeader:
    kid: str | None
    alg: str


def extract_bearer(authorization: Sequence[bytes], *, max_token_bytes: int) -> str:
    if not authorization:
        raise AuthenticationError("missing_token")
    if len(authorization) > 1:
        raise AuthenticationError("duplicate_header")
    raw = authorization[0]
    if len(raw) > max_token_bytes + 16:
        raise AuthenticationError("token_too_large")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise AuthenticationError("malformed_header") from None
    found = _SCHEME.fullmatch(text.strip(" "))
    if found is None:
        raise AuthenticationError("malformed_header")
    token = found.group(1)
    if len(token) > max_token_bytes:
        raise AuthenticationError("token_too_large")
    if not _TOKEN.fullmatch(token):
        raise AuthenticationError("malformed_token")
    return token


def _b64json(segment: str) -> dict[str, Any]:
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise AuthenticationError("malformed_token") from None
    if not isinstance(value, dict):
        raise AuthenticationError("malformed_token")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("duplicate key")
        out[key] = value
    return out


def peek(token: str) -> tuple[TokenHeader, str]:
    """Unverified header and issuer, used only to choose the issuer and key."""
    head, body, _ = token.split(".")
    header = _b64json(head)
    payload = _b64json(body)
    alg = header.get("alg")
    kid = header.get("kid")
    if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS:
        raise AuthenticationError("bad_algorithm")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= 256):
        raise AuthenticationError("malformed_token")
    iss = payload.get("iss")
    if not isinstance(iss, str):
        raise AuthenticationError("missing_claim" if iss is None else "bad_claim")
    return TokenHeader(kid, alg), iss


def select_issuer(issuers: Mapping[str, IssuerPolicy], iss: str) -> IssuerPolicy:
    policy = issuers.get(iss)
    if policy is None:
        raise AuthenticationError("unknown_issuer")
    return policy


def verify(
    token: str, header: TokenHeader, key: jwt.PyJWK, policy: IssuerPolicy, *, now: float
) -> dict[str, Any]:
    """Verify signature and claims; return the claims."""
    if header.alg not in policy.algorithms or header.alg != key.algorithm_name:
        raise AuthenticationError("bad_algorithm")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=[header.alg],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "require": list(policy.required_claims),
                "enforce_minimum_key_length": True,
            },
        )
    except jwt.MissingRequiredClaimError:
        raise AuthenticationError("missing_claim") from None
    except (jwt.InvalidAlgorithmError, jwt.InvalidKeyError):
        raise AuthenticationError("bad_algorithm") from None
    except jwt.InvalidSignatureError:
        raise AuthenticationError("bad_signature") from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise AuthenticationError("malformed_token") from None
    check_claims(claims, policy, now=now)
    return claims


#: The largest time claim accepted (unix seconds, in the year 5138). Anything larger, however
#: validly signed, is a ``bad_claim``: converting a 400-digit integer to a float overflows.
MAX_TIME_CLAIM = 10**11


def numeric_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """A time claim as a float, or None when absent; ``bad_claim`` unless it is a finite
    number (not a bool) in ``[0, MAX_TIME_CLAIM]``. Every numeric claim is read through here."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthenticationError("bad_claim")
    if isinstance(value, int):
        if not 0 <= value <= MAX_TIME_CLAIM:  # compared as integers: no float conversion
            raise AuthenticationError("bad_claim")
        return float(value)
    if not math.isfinite(value) or not 0 <= value <= MAX_TIME_CLAIM:
        raise AuthenticationError("bad_claim")
    return value


def check_claims(claims: Mapping[str, Any], policy: IssuerPolicy, *, now: float) -> None:
    for name in policy.required_claims:
        if claims.get(name) is None:
            raise AuthenticationError("missing_claim")
    if not isinstance(claims.get("iss"), str) or claims["iss"] != policy.issuer:
        raise AuthenticationError("bad_issuer")
    sub = claims.get("sub")
    if sub is not None and (not isinstance(sub, str) or not sub):
        raise AuthenticationError("bad_claim")
    exp, nbf, iat = (numeric_claim(claims, n) for n in ("exp", "nbf", "iat"))
    if exp is not None and exp + policy.leeway_s < now:
        raise AuthenticationError("expired")
    if (nbf is not None and nbf - policy.leeway_s > now) or (
        iat is not None and iat - policy.leeway_s > now
    ):
        raise AuthenticationError("not_yet_valid")
    aud = claims.get("aud")
    if aud is None and "aud" not in policy.required_claims:
        return
    audiences = [aud] if isinstance(aud, str) else aud
    if (
        not isinstance(audiences, list)
        or not audiences
        or not all(isinstance(a, str) and a in policy.audiences for a in audiences)
    ):
        raise AuthenticationError("bad_audience")
