"""The service's own settings: listeners, the upstream, api-versions, Redis, ownership.

Each field is declared once (``gateway.config.schema.setting``): its key, default, check,
environment variable and the README row come from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from gateway.config.schema import REQUIRED, at, between, non_empty, positive, problem, setting
from gateway.operations.apiversions import DEFAULT_VERSIONS, KNOWN_VERSIONS

MiB = 1_048_576


def url_problem(value: str, *, allow_http: bool) -> str | None:
    parts = urlsplit(value)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        return "must be an " + " or ".join(schemes) + " URL"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "must not contain credentials, a query or a fragment"
    return None


def http_url(value: str) -> str | None:
    return url_problem(value, allow_http=True)


def redis_url(value: str) -> str | None:
    if urlsplit(value).scheme in ("redis", "rediss", "unix"):
        return None
    return "must be a redis://, rediss:// or unix:// URL"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    host: str = setting("0.0.0.0", "proxy listener address", env="GATEWAY_HOST")
    port: int = setting(8080, "proxy listener port", check=between(1, 65535), env="GATEWAY_PORT")
    metrics_host: str = setting("0.0.0.0", "metrics listener address (never the proxy port)")
    metrics_port: int = setting(
        9090,
        "metrics listener port (0 disables)",
        check=between(0, 65535),
        env="GATEWAY_METRICS_PORT",
    )
    max_body_bytes: int = setting(
        MiB,
        "larger bodies → 413, counted while streaming in",
        check=between(1024, 64 * MiB),
        shown="`1048576` (1 MiB)",
    )
    max_header_bytes: int = setting(32_768, "larger header sets → 431", check=between(4096, MiB))
    body_timeout_s: float = setting(30.0, "a body not fully received by then → 408", check=positive)
    upload_timeout_s: float = setting(
        900.0,
        "a file upload's body not fully received by then → 408 (streamed to Azure: each wait "
        "for its next chunk is bounded by `body_timeout_s`)",
        check=positive,
    )
    workers: int = setting(
        1,
        "server processes sharing the proxy port (`SO_REUSEPORT`; the kernel spreads "
        "connections): `gateway serve` supervises them, each a full gateway with its own "
        "metrics listener on `metrics_port + i`. One per CPU the pod may use",
        check=between(1, 64),
        env="GATEWAY_WORKERS",
    )
    drain_timeout_s: float = setting(
        25.0, "on SIGTERM, time for in-flight requests and streams", check=positive
    )
    overhead_header: bool = setting(False, "add `x-gateway-overhead-ms` to responses")
    access_log: bool = setting(True, "one JSON line per request on stderr")
    max_concurrent_connections: int = setting(
        2048,
        "requests in flight; beyond this the server answers 503 at once (`Retry-After: 1`), "
        "before any gateway work. Connections waiting for a request do not count",
        check=between(16, 1_000_000),
    )
    max_waiting_connections: int = setting(
        2048,
        "connections with no request in progress (new, still sending headers, idle "
        "keep-alive); when one more arrives at the cap the oldest is closed",
        check=between(16, 1_000_000),
    )
    header_timeout_s: float = setting(
        10.0,
        "a request's headers must be complete this long after their first byte (not reset by "
        "more bytes) → 408 and closed",
        check=between(0.5, 300),
    )
    first_request_timeout_s: float = setting(
        10.0,
        "a new connection must deliver its first complete request head this long after it is "
        "accepted, else it is closed",
        check=between(0.5, 300),
    )
    max_pending_requests: int = setting(
        256,
        "requests being admitted at once per process (arrived, not yet past the rate "
        "limiter); beyond this 503 `server_overloaded` with `Retry-After: 1` at once, before "
        'the body is read or the token verified (see "Under overload")',
        check=between(1, 1_000_000),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EntraConfig:
    """Microsoft Entra ID through workload identity: the pod's projected service-account token
    exchanged for an access token to Azure OpenAI. Unset keys come from the variables the
    workload-identity webhook injects."""

    client_id: str | None = setting(
        None, "the managed identity / app registration (default: `AZURE_CLIENT_ID`)", shown="env"
    )
    tenant_id: str | None = setting(
        None, "the Entra tenant (default: `AZURE_TENANT_ID`)", shown="env"
    )
    authority_host: str | None = setting(
        None, "the Entra authority, https (default: `AZURE_AUTHORITY_HOST`)", shown="env"
    )
    token_file: str | None = setting(
        None,
        "the projected service-account token (default: `AZURE_FEDERATED_TOKEN_FILE`)",
        shown="env",
    )
    scope: str = setting("https://cognitiveservices.azure.com/.default", "the token's scope")
    refresh_margin_s: float = setting(
        300.0,
        "refresh a token this long before it expires (single flight, with jitter); the cached "
        "token serves until it expires",
        check=between(10, 3600),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConfig:
    __refused__: ClassVar[Mapping[str, str]] = {
        "api_key": "secrets must not be written in the config file: use "
        "AZURE_OPENAI_API_KEY_FILE (or AZURE_OPENAI_API_KEY)"
    }

    endpoint: str = setting(
        REQUIRED,
        "Azure resource URL, scheme and host only; https unless `allow_plain_http`",
        env="AZURE_OPENAI_ENDPOINT",
    )
    api_key_file: str | None = setting(
        None,
        "file holding the Azure key (a mounted Secret: preferred over `AZURE_OPENAI_API_KEY`); "
        "re-read every `api_key_reload_s`",
        env="AZURE_OPENAI_API_KEY_FILE",
    )
    credential: Literal["api_key", "entra"] = setting(
        "api_key",
        "how the gateway authenticates to Azure: `api_key` (`api_key_file` or "
        "`AZURE_OPENAI_API_KEY`) or `entra` (workload identity, `[upstream.entra]`)",
    )
    entra: EntraConfig = setting(factory=EntraConfig)
    api_key_reload_s: float = setting(
        10.0, "how often the key file is re-read (rotation without restart)", check=positive
    )
    connect_timeout_s: float = setting(
        5.0, "connecting to Azure (every timeout phase is explicit)", check=positive
    )
    read_timeout_s: float = setting(120.0, "per read, plain JSON calls", check=positive)
    stream_read_timeout_s: float = setting(
        300.0, "idle time allowed between events of a streamed run", check=positive
    )
    stream_max_duration_s: float = setting(
        900.0,
        "a streamed (or unbounded) response is cut after this long in total",
        check=positive,
    )
    write_timeout_s: float = setting(
        30.0, "per write of a request body (`httpx` only: aiohttp has none)", check=positive
    )
    pool_timeout_s: float = setting(
        2.0,
        "waiting for a free upstream connection, then 503 (with `aiohttp` the connect budget "
        "covers pool wait + connect)",
        check=positive,
    )
    max_connections: int = setting(100, "upstream connection pool size", check=positive)
    max_keepalive: int = setting(
        50, "idle upstream connections kept (`httpx` only)", check=positive
    )
    allow_plain_http: bool = setting(False, "allow an `http://` endpoint (demo and tests only)")
    transport: Literal["httpx", "aiohttp"] = setting(
        "aiohttp",
        "the upstream HTTP client: `aiohttp` (called directly; ~⅙ of httpcore's CPU per "
        "request, measured by `python -m tests.benchmark`) or `httpx` (httpcore). Same "
        "properties either way: no env, redirects or cookie jar, raw bytes, explicit "
        "timeouts, the target sent byte for byte",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))

    def __check__(self, path: str) -> Iterable[str]:
        message = url_problem(self.endpoint, allow_http=self.allow_plain_http)
        if message is not None:
            yield problem(at(path, "endpoint"), message)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    versions: tuple[str, ...] = setting(
        DEFAULT_VERSIONS,
        "api-versions accepted (each must be in `gateway/operations/apiversions.py`)",
        allowed=KNOWN_VERSIONS,
        check=non_empty("must list at least one api-version"),
        shown="every known version",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisConfig:
    url: str = setting(
        "redis://127.0.0.1:6379/0",
        "the Redis of the limiter and the ownership records (`rediss://` for TLS; user and "
        "password in the URL)",
        check=redis_url,
        env="REDIS_URL",
    )
    socket_timeout_s: float = setting(
        0.25,
        "explicit; redis-py's retries are off (no double counting)",
        check=between(0.005, 5),
    )
    connect_timeout_s: float = setting(0.25, "connecting to Redis", check=between(0.005, 5))
    max_connections: int = setting(64, "pool size (per node with `cluster`)", check=positive)
    cluster: bool = setting(False, "speak the Redis Cluster protocol (`url` names any node)")


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnershipConfig:
    """Tenant isolation of every owned kind: threads (their messages, runs and steps),
    assistants, vector stores and files."""

    enabled: bool = setting(
        True,
        "stamp the creating tenant on each new thread, assistant, vector store, file, "
        "conversation and response "
        "(cached in Redis and in process); other tenants get 404 on it, 400 "
        "`reference_not_found` naming it, and lists without it "
        "([Tenant isolation](#tenant-isolation))",
    )
    unknown: Literal["deny", "allow"] = setting(
        "deny",
        "objects with neither a stamp nor a record (created outside the gateway, or before it "
        "stamped): `deny` or `allow`",
    )
    record_ttl_days: int = setting(
        400,
        "how long a Redis ownership record lives (a cache of the stamp; an expired one is read "
        "again from the object)",
        check=between(1, 3650),
    )
    cache_ttl_s: float = setting(
        60.0, "how long an object's owner is kept in process (0: off)", check=between(0, 3600)
    )
    lookup_timeout_s: float = setting(
        5.0,
        "the longest an owner lookup at Azure (reading the stamp) may take; past it: 503",
        check=between(0.1, 60),
    )
    lookup_api_version: str | None = setting(
        None,
        "the api-version of owner lookups at Azure (one of `api.versions`; default: the newest "
        "allowed one that has the kind's retrieve operation)",
        shown="newest",
    )
    list_scan_pages: int = setting(
        10,
        "the most upstream pages (of 100) one list of assistants, vector stores or files reads "
        "looking for the caller's objects ([Tenant isolation](#tenant-isolation))",
        check=between(1, 100),
    )


#: ``[threads]`` keys and the ``[ownership]`` keys they stand for.
THREADS_ALIASES: Mapping[str, str] = {
    "ownership": "enabled",
    "unknown": "unknown",
    "record_ttl_days": "record_ttl_days",
    "cache_ttl_s": "cache_ttl_s",
    "lookup_timeout_s": "lookup_timeout_s",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadsConfig:
    """Deprecated: the ``[ownership]`` keys under their old names (still read; a key given
    in both sections is refused)."""

    ownership: bool | None = setting(None, "deprecated: `ownership.enabled`", shown="—")
    unknown: Literal["deny", "allow"] | None = setting(
        None, "deprecated: `ownership.unknown`", shown="—"
    )
    record_ttl_days: int | None = setting(
        None, "deprecated: `ownership.record_ttl_days`", check=between(1, 3650), shown="—"
    )
    cache_ttl_s: float | None = setting(
        None, "deprecated: `ownership.cache_ttl_s`", check=between(0, 3600), shown="—"
    )
    lookup_timeout_s: float | None = setting(
        None, "deprecated: `ownership.lookup_timeout_s`", check=between(0.1, 60), shown="—"
    )

    def given(self) -> dict[str, Any]:
        """The ``[ownership]`` settings this section gives (by their ``[ownership]`` names)."""
        return {
            new: getattr(self, old)
            for old, new in THREADS_ALIASES.items()
            if getattr(self, old) is not None
        }
