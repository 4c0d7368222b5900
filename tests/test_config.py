"""Config parsing: every problem reported at once with its path; the check-config command."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, apply_environment, load, parse, read_api_key
from tests.stack import deep_merge

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "gateway.toml"

MINIMAL: dict[str, Any] = {
    "upstream": {"endpoint": "https://res.openai.azure.com"},
    "auth": {
        "issuers": [{"issuer": "https://iss", "audiences": ["gw"], "jwks_url": "https://iss/jwks"}]
    },
    "profiles": {"default": {}},
}


def problems(extra: dict[str, Any], base: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(deep_merge(base if base is not None else MINIMAL, extra))
    return err.value.problems


def test_example_config_is_valid() -> None:
    config = load(str(EXAMPLE), environ={})
    assert config.upstream.endpoint == "https://my-resource.openai.azure.com"
    assert set(config.profiles) == {"writer", "reader"}
    assert "messages.create" in config.profiles["writer"].operations
    assert config.profiles["reader"].operations == frozenset(
        op for op in config.profiles["writer"].operations if op.endswith((".list", ".retrieve"))
    )
    assert config.profiles["writer"].rate_limit.per_caller["write"].burst == 20


def test_minimal_config_defaults() -> None:
    config = parse(MINIMAL)
    assert config.rate_limit.fail_mode == "open"
    assert (
        config.server.header_timeout_s,
        config.server.first_request_timeout_s,
        config.server.max_waiting_connections,
    ) == (10.0, 10.0, 2048)
    assert config.server.max_pending_requests == 256
    assert config.ownership.unknown == "deny"
    assert (config.ownership.cache_ttl_s, config.ownership.lookup_timeout_s) == (60.0, 5.0)
    assert config.profiles["default"].allows("runs.create")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"server": {"port": 0}}, "server.port: must be between 1 and 65535"),
        ({"server": {"port": "80"}}, "server.port: must be an integer"),
        ({"server": {"max_body_bytes": True}}, "server.max_body_bytes: must be an integer"),
        ({"server": {"colour": "blue"}}, "server.colour: unknown key"),
        (
            {"server": {"header_timeout_s": 0}},
            "server.header_timeout_s: must be between 0.5 and 300",
        ),
        (
            {"server": {"first_request_timeout_s": 301}},
            "server.first_request_timeout_s: must be between 0.5 and 300",
        ),
        (
            {"server": {"max_waiting_connections": 15}},
            "server.max_waiting_connections: must be between 16 and 1e+06",
        ),
        (
            {"server": {"max_pending_requests": 0}},
            "server.max_pending_requests: must be between 1 and 1e+06",
        ),
        (
            {"server": {"max_pending_requests": "many"}},
            "server.max_pending_requests: must be an integer",
        ),
        (
            {"upstream": {"endpoint": "http://res.openai.azure.com"}},
            "upstream.endpoint: must be an https URL",
        ),
        (
            {"upstream": {"endpoint": "https://user:pw@res.openai.azure.com"}},
            "upstream.endpoint: must not contain credentials, a query or a fragment",
        ),
        ({"upstream": {"api_key": "secret"}}, "upstream.api_key: secrets must not be written"),
        (
            {"upstream": {"credential": "entra", "api_key_file": "/k"}},
            'upstream.api_key_file: not used with credential = "entra"',
        ),
        (
            {"upstream": {"credential": "entra", "entra": {"authority_host": "http://login"}}},
            "upstream.entra.authority_host: must be an https URL",
        ),
        (
            {"upstream": {"credential": "entra", "entra": {"refresh_margin_s": 5}}},
            "upstream.entra.refresh_margin_s: must be between 10 and 3600",
        ),
        ({"upstream": {"credential": "token"}}, "upstream.credential: must be one of api_key"),
        ({"upstream": {"read_timeout_s": -1}}, "upstream.read_timeout_s: must be > 0"),
        ({"api": {"versions": ["2023-01-01"]}}, "api.versions[0]: unknown value '2023-01-01'"),
        ({"api": {"versions": []}}, "api.versions: must list at least one api-version"),
        ({"redis": {"url": "http://x"}}, "redis.url: must be a redis://"),
        ({"rate_limit": {"fail_mode": "maybe"}}, "rate_limit.fail_mode: must be one of open"),
        ({"threads": {"unknown": "sometimes"}}, "threads.unknown: must be one of deny, allow"),
        ({"threads": {"cache_ttl_s": -1}}, "threads.cache_ttl_s: must be between 0 and 3600"),
        (
            {"threads": {"lookup_timeout_s": 0}},
            "threads.lookup_timeout_s: must be between 0.1 and 60",
        ),
        (
            {"profiles": {"default": {"operations": ["nothing.*"]}}},
            "profiles.default.operations[0]: matches no operation",
        ),
        (
            {"profiles": {"default": {"policy": {"max_metadata_pairs": 17}}}},
            "profiles.default.policy.max_metadata_pairs",
        ),
        (
            {"profiles": {"default": {"policy": {"max_files": 11}}}},
            "profiles.default.policy.max_files",
        ),
        (
            {"profiles": {"default": {"policy": {"roles": ["user", "system"]}}}},
            "profiles.default.policy.roles",
        ),
        (
            {"profiles": {"default": {"policy": {"unknown_limit": 1}}}},
            "profiles.default.policy.unknown_limit: unknown key",
        ),
        (
            {"profiles": {"default": {"policy": {"tools": ["code_interpreter", "browser"]}}}},
            "profiles.default.policy.tools: must be a subset of",
        ),
        (
            {"profiles": {"default": {"policy": {"max_assistant_files": 21}}}},
            "profiles.default.policy.max_assistant_files: must be an integer between 0 and 20",
        ),
        (
            {"profiles": {"default": {"policy": {"max_vector_store_files": 10_001}}}},
            "profiles.default.policy.max_vector_store_files",
        ),
        (
            {"profiles": {"default": {"policy": {"max_instructions_chars": 0}}}},
            "profiles.default.policy.max_instructions_chars",
        ),
        (
            {"profiles": {"default": {"policy": {"models": [""]}}}},
            "profiles.default.policy.models",
        ),
        (
            {"profiles": {"default": {"policy": {"deny_private_image_urls": "no"}}}},
            "profiles.default.policy.deny_private_image_urls: must be true or false",
        ),
        (
            {
                "profiles": {
                    "default": {
                        "rate_limit": {
                            "per_caller": {"write": {"requests": 10, "per_seconds": 60, "burst": 0}}
                        }
                    }
                }
            },
            "profiles.default.rate_limit.per_caller.write.burst",
        ),
        (
            {
                "profiles": {
                    "default": {
                        "rate_limit": {
                            "per_caller": {"delete": {"requests": 10, "per_seconds": 60}}
                        }
                    }
                }
            },
            "profiles.default.rate_limit.per_caller.delete: operation class must be read or write",
        ),
        (
            {
                "profiles": {
                    "default": {"rate_limit": {"per_caller": {"read": {"per_seconds": 60}}}}
                }
            },
            "profiles.default.rate_limit.per_caller.read.requests: is required",
        ),
        ({"auth": {"default_profile": "ghost"}}, "auth.default_profile: unknown profile 'ghost'"),
        ({"auth": {"callers": [{"profile": "ghost"}]}}, "auth.callers[0].profile: unknown profile"),
        ({"auth": {"callers": [{"namespaces": ["a"]}]}}, "auth.callers[0].profile: is required"),
        # A claim condition without values would otherwise vanish and widen the rule to
        # every caller.
        (
            {"auth": {"callers": [{"profile": "default", "claim": {"name": "groups"}}]}},
            "auth.callers[0].claim.values: is required",
        ),
        (
            {"auth": {"callers": [{"profile": "default", "claim": {"name": "g", "values": []}}]}},
            "auth.callers[0].claim.values: must list at least one value",
        ),
        # The limiter refuses more at request time: check-config must say so first.
        (
            {"profiles": {"default": {"rate_limit": {"max_concurrent": 100_001}}}},
            "profiles.default.rate_limit.max_concurrent: must be between 1 and 100000",
        ),
    ],
)
def test_bad_values_are_reported_with_their_path(extra: dict[str, Any], expected: str) -> None:
    found = problems(extra)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        ({"audiences": ["gw"], "jwks_url": "https://x"}, "auth.issuers[0].issuer: is required"),
        (
            {"issuer": "i", "jwks_url": "https://x"},
            "auth.issuers[0].audiences: must list at least one audience",
        ),
        (
            {
                "issuer": "i",
                "audiences": ["https://kubernetes.default.svc"],
                "jwks_url": "https://x",
            },
            "auth.issuers[0].audiences[0]: the API server's default audience",
        ),
        (
            {"issuer": "i", "audiences": ["gw"], "algorithms": ["HS256"], "jwks_url": "https://x"},
            "auth.issuers[0].algorithms[0]: unknown value 'HS256'",
        ),
        (
            {"issuer": "i", "audiences": ["gw"], "algorithms": ["none"], "jwks_url": "https://x"},
            "auth.issuers[0].algorithms[0]: unknown value 'none'",
        ),
        ({"issuer": "i", "audiences": ["gw"]}, "auth.issuers[0]: needs exactly one of"),
        (
            {"issuer": "i", "audiences": ["gw"], "jwks_url": "https://x", "jwks_file": "/x"},
            "auth.issuers[0]: needs exactly one of",
        ),
        (
            {"issuer": "i", "audiences": ["gw"], "jwks_url": "ftp://x"},
            "auth.issuers[0].jwks_url: must be an https or http URL",
        ),
        (
            {
                "issuer": "i",
                "audiences": ["gw"],
                "jwks_url": "https://x",
                "required_claims": ["iss", "aud", "sub"],
            },
            "auth.issuers[0].required_claims: must include 'exp'",
        ),
        (
            {"issuer": "i", "audiences": ["gw"], "jwks_url": "https://x", "leeway_s": 600},
            "auth.issuers[0].leeway_s: must be between 0 and 300",
        ),
        # An empty list used to fall back to the default claims silently, or (algorithms)
        # leave an issuer that refuses every token: both say what they mean now.
        (
            {"issuer": "i", "audiences": ["gw"], "jwks_url": "https://x", "required_claims": []},
            "auth.issuers[0].required_claims: must include 'exp'",
        ),
        (
            {"issuer": "i", "audiences": ["gw"], "jwks_url": "https://x", "algorithms": []},
            "auth.issuers[0].algorithms: must list at least one algorithm",
        ),
    ],
)
def test_bad_issuers(issuer: dict[str, Any], expected: str) -> None:
    base = {k: v for k, v in MINIMAL.items() if k != "auth"}
    found = problems({"auth": {"issuers": [issuer]}}, base)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        {
            "server": {"port": 0, "body_timeout_s": 0},
            "upstream": {"endpoint": "ftp://x"},
            "rate_limit": {"budget_s": 100},
        }
    )
    assert len(found) >= 4


def test_no_issuer_and_no_profile() -> None:
    found = problems({}, {"upstream": {"endpoint": "https://x.example"}})
    assert "auth.issuers: configure at least one trusted issuer" in found
    assert "profiles: define at least one profile" in found


def test_environment_overrides() -> None:
    data = apply_environment(
        MINIMAL,
        {
            "AZURE_OPENAI_ENDPOINT": "https://other.openai.azure.com",
            "AZURE_OPENAI_API_KEY_FILE": "/run/key",
            "REDIS_URL": "rediss://r:6380/1",
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": "9000",
            "GATEWAY_METRICS_PORT": "9100",
        },
    )
    config = parse(data)
    assert config.upstream.endpoint == "https://other.openai.azure.com"
    assert config.upstream.api_key_file == "/run/key"
    assert config.redis.url == "rediss://r:6380/1"
    assert (config.server.host, config.server.port, config.server.metrics_port) == (
        "127.0.0.1",
        9000,
        9100,
    )
    assert MINIMAL["upstream"]["endpoint"] == "https://res.openai.azure.com"  # not mutated


def test_environment_values_are_checked_like_the_file() -> None:
    data = apply_environment(MINIMAL, {"GATEWAY_PORT": "80x", "REDIS_URL": "http://r"})
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert err.value.problems == [
        "server.port: must be an integer",
        "redis.url: must be a redis://, rediss:// or unix:// URL",
    ]
    no_endpoint = {k: v for k, v in MINIMAL.items() if k != "upstream"}
    with pytest.raises(ConfigError) as err:
        parse(no_endpoint)
    assert err.value.problems == [
        "upstream.endpoint: is required (here or in AZURE_OPENAI_ENDPOINT)"
    ]
    endpoint = {"AZURE_OPENAI_ENDPOINT": "https://env.openai.azure.com/"}
    assert parse(apply_environment(no_endpoint, endpoint)).upstream.endpoint == (
        "https://env.openai.azure.com"
    )


def test_api_key_sources(tmp_path: Path) -> None:
    config = parse(MINIMAL).upstream
    assert read_api_key(config, {"AZURE_OPENAI_API_KEY": "k1"}) == "k1"
    with pytest.raises(ConfigError):
        read_api_key(config, {})
    key_file = tmp_path / "key"
    key_file.write_text("k2\n")
    from_file = parse(deep_merge(MINIMAL, {"upstream": {"api_key_file": str(key_file)}}))
    assert read_api_key(from_file.upstream, {"AZURE_OPENAI_API_KEY": "ignored"}) == "k2"
    entra = parse(deep_merge(MINIMAL, {"upstream": {"credential": "entra"}}))
    assert read_api_key(entra.upstream, {}) is None  # no key needed with an Entra token
    key_file.write_text("")
    with pytest.raises(ConfigError):
        read_api_key(from_file.upstream, {})


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_check_config_command(tmp_path: Path) -> None:
    ok = run_cli("check-config", str(EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith(": ok")
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = 0\n[upstream]\nendpoint = "http://x"\napi_key = "s"\n')
    result = run_cli("check-config", str(bad))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "server.port: must be between 1 and 65535" in lines
    assert any(line.startswith("upstream.api_key:") for line in lines)
    assert any(line.startswith("auth.issuers:") for line in lines)
    assert "s" not in [line.split(": ", 1)[-1] for line in lines]
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    result = run_cli("check-config", str(broken))
    assert result.returncode == 1
    assert "invalid TOML" in result.stdout
    missing = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 1


def test_token_command_refuses_production_config() -> None:
    result = run_cli("token", "--config", str(EXAMPLE))
    assert result.returncode == 2
    assert "refusing" in result.stderr


def test_serve_refuses_demo_config_and_missing_key(tmp_path: Path) -> None:
    demo = tmp_path / "demo.toml"
    data = tomllib.loads(EXAMPLE.read_text())
    demo.write_text(EXAMPLE.read_text().replace("[server]", "demo = true\n\n[server]", 1))
    assert data
    result = run_cli("serve", "--config", str(demo))
    assert result.returncode == 1
    assert "demo config" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "no usable Azure API key" in result.stderr or "api_key_file" in result.stderr


def test_profile_policy_reads_what_a_tenant_may_build() -> None:
    policy = {
        "models": ["gpt-4o", "gpt-4o-mini"],
        "tools": ["function", "file_search"],
        "max_instructions_chars": 2000,
        "max_assistant_files": 5,
        "max_vector_store_files": 50,
    }
    config = parse(deep_merge(MINIMAL, {"profiles": {"default": {"policy": policy}}}))
    limits = config.profiles["default"].policy
    assert limits.models == frozenset({"gpt-4o", "gpt-4o-mini"})
    assert limits.tools == frozenset({"function", "file_search"})
    assert (limits.max_instructions_chars, limits.max_assistant_files) == (2000, 5)
    assert limits.max_vector_store_files == 50
    default = parse(MINIMAL).profiles["default"].policy
    assert default.models == frozenset() and "code_interpreter" in default.tools
