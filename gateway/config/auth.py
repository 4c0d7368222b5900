"""Authentication settings: trusted issuers (token policy and key source), caller rules.

An issuer is one flat TOML table; the token policy (``IssuerPolicy``, the auth core's rule
type) and the key source (``JwksConfig``) are both read from it. Caller rules are read as
``CallerSettings`` and built into the core's ``CallerRule``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.auth.identity import CallerRule
from gateway.auth.tokens import (
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_REQUIRED_CLAIMS,
    TENANT_DOMAIN,
    IssuerPolicy,
)
from gateway.config.schema import REQUIRED, at, between, non_empty, positive, problem, setting
from gateway.config.service import http_url

#: The API server's default audiences: a token minted for it must not open the gateway.
KUBERNETES_DEFAULT_AUDIENCES = frozenset(
    {
        "https://kubernetes.default.svc",
        "https://kubernetes.default.svc.cluster.local",
        "kubernetes",
        "api",
    }
)
CORE_CLAIMS = ("exp", "iss", "aud", "sub")
KEY_SOURCES = ("jwks_url", "discovery_url", "jwks_file", "public_key_file")


def _dedicated_audience(audience: str) -> str | None:
    if audience not in KUBERNETES_DEFAULT_AUDIENCES:
        return None
    return (
        "the API server's default audience must not be accepted: give the gateway a "
        "dedicated audience"
    )


def _core_claims(claims: tuple[str, ...]) -> str | None:
    absent = [c for c in CORE_CLAIMS if c not in claims]
    return "must include " + ", ".join(map(repr, absent)) if absent else None


def _tenant_domain(value: str) -> str | None:
    if TENANT_DOMAIN.fullmatch(value):
        return None
    return "must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit)"


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuerSettings:
    """The token policy of one ``[[auth.issuers]]`` table."""

    issuer: str = setting(REQUIRED, "exact issuer string")
    audiences: frozenset[str] = setting(
        REQUIRED,
        "accepted audiences; every `aud` entry must be one (the API server's default audience "
        "is refused)",
        check=non_empty("must list at least one audience"),
        each=_dedicated_audience,
        missing="must list at least one audience",
    )
    algorithms: frozenset[str] = setting(
        frozenset({"RS256"}),
        "asymmetric only (RS/PS/ES/EdDSA)",
        allowed=ASYMMETRIC_ALGORITHMS,
        check=non_empty("must list at least one algorithm"),
    )
    required_claims: tuple[str, ...] = setting(
        DEFAULT_REQUIRED_CLAIMS, "must include `exp`, `iss`, `aud` and `sub`", check=_core_claims
    )
    leeway_s: float = setting(30.0, "clock leeway for `exp`/`nbf`/`iat`", check=between(0, 300))
    kubernetes: bool = setting(
        False,
        "caller = `namespace/serviceaccount`, tenant = namespace (from the `kubernetes.io` "
        "claims, checked against `sub`)",
    )
    tenant_claim: str | None = setting(None, "tenant claim for other issuers (default: `sub`)")
    tenant_domain: str | None = setting(
        None,
        "the issuer's tenant namespace: a tenant is `<tenant_domain>:<name>` everywhere "
        "(ownership, limit keys, logs). Issuers share tenants only when given the same "
        "domain. 1 to 64 of `A-Za-z0-9._-`",
        check=_tenant_domain,
        shown="`iss-<hash of issuer>`",
    )

    def build(self) -> IssuerPolicy:
        return IssuerPolicy(
            issuer=self.issuer,
            audiences=self.audiences,
            algorithms=self.algorithms,
            required_claims=self.required_claims,
            leeway_s=self.leeway_s,
            kubernetes=self.kubernetes,
            tenant_claim=self.tenant_claim,
            tenant_domain=self.tenant_domain or "",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class JwksConfig:
    """Where one issuer's keys come from (keys of the issuer's own table)."""

    url: str | None = setting(
        None,
        "key source (exactly one of `jwks_url`, `discovery_url`, `jwks_file`, "
        "`public_key_file`): the issuer's JWKS URL",
        key="jwks_url",
        check=http_url,
    )
    discovery_url: str | None = setting(
        None, "key source: an OpenID discovery document naming the JWKS URL", check=http_url
    )
    file: str | None = setting(None, "key source: a JWK Set in a file", key="jwks_file")
    public_key_file: str | None = setting(None, "key source: one PEM public key in a file")
    bearer_token_file: str | None = setting(
        None, "the gateway's own token for JWKS fetches, re-read each fetch"
    )
    ca_file: str | None = setting(
        None,
        "CA bundle trusted for this issuer's JWKS/discovery fetch instead of the system store "
        "(the cluster `ca.crt`)",
    )
    ttl_s: float = setting(300.0, "JWKS refresh period", key="jwks_ttl_s", check=positive)
    cooldown_s: float = setting(
        30.0, "least time between unknown-`kid` refreshes", key="jwks_cooldown_s", check=positive
    )
    stale_s: float = setting(
        3600.0, "how long keys stay valid when refreshes fail", key="jwks_stale_s", check=positive
    )

    def __check__(self, path: str) -> Iterable[str]:
        sources = (self.url, self.discovery_url, self.file, self.public_key_file)
        if sum(s is not None for s in sources) != 1:
            yield problem(path, "needs exactly one of " + ", ".join(KEY_SOURCES))


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    policy: IssuerPolicy = setting(inline=True, shape=IssuerSettings)
    keys: JwksConfig = setting(inline=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimSettings:
    name: str = setting(REQUIRED, "the claim (a string or a list of strings)")
    values: frozenset[str] = setting(
        REQUIRED, "it must hold one of these", check=non_empty("must list at least one value")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerSettings:
    """One ``[[auth.callers]]`` rule: every condition given must hold."""

    profile: str = setting(REQUIRED, "the profile of the callers this rule matches")
    issuer: str | None = setting(None, "the token's issuer")
    namespaces: frozenset[str] | None = setting(None, "Kubernetes namespaces")
    service_accounts: frozenset[str] | None = setting(None, "Kubernetes service-account names")
    subjects: frozenset[str] | None = setting(None, "`sub` values")
    claim: ClaimSettings | None = setting(None, "a claim condition: `{ name, values }`")

    def build(self) -> CallerRule:
        claim = self.claim
        return CallerRule(
            profile=self.profile,
            issuer=self.issuer,
            namespaces=self.namespaces,
            service_accounts=self.service_accounts,
            subjects=self.subjects,
            claim=None if claim is None else (claim.name, claim.values),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    max_token_bytes: int = setting(
        8192, "longer tokens are refused before decoding", check=between(512, 65536)
    )
    token_cache_size: int = setting(
        10_000, "verified tokens cached (by SHA-256) until their `exp`", check=between(0, 1e6)
    )
    default_profile: str | None = setting(None, "profile for callers no rule matches; unset → 403")
    legacy_tenant_issuer: str | None = setting(
        None,
        "whose tenants own the thread records written before tenants were qualified (see "
        '"Tenants")',
        shown="the only issuer, if one",
    )
    issuers: tuple[IssuerConfig, ...] = setting(
        (), "trusted issuers, one `[[auth.issuers]]` table each (at least one)", shown="—"
    )
    callers: tuple[CallerRule, ...] = setting(
        (), "rules, first match wins", shape=CallerSettings, shown="—"
    )

    def __post_init__(self) -> None:
        """Mark the issuer whose tenants own the records written before tenants were
        qualified: the one named by ``legacy_tenant_issuer``, else the only issuer."""
        named = self.legacy_tenant_issuer
        if named is None and len(self.issuers) == 1:
            named = self.issuers[0].policy.issuer
        marked = tuple(
            IssuerConfig(dataclasses.replace(i.policy, legacy_tenants=True), i.keys)
            if named is not None and i.policy.issuer == named and not i.policy.legacy_tenants
            else i
            for i in self.issuers
        )
        object.__setattr__(self, "issuers", marked)

    def __check__(self, path: str) -> Iterable[str]:
        where = at(path, "issuers")
        if not self.issuers:
            yield problem(where, "configure at least one trusted issuer")
        seen: set[str] = set()
        for index, issuer in enumerate(self.issuers):
            name = issuer.policy.issuer
            if name and name in seen:
                yield problem(at(at(where, index), "issuer"), "duplicate issuer")
            seen.add(name)
        named = self.legacy_tenant_issuer
        if named is not None and named not in seen:
            yield problem(at(path, "legacy_tenant_issuer"), f"not a configured issuer: {named!r}")
