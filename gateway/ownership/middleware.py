"""Ownership: tenants never reach each other's objects; the owner is stamped on what they make.

On the way in (the last stage before the forwarder: on a miss of the in-process cache and of
Redis the owner is read at Azure, a call only a request that passed every other check may
cause):

* a request on an owned object (the row's ``owner``: the path's thread for messages, runs and
  steps, the assistant of its files, the vector store of its files and batches) must be the
  caller's tenant's, else 404 with the kind's code (``rules.check_owner``), nothing forwarded;
* every object the validated body names (the row's ``refs``) and a list's cursors must be the
  caller's tenant's too, else 400 ``reference_not_found`` naming the path
  (``refs``); each object is looked up once, at most ``REF_LOOKUPS`` at a time;
* a creating request carries the owner stamp (``stamp.stamp_request``), as does a
  metadata-replacing modify of an owned object;
* with several Azure backends (``router``), the request's backend (``ctx.backend``): the
  home of the object it acts on (and of everything under it), else the one home of the
  objects its body or cursor names (two different homes: 400 ``references_span_backends``
  naming the path of the first one elsewhere), else, for a new object, the routing choice
  (``router.new_home``: may be 503 ``no_upstream_available``), else the preferred backend
  (a list without a cursor: ``router.list_home``).

On the way back (before the caller sees anything of a 2xx answer):

* a creating operation's new id is read (the JSON answer's ``creates.id_field``, or the
  ``creates.sse_event`` that opens a stream: ``thread.created``'s ``data.id``,
  ``response.created``'s ``data.response.id``) and recorded (Redis, the in-process cache),
  as are the ids of inline-made objects (``creates.inline``) the answer lists; a stream's
  response start is held until then, no longer. A create whose body asks Azure to keep
  nothing (``creates.not_kept_when``: a response with ``store: false``) is not recorded;
* every answer that carries an owned object has the stamp taken off (``returns``: the whole
  JSON body, held until complete — it is bounded; a stream: each event that may carry one,
  event by event as it passes — a created thread's opening event, every event of a
  response's stream, created or retrieved with ``stream=true``; ``stamp.SseStampFilter``);
* a list of owned objects (``lists``) shows only the caller's: its pages are fetched by
  invoking the inner app (the forwarder) again with the next upstream query, at most
  ``list_scan_pages`` times, and the answer is built by ``listing.ListScan``;
* a successful delete forgets the record.

What cannot be read is not relayed unchecked: before the response starts it is a 502, after
it the stream is cut (``errors.ResponseCut``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from gateway.asgi import ASGIApp, Message, Receive, Scope, Send
from gateway.context import RequestContext, context_of
from gateway.errors import (
    BadGatewayError,
    BadRequestError,
    GatewayError,
    NotFoundError,
    ResponseCut,
)
from gateway.operations.row import Kind, Operation
from gateway.operations.table import OperationTable
from gateway.ownership import paths
from gateway.ownership.listing import Answer, ListPageError, ListScan
from gateway.ownership.refs import (
    Reference,
    body_references,
    cursor_references,
    distinct,
    first_malformed,
)
from gateway.ownership.rules import (
    Location,
    UnknownPolicy,
    check_owner,
    created_id_in,
    may_use,
    not_kept,
    reference_not_found,
    tenant_digest,
    valid_id,
)
from gateway.ownership.stamp import (
    UNREADABLE,
    SseStampFilter,
    StampFilterError,
    inline_described,
    parse_answer,
    stamp_request,
    strip_parsed_object,
)

log = logging.getLogger("gateway.proxy")

#: Owner lookups of one request's references running at once.
REF_LOOKUPS = 8
#: The largest upstream list page read (100 objects; assistants' instructions make the most).
MAX_LIST_PAGE_BYTES = 32 * 1024 * 1024


class Owners(Protocol):
    """Who owns each object, and where it lives (``lookup.ObjectOwners``)."""

    def known(self, object_id: str) -> Location | None:
        """The location the process has cached (no I/O), None when it must be looked up."""
        ...

    async def locate(self, kind: Kind, object_id: str) -> Location: ...
    async def record(self, object_id: str, owner: str, backend: str | None = None) -> bool: ...
    async def forget(self, object_id: str) -> None: ...


class Router(Protocol):
    """The backends (``upstream.backends.Backends``), by name."""

    def new_home(self, api_version: str) -> tuple[str, bool]:
        """A new object's backend, and whether it is a half-open probe (or 503)."""
        ...

    def list_home(self, api_version: str) -> str: ...

    def home_of(self, name: str | None) -> str:
        """The backend a recorded home names (None: an old record's, the first)."""
        ...


#: The code of a request naming objects that live on different backends.
REFERENCES_SPAN_BACKENDS = "references_span_backends"


def references_span_backends(path: str) -> BadRequestError:
    return BadRequestError(
        "The objects this request names live on different Azure resources; a request can "
        "use objects of one resource only.",
        code=REFERENCES_SPAN_BACKENDS,
        param=path,
    )


class OwnershipMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        owners: Owners | None,
        unknown: UnknownPolicy,
        max_body_bytes: int,
        routes: OperationTable,
        list_scan_pages: int = 10,
        router: Router | None = None,
    ) -> None:
        self.app = app
        self.router = router
        self.owners = owners
        self.unknown = unknown
        self.max_body_bytes = max_body_bytes
        self.routes = routes
        self.list_scan_pages = list_scan_pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = context_of(scope)
        owners = self.owners
        assert ctx.match is not None and ctx.caller is not None
        row = ctx.match.row
        if owners is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        ctx.owner, home = await self._owner(ctx, owners, row)
        references = [*body_references(row, ctx.body), *cursor_references(row, ctx.match.query)]
        homes = await self._check_references(ctx, owners, references) if references else []
        if self.router is not None:
            self._route(ctx, self.router, row, [("", home)] if row.owner else [], homes)
        if row.owner is not None or row.refs or row.lists is not None:
            ctx.stages["ownership"] = time.perf_counter() - started
        ctx.body = stamp_request(row, ctx.body, ctx.owner)
        if row.lists is not None:
            await self._list(scope, receive, send, ctx, row.lists)
            return
        if row.creates is None and row.returns is None and not row.deletes:
            await self.app(scope, receive, send)
            return
        effects = _Effects(ctx, row, owners, send, self.max_body_bytes)
        await self.app(scope, receive, effects)
        if effects.start is not None:  # the answer ended before it could be checked
            ctx.stream_cut = False  # nothing reached the caller: it gets a 502, not a cut
            raise BadGatewayError("The upstream response ended abnormally.")

    async def _owner(
        self, ctx: RequestContext, owners: Owners, row: Operation
    ) -> tuple[str | None, str | None]:
        """The owner digest of the object the request acts on (checked: the caller's tenant,
        or an unknown object ``unknown`` lets through) or creates (None when not owned), and
        the backend of the object acted on."""
        assert ctx.caller is not None and ctx.match is not None
        if row.owner is None:
            return (tenant_digest(ctx.caller.tenant) if row.creates is not None else None), None
        object_id = ctx.match.ids[row.owner.param]
        # A cached owner (the common case) is read without a coroutine.
        owner, home = owners.known(object_id) or await owners.locate(row.owner, object_id)
        check_owner(owner, ctx.caller.tenant, self.unknown, ctx.caller.legacy_tenant, row.owner)
        if row.creates is not None:  # a new object under one of the caller's
            return tenant_digest(ctx.caller.tenant), home
        # The caller's tenant owns it: a stamp written now names the qualified tenant, also
        # for an object whose record predates qualified tenants.
        return (None if owner is None else tenant_digest(ctx.caller.tenant)), home

    @staticmethod
    def _route(
        ctx: RequestContext,
        router: Router,
        row: Operation,
        own: list[tuple[str, str | None]],
        refs: list[tuple[str, str | None]],
    ) -> None:
        """The request's backend: its object's, its references' (all on one), or a choice."""
        assert ctx.match is not None
        homes = [(path, router.home_of(name)) for path, name in [*own, *refs]]
        if homes:
            first = homes[0][1]
            for path, name in homes[1:]:
                if name != first:
                    raise references_span_backends(path)
            ctx.backend = first
        elif row.creates is not None:
            ctx.backend, ctx.backend_probe = router.new_home(ctx.match.version.name)
        else:
            ctx.backend = router.list_home(ctx.match.version.name)

    async def _check_references(
        self, ctx: RequestContext, owners: Owners, references: list[Reference]
    ) -> list[tuple[str, str | None]]:
        """Every referenced object is the caller's tenant's (or unknown, when allowed), else
        400 ``reference_not_found`` at the first refused path (in body order; once one is
        refused, lookups not yet started are skipped). Each reference's path and backend."""
        if not references:
            return []
        malformed = first_malformed(references)
        if malformed is not None:
            raise reference_not_found(malformed.kind, malformed.path)
        caller = ctx.caller
        assert caller is not None
        gate = asyncio.Semaphore(REF_LOOKUPS)
        refused = asyncio.Event()
        homes: dict[str, str | None] = {}

        async def usable(ref: Reference) -> bool | GatewayError | None:
            async with gate:
                if refused.is_set():
                    return None  # another reference is refused already: no more lookups
                assert ref.object_id is not None
                try:
                    owner, homes[ref.object_id] = await owners.locate(ref.kind, ref.object_id)
                except NotFoundError:
                    owner, ok = None, False  # Azure has no such object
                except GatewayError as exc:
                    return exc
                else:
                    ok = may_use(owner, caller.tenant, self.unknown, caller.legacy_tenant)
                if not ok:
                    refused.set()
                return ok

        unique = distinct(references)
        outcomes = await asyncio.gather(*(usable(ref) for ref in unique))
        failed = {r.object_id for r, ok in zip(unique, outcomes, strict=True) if ok is False}
        for ref in references:
            if ref.object_id in failed:
                raise reference_not_found(ref.kind, ref.path)
        for outcome in outcomes:
            if isinstance(outcome, GatewayError):
                raise outcome
        return [(r.path, homes.get(r.object_id)) for r in unique if r.object_id is not None]

    async def _list(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext, kind: Kind
    ) -> None:
        """The caller's page of a list of owned objects, from as many upstream pages as it
        takes (``listing``)."""
        assert ctx.caller is not None and ctx.match is not None
        original = ctx.match
        scan = ListScan(
            kind,
            original.query,
            tenant=ctx.caller.tenant,
            legacy_tenant=ctx.caller.legacy_tenant,
            unknown=self.unknown,
            max_pages=self.list_scan_pages,
            paged=any(p.name == "limit" for p in original.row.query),
        )
        query = scan.first_query()
        try:
            while True:
                try:
                    # The same strict table builds (and checks) every upstream page's target.
                    ctx.match = self.routes.match(
                        original.row.method,
                        original.upstream_path.encode("ascii"),
                        query.encode("ascii"),
                    )
                except GatewayError:
                    ctx.match = None
                if ctx.match is None or ctx.match.row is not original.row:
                    raise BadGatewayError("A list page could not be asked for.")
                page = _Page(MAX_LIST_PAGE_BYTES)
                await self.app(scope, receive, page)
                if page.start is None or not page.complete:
                    ctx.stream_cut = False  # nothing reached the caller yet
                    raise BadGatewayError("The upstream response ended abnormally.")
                if page.start["status"] != 200:
                    await page.relay(send)  # Azure's refusal, as the forwarder relays it
                    return
                try:
                    step = scan.add(bytes(page.body))
                except ListPageError as exc:
                    log.error("unreadable list page from upstream: %s", exc)
                    raise BadGatewayError(
                        "The upstream service answered with an unreadable list."
                    ) from None
                if isinstance(step, Answer):
                    await _send_json(send, page.start, step.body)
                    return
                query = step.query
        finally:
            ctx.match = original


class _Page:
    """The send of one upstream list page: held whole (bounded), for ``ListScan``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.start: Message | None = None
        self.body = bytearray()
        self.complete = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            if len(self.body) > self.limit:
                raise _unreadable("a list page is too large")
            if not message.get("more_body", False):
                self.complete = True

    async def relay(self, send: Send) -> None:
        assert self.start is not None
        await send(self.start)
        await send({"type": "http.response.body", "body": bytes(self.body), "more_body": False})


async def _send_json(send: Send, start: Message, body: bytes) -> None:
    headers = [(n, v) for n, v in start["headers"] if n != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _Effects:
    """The send of one request whose 2xx answer records, forgets or carries an owned object."""

    def __init__(
        self, ctx: RequestContext, row: Operation, owners: Owners, send: Send, limit: int
    ) -> None:
        self.ctx, self.row, self.owners, self.send = ctx, row, owners, send
        # An owned object's JSON is held whole: up to its kind's bound (a response with its
        # output can be far larger than a request body).
        kind = row.returns or (row.creates.kind if row.creates is not None else None)
        self.limit = max(limit, kind.max_object_bytes) if kind is not None else limit
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
        if _is_event_stream(message):
            self.stamps = _stream_filter(row)
            if self.stamps is None:
                await self.send(message)
                return
            self.mode = "sse"
            if self._recording():
                self.start = message  # held until the opening event is recorded
            else:
                await self.send(message)
            return
        if row.returns is None and row.creates is None:
            await self.send(message)
            return
        self.mode, self.start = "json", message

    def _recording(self) -> bool:
        """Whether the answer's new object is to be recorded: a creating row, an owner, and
        an object Azure keeps (not a response with ``store: false``)."""
        creation, body = self.row.creates, self.ctx.body
        if creation is None or self.ctx.owner is None:
            return False
        return not (body is not None and not_kept(creation, body))

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
        answer = parse_answer(body)  # once, for the new id, the inline ids and the strip
        if row.creates is not None and self._recording():
            await self._record(created_id_in(row.creates, answer))
            await self._record_inline(answer)
        if row.returns is not None:
            try:
                body = strip_parsed_object(answer, body, row.returns)
            except StampFilterError as exc:
                raise _unreadable(str(exc)) from None
        start, self.start, self.mode = self.start, None, "pass"
        assert start is not None
        await _send_json(self.send, start, body)

    async def _record_inline(self, answer: Any) -> None:
        """The ids of the objects the request described inline, as the answer (parsed) lists
        them (stamped already; recorded for speed)."""
        row, owner = self.row, self.ctx.owner
        assert row.creates is not None and owner is not None
        if answer is UNREADABLE or not inline_described(row, self.ctx.body):
            return  # unreadable: the creation's own id could not be read either, logged there
        for inline in row.creates.inline:
            if inline.ids_at is None:
                continue
            for _where, value in paths.find(answer, inline.ids_at):
                object_id = valid_id(inline.kind, value)
                if object_id is not None and not await self.owners.record(
                    object_id, owner, self.ctx.backend
                ):
                    log.warning(
                        "owner of an inline-made %s not recorded in Redis (it is stamped)",
                        inline.kind.name,
                        extra={"request_id": self.ctx.request_id},
                    )

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
            # Comments (``: keep-alive``) before it do not open the stream.
            opened = self.stamps.opened or len(self.held) >= self.stamps.limit
            if more and not opened:
                return
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
                "the id of a new owned object could not be read",
                extra={"request_id": self.ctx.request_id},
            )
            self.ctx.reason = "ownership_not_recorded"
        elif not await self.owners.record(object_id, self.ctx.owner, self.ctx.backend):
            kind = self.row.creates.kind.name if self.row.creates is not None else "object"
            log.warning(
                "owner of a new %s not recorded in Redis (it is stamped on the %s)",
                kind,
                kind,
                extra={"request_id": self.ctx.request_id},
            )


def _stream_filter(row: Operation) -> SseStampFilter | None:
    """The stamp filter of a row's streamed answer: a create's (its opening event gives the
    id), or a read's whose kind streams (``responses.retrieve?stream=true``); None: nothing
    owned is in the stream."""
    creation = row.creates
    if creation is not None and creation.sse_event is not None:
        return SseStampFilter(creation.sse_event, creation.kind)
    if row.returns is not None and row.returns.events is not None:
        return SseStampFilter(None, row.returns)
    return None


def _is_event_stream(message: Message) -> bool:
    for name, value in message["headers"]:
        if name == b"content-type":
            return bytes(value).split(b";")[0].strip().lower() == b"text/event-stream"
    return False


def _unreadable(why: str) -> BadGatewayError:
    log.error("unreadable object from upstream: %s", why)
    return BadGatewayError("The upstream service answered with an unreadable object.")
