"""Ownership: tenants never reach each other's objects; the owner is stamped on what they make.

On the way in (the last stage before the forwarder: on a miss of the in-process cache and of
Redis the owner is read at Azure, a call only a request that passed every other check may
cause):

* a request on an owned object (the row's ``owner``: the path's thread for messages, runs and
  steps) must be the caller's tenant's, else 404 (``rules.check_owner``), nothing forwarded;
* a creating request carries the owner stamp (``stamp.stamp_request``), as does a
  metadata-replacing modify of an owned object.

On the way back (before the caller sees anything of a 2xx answer):

* a creating operation's new id is read (the JSON answer's ``creates.id_field``, or the
  ``creates.sse_event`` that opens a stream) and recorded (Redis, the in-process cache);
* every answer that carries an owned object has the stamp taken off (``returns``: the whole
  JSON body, held until complete — it is bounded; a stream: each ``sse_event`` as it passes);
* a successful delete forgets the record.

What cannot be read is not relayed unchecked: before the response starts it is a 502, after
it the stream is cut (``errors.ResponseCut``).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from gateway.asgi import ASGIApp, Message, Receive, Scope, Send
from gateway.context import RequestContext, context_of
from gateway.errors import BadGatewayError, ResponseCut
from gateway.operations.row import Operation
from gateway.ownership.rules import (
    SSE_PEEK_LIMIT,
    UnknownPolicy,
    check_owner,
    created_id,
    first_event_complete,
    tenant_digest,
)
from gateway.ownership.stamp import (
    SseStampFilter,
    StampFilterError,
    stamp_request,
    strip_object_json,
)

log = logging.getLogger("gateway.proxy")


class Owners(Protocol):
    """Who owns each object (``lookup.ThreadOwners``): owner digests in, out."""

    async def owner(self, thread_id: str) -> str | None: ...
    async def record(self, thread_id: str, owner: str) -> bool: ...
    async def forget(self, thread_id: str) -> None: ...


class OwnershipMiddleware:
    def __init__(
        self, app: ASGIApp, *, owners: Owners | None, unknown: UnknownPolicy, max_body_bytes: int
    ) -> None:
        self.app = app
        self.owners = owners
        self.unknown = unknown
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = context_of(scope)
        owners = self.owners
        assert ctx.match is not None and ctx.caller is not None
        row = ctx.match.row
        if owners is None:
            await self.app(scope, receive, send)
            return
        ctx.owner = await self._owner(ctx, owners, row)
        ctx.body = stamp_request(row, ctx.body, ctx.owner)
        if row.creates is None and row.returns is None and not row.deletes:
            await self.app(scope, receive, send)
            return
        effects = _Effects(ctx, row, owners, send, self.max_body_bytes)
        await self.app(scope, receive, effects)
        if effects.start is not None:  # the answer ended before it could be checked
            ctx.stream_cut = False  # nothing reached the caller: it gets a 502, not a cut
            raise BadGatewayError("The upstream response ended abnormally.")

    async def _owner(self, ctx: RequestContext, owners: Owners, row: Operation) -> str | None:
        """The owner digest of the object the request acts on (checked: the caller's tenant,
        or an unknown object ``unknown`` lets through) or creates; None when not owned."""
        assert ctx.caller is not None and ctx.match is not None
        if row.creates is not None:
            return tenant_digest(ctx.caller.tenant)
        if row.owner is None:
            return None
        started = time.perf_counter()
        owner = await owners.owner(ctx.match.ids[row.owner.param])
        check_owner(owner, ctx.caller.tenant, self.unknown, ctx.caller.legacy_tenant, row.owner)
        ctx.stages["ownership"] = time.perf_counter() - started
        # The caller's tenant owns it: a stamp written now names the qualified tenant, also
        # for an object whose record predates qualified tenants.
        return None if owner is None else tenant_digest(ctx.caller.tenant)


class _Effects:
    """The send of one request whose 2xx answer records, forgets or carries an owned object."""

    def __init__(
        self, ctx: RequestContext, row: Operation, owners: Owners, send: Send, limit: int
    ) -> None:
        self.ctx, self.row, self.owners, self.send, self.limit = ctx, row, owners, send, limit
        self.start: Message | None = None  # held until the answer is checked
        self.held = bytearray()
        self.held_out = bytearray()  # filtered bytes of a stream held with its start
        self.mode = "pass"  # pass | json | sse
        self.stamps: SseStampFilter | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self._started(message)
        elif message["type"] == "http.response.body" and self.mode != "pass":
            await self._body(message)
        else:
            await self.send(message)

    async def _started(self, message: Message) -> None:
        row, status = self.row, message["status"]
        if not 200 <= status < 300:
            await self.send(message)
            return
        if row.deletes:
            assert self.ctx.match is not None and row.owner is not None
            await self.owners.forget(self.ctx.match.ids[row.owner.param])
            await self.send(message)
            return
        event_stream = _is_event_stream(message)
        sse_event = row.creates.sse_event if row.creates is not None else None
        if event_stream and row.creates is not None and sse_event is not None:
            self.mode, self.stamps = "sse", SseStampFilter(sse_event, row.creates.kind)
        elif not event_stream and (row.returns is not None or row.creates is not None):
            self.mode = "json"
        else:
            await self.send(message)
            return
        self.start = message

    async def _body(self, message: Message) -> None:
        chunk, more = message.get("body", b""), message.get("more_body", False)
        if self.mode == "json":
            self.held += chunk
            if len(self.held) > self.limit:
                raise _unreadable("the object is too large")
            if not more:
                await self._json_complete()
            return
        await self._sse(chunk, more)

    async def _json_complete(self) -> None:
        row, body = self.row, bytes(self.held)
        if row.creates is not None and self.ctx.owner is not None:
            await self._record(created_id(row.creates, body))
        if row.returns is not None:
            try:
                body = strip_object_json(body)
            except StampFilterError as exc:
                raise _unreadable(str(exc)) from None
        start, self.start, self.mode = self.start, None, "pass"
        assert start is not None
        headers = [(n, v) for n, v in start["headers"] if n != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def _sse(self, chunk: bytes, more: bool) -> None:
        assert self.stamps is not None
        try:
            out = self.stamps.feed(chunk)
            if not more:
                out += self.stamps.finish()
        except StampFilterError as exc:
            if self.start is not None:
                raise _unreadable(str(exc)) from None
            log.warning("stream cut: %s", exc, extra={"request_id": self.ctx.request_id})
            raise ResponseCut(str(exc)) from None
        if self.start is not None:
            # The response starts once the opening event (the new object) has been seen and
            # its owner recorded, as a non-streamed create's is before its answer.
            self.held += chunk
            self.held_out += out
            opened = first_event_complete(bytes(self.held)) or len(self.held) >= SSE_PEEK_LIMIT
            if more and not opened:
                return
            if self.ctx.owner is not None:
                await self._record(self.stamps.object_id)
            start, self.start = self.start, None
            await self.send(start)
            out, self.held_out = bytes(self.held_out), bytearray()
            self.held.clear()
        if out or not more:
            await self.send({"type": "http.response.body", "body": out, "more_body": more})

    async def _record(self, object_id: str | None) -> None:
        """A new object's owner: stamped on it already, recorded in Redis for speed."""
        assert self.ctx.owner is not None
        if object_id is None:
            log.error(
                "the id of a new thread could not be read",
                extra={"request_id": self.ctx.request_id},
            )
            self.ctx.reason = "ownership_not_recorded"
        elif not await self.owners.record(object_id, self.ctx.owner):
            log.warning(
                "owner of a new thread not recorded in Redis (it is stamped on the thread)",
                extra={"request_id": self.ctx.request_id},
            )


def _is_event_stream(message: Message) -> bool:
    for name, value in message["headers"]:
        if name == b"content-type":
            return bytes(value).split(b";")[0].strip().lower() == b"text/event-stream"
    return False


def _unreadable(why: str) -> BadGatewayError:
    log.error("unreadable object from upstream: %s", why)
    return BadGatewayError("The upstream service answered with an unreadable thread.")
