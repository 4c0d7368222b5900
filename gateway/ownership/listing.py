"""Lists of owned objects, shown to each tenant as if only its own existed (pure).

A ``lists`` row (``assistants.list``, ``vector_stores.list``, ``files.list``) answers with
every tenant's objects at Azure. The gateway therefore builds the caller's page itself, from
as many upstream pages as it takes (``ListScan``; the middleware fetches them):

1. Upstream is asked for pages of ``PAGE_SIZE`` (100, Azure's most) with the caller's
   ``order`` and cursor (``after``/``before``; the middleware has checked they name the
   caller's own objects).
2. Of each page, the caller's objects are kept (the owner stamp each object carries: the
   ``gateway_owner`` metadata key, a file's filename prefix; an object with no stamp is kept
   only under ``unknown = "allow"``), their stamps taken off.
3. The next upstream page continues from where that one ended: ``after`` = its last id
   (walking backwards from a ``before`` cursor alone: ``before`` = its first id, as Azure's
   ``before`` pages are the items just before the cursor).
4. It stops once ``limit`` objects are kept, upstream has no more, or ``max_pages`` upstream
   pages have been read (``ownership.list_scan_pages``).

The answer: ``data`` = the first ``limit`` kept objects (with ``before`` alone: the last
``limit``, those nearest the cursor), ``first_id`` / ``last_id`` their ids (``""`` when
``data`` is empty: the documents say strings), ``has_more`` true iff more kept objects were
seen or upstream had more. The caller's next cursor (``after=last_id``) is its own object, so
pagination continues right.

The bound: when ``max_pages`` pages hold fewer than ``limit`` of the caller's objects the
answer has those found and ``has_more: true``; when they hold none, ``data`` is empty (an SDK
then stops paging). A tenant's objects behind more than ``max_pages`` times 100 other tenants'
objects in a row are not shown on that page: raise the bound (each list request may cost up
to that many upstream calls).

A list that is not paged (``files.list``: its documents give it no ``limit`` or cursors, the
answer is every file) is asked for once with the caller's query and answered with the
caller's objects only (``paged=False``; ``first_id`` / ``last_id`` recomputed when upstream
sends them, ``has_more`` as upstream says).

Anything unreadable in a page (not a list object, an item without a valid id, a malformed
``has_more``) is ``ListPageError``: the caller gets a 502, never an unfiltered page.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from gateway.operations.row import Kind
from gateway.ownership.refs import CURSORS
from gateway.ownership.rules import UnknownPolicy, may_use, valid_id, valid_owner
from gateway.ownership.stamp import dump, stamp_in_object, without_stamp

#: The page size asked of Azure (its documented maximum ``limit``).
PAGE_SIZE = 100
DEFAULT_LIMIT = 20


class ListPageError(Exception):
    """An upstream list page that cannot be read (so nothing of it may be shown)."""


@dataclass(frozen=True, slots=True)
class NextPage:
    """Ask upstream for another page: ``query`` is the upstream query string (encoded)."""

    query: str


@dataclass(frozen=True, slots=True)
class Answer:
    """The caller's answer (a JSON list object)."""

    body: bytes


def encode_query(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


class ListScan:
    """One caller's list request, built from upstream pages fed in order (``add``)."""

    def __init__(
        self,
        kind: Kind,
        query: Iterable[tuple[str, str]],
        *,
        tenant: str,
        unknown: UnknownPolicy,
        max_pages: int,
        legacy_tenant: str | None = None,
        paged: bool = True,
    ) -> None:
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        self.kind = kind
        self.tenant = tenant
        self.legacy_tenant = legacy_tenant
        self.unknown = unknown
        self.max_pages = max_pages
        self.paged = paged
        pairs = list(query)
        given = dict(pairs)
        self.limit = int(given.get("limit", DEFAULT_LIMIT))
        self.after = given.get("after")
        self.before = given.get("before")
        #: A ``before`` cursor alone walks towards the start of the list.
        self.backward = self.before is not None and self.after is None
        #: The caller's parameters but the page size and cursors, in the caller's order.
        self._base = [(k, v) for k, v in pairs if k not in ("limit", *CURSORS)]
        self.pages = 0
        self.kept: list[dict[str, Any]] = []
        self._shape: dict[str, Any] | None = None

    def first_query(self) -> str:
        if not self.paged:
            return encode_query(self._base)
        return self._query(self.after, self.before)

    def _query(self, after: str | None, before: str | None) -> str:
        pairs = [*self._base, ("limit", str(PAGE_SIZE))]
        if after is not None:
            pairs.append(("after", after))
        if before is not None:
            pairs.append(("before", before))
        return encode_query(pairs)

    def _mine(self, item: dict[str, Any]) -> bool:
        raw = stamp_in_object(item, self.kind)
        if raw is None:
            owner = None
        else:
            owner = valid_owner(raw)
            if owner is None:
                return False  # a malformed stamp is no one's
        return may_use(owner, self.tenant, self.unknown, self.legacy_tenant)

    def add(self, page: bytes) -> NextPage | Answer:
        """Feed the next upstream page (a 200's JSON body); what to do next."""
        self.pages += 1
        data, upstream_more = self._read(page)
        mine = [without_stamp(item, self.kind)[0] for item in data if self._mine(item)]
        self.kept = mine + self.kept if self.backward else self.kept + mine
        if not self.paged:
            return self._whole(upstream_more)
        if len(self.kept) >= self.limit or not upstream_more or not data:
            return self._answer(upstream_more)
        if self.pages >= self.max_pages:
            return self._answer(True)
        if self.backward:
            return NextPage(self._query(None, data[0]["id"]))
        return NextPage(self._query(data[-1]["id"], self.before))

    def _read(self, page: bytes) -> tuple[list[dict[str, Any]], bool]:
        try:
            obj = json.loads(page)
        except (ValueError, RecursionError):
            raise ListPageError("unreadable list page") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
            raise ListPageError("not a list object")
        more = obj.get("has_more", False)
        if not isinstance(more, bool):
            raise ListPageError("has_more is not a boolean")
        data = obj["data"]
        for item in data:
            if not isinstance(item, dict) or valid_id(self.kind, item.get("id")) is None:
                raise ListPageError(f"a list item is not a {self.kind.name} object")
        if self._shape is None:
            self._shape = obj
        return data, more

    def _whole(self, upstream_more: bool) -> Answer:
        """An unpaged list: upstream's answer, only the caller's objects in it."""
        shape = self._shape or {"object": "list"}
        out = {**shape, "data": self.kept}
        if "first_id" in shape:
            out["first_id"] = self.kept[0]["id"] if self.kept else ""
        if "last_id" in shape:
            out["last_id"] = self.kept[-1]["id"] if self.kept else ""
        if "has_more" in shape:
            out["has_more"] = upstream_more
        return Answer(dump(out))

    def _answer(self, upstream_more: bool) -> Answer:
        extra = len(self.kept) > self.limit
        data = self.kept[-self.limit :] if self.backward else self.kept[: self.limit]
        shape = self._shape or {"object": "list"}
        out = {
            **{k: v for k, v in shape.items() if k not in ("data", "first_id", "last_id")},
            "data": data,
            "first_id": data[0]["id"] if data else "",
            "last_id": data[-1]["id"] if data else "",
            "has_more": extra or upstream_more,
        }
        return Answer(dump(out))
