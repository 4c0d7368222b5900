"""Reading a request body from ASGI: framed unambiguously, bounded in size and in time
(adapter, stdlib only).

Framing (RFC 9112 section 6, checklist F1): a body is framed by one ``Content-Length`` or by
``Transfer-Encoding: chunked`` alone. The HTTP parser decodes the chunks; any other coding
in the list (``gzip, chunked``, ``identity, chunked``, two ``Transfer-Encoding`` lines) would
be silently dropped, so the request is refused with 400 and its connection closed, as is
``Transfer-Encoding`` on an HTTP/1.0 request or beside a ``Content-Length``.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.asgi import Receive
from gateway.deadline import Deadline
from gateway.errors import (
    BadRequestError,
    ClientGoneError,
    PayloadTooLargeError,
    RequestTimeoutError,
)
from gateway.upstream.headers import header_values

_OWS = b" \t"


def check_transfer_encoding(headers: Sequence[tuple[bytes, bytes]], http_version: str) -> None:
    """Refuse every ``Transfer-Encoding`` but a single ``chunked`` on HTTP/1.1 without a
    ``Content-Length`` (400, ``Connection: close``)."""
    values = header_values(headers, b"transfer-encoding")
    if not values:
        return
    codings = [c.strip(_OWS).lower() for v in values for c in v.split(b",")]
    if (
        len(values) == 1
        and codings == [b"chunked"]
        and http_version == "1.1"
        and not header_values(headers, b"content-length")
    ):
        return
    raise BadRequestError(
        "Only Transfer-Encoding: chunked is accepted.",
        code="invalid_transfer_encoding",
        headers={"Connection": "close"},
    )


def body_headers(headers: Sequence[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """The ``Content-Length`` and the ``Content-Type`` values, in one pass over the headers."""
    lengths: list[bytes] = []
    types: list[bytes] = []
    for name, value in headers:
        name = name.lower()
        if name == b"content-length":
            lengths.append(value)
        elif name == b"content-type":
            types.append(value)
    return lengths, types


def length_of(values: Sequence[bytes]) -> int | None:
    """The one, plain-digits ``Content-Length`` of these values (None: none); anything else
    is a 400."""
    if not values:
        return None
    if len(values) > 1 or not values[0].isdigit() or len(values[0]) > 18:
        raise BadRequestError("Invalid Content-Length.", code="invalid_content_length")
    return int(values[0])


def content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The one, plain-digits ``Content-Length`` the caller declared (None: none); anything
    else is a 400."""
    return length_of(header_values(headers, b"content-length"))


def within_limit(length: int | None, max_bytes: int) -> int | None:
    """A declared length over ``max_bytes`` is a 413 before any of the body is read."""
    if length is not None and length > max_bytes:
        raise PayloadTooLargeError(f"Request body is larger than {max_bytes} bytes.")
    return length


def declared_length(headers: Sequence[tuple[bytes, bytes]], max_bytes: int) -> int | None:
    return within_limit(content_length(headers), max_bytes)


async def read_body(
    receive: Receive, headers: Sequence[tuple[bytes, bytes]], *, max_bytes: int, timeout_s: float
) -> bytes:
    """The whole body, refusing it (413) as soon as it crosses ``max_bytes``, or 408 when it
    does not arrive within ``timeout_s`` (slow-body clients hold no worker forever)."""
    declared_length(headers, max_bytes)
    return await receive_body(receive, max_bytes=max_bytes, timeout_s=timeout_s)


async def receive_body(receive: Receive, *, max_bytes: int, timeout_s: float) -> bytes:
    """``read_body`` once the declared length has been checked."""
    chunks: list[bytes] = []
    total = 0
    try:
        with Deadline(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGoneError
                chunk = message.get("body", b"")
                total += len(chunk)
                if total > max_bytes:
                    raise PayloadTooLargeError(f"Request body is larger than {max_bytes} bytes.")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise RequestTimeoutError("The request body did not arrive in time.") from None
