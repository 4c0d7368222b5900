"""Reads the owner stamp from the Azure thread itself (adapter over ``upstream``).

Used by ``ownership_lookup`` only when neither the in-process cache nor Redis knows a
thread's owner. The request is the gateway's own, never the caller's:

* ``GET /openai/threads/{thread_id}?api-version=V`` built by the route table from the already
  validated thread id and a configured api-version (``table.OperationTable.match`` re-checks both
  and builds the target the same strict way as for callers); ``upstream.send`` checks the URL
  once more against the configured endpoint.
* Only the gateway's headers: ``api-key``, a fresh ``x-ms-client-request-id``,
  ``accept-encoding: identity``. No redirects are followed (the transport has none).
* Bounded by ``timeout_s`` in total; the body read is bounded too.
* Nothing of Azure's answer reaches the caller: 200 → the stamp (or None), 404 → the caller's
  404 ``thread_not_found``, anything else or no answer → 503 ``ownership_unavailable``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable

from gateway.errors import GatewayError
from gateway.operations.row import THREAD, Kind
from gateway.operations.table import BY_NAME, OperationTable
from gateway.ownership.rules import not_found, ownership_unavailable, valid_owner
from gateway.ownership.stamp import stamp_in_object
from gateway.upstream.client import UpstreamBrokenError, UpstreamClient
from gateway.upstream.headers import upstream_request_headers

log = logging.getLogger("gateway.ownership")

#: A thread object is a few KiB at most (16 metadata pairs, a few tool resources).
MAX_THREAD_BYTES = 256 * 1024


class AzureOwnerOrigin:
    def __init__(
        self,
        upstream: UpstreamClient,
        routes: OperationTable,
        *,
        kind: Kind = THREAD,
        api_key: Callable[[], str],
        api_version: str,
        timeout_s: float,
        reload_api_key: Callable[[], object] | None = None,
    ) -> None:
        self.upstream = upstream
        self.routes = routes
        self.kind = kind
        self.lookup = BY_NAME[kind.lookup]
        self.api_key = api_key
        self.api_version = api_version
        self.timeout_s = timeout_s
        self.reload_api_key = reload_api_key

    async def stamp(self, thread_id: str) -> str | None:
        target = self.lookup.template.format(**{self.kind.param: thread_id})
        match = self.routes.match(
            self.lookup.method,
            target.encode("ascii"),
            f"api-version={self.api_version}".encode("ascii"),
        )
        if match.row is not self.lookup or match.ids.get(self.kind.param) != thread_id:
            raise ownership_unavailable()
        headers = upstream_request_headers(
            [], api_key=self.api_key(), request_id=str(uuid.uuid4()), has_body=False
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self.upstream.send(
                    self.lookup.method,
                    match.upstream_path,
                    match.upstream_query,
                    headers,
                    None,
                    stream=False,
                )
                async with response:
                    body = await response.read_until(lambda _b: False, MAX_THREAD_BYTES + 1)
        except (TimeoutError, GatewayError, UpstreamBrokenError) as exc:
            log.warning("thread owner lookup at Azure failed: %s", type(exc).__name__)
            raise ownership_unavailable() from None
        return self._answer(thread_id, response.status, body)

    def _answer(self, thread_id: str, status: int, body: bytes) -> str | None:
        if status == 404:
            raise not_found(self.kind)
        if status != 200 or len(body) > MAX_THREAD_BYTES:
            log.warning("thread owner lookup at Azure answered %d", status)
            if status in (401, 403) and self.reload_api_key is not None:
                self.reload_api_key()
            raise ownership_unavailable()
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict) or obj.get("id") != thread_id:
            log.warning("thread owner lookup at Azure: unreadable thread object")
            raise ownership_unavailable()
        raw = stamp_in_object(obj)
        if raw is None:
            return None
        owner = valid_owner(raw)
        if owner is None:
            log.error("thread owner lookup at Azure: malformed owner stamp")
            raise ownership_unavailable()
        return owner
