"""The whole config document: ``Config``, ``parse``, ``load`` and the environment overrides."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.auth import AuthConfig
from gateway.config.limits import RateLimitConfig
from gateway.config.profiles import Profile
from gateway.config.reader import Problems, read
from gateway.config.schema import REQUIRED, at, env_overrides, problem, setting
from gateway.config.service import (
    THREADS_ALIASES,
    ApiConfig,
    OwnershipConfig,
    RedisConfig,
    ServerConfig,
    ThreadsConfig,
    UpstreamConfig,
    redis_url,
)


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    server: ServerConfig = setting(ServerConfig())
    upstream: UpstreamConfig = setting(REQUIRED)
    api: ApiConfig = setting(ApiConfig())
    auth: AuthConfig = setting(AuthConfig())
    profiles: Mapping[str, Profile] = setting(
        factory=dict,
        doc="caller profiles, one `[profiles.<name>]` table each (at least one)",
        shown="—",
    )
    redis: RedisConfig = setting(RedisConfig())
    rate_limit: RateLimitConfig = setting(RateLimitConfig())
    #: As written; ``ownership`` is the effective section (with the deprecated ``[threads]``).
    ownership_section: OwnershipConfig = setting(OwnershipConfig(), key="ownership")
    threads: ThreadsConfig = setting(ThreadsConfig())
    demo: bool = setting(
        False,
        "the embedded demo's generated config: `gateway token` accepts only such a config, "
        "`gateway serve` refuses it",
    )

    @property
    def api_versions(self) -> tuple[str, ...]:
        return self.api.versions

    @property
    def ownership(self) -> OwnershipConfig:
        """``[ownership]``, with what the deprecated ``[threads]`` section gives."""
        given = self.threads.given()
        return dataclasses.replace(self.ownership_section, **given)

    def __check__(self, path: str) -> Iterable[str]:
        if not self.profiles:
            yield problem(at(path, "profiles"), "define at least one profile")
        auth = at(path, "auth")
        default = self.auth.default_profile
        if default is not None and default not in self.profiles:
            yield problem(at(auth, "default_profile"), f"unknown profile {default!r}")
        defaults = OwnershipConfig()
        for old, new in THREADS_ALIASES.items():
            if getattr(self.threads, old) is not None and getattr(
                self.ownership_section, new
            ) != getattr(defaults, new):
                yield problem(
                    at(at(path, "threads"), old),
                    f"deprecated alias of ownership.{new}, which is given too: keep that one",
                )
        version = self.ownership_section.lookup_api_version
        if version is not None and version not in self.api.versions:
            yield problem(
                at(at(path, "ownership"), "lookup_api_version"), "must be one of api.versions"
            )
        yield from self._check_backends(at(path, "upstream"))
        for index, rule in enumerate(self.auth.callers):
            if rule.profile and rule.profile not in self.profiles:
                where = at(at(at(auth, "callers"), index), "profile")
                yield problem(where, f"unknown profile {rule.profile!r}")

    def _check_backends(self, where: str) -> Iterable[str]:
        backends = self.upstream.backends
        if len(backends) > 1 and not self.ownership.enabled:
            yield problem(
                at(where, "backends"),
                "several backends need ownership.enabled: an object's backend is recorded "
                "with its owner",
            )
        served = {v for b in backends for v in (b.api_versions or self.api.versions)}
        if backends:
            for version in self.api.versions:
                if version not in served:
                    yield problem(
                        at(where, "backends"), f"no backend serves api-version {version!r}"
                    )
        for index, backend in enumerate(backends):
            for i, version in enumerate(backend.api_versions):
                if version not in self.api.versions:
                    yield problem(
                        at(at(at(at(where, "backends"), index), "api_versions"), i),
                        f"{version!r} is not one of api.versions",
                    )


#: Variables read outside the config document (the README's environment table lists them).
OTHER_VARIABLES: tuple[tuple[str, str], ...] = (
    ("AZURE_OPENAI_API_KEY", "the key itself, when no key file is configured"),
    ("GATEWAY_CONFIG", "config path for `gateway serve` (default `config/gateway.toml`)"),
    ("GATEWAY_LOG_LEVEL", "log level (default `INFO`; see [Logs](#logs))"),
)


def parse(data: Mapping[str, Any]) -> Config:
    """Build a ``Config`` from a parsed document; raise ``ConfigError`` listing every problem."""
    problems = Problems()
    config = read(Config, data, "", problems)
    if problems:
        raise ConfigError(problems.items)
    return config


def _from_environment(value: str, kind: Any) -> Any:
    """An environment string as the key's type would be written in TOML (else as it is, so
    the key's own check reports it)."""
    if kind is int or kind == int | None:
        return int(value) if value.isdigit() else value
    return value


def apply_environment(data: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay the per-deployment environment variables (each setting's ``env``) on a parsed
    document; returns a copy, ``data`` is not changed."""
    out = dict(data)
    for variable, path, kind in env_overrides(Config):
        value = environ.get(variable)
        if not value:
            continue
        table = out
        for key in path[:-1]:
            inner = table.get(key)
            table[key] = table = dict(inner) if isinstance(inner, Mapping) else {}
        table[path[-1]] = _from_environment(value, kind)
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


def read_api_key(config: UpstreamConfig, environ: Mapping[str, str]) -> str | None:
    """The Azure key: from ``api_key_file`` (preferred) or ``AZURE_OPENAI_API_KEY``; None with
    ``credential = "entra"`` (no key is needed then)."""
    if config.credential == "entra":
        return None
    return read_key(config.api_key_file, environ)


def read_key(
    api_key_file: str | None, environ: Mapping[str, str], *, where: str = "upstream"
) -> str:
    """A key from ``api_key_file``, else from ``AZURE_OPENAI_API_KEY``; ``ConfigError`` if none."""
    if api_key_file:
        try:
            with open(api_key_file, encoding="ascii") as f:
                key = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{where}.api_key_file: cannot read the key file: {exc}"]) from None
    else:
        key = environ.get("AZURE_OPENAI_API_KEY", "").strip()
    if not key or not key.isprintable() or " " in key:
        raise ConfigError(
            [
                f"{where}: no usable Azure API key: set AZURE_OPENAI_API_KEY_FILE "
                "(a mounted Secret) or AZURE_OPENAI_API_KEY"
            ]
        )
    return key


def read_redis_url(config: Config) -> Config:
    """The config with ``redis.url`` read from ``redis.url_file`` when one is set (at start:
    ``check-config`` does not read it). The file's content never appears in a problem: it may
    hold a password."""
    path = config.redis.url_file
    if not path:
        return config
    try:
        with open(path, encoding="utf-8") as f:
            url = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"redis.url_file: cannot read {path}: {reason}"]) from None
    if not url:
        raise ConfigError([f"redis.url_file: {path} is empty"])
    if not url.isprintable() or " " in url or redis_url(url) is not None:
        raise ConfigError(
            [f"redis.url_file: {path} must hold one redis://, rediss:// or unix:// URL"]
        )
    return dataclasses.replace(config, redis=dataclasses.replace(config.redis, url=url))
