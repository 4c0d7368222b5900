"""Ownership of objects between tenants (pure): threads, assistants, vector stores, files,
and the v1 API's conversations and responses.

With one shared Azure key every object is reachable by every caller who knows its id. The
gateway therefore keeps track of which tenant created each object *through it* and refuses any
other tenant's request on that object with a 404 (not 403: it does not confirm the object
exists), and any body or list cursor naming it with a 400 ``reference_not_found``, before
anything is forwarded.

* The owner is stamped on the Azure object itself: every creating request carries the
  owner's tenant digest, in the reserved metadata key ``STAMP_KEY`` (threads, assistants,
  vector stores; see ``stamp``) or as a reserved filename prefix (files; see ``filenames``).
  Callers can neither set, change, remove nor see it. That stamp is the durable truth; Redis
  records (``store``) and the in-process cache (``lookup``) are rebuildable caches of it.
* Also recorded in Redis from the answer of the creating operation (the row's
  ``creates.id_field``, or, when streamed, the ``id`` of the event that opens the stream),
  before the caller sees the answer. Records are keyed by the object's id alone: the kinds'
  ids have distinct prefixes (``thread_``, ``asst_``, ``vs_``, ``file-``/``assistant-``,
  ``conv_``, ``resp_``). A response created with ``store: false`` is not recorded: Azure
  keeps nothing to look up later (its stamp is sent all the same, and taken off its answer).
* A response created inside a conversation (``conversation``) is the creating tenant's, like
  any new object; the conversation must be the caller's tenant's (a body reference, as is
  ``previous_response_id``). A conversation's items and a response's input items are reached
  through their conversation or response: its owner is theirs.
* A delete that succeeds removes the record.
* An object with neither a record nor a stamp (created before the gateway was deployed, or
  outside it) follows the config: ``ownership.unknown``, ``deny`` (default) or ``allow``.
* Owners are stored as a hash of the tenant, never the tenant name; ``owned_by`` is the one
  place an owner is compared with a caller's tenant.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from typing import Any, Literal, NamedTuple

from gateway.errors import BadRequestError, NotFoundError, ServiceUnavailableError
from gateway.operations.row import THREAD, Creation, Kind

UnknownPolicy = Literal["deny", "allow"]
KEY_PREFIX = "gw:own:"
#: The reserved metadata key that carries the owner's digest on the Azure object.
STAMP_KEY = "gateway_owner"
#: What a stored owner (a record's value, a stamp) may look like: a digest, never free text.
_OWNER = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RecordsUnavailableError(Exception):
    """The owner records could not be read in time (Redis down or slow)."""


def ownership_unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "Ownership cannot be checked right now; retry shortly.",
        code="ownership_unavailable",
        headers={"Retry-After": "1"},
    )


def not_found(kind: Kind = THREAD) -> NotFoundError:
    """The 404 of a foreign (or, under ``deny``, unknown) object: it says no more than Azure's
    own 404 for an id that does not exist."""
    return NotFoundError(
        f"No {kind.name} found with this id.", code=kind.not_found_code, param=kind.param
    )


def thread_not_found() -> NotFoundError:
    return not_found(THREAD)


#: The code of a body field or list cursor naming an object the caller's tenant does not own.
REFERENCE_NOT_FOUND = "reference_not_found"


def reference_not_found(kind: Kind, path: str) -> BadRequestError:
    """The 400 of a body field (or list cursor) at ``path`` (with indices:
    ``attachments[0].file_id``) naming a foreign, unknown (under ``deny``) or missing object."""
    return BadRequestError(
        f"No {kind.name} found with the id given at {path}.",
        code=REFERENCE_NOT_FOUND,
        param=path,
    )


def owner_key(object_id: str) -> str:
    """The Redis key of an object's owner record (by id: the kinds' ids never collide)."""
    return f"{KEY_PREFIX}{{{object_id}}}"


@functools.lru_cache(maxsize=4096)
def tenant_digest(tenant: str) -> str:
    """The owner digest of a tenant (memoised: a request computes its caller's up to twice,
    and the tenants a process serves are few; the cache is bounded all the same)."""
    return hashlib.sha256(tenant.encode("utf-8")).hexdigest()[:32]


def valid_owner(value: object) -> str | None:
    """``value`` if it has the shape of a stored owner digest, else None."""
    return value if isinstance(value, str) and _OWNER.fullmatch(value) else None


class Location(NamedTuple):
    """Who owns an object (None: unknown) and where it lives (None: the first backend)."""

    owner: str | None
    backend: str | None


#: A record's value: the owner digest, then ``@`` and the object's backend (records written
#: before there were several backends hold the digest alone: the first backend's).
_BACKEND = re.compile(r"[a-z0-9-]{1,32}")


def record_value(owner: str, backend: str | None) -> str:
    return owner if backend is None else f"{owner}@{backend}"


def parse_record(value: object) -> tuple[str, str | None] | None:
    """A record's ``(owner, backend or None)``; None when it is malformed."""
    if not isinstance(value, str):
        return None
    owner, at_sign, backend = value.partition("@")
    if valid_owner(owner) is None or (at_sign and not _BACKEND.fullmatch(backend)):
        return None
    return owner, backend if at_sign else None


def owned_by(owner: str, tenant: str, legacy_tenant: str | None = None) -> bool:
    """Whether the stored ``owner`` digest (a record or a stamp) is the caller's ``tenant``.

    ``tenant`` is qualified by its issuer's domain; records written before tenants were
    qualified hold the digest of the bare name, which counts only for the issuer
    ``auth.legacy_tenant_issuer`` names (``legacy_tenant``)."""
    mine = hmac.compare_digest(
        owner.encode("ascii", "replace"), tenant_digest(tenant).encode("ascii")
    )
    if mine or legacy_tenant is None:
        return mine
    return hmac.compare_digest(
        owner.encode("ascii", "replace"), tenant_digest(legacy_tenant).encode("ascii")
    )


def may_use(
    owner: str | None, tenant: str, unknown: UnknownPolicy, legacy_tenant: str | None = None
) -> bool:
    """Whether the caller's ``tenant`` may use an object whose owner is ``owner`` (None: no
    record and no stamp, for ``unknown`` to decide)."""
    if owner is None:
        return unknown == "allow"
    return owned_by(owner, tenant, legacy_tenant)


def check_owner(
    owner: str | None,
    tenant: str,
    unknown: UnknownPolicy,
    legacy_tenant: str | None = None,
    kind: Kind = THREAD,
) -> None:
    """Raise the 404 a foreign (or, under ``deny``, unrecorded) object gets."""
    if not may_use(owner, tenant, unknown, legacy_tenant):
        raise not_found(kind)


def created_id(creation: Creation, body: bytes) -> str | None:
    """The new object's id in a creating operation's JSON answer (``creates.id_field``)."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return created_id_in(creation, obj)


def created_id_in(creation: Creation, answer: Any) -> str | None:
    """``created_id`` of an answer already parsed (anything but an object names no id)."""
    if not isinstance(answer, dict):
        return None
    return valid_id(creation.kind, answer.get(creation.id_field))


def not_kept(creation: Creation, body: dict[str, Any]) -> bool:
    """Whether a creating request asks Azure to keep no object (``creates.not_kept_when``:
    a response with ``store: false``): then there is nothing to record."""
    if creation.not_kept_when is None:
        return False
    field, value = creation.not_kept_when
    given = body.get(field, _ABSENT)
    return type(given) is type(value) and given == value


_ABSENT = object()


def valid_id(kind: Kind, value: object) -> str | None:
    return value if isinstance(value, str) and kind.pattern.fullmatch(value) else None
