"""``[[upstream.backends]]``: one test per kind of bad config, and what a good one means."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, parse
from gateway.upstream.credentials import ApiKeySource, backend_credentials
from gateway.upstream.entra import EntraCredential
from tests.stack import base_config, deep_merge


def backend(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "endpoint": f"https://{name}.example",
        "api_key_file": f"/k/{name}",
        **extra,
    }


def config(*backends: dict[str, Any], **sections: Any) -> dict[str, Any]:
    data = base_config("https://unused.example", "/jwks.json", None)
    del data["upstream"]["endpoint"]
    data["upstream"]["allow_plain_http"] = False
    data["upstream"]["backends"] = list(backends)
    data["threads"] = {"ownership": True}
    return deep_merge(data, sections)


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(data)
    return err.value.problems


def test_several_backends_read_with_their_defaults() -> None:
    parsed = parse(
        config(backend("east", weight=3), backend("west", priority=1, api_versions=["v1"]))
    )
    east, west = parsed.upstream.resolved_backends()
    assert (east.name, east.weight, east.priority, east.api_versions) == ("east", 3, 0, ())
    assert (west.priority, west.api_versions, west.credential) == (1, ("v1",), "api_key")
    client = parsed.upstream.for_backend(west)
    assert client.endpoint == "https://west.example" and client.api_key_file == "/k/west"
    assert client.read_timeout_s == parsed.upstream.read_timeout_s  # shared settings


def test_the_single_endpoint_form_is_one_backend_named_default() -> None:
    data = base_config("https://one.example/", "/jwks.json", None)
    data["upstream"]["api_key_file"] = "/k/one"
    (only,) = parse(data).upstream.resolved_backends()
    assert (only.name, only.endpoint, only.api_key_file) == (
        "default",
        "https://one.example",
        "/k/one",
    )


def test_both_forms_at_once_is_refused() -> None:
    data = config(backend("east"))
    data["upstream"]["endpoint"] = "https://one.example"
    assert problems(data) == [
        "upstream.endpoint: give either `endpoint` (one resource) or `[[upstream.backends]]`, "
        "not both"
    ]


def test_names_are_checked_and_unique() -> None:
    assert problems(config(backend("East_1"), backend("b"), backend("b"))) == [
        "upstream.backends[0].name: must match [a-z0-9-]{1,32}",
        "upstream.backends[2].name: duplicate backend 'b'",
    ]


def test_weight_priority_and_endpoint_are_checked() -> None:
    assert problems(
        config(backend("a", weight=0), backend("b", priority=-1, endpoint="http://b.example"))
    ) == [
        "upstream.backends[0].weight: must be between 1 and 1000",
        "upstream.backends[1].priority: must be between 0 and 100",
        "upstream.backends[1].endpoint: must be an https URL",
    ]


def test_plain_http_per_backend_or_from_the_upstream_setting() -> None:
    parse(config(backend("a", endpoint="http://a.local", allow_plain_http=True), backend("b")))
    data = config(backend("a", endpoint="http://a.local"), backend("b", endpoint="http://b.local"))
    data["upstream"]["allow_plain_http"] = True
    parse(data)


def test_api_versions_must_be_among_the_gateways() -> None:
    data = config(backend("a", api_versions=["v1"]), backend("b", api_versions=["nope"]))
    data["api"] = {"versions": ["2024-05-01-preview"]}
    assert problems(data) == [
        "upstream.backends[1].api_versions[0]: unknown value 'nope'",
        "upstream.backends[0].api_versions[0]: 'v1' is not one of api.versions",
    ]


def test_an_api_key_backend_needs_its_key_file() -> None:
    no_key = {"name": "a", "endpoint": "https://a.example"}
    assert problems(config(no_key, backend("b"))) == [
        "upstream.backends[0].api_key_file: is required with credential = api_key"
    ]


def test_an_entra_backend_takes_no_key_file_and_an_https_authority() -> None:
    entra = {"credential": "entra", "entra": {"authority_host": "http://login.example"}}
    assert problems(config(backend("a"), backend("b", **entra))) == [
        'upstream.backends[1].api_key_file: not used with credential = "entra": remove it '
        "(and the key Secret)",
        "upstream.backends[1].entra.authority_host: must be an https URL",
    ]


def test_an_entra_backend_gets_its_own_token_credential(tmp_path: Path) -> None:
    """``credential = "entra"`` on a backend is accepted and built by ``make_credential``
    (its problems under ``upstream.backends[i]``); the key backend keeps its key."""
    (tmp_path / "a").write_text("key-of-a")
    entra = {"name": "b", "endpoint": "https://b.example", "credential": "entra"}
    parsed = parse(config(backend("a", api_key_file=str(tmp_path / "a")), entra))
    with pytest.raises(ConfigError) as err:
        backend_credentials(parsed.upstream, environ={})
    assert err.value.problems == [
        "upstream.backends[1].entra.client_id: not set (nor AZURE_CLIENT_ID in the environment)",
        "upstream.backends[1].entra.tenant_id: not set (nor AZURE_TENANT_ID in the environment)",
        "upstream.backends[1].entra.token_file: not set (nor AZURE_FEDERATED_TOKEN_FILE in the "
        "environment)",
    ]
    environ = {
        "AZURE_CLIENT_ID": "client",
        "AZURE_TENANT_ID": "tenant",
        "AZURE_FEDERATED_TOKEN_FILE": str(tmp_path / "token"),
    }
    keys = backend_credentials(parsed.upstream, environ=environ)
    assert isinstance(keys["a"], ApiKeySource) and isinstance(keys["b"], EntraCredential)
    assert not keys["b"].ready()  # no token held before start-up fetches one


def test_several_backends_need_ownership() -> None:
    assert problems(config(backend("a"), backend("b"), threads={"ownership": False})) == [
        "upstream.backends: several backends need ownership.enabled: an object's backend is "
        "recorded with its owner"
    ]
    parse(config(backend("a"), threads={"ownership": False}))  # one backend: fine


def test_breaker_settings_are_checked() -> None:
    data = config(backend("a"), backend("b"))
    data["upstream"]["breaker"] = {"failures": 0, "cooldown_s": 0}
    assert problems(data) == [
        "upstream.breaker.failures: must be between 1 and 1000",
        "upstream.breaker.cooldown_s: must be between 0.1 and 3600",
    ]


def test_every_api_version_needs_a_backend_serving_it() -> None:
    data = config(backend("a", api_versions=["v1"]), backend("b", api_versions=["v1"]))
    data["api"] = {"versions": ["v1", "preview"]}
    assert problems(data) == ["upstream.backends: no backend serves api-version 'preview'"]


def test_each_backend_reads_its_own_key_file(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("key-of-a\n")
    (tmp_path / "b").write_text("key-of-b")
    parsed = parse(
        config(
            backend("a", api_key_file=str(tmp_path / "a")),
            backend("b", api_key_file=str(tmp_path / "b")),
        )
    )
    keys = backend_credentials(parsed.upstream, environ={})
    assert all(isinstance(source, ApiKeySource) for source in keys.values())
    sources = {name: source for name, source in keys.items() if isinstance(source, ApiKeySource)}
    assert {name: source.current() for name, source in sources.items()} == {
        "a": "key-of-a",
        "b": "key-of-b",
    }
    assert sources["b"].path == str(tmp_path / "b")
    (tmp_path / "b").write_text("")
    with pytest.raises(ConfigError) as err:
        backend_credentials(parsed.upstream, environ={})
    assert err.value.problems == [
        "upstream.backends[1]: no usable Azure API key: set AZURE_OPENAI_API_KEY_FILE "
        "(a mounted Secret) or AZURE_OPENAI_API_KEY"
    ]
