"""The composition root: builds every client from the config and lists the pipeline.

The gateway is a Starlette application: ``/healthz`` and ``/readyz`` as routes, and the Azure
surface mounted behind the pipeline, one pure-ASGI middleware per concern, in this order
(``pipeline``)::

    request context and observability → admission → authentication → operation and permission
        → rate limit → body policy → ownership → forwarder (credential swap, streaming relay)

It reads like the design card, with one deliberate change of order: ownership comes after the
rate limit and the body policy, because on a miss of the cache and of Redis it costs an Azure
call (reading the owner stamp), which only a request that passed every other check may cause.

Nothing else constructs an I/O client. Start-up order: the upstream credential (the key file's
poll, or the Entra token's refresh loop: its first fetch starts here and readiness waits for
it), key providers (initial JWKS fetch), Redis, readiness probes, then readiness. Shutdown
(after the server has drained its connections): stop readiness, close the credential, key
providers, Redis, upstream client.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.auth.authenticator import Authenticator
from gateway.auth.jwks import JwksKeyProvider, JwksSource, StaticKeyProvider, make_jwks_http_client
from gateway.auth.keys import KeyProvider
from gateway.auth.middleware import AuthenticationMiddleware
from gateway.config import Config, IssuerConfig
from gateway.observability.accesslog import AccessLog
from gateway.observability.metrics import GatewayMetrics, make_registry, metrics_app
from gateway.observability.middleware import InFlight, Observers, RequestContextMiddleware
from gateway.operations.apiversions import KNOWN_VERSIONS
from gateway.operations.middleware import OperationMiddleware
from gateway.operations.row import KINDS
from gateway.operations.table import BY_NAME, OperationTable
from gateway.ownership.azure import AzureOwnerOrigin, Home
from gateway.ownership.lookup import ObjectOwners
from gateway.ownership.middleware import OwnershipMiddleware
from gateway.ownership.store import RedisOwnerRecords
from gateway.policy.middleware import PolicyMiddleware
from gateway.ratelimit.keeper import LeaseKeeper
from gateway.ratelimit.middleware import RateLimitMiddleware
from gateway.ratelimit.redis_limiter import (
    RedisClient,
    RedisRateLimiter,
    connect_redis,
    make_redis_client,
)
from gateway.redisconn.health import RedisHealth
from gateway.server.admission import Admission
from gateway.server.looplag import LoopLagMonitor
from gateway.server.middleware import AdmissionMiddleware
from gateway.upstream.backends import Backend, Backends
from gateway.upstream.breaker import BreakerPolicy
from gateway.upstream.client import UpstreamClient
from gateway.upstream.credentials import (
    ApiKeySource,
    UpstreamCredential,
    backend_credentials,
)
from gateway.upstream.forwarder import Forwarder

log = logging.getLogger("gateway.app")

#: The paths Starlette routes (the probes); every other request is the pipeline's.
_PROBES = frozenset({"/healthz", "/readyz"})


def _key_provider(
    issuer: IssuerConfig, http: httpx.AsyncClient, metrics: GatewayMetrics
) -> KeyProvider:
    keys = issuer.keys
    if keys.public_key_file is not None:
        algorithm = sorted(issuer.policy.algorithms)[0]
        return StaticKeyProvider.from_pem(keys.public_key_file, algorithm)
    source = JwksSource(
        url=keys.url,
        discovery_url=keys.discovery_url,
        file=keys.file,
        bearer_token_file=keys.bearer_token_file,
    )
    return JwksKeyProvider(
        source,
        http,
        ttl_s=keys.ttl_s,
        cooldown_s=min(keys.cooldown_s, keys.ttl_s),
        stale_s=max(keys.stale_s, keys.ttl_s),
        on_refresh=metrics.jwks_refresh_hook(issuer.policy.issuer),
    )


@dataclass
class Gateway:
    config: Config
    #: The credential sent to Azure (an API key, or an Entra token): the first backend's.
    credential: UpstreamCredential
    upstream: UpstreamClient
    jwks_http: httpx.AsyncClient
    key_providers: Mapping[str, KeyProvider]
    redis: RedisClient | None
    limiter: RedisRateLimiter | None
    #: The pipeline (``Middleware`` entries, outermost first) and the endpoint behind it:
    #: mounted by ``app`` here, or in another Starlette application (see ``lifespan``).
    pipeline: list[Middleware]
    forwarder: Forwarder
    draining: bool = False
    started: bool = False
    extra_closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: The metrics and their ASGI app (served on the metrics listener, never the proxy port).
    metrics: GatewayMetrics | None = None
    metrics_app: ASGIApp | None = None
    #: Readiness of the limiter and the ownership store (``redis_health``).
    redis_health: RedisHealth | None = None
    #: Measures the event loop's lag (a gauge; see ``gateway.admission`` for why not to shed).
    lag_monitor: LoopLagMonitor | None = None
    #: Requests being served now.
    in_flight: InFlight = field(default_factory=InFlight)
    #: Sheds requests before any work when this process is overloaded.
    admission: Admission | None = None
    #: The Azure backends (one: ``default``, over ``upstream`` and ``credential``; several:
    #: the first over those), each with its own client and credential.
    backends: Backends | None = None
    app: Starlette = field(init=False)
    #: The pipeline around the forwarder (what the ``Mount`` serves).
    proxy: ASGIApp = field(init=False)

    def __post_init__(self) -> None:
        proxy: ASGIApp = self.forwarder
        for middleware in reversed(self.pipeline):  # as Starlette builds a Mount's stack
            proxy = middleware.cls(proxy, *middleware.args, **middleware.kwargs)
        self.proxy = proxy
        self.app = Starlette(
            routes=[
                Route("/healthz", self._healthz, methods=["GET", "HEAD"]),
                Route("/readyz", self._readyz, methods=["GET", "HEAD"]),
                Mount("", app=proxy),
            ],
            lifespan=lambda _app: self.lifespan(),
        )

    @property
    def inflight(self) -> int:
        return self.in_flight.count

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Start-up and shutdown; compose it into another application's lifespan to mount the
        pipeline there."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        if self.backends is not None:
            self.backends.start()  # every backend's credential (``credential`` among them)
        else:
            self.credential.start()
        for provider in self.key_providers.values():
            if isinstance(provider, JwksKeyProvider):
                await provider.start()
        if self.redis is not None:
            await connect_redis(self.redis)
        if self.redis_health is not None:
            await self.redis_health.checks()  # logs an ACL or credential refusal at once
        if self.lag_monitor is not None:
            self.lag_monitor.start()
        self.started = True

    async def shutdown(self) -> None:
        self.draining = True
        if self.lag_monitor is not None:
            await self.lag_monitor.aclose()
        if self.backends is None:
            await self.credential.aclose()
        for provider in self.key_providers.values():
            if isinstance(provider, JwksKeyProvider):
                await provider.aclose()
        await self.jwks_http.aclose()
        for close in self.extra_closers:
            await close()
        if self.limiter is not None:
            await self.limiter.aclose()  # the lease releases still queued
        if self.redis is not None:
            await self.redis.aclose()
        if self.backends is not None:
            # Every backend's credential and client (``credential``, ``upstream`` among them).
            await self.backends.aclose()
        else:
            await self.upstream.aclose()

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, str] = {}
        checks["draining"] = "yes" if self.draining else "no"
        keys_ok = issuers_ready(self.key_providers, checks)
        credential_ok = credentials_ready(self.backends, self.credential, checks)
        ready = self.started and not self.draining and keys_ok and credential_ok
        if self.redis_health is not None:
            redis_ready, redis_checks = await self.redis_health.checks()
            checks.update(redis_checks)
            ready = ready and redis_ready
        return ready, checks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Every HTTP request but the probes goes straight to the pipeline: the Mount would
        # route it there anyway, after Starlette's error, exception and routing layers (and a
        # wrapper around every ``send``), which the pipeline's first middleware makes moot (it
        # renders every error itself).
        if scope["type"] == "http" and scope["path"] not in _PROBES:
            await self.proxy(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _healthz(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})

    async def _readyz(self, _request: Request) -> Response:
        ready, checks = await self.readiness()
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return JSONResponse(body, 200 if ready else 503, headers={"cache-control": "no-store"})


def credentials_ready(
    backends: Backends | None, credential: UpstreamCredential, checks: dict[str, str]
) -> bool:
    """Ready once EVERY backend's credential is: an API key always is; an Entra token once one
    has been held (``gateway.upstream.entra``: it stays ready while the cached token serves,
    and an expired token is a 503 per request, not readiness). So a new replica takes no
    traffic before it can reach every backend (a rolling update waits while the old replicas
    keep serving), and readiness never flaps later. With several backends each is reported
    (``upstream_credential:<name>``)."""
    held = (
        {b.name: b.credential.ready() for b in backends.all}
        if backends is not None
        else {"default": credential.ready()}
    )
    if len(held) > 1:
        for name, ok in held.items():
            checks[f"upstream_credential:{name}"] = "ok" if ok else "pending"
    ready = all(held.values())
    checks["upstream_credential"] = "ok" if ready else "pending"
    return ready


def issuers_ready(providers: Mapping[str, KeyProvider], checks: dict[str, str]) -> bool:
    """Readiness means "this replica can serve": it is ready while at least one issuer's keys
    are usable. One issuer's outage (its JWKS past the stale period) is reported per issuer in
    ``checks``, by ``gateway_jwks_keys_ready{issuer}`` and its alert
    (``GatewayVerificationKeysUnavailable``), not by taking every replica out of the Service:
    its callers get 503 ``jwks_unavailable`` while every other issuer's callers are served."""
    usable = {name: provider.ready() for name, provider in providers.items()}
    for name, ok in usable.items():
        checks[f"keys:{name}"] = "ok" if ok else "unavailable"
    any_ok = any(usable.values())
    checks["keys"] = ("ok" if all(usable.values()) else "degraded") if any_ok else "unavailable"
    return any_ok


def _lookup_versions(config: Config) -> dict[str, str]:
    """Per owned kind, the api-version of its owner lookup: the configured one, or the newest
    allowed api-version whose generation has the kind's retrieve operation."""
    chosen = config.ownership.lookup_api_version
    allowed = [v for v in KNOWN_VERSIONS if v in config.api_versions]
    versions: dict[str, str] = {}
    for kind in KINDS.values():
        lookup = BY_NAME.get(kind.lookup)
        if lookup is None:
            continue  # a kind whose rows are not in the table: nothing can name one
        fits = [v for v in allowed if KNOWN_VERSIONS[v].generation in lookup.generations]
        if chosen is not None and chosen in fits:
            versions[kind.param] = chosen
        elif fits:
            versions[kind.param] = fits[-1]
    return versions


def _object_owners(
    config: Config,
    redis_client: RedisClient,
    backends: Backends,
    routes: OperationTable,
) -> ObjectOwners:
    """Owners from the cache, then Redis, then the stamp on the Azure object."""
    settings = config.ownership
    records = RedisOwnerRecords(
        redis_client,
        ttl_s=settings.record_ttl_days * 86400,
        budget_s=config.rate_limit.budget_s,
    )
    several = len(backends.all) > 1
    origin = AzureOwnerOrigin(
        [Home(b.name if several else None, b.client, b.credential) for b in backends.all],
        routes,
        api_versions=_lookup_versions(config),
        timeout_s=settings.lookup_timeout_s,
    )
    return ObjectOwners(
        records,
        origin,
        cache_ttl_s=settings.cache_ttl_s,
        default_backend=backends.first.name if several else None,
        backends=frozenset(backends.by_name),
    )


def _credentials(
    config: Config,
    *,
    api_key: ApiKeySource | None,
    credential: UpstreamCredential | None,
    credentials: Mapping[str, UpstreamCredential] | None,
    environ: Mapping[str, str] | None,
    metrics: GatewayMetrics,
) -> dict[str, UpstreamCredential]:
    """Every backend's credential by name: those given (tests: ``credentials`` by name, or
    ``credential`` / ``api_key`` for the single form's ``default``), the rest built from the
    config by ``make_credential`` (``credentials.backend_credentials``) with ``environ``."""
    given = dict(credentials or {})
    if not config.upstream.backends:
        single = credential if credential is not None else api_key
        if single is not None:
            given.setdefault("default", single)
    out = backend_credentials(
        config.upstream,
        environ={} if environ is None else environ,
        metrics=metrics,
        given=given,
    )
    for source in out.values():
        if isinstance(source, ApiKeySource):
            if source.on_error is None:
                source.on_error = metrics.on_key_reload_error
            if source.on_reload is None:
                source.on_reload = metrics.on_key_reload
    return out


def _backends(
    config: Config,
    default: UpstreamClient,
    credentials: Mapping[str, UpstreamCredential],
    transport: httpx.AsyncBaseTransport | None,
    metrics: GatewayMetrics,
    draw: Callable[[], float] | None,
) -> Backends:
    """One client and credential per backend: the single ``endpoint`` form is ``default``
    over ``upstream``; ``[[upstream.backends]]`` each get their own client (the first:
    ``upstream``), with its credential from ``credentials``."""
    upstream, configured = config.upstream, config.upstream.backends
    if not configured:
        backends = [Backend("default", default, credentials["default"])]
    else:
        backends = []
        for b in configured:
            credential = credentials[b.name]
            client = (
                default
                if b is configured[0]
                else UpstreamClient(
                    upstream.for_backend(b),
                    transport=transport,
                    upload_read_timeout_s=config.server.upload_timeout_s,
                )
            )
            backends.append(
                Backend(
                    b.name,
                    client,
                    credential,
                    weight=b.weight,
                    priority=b.priority,
                    api_versions=frozenset(b.api_versions),
                )
            )
    breaker = upstream.breaker
    return Backends(
        backends,
        policy=BreakerPolicy(
            failures=breaker.failures,
            cooldown_s=breaker.cooldown_s,
            max_cooldown_s=breaker.max_cooldown_s,
            max_retry_after_s=breaker.max_retry_after_s,
            probe_timeout_s=breaker.probe_timeout_s,
        ),
        on_answer=metrics.on_backend_answer,
        **({"draw": draw} if draw is not None else {}),
    )


def build(
    config: Config,
    *,
    api_key: ApiKeySource | None = None,
    credential: UpstreamCredential | None = None,
    environ: Mapping[str, str] | None = None,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    registry: CollectorRegistry | None = None,
    redis_client: RedisClient | None = None,
    credentials: Mapping[str, UpstreamCredential] | None = None,
    draw: Callable[[], float] | None = None,
) -> Gateway:
    """Build the whole gateway from a validated config (no I/O happens until start-up).

    The upstream credentials: every backend's, built from ``config.upstream`` by
    ``make_credential`` with ``environ`` (the variables the key and the workload-identity
    webhook come from; raises ``ConfigError``), except those given (tests): ``credentials``
    by backend name, or for the single ``endpoint`` form (backend ``default``) ``credential``
    or ``api_key``. ``draw`` replaces ``random.random`` for the weighted choice of a new
    object's backend (tests).

    ``registry`` receives every metric; by default a fresh one (never the global registry).
    ``redis_client`` replaces the client built from ``config.redis`` (the embedded demo's
    in-process Redis when no ``redis-server`` is installed: the same Lua script runs on it).
    """
    routes = OperationTable(config.api_versions)
    metrics = GatewayMetrics(
        registry if registry is not None else make_registry(),
        operations=routes.operations,
        profiles=config.profiles,
    )
    by_name = _credentials(
        config,
        api_key=api_key,
        credential=credential,
        credentials=credentials,
        environ=environ,
        metrics=metrics,
    )
    first = config.upstream.resolved_backends()[0]
    credential = by_name[first.name]
    upstream = UpstreamClient(
        config.upstream.for_backend(first),
        transport=upstream_transport,
        upload_read_timeout_s=config.server.upload_timeout_s,
    )
    backends = _backends(config, upstream, by_name, upstream_transport, metrics, draw)
    metrics.track_pool({b.name: b.client.pool_connections for b in backends.all})
    metrics.track_backends(backends.states)
    metrics.set_maxima(
        pool_connections={b.name: config.upstream.max_connections for b in backends.all},
        requests_in_flight=config.server.max_concurrent_connections,
    )
    jwks_http = make_jwks_http_client()
    # An issuer that names its own CA bundle (the cluster CA for the API server's JWKS) gets
    # its own client trusting only that bundle.
    jwks_clients = {
        ca: make_jwks_http_client(ca_file=ca)
        for ca in sorted({i.keys.ca_file for i in config.auth.issuers if i.keys.ca_file})
    }
    providers = {
        i.policy.issuer: _key_provider(
            i, jwks_clients[i.keys.ca_file] if i.keys.ca_file else jwks_http, metrics
        )
        for i in config.auth.issuers
    }
    metrics.track_keys({name: p.ready for name, p in providers.items()})
    authenticator = Authenticator(
        {
            name: (i.policy, providers[name])
            for i in config.auth.issuers
            for name in [i.policy.issuer]
        },
        rules=config.auth.callers,
        default_profile=config.auth.default_profile,
        max_token_bytes=config.auth.max_token_bytes,
        cache_size=config.auth.token_cache_size,
    )
    limiter = None
    keeper = None
    owners = None
    if redis_client is None and (config.rate_limit.enabled or config.ownership.enabled):
        redis_client = make_redis_client(
            config.redis.url,
            socket_timeout_s=config.redis.socket_timeout_s,
            connect_timeout_s=config.redis.connect_timeout_s,
            max_connections=config.redis.max_connections,
            cluster=config.redis.cluster,
        )
    if config.ownership.enabled and redis_client is not None:
        owners = _object_owners(config, redis_client, backends, routes)
    if config.rate_limit.enabled and redis_client is not None:
        limiter = RedisRateLimiter(
            redis_client,
            fail_mode=config.rate_limit.fail_mode,
            replicas=config.rate_limit.replicas,
            budget_s=config.rate_limit.budget_s,
            lease_ttl_s=config.rate_limit.lease_ttl_s,
            shadow=config.rate_limit.shadow,
            on_decision=metrics.on_ratelimit_decision,
            on_error=metrics.on_redis_error,
            on_deadline=metrics.on_ratelimit_deadline,
        )
        metrics.track_limiter(limiter)
        # One task renews every held concurrency lease (a third of its TTL, at least 1 s).
        keeper = LeaseKeeper(limiter.renew, every_s=max(1.0, config.rate_limit.lease_ttl_s / 3))
    health = None
    if limiter is not None or owners is not None:
        health = RedisHealth(
            limiter=limiter,
            ownership=redis_client if owners else None,
            budget_s=config.rate_limit.budget_s,
            fail_closed=config.rate_limit.fail_mode == "closed",
        )
        metrics.track_dependencies(health)
    admission = Admission(max_pending=config.server.max_pending_requests)
    lag = LoopLagMonitor()
    metrics.track_admission(admission, lag)
    in_flight = InFlight()
    observer = Observers(AccessLog(enabled=config.server.access_log), metrics, in_flight)
    pipeline = [
        Middleware(
            RequestContextMiddleware,
            observer=observer,
            overhead_header=config.server.overhead_header,
        ),
        Middleware(
            AdmissionMiddleware,
            admission=admission,
            max_header_bytes=config.server.max_header_bytes,
        ),
        Middleware(AuthenticationMiddleware, authenticator=authenticator),
        Middleware(OperationMiddleware, table=routes, profiles=config.profiles),
        Middleware(
            RateLimitMiddleware,
            limiter=limiter,
            global_rate=config.rate_limit.global_rate,
            cluster=config.redis.cluster,
            keeper=keeper,
        ),
        Middleware(
            PolicyMiddleware,
            max_body_bytes=config.server.max_body_bytes,
            body_timeout_s=config.server.body_timeout_s,
            upload_timeout_s=config.server.upload_timeout_s,
        ),
        Middleware(
            OwnershipMiddleware,
            owners=owners,
            unknown=config.ownership.unknown,
            max_body_bytes=config.server.max_body_bytes,
            routes=routes,
            list_scan_pages=config.ownership.list_scan_pages,
            router=backends if len(backends.all) > 1 else None,
        ),
    ]
    forwarder = Forwarder(
        upstream,
        credential=credential,
        stream_max_duration_s=config.upstream.stream_max_duration_s,
        backends=backends,
    )
    return Gateway(
        config,
        credential,
        upstream,
        jwks_http,
        providers,
        redis_client,
        limiter,
        pipeline,
        forwarder,
        # The lease keeper stops before the limiter sends its last queued releases.
        extra_closers=[
            *(c.aclose for c in jwks_clients.values()),
            *([keeper.aclose] if keeper is not None else []),
        ],
        metrics=metrics,
        metrics_app=metrics_app(metrics.registry),
        redis_health=health,
        lag_monitor=lag,
        in_flight=in_flight,
        admission=admission,
        backends=backends,
    )
