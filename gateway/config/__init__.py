"""The gateway's one typed, immutable config.

``parse(data)`` is pure: it turns a parsed TOML document into a ``Config`` and collects every
problem with its path (``profiles.batch.rate_limit.write.burst: must be > 0``). ``load(path,
environ)`` reads the file and applies the per-deployment environment overrides:

==============================  ==========================================================
``AZURE_OPENAI_ENDPOINT``       ``upstream.endpoint``
``AZURE_OPENAI_API_KEY``        the Azure key itself (prefer the file below)
``AZURE_OPENAI_API_KEY_FILE``   ``upstream.api_key_file`` (a mounted Kubernetes Secret)
``REDIS_URL``                   ``redis.url``
``GATEWAY_HOST`` / ``GATEWAY_PORT`` / ``GATEWAY_METRICS_PORT``  listen addresses
==============================  ==========================================================

Secrets never live in the config file: the Azure key comes from the environment or a file.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from gateway.auth.identity import CallerRule
from gateway.auth.tokens import (
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_REQUIRED_CLAIMS,
    TENANT_DOMAIN,
    IssuerPolicy,
)
from gateway.configread import Problems, Section, between, one_of, positive
from gateway.operations.apiversions import DEFAULT_VERSIONS, KNOWN_VERSIONS
from gateway.operations.table import OPERATIONS as ROWS
from gateway.policy.checks import PolicyLimits, limit_problems
from gateway.ratelimit.gcra import MAX_CONCURRENT, Rate, RateLimitProfile, rate_problems


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9090
    max_body_bytes: int = 1_048_576
    max_header_bytes: int = 32_768
    body_timeout_s: float = 30.0
    drain_timeout_s: float = 25.0
    overhead_header: bool = False
    access_log: bool = True
    #: Requests in flight beyond which the server answers 503 at once.
    max_concurrent_connections: int = 2048
    #: Connections with no request in progress (new, sending a head, idle keep-alive): at
    #: this many the oldest is closed to admit a new one.
    max_waiting_connections: int = 2048
    #: A request head must be complete this long after its first byte (else 408, closed).
    header_timeout_s: float = 10.0
    #: A new connection must deliver its first complete request head this long after accept.
    first_request_timeout_s: float = 10.0
    #: Requests being admitted at once (arrived, not yet past the rate limiter) beyond which
    #: new ones get 503 at once, before any body reading or token work (``gateway.admission``).
    max_pending_requests: int = 256


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    endpoint: str = ""
    api_key_file: str | None = None
    api_key_reload_s: float = 10.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0
    stream_read_timeout_s: float = 300.0
    #: A streamed (or unbounded) response is cut after this long in total.
    stream_max_duration_s: float = 900.0
    write_timeout_s: float = 30.0
    pool_timeout_s: float = 2.0
    max_connections: int = 100
    max_keepalive: int = 50
    allow_plain_http: bool = False
    #: The transport under the httpx API: "aiohttp" (default: ~4x less CPU per request than
    #: httpcore's pool, measured by ``python -m tests.benchmark``) or "httpx" (httpcore).
    transport: Literal["httpx", "aiohttp"] = "aiohttp"


@dataclass(frozen=True, slots=True)
class JwksConfig:
    url: str | None = None
    discovery_url: str | None = None
    file: str | None = None
    public_key_file: str | None = None
    bearer_token_file: str | None = None
    #: CA bundle to trust for the JWKS/discovery fetch instead of the system store (e.g. the
    #: Kubernetes service-account ``ca.crt`` for the API server's ``/openid/v1/jwks``).
    ca_file: str | None = None
    ttl_s: float = 300.0
    cooldown_s: float = 30.0
    stale_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    policy: IssuerPolicy
    keys: JwksConfig


@dataclass(frozen=True, slots=True)
class AuthConfig:
    issuers: tuple[IssuerConfig, ...] = ()
    max_token_bytes: int = 8192
    token_cache_size: int = 10_000
    default_profile: str | None = None
    callers: tuple[CallerRule, ...] = ()


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    operations: frozenset[str]
    policy: PolicyLimits = PolicyLimits()
    rate_limit: RateLimitProfile = RateLimitProfile()

    def allows(self, operation: str) -> bool:
        return operation in self.operations


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    socket_timeout_s: float = 0.25
    connect_timeout_s: float = 0.25
    max_connections: int = 64
    #: Speak the Redis Cluster protocol (``url`` names any node).
    cluster: bool = False


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    enabled: bool = True
    fail_mode: Literal["open", "closed", "local"] = "open"
    #: Replicas sharing the limits: a local fallback decides on ``1 / replicas`` of each.
    replicas: int = 1
    budget_s: float = 0.25
    lease_ttl_s: float = 30.0
    global_rate: Rate | None = None
    #: Decide and count, but never refuse (roll-out): refusals are logged and counted only.
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class ThreadsConfig:
    #: Record which tenant created each thread and keep other tenants out (needs Redis).
    ownership: bool = True
    #: Threads with no record (created before the gateway): ``deny`` or ``allow``.
    unknown: Literal["deny", "allow"] = "deny"
    record_ttl_days: int = 400
    #: Known owners kept in process (a thread's owner never changes); 0 turns the cache off.
    cache_ttl_s: float = 60.0
    #: The longest an owner lookup at Azure (the stamp on the thread) may take.
    lookup_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = ServerConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    api_versions: tuple[str, ...] = DEFAULT_VERSIONS
    auth: AuthConfig = AuthConfig()
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    redis: RedisConfig = RedisConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    threads: ThreadsConfig = ThreadsConfig()
    #: True for the embedded demo's generated config (``gateway token`` refuses anything else).
    demo: bool = False


OPERATIONS = frozenset(r.name for r in ROWS)


def _url(allow_http: bool) -> Any:
    def check(value: str) -> str | None:
        parts = urlsplit(value)
        schemes = ("https", "http") if allow_http else ("https",)
        if parts.scheme not in schemes or not parts.hostname:
            return "must be an " + " or ".join(schemes) + " URL"
        if parts.username or parts.password or parts.query or parts.fragment:
            return "must not contain credentials, a query or a fragment"
        return None

    return check


def _server(s: Section) -> ServerConfig:
    d = ServerConfig()
    port = between(1, 65535)
    out = ServerConfig(
        host=s.get("host", str, d.host),
        port=s.get("port", int, d.port, check=port),
        metrics_host=s.get("metrics_host", str, d.metrics_host),
        metrics_port=s.get("metrics_port", int, d.metrics_port, check=between(0, 65535)),
        max_body_bytes=s.get(
            "max_body_bytes", int, d.max_body_bytes, check=between(1024, 64 * 1_048_576)
        ),
        max_header_bytes=s.get(
            "max_header_bytes", int, d.max_header_bytes, check=between(4096, 1_048_576)
        ),
        body_timeout_s=s.get("body_timeout_s", float, d.body_timeout_s, check=positive),
        drain_timeout_s=s.get("drain_timeout_s", float, d.drain_timeout_s, check=positive),
        overhead_header=s.get("overhead_header", bool, d.overhead_header),
        access_log=s.get("access_log", bool, d.access_log),
        max_concurrent_connections=s.get(
            "max_concurrent_connections",
            int,
            d.max_concurrent_connections,
            check=between(16, 1_000_000),
        ),
        max_waiting_connections=s.get(
            "max_waiting_connections", int, d.max_waiting_connections, check=between(16, 1_000_000)
        ),
        header_timeout_s=s.get(
            "header_timeout_s", float, d.header_timeout_s, check=between(0.5, 300)
        ),
        first_request_timeout_s=s.get(
            "first_request_timeout_s", float, d.first_request_timeout_s, check=between(0.5, 300)
        ),
        max_pending_requests=s.get(
            "max_pending_requests", int, d.max_pending_requests, check=between(1, 1_000_000)
        ),
    )
    s.finish()
    return out


def _upstream(s: Section) -> UpstreamConfig:
    d = UpstreamConfig()
    allow_http = s.get("allow_plain_http", bool, False)
    endpoint = s.get("endpoint", str, "", check=_url(allow_http))
    out = UpstreamConfig(
        endpoint=endpoint.rstrip("/"),
        api_key_file=s.get("api_key_file", str),
        api_key_reload_s=s.get("api_key_reload_s", float, d.api_key_reload_s, check=positive),
        connect_timeout_s=s.get("connect_timeout_s", float, d.connect_timeout_s, check=positive),
        read_timeout_s=s.get("read_timeout_s", float, d.read_timeout_s, check=positive),
        stream_read_timeout_s=s.get(
            "stream_read_timeout_s", float, d.stream_read_timeout_s, check=positive
        ),
        stream_max_duration_s=s.get(
            "stream_max_duration_s", float, d.stream_max_duration_s, check=positive
        ),
        write_timeout_s=s.get("write_timeout_s", float, d.write_timeout_s, check=positive),
        pool_timeout_s=s.get("pool_timeout_s", float, d.pool_timeout_s, check=positive),
        max_connections=s.get("max_connections", int, d.max_connections, check=positive),
        max_keepalive=s.get("max_keepalive", int, d.max_keepalive, check=positive),
        allow_plain_http=allow_http,
        transport="httpx"
        if s.get("transport", str, d.transport, check=one_of("httpx", "aiohttp")) == "httpx"
        else "aiohttp",
    )
    if "api_key" in s.data:
        s.read.add("api_key")
        s.problems.add(
            s.at("api_key"),
            "secrets must not be written in the config file: use "
            "AZURE_OPENAI_API_KEY_FILE (or AZURE_OPENAI_API_KEY)",
        )
    s.finish()
    return out


def _jwks(s: Section) -> JwksConfig:
    d = JwksConfig()
    sources = {
        k: s.get(k, str) for k in ("jwks_url", "discovery_url", "jwks_file", "public_key_file")
    }
    if sum(v is not None for v in sources.values()) != 1:
        s.problems.add(
            s.path, "needs exactly one of jwks_url, discovery_url, jwks_file, public_key_file"
        )
    for key in ("jwks_url", "discovery_url"):
        value = sources[key]
        if value is not None and (message := _url(True)(value)):
            s.problems.add(s.at(key), message)
    return JwksConfig(
        url=sources["jwks_url"],
        discovery_url=sources["discovery_url"],
        file=sources["jwks_file"],
        public_key_file=sources["public_key_file"],
        bearer_token_file=s.get("bearer_token_file", str),
        ca_file=s.get("ca_file", str),
        ttl_s=s.get("jwks_ttl_s", float, d.ttl_s, check=positive),
        cooldown_s=s.get("jwks_cooldown_s", float, d.cooldown_s, check=positive),
        stale_s=s.get("jwks_stale_s", float, d.stale_s, check=positive),
    )


def _issuer(s: Section) -> IssuerConfig | None:
    issuer = s.require("issuer", str)
    audiences = s.strings("audiences")
    if not audiences:
        s.problems.add(s.at("audiences"), "must list at least one audience")
    kube_defaults = {
        "https://kubernetes.default.svc",
        "https://kubernetes.default.svc.cluster.local",
        "kubernetes",
        "api",
    }
    for i, aud in enumerate(audiences or ()):
        if aud in kube_defaults:
            s.problems.add(
                f"{s.at('audiences')}[{i}]",
                "the API server's default audience must "
                "not be accepted: give the gateway a dedicated audience",
            )
    algorithms = s.strings("algorithms", ("RS256",), allowed=ASYMMETRIC_ALGORITHMS)
    required = s.strings("required_claims", DEFAULT_REQUIRED_CLAIMS) or DEFAULT_REQUIRED_CLAIMS
    for claim in ("exp", "iss", "aud", "sub"):
        if claim not in required:
            s.problems.add(s.at("required_claims"), f"must include {claim!r}")
    policy = IssuerPolicy(
        issuer=issuer or "",
        audiences=frozenset(audiences or ()),
        algorithms=frozenset(algorithms or ()),
        required_claims=tuple(required),
        leeway_s=s.get("leeway_s", float, 30.0, check=between(0, 300)),
        kubernetes=s.get("kubernetes", bool, False),
        tenant_claim=s.get("tenant_claim", str),
        tenant_domain=s.get("tenant_domain", str, "", check=_tenant_domain),
    )
    keys = _jwks(s)
    s.finish()
    return IssuerConfig(policy, keys) if issuer else None


def _tenant_domain(value: str) -> str | None:
    if TENANT_DOMAIN.fullmatch(value):
        return None
    return "must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit)"


def _legacy_issuer(s: Section, issuers: list[IssuerConfig]) -> list[IssuerConfig]:
    """Mark the issuer whose tenants own records written before tenants were qualified: the
    one named by ``legacy_tenant_issuer``, else the only issuer when there is one."""
    named = s.get("legacy_tenant_issuer", str)
    if named is None and len(issuers) == 1:
        named = issuers[0].policy.issuer
    if named is None:
        return issuers
    if named not in {i.policy.issuer for i in issuers}:
        s.problems.add(s.at("legacy_tenant_issuer"), f"not a configured issuer: {named!r}")
        return issuers
    return [
        IssuerConfig(dataclasses.replace(i.policy, legacy_tenants=True), i.keys)
        if i.policy.issuer == named
        else i
        for i in issuers
    ]


def _caller_rule(s: Section, profiles: set[str]) -> CallerRule:
    profile = s.require("profile", str) or ""
    if profile and profile not in profiles:
        s.problems.add(s.at("profile"), f"unknown profile {profile!r}")
    claim = None
    if "claim" in s.data:
        c = s.section("claim")
        name = c.require("name", str)
        values = c.strings("values") if "values" in c.data else c.require("values", list)
        if values == ():
            s.problems.add(c.at("values"), "must list at least one value")
        c.finish()
        if name and values:
            claim = (name, frozenset(values))
    namespaces = s.strings("namespaces")
    sas = s.strings("service_accounts")
    subjects = s.strings("subjects")
    rule = CallerRule(
        profile=profile,
        issuer=s.get("issuer", str),
        namespaces=frozenset(namespaces) if namespaces is not None else None,
        service_accounts=frozenset(sas) if sas is not None else None,
        subjects=frozenset(subjects) if subjects is not None else None,
        claim=claim,
    )
    s.finish()
    return rule


def _policy(s: Section) -> PolicyLimits:
    kwargs: dict[str, Any] = {}
    defaults = PolicyLimits()
    for f in dataclasses.fields(PolicyLimits):
        if f.name not in s.data:
            continue
        default = getattr(defaults, f.name)
        if isinstance(default, frozenset):
            values = s.strings(f.name)
            if values is not None:
                kwargs[f.name] = frozenset(values)
        elif isinstance(default, bool):
            kwargs[f.name] = s.get(f.name, bool, default)
        else:
            kwargs[f.name] = s.get(f.name, int, default)
    s.finish()
    limits = PolicyLimits(**kwargs)
    for problem in limit_problems(limits, s.path):
        s.problems.items.append(problem)
    return limits


def _rate(s: Section) -> Rate | None:
    requests = s.require("requests", int)
    per_seconds = s.require("per_seconds", float)
    burst = s.get("burst", int, requests or 1)
    s.finish()
    if requests is None or per_seconds is None:
        return None
    rate = Rate(requests=requests, per_seconds=per_seconds, burst=burst)
    s.problems.items.extend(rate_problems(rate, s.path))
    return rate


def _rate_limit_profile(s: Section) -> RateLimitProfile:
    per_caller = {name: r for name, sub in s.named_sections("per_caller") if (r := _rate(sub))}
    per_tenant = {name: r for name, sub in s.named_sections("per_tenant") if (r := _rate(sub))}
    for table, rates in (("per_caller", per_caller), ("per_tenant", per_tenant)):
        for name in rates:
            if name not in ("read", "write"):
                s.problems.add(f"{s.at(table)}.{name}", "operation class must be read or write")
    out = RateLimitProfile(
        per_caller=per_caller,
        per_tenant=per_tenant,
        max_concurrent=s.get("max_concurrent", int, check=between(1, MAX_CONCURRENT)),
    )
    s.finish()
    return out


def _profile(name: str, s: Section) -> Profile:
    patterns = s.strings("operations", ("*",)) or ()
    operations = set()
    for i, pattern in enumerate(patterns):
        matched = fnmatch.filter(sorted(OPERATIONS), pattern)
        if not matched:
            s.problems.add(f"{s.at('operations')}[{i}]", f"matches no operation: {pattern!r}")
        operations.update(matched)
    profile = Profile(
        name=name,
        operations=frozenset(operations),
        policy=_policy(s.section("policy")),
        rate_limit=_rate_limit_profile(s.section("rate_limit")),
    )
    s.finish()
    return profile


def _auth(s: Section, profiles: set[str]) -> AuthConfig:
    issuers = [i for sub in s.sections("issuers") if (i := _issuer(sub))]
    seen = set()
    for index, issuer in enumerate(issuers):
        if issuer.policy.issuer in seen:
            s.problems.add(f"{s.at('issuers')}[{index}].issuer", "duplicate issuer")
        seen.add(issuer.policy.issuer)
    issuers = _legacy_issuer(s, issuers)
    default_profile = s.get("default_profile", str)
    if default_profile is not None and default_profile not in profiles:
        s.problems.add(s.at("default_profile"), f"unknown profile {default_profile!r}")
    out = AuthConfig(
        issuers=tuple(issuers),
        max_token_bytes=s.get("max_token_bytes", int, 8192, check=between(512, 65536)),
        token_cache_size=s.get("token_cache_size", int, 10_000, check=between(0, 1_000_000)),
        default_profile=default_profile,
        callers=tuple(_caller_rule(sub, profiles) for sub in s.sections("callers")),
    )
    s.finish()
    return out


def _redis(s: Section) -> RedisConfig:
    d = RedisConfig()
    out = RedisConfig(
        url=s.get(
            "url",
            str,
            d.url,
            check=lambda u: (
                None
                if urlsplit(u).scheme in ("redis", "rediss", "unix")
                else "must be a redis://, rediss:// or unix:// URL"
            ),
        ),
        socket_timeout_s=s.get(
            "socket_timeout_s", float, d.socket_timeout_s, check=between(0.005, 5)
        ),
        connect_timeout_s=s.get(
            "connect_timeout_s", float, d.connect_timeout_s, check=between(0.005, 5)
        ),
        max_connections=s.get("max_connections", int, d.max_connections, check=positive),
        cluster=s.get("cluster", bool, d.cluster),
    )
    s.finish()
    return out


def _rate_limit(s: Section) -> RateLimitConfig:
    d = RateLimitConfig()
    mode = s.get("fail_mode", str, d.fail_mode, check=one_of("open", "closed", "local"))
    out = RateLimitConfig(
        enabled=s.get("enabled", bool, d.enabled),
        fail_mode="closed" if mode == "closed" else "local" if mode == "local" else "open",
        replicas=s.get("replicas", int, d.replicas, check=between(1, 10_000)),
        budget_s=s.get("budget_s", float, d.budget_s, check=between(0.005, 5)),
        lease_ttl_s=s.get("lease_ttl_s", float, d.lease_ttl_s, check=between(1, 3600)),
        global_rate=_rate(s.section("global")) if "global" in s.data else None,
        shadow=s.get("shadow", bool, d.shadow),
    )
    s.finish()
    return out


def _threads(s: Section) -> ThreadsConfig:
    d = ThreadsConfig()
    unknown = s.get("unknown", str, d.unknown, check=one_of("deny", "allow"))
    out = ThreadsConfig(
        ownership=s.get("ownership", bool, d.ownership),
        unknown="allow" if unknown == "allow" else "deny",
        record_ttl_days=s.get("record_ttl_days", int, d.record_ttl_days, check=between(1, 3650)),
        cache_ttl_s=s.get("cache_ttl_s", float, d.cache_ttl_s, check=between(0, 3600)),
        lookup_timeout_s=s.get(
            "lookup_timeout_s", float, d.lookup_timeout_s, check=between(0.1, 60)
        ),
    )
    s.finish()
    return out


def parse(data: Mapping[str, Any]) -> Config:
    """Build a ``Config`` from a parsed document; raise ``ConfigError`` listing every problem."""
    problems = Problems()
    root = Section(data, "", problems)
    api = root.section("api")
    versions = api.strings("versions", DEFAULT_VERSIONS, allowed=frozenset(KNOWN_VERSIONS))
    if versions is not None and not versions:
        problems.add("api.versions", "must list at least one api-version")
    api.finish()
    profiles = {name: _profile(name, sub) for name, sub in root.named_sections("profiles")}
    if not profiles:
        problems.add("profiles", "define at least one profile")
    config = Config(
        server=_server(root.section("server")),
        upstream=_upstream(root.section("upstream")),
        api_versions=versions or DEFAULT_VERSIONS,
        auth=_auth(root.section("auth"), set(profiles)),
        profiles=profiles,
        redis=_redis(root.section("redis")),
        rate_limit=_rate_limit(root.section("rate_limit")),
        threads=_threads(root.section("threads")),
        demo=root.get("demo", bool, False),
    )
    if not config.auth.issuers:
        problems.add("auth.issuers", "configure at least one trusted issuer")
    root.finish()
    if problems:
        raise ConfigError(problems.items)
    return config


def apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay the per-deployment environment variables on a parsed document (a copy)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}

    def put(section: str, key: str, value: Any) -> None:
        out.setdefault(section, {})[key] = value

    if v := environ.get("AZURE_OPENAI_ENDPOINT"):
        put("upstream", "endpoint", v)
    if v := environ.get("AZURE_OPENAI_API_KEY_FILE"):
        put("upstream", "api_key_file", v)
    if v := environ.get("REDIS_URL"):
        put("redis", "url", v)
    if v := environ.get("GATEWAY_HOST"):
        put("server", "host", v)
    for name, key in (("GATEWAY_PORT", "port"), ("GATEWAY_METRICS_PORT", "metrics_port")):
        if v := environ.get(name):
            put("server", key, int(v) if v.isdigit() else v)
    return out


def load(path: str, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    return parse(apply_environment(data, environ))


def read_api_key(config: UpstreamConfig, environ: Mapping[str, str]) -> str:
    """The Azure key: from ``api_key_file`` (preferred) or ``AZURE_OPENAI_API_KEY``."""
    if config.api_key_file:
        try:
            with open(config.api_key_file, encoding="ascii") as f:
                key = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"upstream.api_key_file: cannot read the key file: {exc}"]) from None
    else:
        key = environ.get("AZURE_OPENAI_API_KEY", "").strip()
    if not key or not key.isprintable() or " " in key:
        raise ConfigError(
            [
                "upstream: no usable Azure API key: set AZURE_OPENAI_API_KEY_FILE "
                "(a mounted Secret) or AZURE_OPENAI_API_KEY"
            ]
        )
    return key
