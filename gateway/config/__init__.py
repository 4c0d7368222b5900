"""The gateway's one typed, immutable config, each setting declared once.

``parse(data)`` is pure: it turns a parsed TOML document into a ``Config`` and collects every
problem with its path (``profiles.batch.rate_limit.write.burst: must be > 0``). ``load(path,
environ)`` reads the file and applies the per-deployment environment overrides (each
setting's ``env``: ``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_API_KEY_FILE``, ``REDIS_URL``,
``GATEWAY_HOST`` / ``GATEWAY_PORT`` / ``GATEWAY_METRICS_PORT``).

Secrets never live in the config file: the Azure key comes from the environment or a file
(``read_api_key``), and so may the Redis URL (``read_redis_url``: ``redis.url_file``).

Layout: ``schema`` declares settings and documents them, ``reader`` reads and checks them
(both generic, standard library only); ``service``,
``auth``, ``profiles`` and ``limits`` declare the sections; ``document`` is the whole file;
``docs`` renders the README's tables (``python -m gateway.config --markdown``).
"""

from gateway.config.auth import (
    AuthConfig,
    CallerSettings,
    ClaimSettings,
    IssuerConfig,
    IssuerSettings,
    JwksConfig,
)
from gateway.config.document import (
    Config,
    ConfigError,
    apply_environment,
    load,
    parse,
    read_api_key,
    read_key,
    read_redis_url,
)
from gateway.config.limits import RateLimitConfig, RateLimitSettings, RateSettings
from gateway.config.profiles import OPERATIONS, PolicySettings, Profile
from gateway.config.service import (
    ApiConfig,
    EntraConfig,
    OwnershipConfig,
    RedisConfig,
    ServerConfig,
    ThreadsConfig,
    UpstreamConfig,
    url_problem,
)

__all__ = [
    "OPERATIONS",
    "ApiConfig",
    "AuthConfig",
    "CallerSettings",
    "ClaimSettings",
    "Config",
    "ConfigError",
    "EntraConfig",
    "IssuerConfig",
    "IssuerSettings",
    "JwksConfig",
    "OwnershipConfig",
    "PolicySettings",
    "Profile",
    "RateLimitConfig",
    "RateLimitSettings",
    "RateSettings",
    "RedisConfig",
    "ServerConfig",
    "ThreadsConfig",
    "UpstreamConfig",
    "apply_environment",
    "load",
    "parse",
    "read_api_key",
    "read_key",
    "read_redis_url",
    "url_problem",
]
