"""The service's own settings: listeners, the upstream, api-versions, Redis, ownership.

Each field is declared once (``gateway.config.schema.setting``): its key, default, check,
environment variable and the README row come from it.
"""

from __future__ import annotations

import dataclasses
import re
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
    ca_file: str | None = setting(
        None,
        "a CA bundle (PEM) to trust for the authority instead of the bundled public CAs (a "
        "TLS-inspecting egress proxy; the tests' private token endpoint)",
    )
    refresh_margin_s: float = setting(
        300.0,
        "refresh a token this long before it expires (single flight, with jitter); the cached "
        "token serves until it expires",
        check=between(10, 3600),
    )


_BACKEND_NAME = re.compile(r"[a-z0-9-]{1,32}")


def backend_name(value: str) -> str | None:
    return None if _BACKEND_NAME.fullmatch(value) else "must match [a-z0-9-]{1,32}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendConfig:
    """One ``[[upstream.backends]]`` table: an Azure OpenAI resource ("Several Azure
    resources" in the README)."""

    name: str = setting(
        REQUIRED,
        "unique; `[a-z0-9-]{1,32}` (recorded with every object created there: never rename one)",
        check=backend_name,
    )
    endpoint: str = setting(
        REQUIRED, "the resource's URL, scheme and host only; https unless `allow_plain_http`"
    )
    credential: Literal["api_key", "entra"] = setting(
        "api_key", "`api_key` (`api_key_file`) or `entra` (`entra`, workload identity)"
    )
    api_key_file: str | None = setting(
        None, "file holding this resource's key (re-read every `upstream.api_key_reload_s`)"
    )
    entra: EntraConfig = setting(factory=EntraConfig)
    weight: int = setting(
        1, "share of new objects within its priority group", check=between(1, 1000)
    )
    priority: int = setting(
        0,
        "lower first: a higher group takes new objects only while the lower ones cannot",
        check=between(0, 100),
    )
    api_versions: tuple[str, ...] = setting(
        (),
        "the api-versions it serves (a subset of `api.versions`; empty: all of them)",
        allowed=KNOWN_VERSIONS,
        shown="all",
    )
    allow_plain_http: bool | None = setting(
        None,
        "allow an `http://` endpoint (default: `upstream.allow_plain_http`)",
        shown="upstream's",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """When a backend is taken out of rotation for new objects (several backends only)."""

    failures: int = setting(
        5,
        "consecutive 5xx answers, timeouts or unreachable connects that open it",
        check=between(1, 1000),
    )
    cooldown_s: float = setting(
        10.0,
        "open this long after those failures (doubling on each failed probe)",
        check=between(0.1, 3600),
    )
    max_cooldown_s: float = setting(300.0, "the doubling's cap", check=between(0.1, 86400))
    max_retry_after_s: float = setting(
        300.0, "a 429's `Retry-After` opens it that long, at most this", check=between(0.1, 86400)
    )
    probe_timeout_s: float = setting(
        30.0,
        "a half-open probe not answered by then frees the probe slot",
        check=between(0.1, 3600),
    )


def _credential_problems(
    path: str, credential: str, api_key_file: str | None, entra: EntraConfig
) -> Iterable[str]:
    """An Entra credential takes no key file; its authority is https (the single form and
    each ``[[upstream.backends]]`` table alike)."""
    if credential == "entra" and api_key_file is not None:
        yield problem(
            at(path, "api_key_file"),
            'not used with credential = "entra": remove it (and the key Secret)',
        )
    authority = entra.authority_host
    if authority is not None:
        message = url_problem(authority, allow_http=False)
        if message is not None:
            yield problem(at(at(path, "entra"), "authority_host"), message)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConfig:
    __refused__: ClassVar[Mapping[str, str]] = {
        "api_key": "secrets must not be written in the config file: use "
        "AZURE_OPENAI_API_KEY_FILE (or AZURE_OPENAI_API_KEY)"
    }

    endpoint: str = setting(
        "",
        "Azure resource URL, scheme and host only; https unless `allow_plain_http` (required "
        "unless `backends` are given; never both)",
        env="AZURE_OPENAI_ENDPOINT",
        shown="required",
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
        30.0,
        "per write of a request body (`httpx` only: with `h1` a stalled write is bounded by the "
        "read timeout, aiohttp has none)",
        check=positive,
    )
    pool_timeout_s: float = setting(
        2.0,
        "waiting for a free upstream connection, then 503 (with `aiohttp` the connect budget "
        "covers pool wait + connect)",
        check=positive,
    )
    max_connections: int = setting(100, "upstream connection pool size", check=positive)
    max_keepalive: int = setting(
        50, "idle upstream connections kept (`h1` and `httpx`)", check=positive
    )
    allow_plain_http: bool = setting(False, "allow an `http://` endpoint (demo and tests only)")
    transport: Literal["h1", "aiohttp", "httpx"] = setting(
        "h1",
        "the upstream HTTP client: `h1` (the gateway's own HTTP/1.1 client over httptools; "
        "the least CPU per request, measured by `python -m tests.benchmark`), `aiohttp` "
        "(called directly) or `httpx` (httpcore). Same properties whichever: no env, "
        "redirects or cookie jar, raw bytes, explicit timeouts, the target sent byte for byte",
    )

    backends: tuple[BackendConfig, ...] = setting(
        (),
        "several Azure resources, one `[[upstream.backends]]` table each, instead of "
        "`endpoint` ([Several Azure resources](#several-azure-resources))",
        shown="—",
    )
    breaker: BreakerConfig = setting(factory=BreakerConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))

    def __check__(self, path: str) -> Iterable[str]:
        if self.backends:
            if self.endpoint or self.api_key_file:
                given = "endpoint" if self.endpoint else "api_key_file"
                yield problem(
                    at(path, given),
                    "give either `endpoint` (one resource) or `[[upstream.backends]]`, not both",
                )
            yield from self._check_backends(at(path, "backends"))
            return
        if not self.endpoint:
            yield problem(at(path, "endpoint"), "is required (here or in AZURE_OPENAI_ENDPOINT)")
            return
        message = url_problem(self.endpoint, allow_http=self.allow_plain_http)
        if message is not None:
            yield problem(at(path, "endpoint"), message)
        yield from _credential_problems(path, self.credential, self.api_key_file, self.entra)

    def _check_backends(self, where: str) -> Iterable[str]:
        seen: set[str] = set()
        for index, backend in enumerate(self.backends):
            here = at(where, index)
            if backend.name in seen:
                yield problem(at(here, "name"), f"duplicate backend {backend.name!r}")
            seen.add(backend.name)
            plain = (
                self.allow_plain_http
                if backend.allow_plain_http is None
                else (backend.allow_plain_http)
            )
            message = url_problem(backend.endpoint, allow_http=plain)
            if message is not None:
                yield problem(at(here, "endpoint"), message)
            if backend.credential == "api_key" and not backend.api_key_file:
                yield problem(at(here, "api_key_file"), "is required with credential = api_key")
            yield from _credential_problems(
                here, backend.credential, backend.api_key_file, backend.entra
            )

    def resolved_backends(self) -> tuple[BackendConfig, ...]:
        """The backends in force: the ``[[upstream.backends]]``, or the one resource of
        ``endpoint`` as the backend ``default``."""
        if self.backends:
            return self.backends
        return (
            BackendConfig(
                name="default",
                endpoint=self.endpoint,
                credential=self.credential,
                api_key_file=self.api_key_file,
                entra=self.entra,
                allow_plain_http=self.allow_plain_http,
            ),
        )

    def for_backend(self, backend: BackendConfig) -> UpstreamConfig:
        """This section with one backend's endpoint (what its ``UpstreamClient`` is built
        from: the timeouts and pool settings are shared)."""
        plain = (
            self.allow_plain_http
            if backend.allow_plain_http is None
            else (backend.allow_plain_http)
        )
        return dataclasses.replace(
            self,
            endpoint=backend.endpoint,
            api_key_file=backend.api_key_file,
            credential=backend.credential,
            entra=backend.entra,
            allow_plain_http=plain,
            backends=(),
        )


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
    url_file: str | None = setting(
        None,
        "file holding the Redis URL (a mounted Secret: the URL may carry the ACL user's "
        "password); read once at start by `gateway serve`, and then used instead of `url` and "
        "`REDIS_URL`",
    )
    socket_timeout_s: float = setting(
        0.25,
        "explicit; redis-py's retries are off (no double counting)",
        check=between(0.005, 5),
    )
    connect_timeout_s: float = setting(0.25, "connecting to Redis", check=between(0.005, 5))
    max_connections: int = setting(
        64,
        "pool size (per node with `cluster`); on a single Redis the limiter keeps up to four"
        " of them for its pipelined script calls",
        check=positive,
    )
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
