"""From verified claims to a ``Caller`` with a profile (pure).

* Kubernetes projected service-account tokens: the caller id is
  ``<namespace>/<serviceaccount>`` from the ``kubernetes.io`` claims, which must agree with
  ``sub`` (``system:serviceaccount:<ns>:<name>``); the tenant is the namespace.
* Other issuers: the caller id is ``sub``; the tenant is the issuer's ``tenant_claim`` (a
  string claim) or, without one, ``sub``.
* Every tenant is qualified by its issuer's tenant domain (``<domain>:<name>``): namespace
  ``team-a`` of the cluster and tenant ``team-a`` of an IdP are two tenants, unless the config
  gives both issuers the same ``tenant_domain``.
* Profile rules are tried in order; the first whose every condition matches wins. No match:
  the configured default profile, or 403 when there is none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gateway.auth.caller import Caller
from gateway.auth.tokens import IssuerPolicy, numeric_claim
from gateway.errors import AuthenticationError, PermissionDeniedError


@dataclass(frozen=True, slots=True)
class CallerRule:
    profile: str
    issuer: str | None = None
    namespaces: frozenset[str] | None = None
    service_accounts: frozenset[str] | None = None
    subjects: frozenset[str] | None = None
    #: ``(claim name, accepted values)``: the claim (string or list of strings) must hold one.
    claim: tuple[str, frozenset[str]] | None = None

    def matches(
        self, issuer: str, namespace: str | None, sa: str | None, claims: Mapping[str, Any]
    ) -> bool:
        if self.issuer is not None and self.issuer != issuer:
            return False
        if self.namespaces is not None and namespace not in self.namespaces:
            return False
        if self.service_accounts is not None and sa not in self.service_accounts:
            return False
        if self.subjects is not None and claims.get("sub") not in self.subjects:
            return False
        if self.claim is not None:
            name, accepted = self.claim
            value = claims.get(name)
            values = value if isinstance(value, list) else [value]
            if not any(isinstance(v, str) and v in accepted for v in values):
                return False
        return True


def _kubernetes_identity(claims: Mapping[str, Any]) -> tuple[str, str]:
    k8s = claims.get("kubernetes.io")
    if not isinstance(k8s, dict):
        raise AuthenticationError("bad_claim")
    namespace = k8s.get("namespace")
    sa = k8s.get("serviceaccount")
    name = sa.get("name") if isinstance(sa, dict) else None
    if not (isinstance(namespace, str) and namespace and isinstance(name, str) and name):
        raise AuthenticationError("bad_claim")
    if claims.get("sub") != f"system:serviceaccount:{namespace}:{name}":
        raise AuthenticationError("bad_claim")
    return namespace, name


def to_caller(
    claims: Mapping[str, Any],
    policy: IssuerPolicy,
    rules: Sequence[CallerRule],
    default_profile: str | None,
) -> Caller:
    namespace: str | None = None
    sa: str | None = None
    sub = str(claims["sub"])
    if policy.kubernetes:
        namespace, sa = _kubernetes_identity(claims)
        caller_id, tenant = f"{namespace}/{sa}", namespace
    else:
        caller_id = sub
        tenant_value = claims.get(policy.tenant_claim) if policy.tenant_claim else sub
        if not isinstance(tenant_value, str) or not tenant_value:
            raise AuthenticationError("bad_claim")
        tenant = tenant_value
    legacy = tenant if policy.legacy_tenants else None
    tenant = f"{policy.domain}:{tenant}"
    profile = next(
        (r.profile for r in rules if r.matches(policy.issuer, namespace, sa, claims)),
        default_profile,
    )
    if profile is None:
        raise PermissionDeniedError(
            "This caller is not allowed to use the gateway.", code="caller_not_allowed"
        )
    exp = numeric_claim(claims, "exp")
    return Caller(
        id=caller_id,
        tenant=tenant,
        issuer=policy.issuer,
        subject=sub,
        profile=profile,
        expires_at=exp if exp is not None else 0.0,
        claims=MappingProxyType(dict(claims)),
        legacy_tenant=legacy,
    )
