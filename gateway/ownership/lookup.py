"""Who owns an object: the in-process cache, then the Redis records, then the stamp on the
Azure object itself (no I/O library here: the records and the origin are ports).

Lookup order for an object (a kind and an id), each step only on a miss of the one before:

1. the in-process cache (``cache_ttl_s``; 0 turns it off): no I/O at all;
2. the owner records (Redis): one ``GET``;
3. the origin (Azure): one ``GET`` of the object (the kind's ``lookup`` row) with the
   gateway's own credential, reading the owner stamp. A stamp is written back to the records
   (best effort) and cached; at most one such lookup per object runs at a time in this
   process, concurrent requests share it.

Outcomes: an owner digest; None (no record and no stamp: an object created outside the
gateway, for ``ownership.unknown`` to decide); a 404 when Azure has no such object; a 503 when
the origin cannot answer, or when it finds no stamp while the records could not be read (an
older record may exist there: guessing "unknown" could hand the object to anyone).

Cache and records are keyed by the object's id: the kinds' ids have distinct prefixes.

With several Azure backends the object's backend (its home) travels with its owner
(``locate``): recorded with it (``rules.record_value``), cached with it, and, when Redis lost
it, found again by the origin, which asks the backends in turn (the one that has the object
is its home; written back). A record written before there were several backends names none:
``default_backend`` (the first configured) is its home. A record naming a backend that is no
longer configured (``backends``: the configured names) is treated as a missing one: the
origin asks the configured backends and the one that holds the object is its home (written
back); an object is never sent to a backend on a guess.

The cache is safe because an object's owner never changes (Azure never reuses an id; the
stamp is written once at creation and callers cannot touch it). A known-unowned object (no
record, no stamp) is cached too: nothing stamps an unowned object later. A stale entry after a
delete on another replica only lets the owner itself reach Azure, which answers 404.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from gateway.operations.row import Kind
from gateway.ownership.rules import (
    Location,
    RecordsUnavailableError,
    ownership_unavailable,
    parse_record,
    record_value,
)

log = logging.getLogger("gateway.ownership")

CACHE_SIZE = 10_000
_MISS = object()


class OwnerRecords(Protocol):
    """Owner records (``store.RedisOwnerRecords``), by object id."""

    async def get(self, object_id: str) -> str | None:
        """The record (``rules.record_value``), None when there is none;
        ``RecordsUnavailableError``."""

    async def put(self, object_id: str, value: str) -> bool: ...
    async def delete(self, object_id: str) -> None: ...


class OwnerOrigin(Protocol):
    """The object's own stamp and home (``azure.AzureOwnerOrigin``)."""

    async def find(self, kind: Kind, object_id: str) -> Location:
        """The stamped owner (None for an unstamped object) and the backend that has it;
        404 or 503 as gateway errors."""


class ObjectOwners:
    """The middleware's ``Owners``: cache → records → origin."""

    def __init__(
        self,
        records: OwnerRecords,
        origin: OwnerOrigin,
        *,
        cache_ttl_s: float,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        default_backend: str | None = None,
        backends: frozenset[str] | None = None,
    ) -> None:
        self.records = records
        self.default_backend = default_backend
        self.backends = backends
        self.origin = origin
        self.cache_ttl_s = cache_ttl_s
        self.cache_size = cache_size
        self.clock = clock
        self._known: OrderedDict[str, tuple[Location, float]] = OrderedDict()
        self._asking: dict[str, asyncio.Future[Location]] = {}
        #: Lookups answered by the origin (Azure), for tests and the benchmark's figures.
        self.origin_lookups = 0

    def known(self, object_id: str) -> Location | None:
        """The cached location of an object (no I/O), None on a miss (``locate`` it)."""
        return self._cached(object_id)

    def _cached(self, object_id: str) -> Location | None:
        known = self._known.get(object_id)
        if known is None:
            return None
        if known[1] > self.clock():
            return known[0]
        del self._known[object_id]
        return None

    def _remember(self, object_id: str, where: Location) -> None:
        if self.cache_ttl_s <= 0:
            return
        self._known[object_id] = (where, self.clock() + self.cache_ttl_s)
        self._known.move_to_end(object_id)
        if len(self._known) > self.cache_size:
            self._known.popitem(last=False)

    async def owner(self, kind: Kind, object_id: str) -> str | None:
        return (await self.locate(kind, object_id)).owner

    async def locate(self, kind: Kind, object_id: str) -> Location:
        cached = self._cached(object_id)
        if cached is not None:
            return cached
        try:
            value = await self.records.get(object_id)
            records_answered = True
        except RecordsUnavailableError:
            value, records_answered = None, False
        parsed = parse_record(value) if value is not None else None
        if parsed is not None and not self._configured(parsed[1]):
            log.warning("an owner record names a backend no longer configured; asking them")
            parsed = None
        if parsed is not None:
            where = Location(parsed[0], parsed[1] or self.default_backend)
            self._remember(object_id, where)
            return where
        found = await self._ask_origin(kind, object_id)
        if found.owner is None:
            if not records_answered:
                raise ownership_unavailable()
            self._remember(object_id, found)
            return found
        self._remember(object_id, found)
        if records_answered and not await self.records.put(
            object_id, record_value(found.owner, found.backend)
        ):
            log.warning("could not write back an owner read from its stamp")
        return found

    def _configured(self, backend: str | None) -> bool:
        """A record's backend is one in force (None: an old record's, the default)."""
        return backend is None or self.backends is None or backend in self.backends

    async def _ask_origin(self, kind: Kind, object_id: str) -> Location:
        asking = self._asking.get(object_id)
        if asking is None:
            asking = asyncio.ensure_future(self.origin.find(kind, object_id))
            self._asking[object_id] = asking
            self.origin_lookups += 1

            def done(task: asyncio.Future[Location]) -> None:
                if self._asking.get(object_id) is task:
                    del self._asking[object_id]
                if not task.cancelled():
                    task.exception()  # retrieved: every waiter may have gone away

            asking.add_done_callback(done)
        # A waiter that goes away (client disconnect) leaves the lookup to the others.
        return await asyncio.shield(asking)

    async def record(self, object_id: str, owner: str, backend: str | None = None) -> bool:
        """A new object's owner (already stamped on it) and its backend: cached, and recorded
        in Redis."""
        self._remember(object_id, Location(owner, backend))
        return await self.records.put(object_id, record_value(owner, backend))

    async def forget(self, object_id: str) -> None:
        self._known.pop(object_id, None)
        await self.records.delete(object_id)
