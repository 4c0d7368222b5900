"""The gateway's credential to Azure (the ``UpstreamCredential`` port) and its API-key form:
the key re-read from its mounted Secret file without a restart (adapter). The Entra form
(workload identity) is ``gateway.upstream.entra``.

Kubernetes updates a mounted Secret in place (an atomic symlink swap). The key file is polled
every ``reload_s``; a new non-empty key is used for new requests at once. A read failure or an
empty file keeps the last good key and is reported (``on_error``), never dropping the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

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
