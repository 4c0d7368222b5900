"""The gateway's credential to Azure (the ``UpstreamCredential`` port), its API-key form (the
key re-read from its mounted Secret file without a restart), and ``make_credential``, the one
factory that builds either form from the config. The Entra form (workload identity) is
``gateway.upstream.entra``.

Kubernetes updates a mounted Secret in place (an atomic symlink swap). The key file is polled
every ``reload_s``; a new non-empty key is used for new requests at once. A read failure or an
empty file keeps the last good key and is reported (``on_error``), never dropping the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Literal, Protocol

from gateway.config import ConfigError, EntraConfig, UpstreamConfig, read_key, url_problem
from gateway.upstream.entra import EntraCredential, WorkloadIdentityTokens

log = logging.getLogger("gateway.apikey")


def _read_key(path: str) -> str:
    with open(path, encoding="ascii") as f:
        key = f.read(4096).strip()
    if not key or not key.isprintable() or " " in key:
        raise ValueError("empty or malformed key file")
    return key


class UpstreamCredential(Protocol):
    """What the forwarder and the owner lookups send to one Azure resource."""

    async def header(self) -> tuple[bytes, bytes]:
        """The header to send: ``(b"api-key", key)`` or ``(b"authorization", b"Bearer …")``.

        Raises ``ServiceUnavailableError`` (a stable code) when no usable credential is held."""
        ...

    def reload(self) -> object:
        """Azure refused the credential (401/403): re-read the key file, or refresh the token,
        now (it may have been rotated)."""
        ...

    def start(self) -> None:
        """Start background refresh (inside the running loop)."""
        ...

    def ready(self) -> bool:
        """Readiness: a key is always ready; a token once one has been held."""
        ...

    def usable(self) -> bool:
        """Whether ``header()`` gives a header now, without waiting for a fetch: a key
        always; a token while an unexpired one is held. Routing sends no new object to a
        backend whose credential is not usable (``Backends.choose``)."""
        ...

    async def aclose(self) -> None: ...


class ApiKeySource:
    def __init__(
        self,
        key: str,
        *,
        path: str | None = None,
        reload_s: float = 10.0,
        on_error: Callable[[], None] | None = None,
        on_reload: Callable[[], None] | None = None,
    ) -> None:
        self._key = key
        self.path = path
        self.reload_s = reload_s
        self.on_error = on_error
        self.on_reload = on_reload
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def current(self) -> str:
        return self._key

    async def header(self) -> tuple[bytes, bytes]:
        return (b"api-key", self._key.encode("ascii"))

    def ready(self) -> bool:
        return True

    def usable(self) -> bool:
        return True

    def reload(self) -> bool:
        """Read the file once; True when the key changed."""
        if self.path is None:
            return False
        try:
            key = _read_key(self.path)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            self.last_error = type(exc).__name__
            log.error(
                "cannot read the Azure key file; keeping the last good key (%s)", self.last_error
            )
            if self.on_error is not None:
                self.on_error()
            return False
        self.last_error = None
        if key == self._key:
            return False
        self._key = key
        log.info("Azure key reloaded from its file")
        if self.on_reload is not None:
            self.on_reload()
        return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.reload_s)
            self.reload()

    def start(self) -> None:
        if self.path is not None and self._task is None:
            self._task = asyncio.create_task(self._poll(), name="api-key-reload")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class CredentialMetrics(Protocol):
    """The metric hooks a credential reports to (``GatewayMetrics`` implements them)."""

    def on_key_reload(self) -> None: ...

    def on_key_reload_error(self) -> None: ...

    def on_token_refresh(self, backend: str, result: str) -> None:
        """A token fetch ended: ``result`` is ``ok`` or ``error``."""
        ...

    def on_token_refused(self, backend: str) -> None:
        """A request was refused (503) for want of a usable token."""
        ...

    def track_token(self, backend: str, seconds_left: Callable[[], float]) -> None:
        """Export the held token's seconds to expiry."""
        ...


ENTRA_ENV = {
    "client_id": "AZURE_CLIENT_ID",
    "tenant_id": "AZURE_TENANT_ID",
    "authority_host": "AZURE_AUTHORITY_HOST",
    "token_file": "AZURE_FEDERATED_TOKEN_FILE",
}
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"


def make_credential(
    kind: Literal["api_key", "entra"],
    *,
    api_key_file: str | None,
    entra: EntraConfig,
    reload_s: float,
    environ: Mapping[str, str],
    backend: str = "default",
    metrics: CredentialMetrics | None = None,
    where: str = "upstream",
) -> UpstreamCredential:
    """The credential of one Azure resource (``backend``), built from its config.

    * ``api_key``: the key from ``api_key_file`` (re-read every ``reload_s``), else
      ``AZURE_OPENAI_API_KEY`` in ``environ``.
    * ``entra``: workload identity; each unset ``entra`` key from the variable the webhook
      injects (``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``, ``AZURE_AUTHORITY_HOST``,
      ``AZURE_FEDERATED_TOKEN_FILE``) in ``environ``; the authority defaults to Entra's global
      one. No I/O happens here (the first token is fetched by ``start()``).

    ``metrics`` receives the hooks, labelled ``backend``. ``where`` prefixes the problems of a
    ``ConfigError`` (``upstream``, ``upstream.backends[1]``). Raises ``ConfigError``.
    """
    if kind == "api_key":
        key = read_key(api_key_file, environ, where=where)
        source = ApiKeySource(key, path=api_key_file, reload_s=reload_s)
        if metrics is not None:
            source.on_reload = metrics.on_key_reload
            source.on_error = metrics.on_key_reload_error
        return source
    values = {
        name: getattr(entra, name) or environ.get(variable, "").strip() or None
        for name, variable in ENTRA_ENV.items()
    }
    authority = values["authority_host"] or DEFAULT_AUTHORITY
    problems = [
        f"{where}.entra.{name}: not set (nor {ENTRA_ENV[name]} in the environment)"
        for name in ("client_id", "tenant_id", "token_file")
        if values[name] is None
    ]
    message = url_problem(authority, allow_http=False)
    if message is not None:
        problems.append(f"{where}.entra.authority_host: {message}")
    if problems:
        raise ConfigError(problems)
    tokens = WorkloadIdentityTokens(
        tenant_id=str(values["tenant_id"]),
        client_id=str(values["client_id"]),
        token_file=str(values["token_file"]),
        authority_host=authority.rstrip("/"),
        scope=entra.scope,
        ca_file=entra.ca_file,
    )
    credential = EntraCredential(
        tokens,
        margin_s=entra.refresh_margin_s,
        on_refresh=None if metrics is None else _bind(metrics.on_token_refresh, backend),
        on_refused=None if metrics is None else (lambda: metrics.on_token_refused(backend)),
    )
    if metrics is not None:
        metrics.track_token(backend, credential.seconds_left)
    return credential


def _bind(hook: Callable[[str, str], None], backend: str) -> Callable[[str], None]:
    return lambda result: hook(backend, result)


def backend_credentials(
    upstream: UpstreamConfig,
    *,
    environ: Mapping[str, str],
    metrics: CredentialMetrics | None = None,
    given: Mapping[str, UpstreamCredential] | None = None,
) -> dict[str, UpstreamCredential]:
    """Every backend's credential by name, ``make_credential`` each (those in ``given`` as
    they are: tests): the single form's ``default`` (problems under ``upstream``), or each
    ``[[upstream.backends]]`` table's own key file or Entra token (problems under
    ``upstream.backends[i]``; the token metrics labelled with the backend's name). Each key
    file is polled on its own, each token refreshed on its own: rotation per backend without
    restart. Raises ``ConfigError``."""
    credentials: dict[str, UpstreamCredential] = {}
    for index, backend in enumerate(upstream.resolved_backends()):
        if given is not None and backend.name in given:
            credentials[backend.name] = given[backend.name]
            continue
        credentials[backend.name] = make_credential(
            backend.credential,
            api_key_file=backend.api_key_file,
            entra=backend.entra,
            reload_s=upstream.api_key_reload_s,
            environ=environ,
            backend=backend.name,
            metrics=metrics,
            where=f"upstream.backends[{index}]" if upstream.backends else "upstream",
        )
    return credentials
