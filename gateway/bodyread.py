"""Reading a request body from ASGI: bounded in size and in time (adapter, stdlib only)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.errors import BadRequestError, PayloadTooLargeError, RequestTimeoutError
from gateway.headers import header_values

Receive = object  # typing stand-in; the ASGI receive callable


class ClientGoneError(Exception):
    """The client disconnected before its request body arrived."""


def declared_length(headers: Sequence[tuple[bytes, bytes]], max_bytes: int) -> int | None:
    values = header_values(headers, b"content-length")
    if not values:
        return None
    if len(values) > 1 or not values[0].isdigit() or len(values[0]) > 18:
        raise BadRequestError("Invalid Content-Length.", code="invalid_content_length")
    length = int(values[0])
    if length > max_bytes:
        raise PayloadTooLargeError(f"Request body is larger than {max_bytes} bytes.")
    return length


async def read_body(
    receive: object, headers: Sequence[tuple[bytes, bytes]], *, max_bytes: int, timeout_s: float
) -> bytes:
    """The whole body, refusing it (413) as soon as it crosses ``max_bytes``, or 408 when it
    does not arrive within ``timeout_s`` (slow-body clients hold no worker forever)."""
    declared_length(headers, max_bytes)
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()  # type: ignore[operator]
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
