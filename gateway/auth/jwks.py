"""The async JWKS cache (httpx): remote key sets for the token verifier.

``JwksKeyProvider`` implements ``auth_port.KeyProvider`` (so does ``keyset.StaticKeyProvider``,
re-exported here). Rules this module keeps:

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
import logging
import math
import random
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from gateway.auth.keyset import (
    MAX_BODY_BYTES,
    MAX_KID_LENGTH,
    KeySet,
    KeySetError,
    RejectedKeySetError,
    StaticKeyProvider,
    parse_key_set,
    strict_json_object,
    unknown_kid,
)
from gateway.errors import ServiceUnavailableError

log = logging.getLogger("gateway.jwks")

__all__ = [
    "JwksKeyProvider",
    "JwksSource",
    "KeySetError",
    "StaticKeyProvider",
    "make_jwks_http_client",
]

NEGATIVE_CACHE_SIZE = 1024
REFRESH_RESULTS = ("ok", "error", "rejected_key")

#: A refresh failed (the same error a rejected key-set document raises).
_FetchError = RejectedKeySetError


def _describe(url: str) -> str:
    """The URL as it may be logged: scheme, host, port and path only."""
    try:
        u = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid url>"
    return str(u.copy_with(userinfo=b"", query=None, fragment=None))


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
    *,
    timeout_s: float = 5.0,
    ca_file: str | None = None,
    max_connections: int = 4,
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
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=2, keepalive_expiry=30.0
        ),
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
        if _malformed(kid):
            raise unknown_kid()
        now = self._clock()
        keys = self._usable_keys(now)
        if keys is None:  # never fetched, or past stale: try once per cooldown, else 503
            await self._refresh_within_cooldown(now)
            keys = self._current_or_unavailable()
        key = keys.lookup(kid)
        if key is not None:
            return key
        if kid is None or self._known_unknown(kid, now):
            raise unknown_kid()
        if await self._refresh_within_cooldown(now):
            key = self._current_or_unavailable().lookup(kid)
            if key is not None:
                return key
        self._remember_unknown(kid, self._clock())
        raise unknown_kid()

    def key_now(self, kid: str | None) -> jwt.PyJWK | None:
        """The key of ``kid`` in a key set still usable (what ``get_key`` gives without a
        refresh); None otherwise (a miss, a stale set, a malformed kid: ``get_key`` decides)."""
        if _malformed(kid):
            return None
        keys = self._usable_keys(self._clock())
        return None if keys is None else keys.lookup(kid)

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
            code="jwks_unavailable",
            headers={"Retry-After": str(retry)},
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
            keys, rejected = parse_key_set(doc, min_rsa_bits=self._min_rsa_bits)
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
            return strict_json_object(
                await asyncio.to_thread(_read_small_file, src.file, MAX_BODY_BYTES)
            )
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
        return strict_json_object(bytes(body))


def _malformed(kid: object) -> bool:
    """A ``kid`` no key set can hold (not a string, empty, or over ``MAX_KID_LENGTH``)."""
    return kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH)
