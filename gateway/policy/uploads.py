"""A file upload's body, streamed from the caller to Azure (adapter: ASGI ``receive``, asyncio).

The policy stage never reads an upload whole. It checks the framing (one ``Content-Type``; a
``Content-Length`` no larger than the profile's ``max_file_bytes`` plus the multipart framing,
else 413 ``file_too_large`` before a byte is read), then reads only the body's *head* — up to
and including the file part's headers, a few KiB at most — through the pure rewriter
(``multipart.MultipartRewriter``): a wrong purpose, filename or structure, or a declared
length that leaves more than ``max_file_bytes`` for the file, is refused there, with nothing
sent upstream. The rest is read as the forwarder sends it (``UploadBody``): each
chunk the caller sends is checked and passed on, so memory holds one chunk, not the file.

A refusal found later (the file over the limit in a chunked body, junk after the close
delimiter, the caller gone, the body too slow) raises out of the body iterator: the HTTP
client aborts the upstream request before its last byte (the close delimiter is only sent
once everything has been checked), so Azure discards it, and the error is kept in
``UploadBody.failure`` for the forwarder to answer with (the caller's body being unread, the
answer closes the connection).

Timeouts: each wait for the caller's next chunk is bounded by ``idle_timeout_s`` (the server's
``body_timeout_s``), the whole body by ``total_timeout_s`` (``upload_timeout_s``): 408.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence

from gateway.asgi import Receive
from gateway.errors import (
    BadRequestError,
    ClientGoneError,
    GatewayError,
    PayloadTooLargeError,
    RequestTimeoutError,
)
from gateway.policy.bodyread import content_length
from gateway.policy.limits import PolicyLimits
from gateway.policy.multipart import FILE_TOO_LARGE, INVALID_MULTIPART, MultipartRewriter
from gateway.upstream.headers import header_values

#: Bytes of multipart framing a body may hold beyond its file (part headers, purpose,
#: delimiters): the parser's own bounds keep the real framing well under it.
MAX_FRAMING_BYTES = 8 * 1024


def _too_large(limits: PolicyLimits) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The file is larger than {limits.max_file_bytes} bytes.",
        code=FILE_TOO_LARGE,
        param="file",
        headers={"Connection": "close"},
    )


def _declared(headers: Sequence[tuple[bytes, bytes]], limits: PolicyLimits) -> int | None:
    length = content_length(headers)
    if length is not None and length > limits.max_file_bytes + MAX_FRAMING_BYTES:
        raise _too_large(limits)
    return length


class UploadBody:
    """The rest of an upload's body, checked and re-emitted as the forwarder pulls it."""

    def __init__(
        self,
        rewriter: MultipartRewriter,
        receive: Receive,
        *,
        declared: int | None,
        ended: bool,
        idle_timeout_s: float,
        deadline: float,
    ) -> None:
        self.rewriter = rewriter
        self._receive = receive
        self.declared = declared
        self.ended = ended
        self.idle_timeout_s = idle_timeout_s
        self.deadline = deadline
        #: Why the body stopped before its end (the forwarder answers with it).
        self.failure: Exception | None = None
        self._iterated = False

    @property
    def content_type(self) -> bytes:
        return b"multipart/form-data; boundary=" + self.rewriter.boundary

    def length(self) -> int | None:
        """The exact upstream length when the caller declared one (reads the owner stamp)."""
        if self.declared is None:
            return None
        return self.rewriter.output_length(self.declared)

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._iterated:
            raise RuntimeError("an upload body can be sent once")
        self._iterated = True
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            out = self.rewriter.release()
            if out:
                yield out
            while not self.ended:
                chunk, self.ended = await self.next_chunk()
                out = self.rewriter.feed(chunk)
                if self.ended:
                    out += self.rewriter.finish()
                if out:
                    yield out
        except (GatewayError, ClientGoneError) as exc:
            if isinstance(exc, GatewayError):
                exc.headers.setdefault("Connection", "close")
            self.failure = exc
            raise

    async def next_chunk(self) -> tuple[bytes, bool]:
        left = self.deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, min(self.idle_timeout_s, left))):
                message = await self._receive()
        except TimeoutError:
            raise RequestTimeoutError(
                "The upload did not arrive in time.", headers={"Connection": "close"}
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        return message.get("body", b""), not message.get("more_body", False)


async def read_upload_head(
    receive: Receive,
    headers: Sequence[tuple[bytes, bytes]],
    limits: PolicyLimits,
    *,
    idle_timeout_s: float,
    total_timeout_s: float,
    owner: Callable[[], str | None],
) -> UploadBody:
    """Check an upload's framing and read its head (purpose, the file part's headers); the
    rest is left to the returned ``UploadBody``. Refusals here happen before anything is sent
    upstream. ``owner`` is read when the file part's header is first sent (the ownership stage
    has run by then)."""
    content_type = header_values(headers, b"content-type")
    if len(content_type) != 1:
        raise BadRequestError(
            "A file upload needs one multipart/form-data Content-Type.", code=INVALID_MULTIPART
        )
    declared = _declared(headers, limits)
    rewriter = MultipartRewriter(
        content_type[0].decode("latin-1"),
        boundary=b"gateway-" + secrets.token_hex(16).encode("ascii"),
        purposes=limits.file_purposes,
        max_file_bytes=limits.max_file_bytes,
        owner=owner,
        hold=True,
    )
    body = UploadBody(
        rewriter,
        receive,
        declared=declared,
        ended=False,
        idle_timeout_s=idle_timeout_s,
        deadline=time.monotonic() + total_timeout_s,
    )
    try:
        while not rewriter.head_done and not body.ended:
            chunk, body.ended = await body.next_chunk()
            rewriter.feed(chunk)
        if body.ended:
            rewriter.finish()
        elif declared is not None and rewriter.least_file_bytes(declared) > limits.max_file_bytes:
            raise _too_large(limits)
    except GatewayError as exc:
        if not body.ended:  # the rest of the caller's body is unread
            exc.headers.setdefault("Connection", "close")
        raise
    return body
