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
    "apiversions", "auth", "auth_port", "caller", "configread", "context", "errors", "headers",
    "identity", "jsonbody", "ownership", "ownership_stamp", "policy", "policy_fields",
    "policy_limits", "policy_messages", "policy_runs", "policy_threads", "policy_urls",
    "ratelimit", "ratelimit_local", "routes", "tokencache",
    "metrics_labels", "config", "admission", "ratelimit_lua", "ratelimit_clock",
}
CORE_THIRD_PARTY = {"jwt"}

#: adapter -> (third-party libraries it may use, adapters it may import)
ADAPTERS: dict[str, tuple[set[str], set[str]]] = {
    "upstream": ({"httpx", "aiohttp", "httpx_aiohttp"}, set()),
    "keyset": ({"jwt", "cryptography"}, set()),
    "jwks": ({"httpx", "jwt"}, {"keyset"}),
    "redis_client": ({"redis"}, set()),
    # The limiter and the health probes share the one client and its error translation.
    "ratelimit_redis": ({"redis"}, {"redis_client"}),
    "redis_health": ({"redis"}, {"ratelimit_redis", "redis_client"}),
    "looplag": (set(), set()),
    "ownership_redis": ({"redis"}, set()),
    # Reads the owner stamp with the gateway's own request over the upstream adapter.
    "ownership_azure": (set(), {"upstream"}),
    # Cache → records → origin, over its two ports (no I/O library of its own).
    "ownership_lookup": (set(), set()),
    "metrics": ({"prometheus_client"}, set()),
    "bodyread": (set(), set()),
    "accesslog": (set(), set()),
    "jsonlog": (set(), set()),
    "httpprotocol": ({"uvicorn"}, set()),
    "apikey": (set(), set()),
    "authenticator": (set(), set()),
    # The pipeline consumes the upstream adapter's response type and its own ports.
    "proxy": (set(), {"upstream", "authenticator", "bodyread"}),
}
ROOTS = {"app", "cli", "demo"}


def imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "gateway":
                found.update(f"gateway.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return found


def split(names: set[str]) -> tuple[set[str], set[str]]:
    ours = {n.split(".")[1] for n in names if n.startswith("gateway.")}
    third = {n.split(".")[0] for n in names
             if not n.startswith("gateway") and n.split(".")[0] not in sys.stdlib_module_names}
    return ours, third


def test_every_module_is_classified() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
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
