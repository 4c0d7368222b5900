"""Thread ownership between tenants (pure).

With one shared Azure key every thread is reachable by every caller who knows its id. The
gateway therefore records which tenant created each thread *through it* and refuses any other
tenant's request on that thread with a 404 (not 403: it does not confirm the thread exists),
before anything is forwarded.

* Recorded from the responses of ``threads.create`` (the thread's ``id``) and
  ``threads.create_and_run`` (the run's ``thread_id``, or, when streamed, the ``id`` of the
  ``thread.created`` event that opens the stream), before the caller sees the response.
* ``threads.delete`` that succeeds removes the record.
* A thread with no record (created before the gateway was deployed) follows the config:
  ``deny`` (default) or ``allow``.
* Owners are stored as a hash of the tenant, never the tenant name.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from gateway.errors import NotFoundError

UnknownPolicy = Literal["deny", "allow"]
KEY_PREFIX = "gw:own:"
CREATES_THREAD = frozenset({"threads.create", "threads.create_and_run"})
#: The reserved thread-metadata key that carries the owner's digest on the Azure object.
STAMP_KEY = "gateway_owner"
_THREAD_ID = re.compile(r"thread_[A-Za-z0-9]{1,64}")
#: How much of a streamed create-and-run is read, at most, looking for ``thread.created``.
SSE_PEEK_LIMIT = 64 * 1024


def owner_key(thread_id: str) -> str:
    return f"{KEY_PREFIX}{{{thread_id}}}"


def tenant_digest(tenant: str) -> str:
    return hashlib.sha256(tenant.encode("utf-8")).hexdigest()[:32]


def check_owner(owner: str | None, tenant: str, unknown: UnknownPolicy) -> None:
    """Raise the 404 a foreign (or, under ``deny``, unrecorded) thread gets."""
    if owner is None:
        if unknown == "allow":
            return
        raise NotFoundError("No thread found with this id.", code="thread_not_found",
                            param="thread_id")
    if owner != tenant_digest(tenant):
        raise NotFoundError("No thread found with this id.", code="thread_not_found",
                            param="thread_id")


def thread_id_from_json(operation: str, body: bytes) -> str | None:
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    value = obj.get("id") if operation == "threads.create" else obj.get("thread_id")
    return value if isinstance(value, str) and _THREAD_ID.fullmatch(value) else None


def thread_id_from_sse(buffer: bytes) -> tuple[bool, str | None]:
    """Look for the opening ``thread.created`` event in what has arrived so far.

    Returns ``(done, thread_id)``: ``done`` once the answer is known (found, or the first
    complete event was something else), ``(False, None)`` while more bytes are needed.
    """
    text = buffer.replace(b"\r\n", b"\n")
    end = text.find(b"\n\n")
    if end < 0:
        return False, None
    event, data = None, []
    for line in text[:end].split(b"\n"):
        if line.startswith(b"event:"):
            event = line[6:].strip()
        elif line.startswith(b"data:"):
            data.append(line[5:].strip())
    if event != b"thread.created":
        return True, None
    try:
        obj = json.loads(b"\n".join(data))
    except ValueError:
        return True, None
    value = obj.get("id") if isinstance(obj, dict) else None
    return True, value if isinstance(value, str) and _THREAD_ID.fullmatch(value) else None
