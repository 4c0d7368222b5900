"""JWK Sets: strict parsing, the key filter, and the static key provider (pyjwt, no network).

A key is kept only when it is an asymmetric public signing key: symmetric (``oct``) and
unknown key types, private members, ``use`` other than ``sig``, ``key_ops`` without
``verify``, RSA below ``min_rsa_bits``, or an ``alg`` the key does not fit are each skipped
with a fixed reason. A set with no usable key is rejected whole. ``jwks.py`` fetches remote
sets and parses them here; ``StaticKeyProvider`` serves a set loaded once from a file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gateway.errors import AuthenticationError

log = logging.getLogger("gateway.jwks")

MAX_BODY_BYTES = 1024 * 1024
MAX_KEYS = 100
MAX_KID_LENGTH = 256

_PUBLIC_KEY_TYPES = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_EC_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512", "secp256k1": "ES256K"}


class KeySetError(ValueError):
    """A key file or key set given at start-up is unusable (a configuration error)."""


class RejectedKeySetError(Exception):
    """A key-set document (or its fetch) was rejected; ``reason`` is a fixed, loggable word."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class KeySet:
    """Usable keys by ``kid``, plus every usable key (kid-less ones included)."""

    by_kid: Mapping[str, jwt.PyJWK]
    all: tuple[jwt.PyJWK, ...]

    def lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return self.all[0] if len(self.all) == 1 else None
        return self.by_kid.get(kid)


def _reject_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json_object(data: bytes) -> dict[str, Any]:
    """Parses a JSON object strictly: UTF-8, no duplicate names, no NaN/Infinity, bounded depth."""
    try:
        obj = json.loads(
            data.decode("utf-8"), object_pairs_hook=_reject_pairs, parse_constant=_no_constant
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RejectedKeySetError("invalid_json") from exc
    if not isinstance(obj, dict):
        raise RejectedKeySetError("invalid_json")
    return obj


def _key_problem(jwk: Any, min_rsa_bits: int) -> tuple[str | None, jwt.PyJWK | None]:
    """Returns (problem, None) for an unusable JWK, else (None, key)."""
    if not isinstance(jwk, dict):
        return "not_an_object", None
    if jwk.get("kty") not in ("RSA", "EC", "OKP"):
        return "kty", None
    if _PRIVATE_MEMBERS & jwk.keys():
        return "private_material", None
    if jwk.get("use", "sig") != "sig":
        return "use", None
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return "key_ops", None
    kid, alg = jwk.get("kid"), jwk.get("alg")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH):
        return "kid", None
    if alg is not None and (not isinstance(alg, str) or alg.upper().startswith(("HS", "NONE"))):
        return "alg", None
    try:
        key = jwt.PyJWK(jwk)
        key.Algorithm.prepare_key(key.key)  # checks an EC key's curve against its alg
    except Exception:  # pyjwt raises many types (even NotImplementedError) for odd JWKs
        return "invalid", None
    return _public_key_problem(key.key, min_rsa_bits), key


def _public_key_problem(public_key: Any, min_rsa_bits: int) -> str | None:
    if not isinstance(public_key, _PUBLIC_KEY_TYPES):
        return "not_public"
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < min_rsa_bits:
        return "weak_rsa"
    return None


def parse_key_set(doc: Mapping[str, Any], *, min_rsa_bits: int) -> tuple[KeySet, list[str]]:
    """Builds a ``KeySet`` from a JWK Set document; returns it and the skipped keys' reasons.

    Raises ``RejectedKeySetError`` when the document is not a key set or holds no usable key.
    """
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise RejectedKeySetError("not_a_key_set")
    if len(keys) > MAX_KEYS:
        raise RejectedKeySetError("too_many_keys")
    by_kid: dict[str, jwt.PyJWK] = {}
    usable: list[jwt.PyJWK] = []
    rejected: list[str] = []
    for jwk in keys:
        problem, key = _key_problem(jwk, min_rsa_bits)
        if problem is not None or key is None:
            rejected.append(problem or "invalid")
            continue
        if key.key_id is not None:
            if key.key_id in by_kid:  # ambiguous kid: keep the first, as RFC 7517 §4.5 expects
                rejected.append("duplicate_kid")
                continue
            by_kid[key.key_id] = key
        usable.append(key)
    if not usable:
        raise RejectedKeySetError("no_usable_keys")
    return KeySet(by_kid, tuple(usable)), rejected


def unknown_kid() -> AuthenticationError:
    return AuthenticationError(reason="unknown_kid")


# ---------------------------------------------------------------- static keys


def _default_alg(public_key: Any) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name in _EC_ALG:
        return _EC_ALG[public_key.curve.name]
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "EdDSA"
    raise KeySetError("unsupported public key type")


class StaticKeyProvider:
    """A key set loaded once (PEM or JWK Set file); always ready.

    ``get_key(kid)``: the key with that ``kid``; with ``kid=None``, the only key if there is
    exactly one. A lone key without a ``kid`` (a PEM file) also answers any ``kid``.
    """

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys

    @classmethod
    def from_public_keys(
        cls,
        keys: Mapping[str | None, Any],
        *,
        algorithm: str | None = None,
        min_rsa_bits: int = 2048,
    ) -> StaticKeyProvider:
        """Keys are ``cryptography`` public keys by kid (``None``: no kid, allowed alone)."""
        jwks: list[dict[str, Any]] = []
        for kid, public_key in keys.items():
            if _public_key_problem(public_key, min_rsa_bits) is not None:
                raise KeySetError(f"key {kid!r}: not a public key or RSA < {min_rsa_bits} bits")
            alg = algorithm or _default_alg(public_key)
            try:
                jwk = jwt.get_algorithm_by_name(alg).to_jwk(public_key, as_dict=True)
            except Exception as exc:
                raise KeySetError(f"key {kid!r} does not fit algorithm {alg}") from exc
            jwk.update({"alg": alg, "use": "sig"} | ({"kid": kid} if kid is not None else {}))
            jwks.append(jwk)
        if None in keys and len(keys) > 1:
            raise KeySetError("a key without kid must be the only key")
        return cls._from_doc({"keys": jwks}, min_rsa_bits, strict=True)

    @classmethod
    def from_pem(
        cls,
        path: str | Path,
        algorithm: str,
        *,
        min_rsa_bits: int = 2048,
    ) -> StaticKeyProvider:
        if algorithm.upper().startswith(("HS", "NONE")):
            raise KeySetError(f"{algorithm}: only asymmetric algorithms are accepted")
        try:
            public_key = serialization.load_pem_public_key(Path(path).read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise KeySetError(f"{path}: not a readable PEM public key") from exc
        return cls.from_public_keys(
            {None: public_key}, algorithm=algorithm, min_rsa_bits=min_rsa_bits
        )

    @classmethod
    def from_jwks_file(cls, path: str | Path, *, min_rsa_bits: int = 2048) -> StaticKeyProvider:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise KeySetError(f"{path}: cannot read ({type(exc).__name__})") from exc
        return cls.from_jwks_json(data, min_rsa_bits=min_rsa_bits)

    @classmethod
    def from_jwks_json(cls, data: bytes, *, min_rsa_bits: int = 2048) -> StaticKeyProvider:
        """Skips unusable keys like the remote cache does; raises if none is left."""
        if len(data) > MAX_BODY_BYTES:
            raise KeySetError("key set larger than 1 MiB")
        try:
            return cls._from_doc(strict_json_object(data), min_rsa_bits, strict=False)
        except RejectedKeySetError as exc:
            raise KeySetError(f"unusable JWK Set: {exc.reason}") from exc

    @classmethod
    def _from_doc(
        cls,
        doc: dict[str, Any],
        min_rsa_bits: int,
        *,
        strict: bool,
    ) -> StaticKeyProvider:
        keys, rejected = parse_key_set(doc, min_rsa_bits=min_rsa_bits)
        if strict and rejected:
            raise KeySetError(f"unusable key: {', '.join(rejected)}")
        for reason in rejected:
            log.warning("static JWK Set: skipped a key (%s)", reason)
        return cls(keys)

    async def get_key(self, kid: str | None) -> jwt.PyJWK:
        key = self.key_now(kid)
        if key is None:
            raise unknown_kid()
        return key

    def key_now(self, kid: str | None) -> jwt.PyJWK | None:
        key = self._keys.lookup(kid)
        if key is None and len(self._keys.all) == 1 and self._keys.all[0].key_id is None:
            key = self._keys.all[0]
        return key

    def ready(self) -> bool:
        return True
