"""Who is calling: the verified identity every later decision reads (pure data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class Caller:
    #: Stable caller id: ``namespace/serviceaccount`` for Kubernetes tokens, else ``sub``.
    id: str
    #: Tenant the caller belongs to (Kubernetes namespace or a configured claim).
    tenant: str
    issuer: str
    subject: str
    #: Name of the profile chosen by the config's caller rules.
    profile: str
    #: Token expiry (unix seconds), for caches.
    expires_at: float = 0.0
    claims: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
