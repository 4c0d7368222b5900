"""Reads the owner stamp from the Azure object itself (adapter over ``upstream``).

Used by ``lookup`` only when neither the in-process cache nor Redis knows an object's owner.
The request is the gateway's own, never the caller's:

* the kind's ``lookup`` row (``GET /openai/threads/{thread_id}``, ``/openai/assistants/
  {assistant_id}``, ``/openai/vector_stores/{vector_store_id}``, ``/openai/files/{file_id}``)
  with ``?api-version=V``, built by the route table from the already validated id and a
  configured api-version that has the row (``table.OperationTable.match`` re-checks both and
  builds the target the same strict way as for callers); ``upstream.send`` checks the URL
  once more against the configured endpoint.
* Only the gateway's headers: ``api-key``, a fresh ``x-ms-client-request-id``,
  ``accept-encoding: identity``. No redirects are followed (the transport has none).
* Bounded by ``timeout_s`` in total; the body read is bounded too.
* Nothing of Azure's answer reaches the caller: 200 → the stamp (the metadata key, or a
  file's filename prefix; or None), 404 → the kind's 404 (``thread_not_found``, ...),
  anything else or no answer → 503 ``ownership_unavailable``.

With several backends (``homes``, in configured order) each is asked in turn, with its own
client and credential, until one has the object: that one is its home. 404 from every one is
the kind's 404; a backend that cannot answer while none had the object is a 503 (the object
may be there).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.errors import GatewayError, NotFoundError
from gateway.operations.row import Kind
from gateway.operations.table import BY_NAME, OperationTable
from gateway.ownership.rules import Location, not_found, ownership_unavailable, valid_owner
from gateway.ownership.stamp import stamp_in_object
from gateway.upstream.client import UpstreamBrokenError, UpstreamClient
from gateway.upstream.credentials import UpstreamCredential
from gateway.upstream.headers import upstream_request_headers

log = logging.getLogger("gateway.ownership")


@dataclass(frozen=True, slots=True)
class Home:
    """One backend an object may live on: its name (None: the only one), client, credential."""

    name: str | None
    upstream: UpstreamClient
    credential: UpstreamCredential


class AzureOwnerOrigin:
    def __init__(
        self,
        homes: Sequence[Home],
        routes: OperationTable,
        *,
        api_versions: Mapping[str, str],
        timeout_s: float,
    ) -> None:
        """``api_versions``: per kind (its ``param``), the api-version its lookup uses."""
        self.homes = tuple(homes)
        self.routes = routes
        self.api_versions = api_versions
        self.timeout_s = timeout_s

    async def find(self, kind: Kind, object_id: str) -> Location:
        failure: GatewayError | None = None
        missing: GatewayError = not_found(kind)
        for home in self.homes:
            try:
                stamp = await self.stamp(kind, object_id, home)
            except NotFoundError as exc:
                missing = exc
                continue
            except GatewayError as exc:
                failure = exc
                continue
            return Location(stamp, home.name)
        if failure is not None:
            raise failure
        raise missing

    async def stamp(self, kind: Kind, object_id: str, home: Home) -> str | None:
        lookup = BY_NAME[kind.lookup]
        version = self.api_versions.get(kind.param)
        if version is None:
            log.error("no api-version allowed for the %s owner lookup", kind.name)
            raise ownership_unavailable()
        target = lookup.template.format(**{kind.param: object_id})
        try:
            match = self.routes.match(
                lookup.method, target.encode("ascii"), f"api-version={version}".encode("ascii")
            )
        except GatewayError:
            match = None
        if match is None or match.row is not lookup or match.ids.get(kind.param) != object_id:
            raise ownership_unavailable()
        headers = upstream_request_headers(
            [],
            credential=await home.credential.header(),
            request_id=str(uuid.uuid4()),
            has_body=False,
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await home.upstream.send(
                    lookup.method,
                    match.upstream_path,
                    match.upstream_query,
                    headers,
                    None,
                    stream=False,
                )
                async with response:
                    body = await response.read_until(lambda _b: False, kind.max_object_bytes + 1)
        except (TimeoutError, GatewayError, UpstreamBrokenError) as exc:
            log.warning("%s owner lookup at Azure failed: %s", kind.name, type(exc).__name__)
            raise ownership_unavailable() from None
        return self._answer(kind, object_id, response.status, body, home)

    def _answer(
        self, kind: Kind, object_id: str, status: int, body: bytes, home: Home
    ) -> str | None:
        if status == 404:
            raise not_found(kind)
        if status != 200 or len(body) > kind.max_object_bytes:
            log.warning("%s owner lookup at Azure answered %d", kind.name, status)
            if status in (401, 403):
                home.credential.reload()
            raise ownership_unavailable()
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict) or obj.get("id") != object_id:
            log.warning("%s owner lookup at Azure: unreadable object", kind.name)
            raise ownership_unavailable()
        raw = stamp_in_object(obj, kind)
        if raw is None:
            return None
        owner = valid_owner(raw)
        if owner is None:
            log.error("%s owner lookup at Azure: malformed owner stamp", kind.name)
            raise ownership_unavailable()
        return owner
