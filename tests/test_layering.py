"""The dependency rules of the package, read from the source with ``ast``.

* The pure core imports only the standard library, pyjwt (token handling) and other core
  modules: no I/O library at all.
* Each adapter imports the core and its own I/O libraries only, never another adapter,
  except where named below; only the composition root (``app``) and the entry points
  (``cli``, ``demo``) wire adapters together.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"

CORE = {
    "asgi",
    "operations.apiversions",
    "auth.tokens",
    "auth.keys",
    "auth.caller",
    "config.auth",
    "config.docs",
    "config.document",
    "config.limits",
    "config.profiles",
    "config.reader",
    "config.schema",
    "config.service",
    "context",
    "errors",
    "upstream.headers",
    "auth.identity",
    "policy.jsonbody",
    "ownership.rules",
    "ownership.stamp",
    "ownership.filenames",
    "ownership.paths",
    "ownership.refs",
    "ownership.listing",
    "policy.assistants",
    "policy.checks",
    "policy.fields",
    "policy.limits",
    "policy.messages",
    "policy.runs",
    "policy.threads",
    "policy.tooling",
    "policy.urls",
    "policy.vectorstores",
    "policy.inputs",
    "policy.v1tools",
    "policy.responses",
    "policy.conversations",
    "ratelimit.gcra",
    "ratelimit.local",
    "operations.row",
    "operations.table",
    "operations.assistants",
    "operations.files",
    "operations.vector_stores",
    "operations.v1",
    "policy.multipart",
    "policy.formparts",
    "auth.cache",
    "observability.labels",
    "server.admission",
    "ratelimit.lua",
    "ratelimit.clock",
    "redisconn.resp",
    "upstream.tokenrefresh",
    "upstream.breaker",
    "upstream.routing",
}
CORE_THIRD_PARTY = {"jwt"}

#: adapter -> (third-party libraries it may use, adapters it may import)
ADAPTERS: dict[str, tuple[set[str], set[str]]] = {
    # The upstream adapter builds each transport: aiohttp's, httpx's or its own (upstream.h1).
    "upstream.client": ({"httpx", "aiohttp", "yarl"}, {"upstream.h1"}),
    # The h1 transport: asyncio and httptools' response parser, nothing of the gateway.
    "upstream.h1": ({"httptools"}, set()),
    "auth.keyset": ({"jwt", "cryptography"}, set()),
    "auth.jwks": ({"httpx", "jwt"}, {"auth.keyset"}),
    "redisconn.client": ({"redis"}, set()),
    # The limiter and the health probes share the one client and its error translation.
    "ratelimit.redis_limiter": ({"redis"}, {"redisconn.client", "redisconn.batch"}),
    # Auto-pipelining of one script over the shared client (a single Redis: on the pipe).
    "redisconn.batch": ({"redis"}, {"redisconn.client", "redisconn.pipe", "deadline"}),
    # One pipelined connection of the client's pool for the script's calls (RESP2: resp).
    "redisconn.pipe": ({"redis"}, set()),
    "redisconn.health": (
        {"redis"},
        {"ratelimit.redis_limiter", "redisconn.client", "redisconn.batch"},
    ),
    "server.looplag": (set(), set()),
    "ownership.store": ({"redis"}, set()),
    # Reads the owner stamp with the gateway's own request over the upstream adapter.
    # It sends the UpstreamCredential port's header (the port lives in upstream.credentials).
    "ownership.azure": (set(), {"upstream.client", "upstream.credentials"}),
    # Cache → records → origin, over its two ports (no I/O library of its own).
    "ownership.lookup": (set(), set()),
    "observability.metrics": ({"prometheus_client"}, {"observability.fastmetrics"}),
    # Lock-free counters and histograms with prometheus-client's exposition (its Metric).
    "observability.fastmetrics": ({"prometheus_client"}, set()),
    "policy.bodyread": (set(), {"deadline"}),
    # asyncio.timeout's semantics as a plain context manager over one timer handle.
    "deadline": (set(), set()),
    # Its line is written through the JSON log's handler (jsonlog.write_fields).
    "observability.accesslog": (set(), {"observability.jsonlog"}),
    "observability.jsonlog": (set(), set()),
    # uvicorn's httptools protocol, parsing the URL as uvicorn's does, running its own cycle.
    "server.protocol": ({"uvicorn", "httptools"}, {"server.cycle"}),
    "server.cycle": ({"uvicorn"}, set()),
    # The one credential factory builds either form (the key here, Entra over its adapter).
    "upstream.credentials": (set(), {"upstream.entra"}),
    # Workload identity: azure-identity over one aiohttp session with its own CA bundle.
    "upstream.entra": ({"azure", "aiohttp", "certifi"}, set()),
    # The supervisor of ``server.workers`` processes (stdlib: subprocess, socket, signal).
    "server.workers": (set(), set()),
    "auth.authenticator": (set(), set()),
    # The pipeline: one pure-ASGI middleware per concern (no I/O library of their own; each
    # uses its concern's adapter or core), and the forwarder over the upstream adapter.
    "observability.middleware": (set(), set()),
    "server.middleware": (set(), {"policy.bodyread"}),
    "auth.middleware": (set(), {"auth.authenticator"}),
    "operations.middleware": (set(), set()),
    "ratelimit.middleware": (set(), {"ratelimit.keeper"}),
    # One task renewing every held concurrency lease (asyncio only; the limiter's renew).
    "ratelimit.keeper": (set(), set()),
    "policy.middleware": (set(), {"policy.bodyread", "policy.uploads"}),
    # A file upload's body, read from ASGI as the forwarder sends it (asyncio only).
    "policy.uploads": (set(), {"policy.bodyread"}),
    "ownership.middleware": (set(), set()),
    # The backends in force: a client and a credential each, over the breaker and routing.
    "upstream.backends": (set(), {"upstream.client", "upstream.credentials"}),
    "upstream.forwarder": (
        {"httpx", "aiohttp"},
        {"upstream.client", "upstream.backends", "upstream.credentials"},
    ),
}
ROOTS = {"app", "cli", "__main__", "config.__main__"}


def source(module: str) -> Path:
    return PACKAGE.joinpath(*module.split(".")).with_suffix(".py")


def imports(module: str) -> set[str]:
    tree = ast.parse(source(module).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "gateway" or (
                node.module.startswith("gateway.") and node.module.count(".") == 1
            ):
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return found


def split(names: set[str]) -> tuple[set[str], set[str]]:
    ours = {n.split(".", 1)[1] for n in names if n.startswith("gateway.")}
    ours = {o for o in ours if source(o).is_file()}  # a package's own __init__ re-exports
    third = {
        n.split(".")[0]
        for n in names
        if not n.startswith("gateway") and n.split(".")[0] not in sys.stdlib_module_names
    }
    return ours, third


def test_every_module_is_classified() -> None:
    modules = {
        ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
        for p in PACKAGE.rglob("*.py")
        if p.stem != "__init__"
    }
    assert modules == CORE | set(ADAPTERS) | ROOTS


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_does_no_io(module: str) -> None:
    ours, third = split(imports(module))
    assert third <= CORE_THIRD_PARTY, third
    assert ours <= CORE, ours - CORE


@pytest.mark.parametrize("module", sorted(ADAPTERS))
def test_adapters_use_their_own_library_only(module: str) -> None:
    libraries, adapters = ADAPTERS[module]
    ours, third = split(imports(module))
    assert third <= libraries, third - libraries
    assert ours - CORE <= adapters, ours - CORE - adapters


#: What the config may import from the rest of the gateway: vocabulary (operation names,
#: api-versions, token algorithms) and the rule types it builds from its settings (with their
#: own validation). Nothing that does work at request time.
CONFIG_USES = {
    "operations.apiversions",  # KNOWN_VERSIONS, DEFAULT_VERSIONS
    # OPERATIONS: the operation names profile globs match. The rows also carry their body
    # checkers, so this loads policy.checks too: a names-only module would spare that.
    "operations.table",
    "auth.tokens",  # IssuerPolicy, ASYMMETRIC_ALGORITHMS, DEFAULT_REQUIRED_CLAIMS, TENANT_DOMAIN
    "auth.identity",  # CallerRule
    "policy.limits",  # PolicyLimits, limit_problems
    "ratelimit.gcra",  # Rate, RateLimitProfile, rate_problems, OP_CLASSES, MAX_CONCURRENT
}


def test_config_sits_under_the_core() -> None:
    config = {m for m in CORE if m.startswith("config.")}
    # The generic declarations and their reader know nothing of the gateway.
    assert split(imports("config.schema"))[0] == set()
    assert split(imports("config.reader"))[0] == {"config.schema"}
    for module in config:
        ours = split(imports(module))[0] - config
        assert ours <= CONFIG_USES, (module, ours - CONFIG_USES)
    # ...and nothing else reaches into its modules (settings come from ``gateway.config``).
    for module in (CORE - config) | set(ADAPTERS):
        assert not any(m.startswith("config.") for m in split(imports(module))[0]), module
