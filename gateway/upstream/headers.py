"""Header rewriting between caller, gateway and Azure (pure).

Rules:

* Requests to Azure carry only allow-listed caller headers, plus the gateway's own
  ``api-key``, ``x-ms-client-request-id`` and ``accept-encoding``. Everything else is dropped:
  the caller's ``Authorization``/``api-key``/cookies, hop-by-hop headers, anything the caller
  names in ``Connection``, forwarding headers, method overrides.
* The gateway decides the upstream encoding itself: always ``accept-encoding: identity``,
  never the caller's. It must read what Azure answers (a new thread's id, the owner stamp it
  removes from thread objects); a gzip answer would hide both.
* A header value must be visible ASCII (plus space and tab) to be copied; anything else is
  dropped, so CR/LF/NUL or non-ASCII bytes can never reach Azure.
* Responses keep Azure's useful headers (request ids, retry hints, rate-limit state, poll
  hints, content type/encoding/length) and nothing else: no ``Set-Cookie``, ``Server``, or
  hop-by-hop headers. Azure's own ``x-request-id`` is relayed as ``x-upstream-request-id``; the
  response's ``x-request-id`` is always the gateway's request id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

RawHeaders = Sequence[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)

REQUEST_ALLOW = frozenset(
    {
        b"accept",
        b"content-type",
        b"user-agent",
        b"openai-beta",
        b"x-stainless-lang",
        b"x-stainless-package-version",
        b"x-stainless-os",
        b"x-stainless-arch",
        b"x-stainless-runtime",
        b"x-stainless-runtime-version",
        b"x-stainless-async",
        b"x-stainless-retry-count",
        b"x-stainless-read-timeout",
        b"x-stainless-timeout",
        b"x-stainless-stream-helper",
        b"x-stainless-custom-event-handler",
        b"x-stainless-poll-helper",
        b"x-stainless-custom-poll-interval",
    }
)

RESPONSE_ALLOW = frozenset(
    {
        b"content-type",
        b"content-length",
        b"content-encoding",
        b"cache-control",
        b"apim-request-id",
        b"x-ms-region",
        b"x-ms-client-request-id",
        b"openai-processing-ms",
        b"retry-after",
        b"retry-after-ms",
        b"openai-poll-after-ms",
        b"x-should-retry",
    }
)
RESPONSE_ALLOW_PREFIXES = (b"x-ratelimit-",)

_VISIBLE = re.compile(rb"[\x20-\x7e\t]*")
#: The bytes ``_VISIBLE`` allows (deleted by ``bytes.translate``: what is left is not).
_VISIBLE_BYTES = bytes(range(0x20, 0x7F)) + b"\t"


def _all_visible(values: list[bytes]) -> bool:
    """Every value is visible ASCII (one scan of them all, not a regex call each)."""
    return not b"".join(values).translate(None, _VISIBLE_BYTES)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _named(connection: Iterable[bytes]) -> set[bytes]:
    """The header names ``Connection`` values nominate (hop-by-hop for this connection)."""
    return {t.strip().lower() for value in connection for t in value.split(b",") if t.strip()}


def upstream_request_headers(
    headers: RawHeaders,
    *,
    credential: tuple[bytes, bytes],
    request_id: str,
    has_body: bool,
    content_type: bytes | None = None,
) -> list[tuple[bytes, bytes]]:
    """The exact header list sent to Azure. ``content_type`` replaces the caller's (a
    re-emitted upload carries the gateway's own multipart boundary)."""
    connection: list[bytes] = []
    # The first copy of each allowed name, all values checked at once. When one is not
    # visible, the list is taken again checking each (a later copy of a name whose first is
    # unsafe is then the one copied).
    out, seen = _copied(headers, has_body, content_type, connection=connection)
    if not _all_visible([value for _, value in out]):
        out, seen = _copied(headers, has_body, content_type, check_each=True)
    # One pass: an allowed header the caller's Connection nominates is taken out afterwards
    # (it is there once at most: the first of its name), as if never copied.
    nominated = _named(connection) & seen if connection else None
    if nominated:
        out = [(name, value) for name, value in out if name not in nominated]
        seen -= nominated
    if has_body and b"content-type" not in seen:
        out.append((b"content-type", content_type or b"application/json"))
    # Never the caller's choice: the gateway reads thread ids and owner stamps in Azure's
    # answers (and, without it, the HTTP client could ask for gzip on its own).
    out.append((b"accept-encoding", b"identity"))
    out.append(credential)  # the gateway's own: ``api-key`` or ``authorization: Bearer``
    out.append((b"x-ms-client-request-id", request_id.encode("ascii")))
    return out


def _copied(
    headers: RawHeaders,
    has_body: bool,
    content_type: bytes | None,
    *,
    check_each: bool = False,
    connection: list[bytes] | None = None,
) -> tuple[list[tuple[bytes, bytes]], set[bytes]]:
    """The first copy of each allowed name (``check_each``: of those whose value is visible)
    and the names copied; the ``Connection`` values gathered into ``connection``."""
    out: list[tuple[bytes, bytes]] = []
    seen: set[bytes] = set()
    for raw_name, value in headers:
        name = raw_name.lower()
        if name not in REQUEST_ALLOW:
            if connection is not None and name == b"connection":
                connection.append(value)
            continue
        if name in seen:
            continue
        if name == b"content-type" and (not has_body or content_type is not None):
            continue
        if check_each and not _VISIBLE.fullmatch(value):
            continue
        seen.add(name)
        out.append((name, value))
    return out, seen


def downstream_response_headers(
    headers: Iterable[tuple[bytes, bytes]], *, request_id: str
) -> list[tuple[bytes, bytes]]:
    """The headers relayed from Azure's response to the caller."""
    out: list[tuple[bytes, bytes]] = []
    connection: list[bytes] = []
    for raw_name, value in headers:
        name = raw_name.lower()
        if name in HOP_BY_HOP:
            if name == b"connection":
                connection.append(value)
            continue
        if name == b"x-request-id":
            out.append((b"x-upstream-request-id", value))
        elif name in RESPONSE_ALLOW or name.startswith(RESPONSE_ALLOW_PREFIXES):
            out.append((name, value))
    if not _all_visible([value for _, value in out]):  # (one scan; each only when one is not)
        out = [(name, value) for name, value in out if _VISIBLE.fullmatch(value)]
    if connection:
        # One pass: what the Connection values nominate is taken out afterwards, under the
        # name it was relayed as (Azure's own x-upstream-request-id is never relayed).
        dropped = {
            b"x-upstream-request-id" if name == b"x-request-id" else name
            for name in _named(connection)
            if name != b"x-upstream-request-id"
        }
        out = [(name, value) for name, value in out if name not in dropped]
    out.append((b"x-request-id", request_id.encode("ascii")))
    return out


_ID_NAME_SIZES = (len(b"x-request-id"), len(b"x-ms-client-request-id"))


def request_id_from(headers: RawHeaders) -> str:
    """The caller's first well-formed ``x-request-id``, else its first well-formed
    ``x-ms-client-request-id``, else a new one (``new_request_id``)."""
    client_id = None
    for name, value in headers:
        if len(name) not in _ID_NAME_SIZES:  # (neither: not lowered to be compared)
            continue
        name = name.lower()
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
        elif name == b"x-ms-client-request-id" and client_id is None:
            text = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                client_id = text
    return client_id if client_id is not None else new_request_id()


#: The variant nibble of an RFC 4122 UUID (``10xx``), by the random nibble's low two bits.
_VARIANT = {f"{n:x}": "89ab"[n & 3] for n in range(16)}


def new_request_id() -> str:
    """A random (version 4) UUID in its 36-character form: 122 bits from ``os.urandom``, as
    ``uuid.uuid4`` makes it, without building a ``UUID`` object."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def header_values(headers: RawHeaders, wanted: bytes) -> list[bytes]:
    """The values of the header named ``wanted`` (lower-case), whatever the names' case."""
    size = len(wanted)  # (a name of another length is not lowered to be compared)
    return [v for n, v in headers if len(n) == size and n.lower() == wanted]
