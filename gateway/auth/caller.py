"""Who is calling: the verified identity every later decision reads (pure data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class Caller:
    #: Stable caller id: ``namespace/serviceaccount`` for Kubernetes tokens, else ``sub``.
    id: str
    #: Tenant the caller belongs to, qualified by its issuer's tenant domain:
    #: ``<domain>:<namespace>`` (Kubernetes) or ``<domain>:<claim value>``. Every isolation
    #: and limit decision, log line and record uses this, never the bare name.
    tenant: str
    issuer: str
    subject: str
    #: Name of the profile chosen by the config's caller rules.
    profile: str
    #: Token expiry (unix seconds), for caches.
    expires_at: float = 0.0
    claims: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: The bare tenant name when ownership records written before tenants were qualified are
    #: this caller's issuer's (``auth.legacy_tenant_issuer``); else None.
    legacy_tenant: str | None = None

    @property
    def tenant_name(self) -> str:
        """The tenant without its domain (the namespace or the claim's value)."""
        return self.tenant.split(":", 1)[1]
