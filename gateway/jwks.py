"""Verification keys for the token verifier: a static key set, and an async JWKS cache (httpx).

Both classes implement ``auth_port.KeyProvider``. Rules this module keeps:

* Keys are fetched with the injected ``httpx.AsyncClient`` (never pyjwt's blocking
  ``PyJWKClient``): no redirects (a 3xx is a failed fetch), ``Accept-Encoding: identity``, a
  1 MiB body cap, one deadline for the whole refresh, strict JSON ``{"keys": [...]}``.
* Only asymmetric public signing keys are kept. A key is skipped on its own (``rejected_key``)
  when it is symmetric (``oct``) or of an unknown type, carries private material, has
  ``use`` other than ``sig`` or ``key_ops`` without ``verify``, is RSA below ``min_rsa_bits``,
  or names an ``alg`` its key does not fit. A set with no usable key is a failed fetch.
* A known ``kid`` is answered from memory without awaiting anything. An unknown ``kid`` costs at
  most one fetch per ``cooldown_s`` (single flight; a failed fetch starts the cooldown too), and
  is then remembered in a bounded negative cache for ``cooldown_s``.
* Stale-if-error: after failed refreshes the last good set keeps serving until ``stale_s``
  after its fetch; then ``get_key`` raises ``ServiceUnavailableError(code="jwks_unavailable")``
  (503: our outage, not the caller's). A removed key stops verifying at the next good refresh.
* ``on_refresh(result)`` gets one of ``REFRESH_RESULTS``: ``"ok"`` / ``"error"`` once per
  refresh, and ``"rejected_key"`` once per skipped key.
* Logs name the configured URL (without userinfo or query) and a fixed reason only: never a
  token, a ``kid`` from a request, key material, or the bearer token.

Library errors (httpx, OSError, JSON, pyjwt) are translated here into ``_FetchError`` and, for
callers, into the gateway error tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import json
import logging
import math
import random
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gateway.errors import AuthenticationError, ServiceUnavailableError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_KEYS = 100
MAX_KID_LENGTH = 256
NEGATIVE_CACHE_SIZE = 1024
REFRESH_RESULTS = ("ok", "error", "rejected_key")

_PUBLIC_KEY_TYPES = (
    rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey,
)
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_EC_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512",
                   "secp256k1": "ES256K"}


class KeySetError(ValueError):
    """A key file or key set given at start-up is unusable (a configuration error)."""


class _FetchError(Exception):
    """A refresh failed; ``reason`` is a fixed, loggable word."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------- parsing (pure)


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


def _strict_json_object(data: bytes) -> dict[str, Any]:
    """Parses a JSON object strictly: UTF-8, no duplicate names, no NaN/Infinity, bounded depth."""
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_reject_pairs,
                         parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _FetchError("invalid_json") from exc
    if not isinstance(obj, dict):
        raise _FetchError("invalid_json")
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


def _parse_key_set(doc: Mapping[str, Any], *, min_rsa_bits: int) -> tuple[KeySet, list[str]]:
    """Builds a ``KeySet`` from a JWK Set document; returns it and the skipped keys' reasons.

    Raises ``_FetchError`` when the document is not a key set or holds no usable key.
    """
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise _FetchError("not_a_key_set")
    if len(keys) > MAX_KEYS:
        raise _FetchError("too_many_keys")
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
        raise _FetchError("no_usable_keys")
    return KeySet(by_kid, tuple(usable)), rejected


def _describe(url: str) -> str:
    """The URL as it may be logged: scheme, host, port and path only."""
    try:
        u = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid url>"
    return str(u.copy_with(userinfo=b"", query=None, fragment=None))


def _unknown_kid() -> AuthenticationError:
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
        cls, keys: Mapping[str | None, Any], *, algorithm: str | None = None,
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
        cls, path: str | Path, algorithm: str, *, min_rsa_bits: int = 2048,
    ) -> StaticKeyProvider:
        if algorithm.upper().startswith(("HS", "NONE")):
            raise KeySetError(f"{algorithm}: only asymmetric algorithms are accepted")
        try:
            public_key = serialization.load_pem_public_key(Path(path).read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise KeySetError(f"{path}: not a readable PEM public key") from exc
        return cls.from_public_keys({None: public_key}, algorithm=algorithm,
                                    min_rsa_bits=min_rsa_bits)

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
            return cls._from_doc(_strict_json_object(data), min_rsa_bits, strict=False)
        except _FetchError as exc:
            raise KeySetError(f"unusable JWK Set: {exc.reason}") from exc

    @classmethod
    def _from_doc(
        cls, doc: dict[str, Any], min_rsa_bits: int, *, strict: bool,
    ) -> StaticKeyProvider:
        keys, rejected = _parse_key_set(doc, min_rsa_bits=min_rsa_bits)
        if strict and rejected:
            raise KeySetError(f"unusable key: {', '.join(rejected)}")
        for reason in rejected:
            log.warning("static JWK Set: skipped a key (%s)", reason)
        return cls(keys)

    async def get_key(self, kid: str | None) -> jwt.PyJWK:
        key = self._keys.lookup(kid)
        if key is None and len(self._keys.all) == 1 and self._keys.all[0].key_id is None:
            key = self._keys.all[0]
        if key is None:
            raise _unknown_kid()
        return key

    def ready(self) -> bool:
        return True


# ---------------------------------------------------------------- remote key set


@dataclass(frozen=True, slots=True)
class JwksSource:
    """Where the key set comes from: exactly one of ``url``, ``discovery_url``, ``file``.

    ``bearer_token_file`` (URL sources only) holds the gateway's own token, re-read on every
    fetch. It is sent to the discovered ``jwks_uri`` too, which may be another host.
    """

    url: str | None = None
    discovery_url: str | None = None
    file: str | None = None
    bearer_token_file: str | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("url", "discovery_url", "file") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("JwksSource needs exactly one of url, discovery_url, file")
        for name in ("url", "discovery_url"):
            value = getattr(self, name)
            if value is not None and not _is_http_url(value):
                raise ValueError(f"JwksSource.{name}: must be an absolute http(s) URL")
        if self.file is not None and self.bearer_token_file is not None:
            raise ValueError("JwksSource.bearer_token_file: only for url or discovery_url")

    def describe(self) -> str:
        return _describe(self.url or self.discovery_url or "") if self.file is None else self.file


def _is_http_url(value: str) -> bool:
    try:
        u = httpx.URL(value)
    except httpx.InvalidURL:
        return False
    return u.scheme in ("http", "https") and bool(u.host)


def make_jwks_http_client(
    *, timeout_s: float = 5.0, ca_file: str | None = None, max_connections: int = 4,
) -> httpx.AsyncClient:
    """The client ``JwksKeyProvider`` fetches with: no environment proxies, no redirects, no
    cookies, every timeout phase set, a small pool. ``ca_file``: trust only this CA bundle
    (e.g. the Kubernetes service-account ``ca.crt``) instead of the system store."""
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        verify = ssl.create_default_context(cafile=ca_file)
    no_cookies = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        verify=verify,
        cookies=http.cookiejar.CookieJar(policy=no_cookies),
        timeout=httpx.Timeout(connect=timeout_s, read=timeout_s, write=timeout_s, pool=timeout_s),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=2,
                            keepalive_expiry=30.0),
        headers={"User-Agent": "assistants-gateway-jwks"},
    )


def _read_small_file(path: str, limit: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _FetchError("file_too_large")
    return data


class JwksKeyProvider:
    """Async JWKS cache with background refresh, kid-miss refresh and stale-if-error."""

    def __init__(
        self,
        source: JwksSource,
        http: httpx.AsyncClient,
        *,
        ttl_s: float = 300.0,
        cooldown_s: float = 30.0,
        stale_s: float = 3600.0,
        fetch_timeout_s: float = 5.0,
        min_rsa_bits: int = 2048,
        clock: Callable[[], float] = time.monotonic,
        on_refresh: Callable[[str], None] | None = None,
    ) -> None:
        if not 0 < cooldown_s <= ttl_s <= stale_s or fetch_timeout_s <= 0:
            raise ValueError("need 0 < cooldown_s <= ttl_s <= stale_s and fetch_timeout_s > 0")
        self._source, self._http, self._clock = source, http, clock
        self._ttl_s, self._cooldown_s, self._stale_s = ttl_s, cooldown_s, stale_s
        self._fetch_timeout_s, self._min_rsa_bits = fetch_timeout_s, min_rsa_bits
        self._on_refresh = on_refresh
        self._keys: KeySet | None = None
        self._fetched_at: float | None = None  # clock() of the last good fetch
        self._attempted_at: float | None = None  # clock() of the last attempt (cooldown)
        self._last_ok = False
        self._jwks_uri: str | None = None  # discovered, cached until a fetch fails
        self._inflight: asyncio.Task[bool] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._unknown: OrderedDict[str, float] = OrderedDict()  # kid -> expiry

    # -- KeyProvider

    def ready(self) -> bool:
        return self._usable_keys(self._clock()) is not None

    async def get_key(self, kid: str | None) -> jwt.PyJWK:
        if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH):
            raise _unknown_kid()
        now = self._clock()
        keys = self._usable_keys(now)
        if keys is None:  # never fetched, or past stale: try once per cooldown, else 503
            await self._refresh_within_cooldown(now)
            keys = self._current_or_unavailable()
        key = keys.lookup(kid)
        if key is not None:
            return key
        if kid is None or self._known_unknown(kid, now):
            raise _unknown_kid()
        if await self._refresh_within_cooldown(now):
            key = self._current_or_unavailable().lookup(kid)
            if key is not None:
                return key
        self._remember_unknown(kid, self._clock())
        raise _unknown_kid()

    def _current_or_unavailable(self) -> KeySet:
        keys = self._usable_keys(self._clock())
        if keys is None:
            raise self._unavailable()
        return keys

    # -- lifecycle

    async def start(self) -> None:
        """Initial fetch (a failure leaves the provider not ready), then background refresh."""
        await self.refresh()
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._refresh_loop(), name="jwks-refresh")

    async def aclose(self) -> None:
        for task in (self._loop_task, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loop_task = self._inflight = None

    async def refresh(self) -> bool:
        """Fetches now, ignoring the cooldown (joins a fetch already in flight)."""
        if self._inflight is None:
            self._attempted_at = self._clock()
            self._inflight = asyncio.create_task(self._refresh_once(), name="jwks-fetch")
            self._inflight.add_done_callback(self._clear_inflight)
        return await asyncio.shield(self._inflight)

    # -- internals

    def _clear_inflight(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    def _usable_keys(self, now: float) -> KeySet | None:
        if self._keys is None or self._fetched_at is None:
            return None
        return self._keys if now - self._fetched_at <= self._stale_s else None

    def _cooldown_left(self, now: float) -> float:
        if self._attempted_at is None:
            return 0.0
        return max(0.0, self._attempted_at + self._cooldown_s - now)

    async def _refresh_within_cooldown(self, now: float) -> bool:
        """Joins or starts a refresh if the cooldown allows; returns whether one ran."""
        if self._inflight is None and self._cooldown_left(now) > 0:
            return False
        await self.refresh()
        return True

    def _unavailable(self) -> ServiceUnavailableError:
        retry = max(1, math.ceil(self._cooldown_left(self._clock()) or self._cooldown_s))
        return ServiceUnavailableError(
            "The gateway cannot verify tokens right now. Retry later.",
            code="jwks_unavailable", headers={"Retry-After": str(retry)},
        )

    def _known_unknown(self, kid: str, now: float) -> bool:
        while self._unknown and next(iter(self._unknown.values())) <= now:
            self._unknown.popitem(last=False)
        return kid in self._unknown

    def _remember_unknown(self, kid: str, now: float) -> None:
        # Expires when the cooldown does, so a newly published kid waits no longer than that.
        self._unknown.pop(kid, None)
        self._unknown[kid] = now + self._cooldown_left(now)
        while len(self._unknown) > NEGATIVE_CACHE_SIZE:
            self._unknown.popitem(last=False)

    def _report(self, result: str) -> None:
        if self._on_refresh is None:
            return
        try:
            self._on_refresh(result)
        except Exception:  # a metrics hook must not break key refresh
            log.exception("jwks on_refresh hook failed")

    async def _refresh_loop(self) -> None:
        while True:
            delay = self._ttl_s if self._last_ok else self._cooldown_s
            await asyncio.sleep(delay * random.uniform(0.9, 1.1))  # noqa: S311 - jitter only
            try:
                await self.refresh()
            except Exception:  # refresh() reports its own failures; keep the loop alive
                log.exception("jwks refresh loop error")

    async def _refresh_once(self) -> bool:
        try:
            async with asyncio.timeout(self._fetch_timeout_s):
                doc = await self._fetch_key_set_doc()
            keys, rejected = _parse_key_set(doc, min_rsa_bits=self._min_rsa_bits)
        except Exception as exc:  # any failure is our outage: stale-if-error, then 503
            reason = exc.reason if isinstance(exc, _FetchError) else type(exc).__name__
            log.warning("jwks refresh from %s failed (%s)", self._source.describe(), reason)
            self._jwks_uri = None
            self._last_ok = False
            self._report("error")
            return False
        for reason in rejected:
            log.warning("jwks from %s: skipped a key (%s)", self._source.describe(), reason)
            self._report("rejected_key")
        self._keys, self._fetched_at, self._last_ok = keys, self._clock(), True
        self._report("ok")
        return True

    async def _fetch_key_set_doc(self) -> dict[str, Any]:
        src = self._source
        if src.file is not None:
            return _strict_json_object(
                await asyncio.to_thread(_read_small_file, src.file, MAX_BODY_BYTES))
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if src.bearer_token_file is not None:
            headers["Authorization"] = "Bearer " + await self._bearer_token(src.bearer_token_file)
        url = src.url
        if src.discovery_url is not None:
            if self._jwks_uri is None:
                discovery = await self._get_json(src.discovery_url, headers)
                self._jwks_uri = self._checked_jwks_uri(discovery, src.discovery_url)
            url = self._jwks_uri
        assert url is not None
        return await self._get_json(url, headers)

    @staticmethod
    async def _bearer_token(path: str) -> str:
        raw = await asyncio.to_thread(_read_small_file, path, 64 * 1024)
        token = raw.strip()
        if not token or any(b < 0x21 or b > 0x7E for b in token):
            raise _FetchError("bearer_token_file_invalid")
        return token.decode("ascii")

    @staticmethod
    def _checked_jwks_uri(discovery: Mapping[str, Any], discovery_url: str) -> str:
        uri = discovery.get("jwks_uri")
        if not isinstance(uri, str) or not _is_http_url(uri):
            raise _FetchError("discovery_no_jwks_uri")
        if httpx.URL(discovery_url).scheme == "https" and httpx.URL(uri).scheme != "https":
            raise _FetchError("discovery_jwks_uri_downgrade")
        return uri

    async def _get_json(self, url: str, headers: Mapping[str, str]) -> dict[str, Any]:
        async with self._http.stream("GET", url, headers=headers, follow_redirects=False) as resp:
            if resp.status_code != 200:
                raise _FetchError("redirect" if resp.is_redirect else f"status_{resp.status_code}")
            if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
                raise _FetchError("content_encoding")
            declared = resp.headers.get("Content-Length", "0")
            if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
                raise _FetchError("too_large")
            body = bytearray()
            async for chunk in resp.aiter_raw():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise _FetchError("too_large")
        return _strict_json_object(bytes(body))

