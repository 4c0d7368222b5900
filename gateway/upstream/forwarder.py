"""The forwarder: the endpoint at the end of the pipeline (pure ASGI, over ``upstream.client``).

It swaps the caller's credential for the gateway's (``headers.upstream_request_headers``:
only allow-listed caller headers, the Azure ``api-key``), sends the validated body to the
target the operation table built, and relays Azure's status, filtered headers and raw bytes
as they arrive — server-sent events included, never buffered.

* The request goes to its backend (``ctx.backend``, chosen by the ownership middleware; None:
  the first): that backend's client and credential. Its answer (status, ``Retry-After``) or
  its absence (a timeout, unreachable) is fed to that backend's breaker (``backends``).
* Azure refusing the gateway's credential (401/403) is never passed on: 502
  ``upstream_auth_failed``, and the key file is re-read at once (it may have been rotated).
* A stream, or a read, stops waiting for Azure's headers when the client goes away first; a
  non-idempotent call that is not streamed is let finish (bounded by the upstream timeouts) so
  Azure's state and the caller's view agree.
* A body of known length is relayed without a disconnect watcher (as one ASGI message when
  all of it came with the headers: never by waiting for the rest); a stream is watched, and
  has a total deadline (``upstream.stream_max_duration_s``) on top of the per-read timeouts.
* A broken upstream body after the response started ends the caller's response without its
  terminating chunk (never a made-up ``[DONE]``), counted as a cut.
* A file upload's body (``ctx.upload``) is sent as the caller sends it, with the gateway's
  multipart ``Content-Type`` and, when the caller declared its length, the exact upstream
  ``Content-Length`` (else chunked); when it stops midway (a refusal, the caller gone, too
  slow) the upstream request is aborted and that refusal is the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable

from gateway.asgi import Receive, Scope, Send
from gateway.context import RequestContext, UploadStream, context_of
from gateway.errors import (
    BadGatewayError,
    ClientGoneError,
    GatewayError,
    GatewayTimeoutError,
    ResponseCut,
)
from gateway.operations.table import OperationMatch
from gateway.policy.jsonbody import dump_json
from gateway.upstream.backends import Backend, Backends
from gateway.upstream.breaker import BreakerPolicy, Failure
from gateway.upstream.client import UpstreamBrokenError, UpstreamClient, UpstreamResponse
from gateway.upstream.credentials import UpstreamCredential
from gateway.upstream.headers import downstream_response_headers, upstream_request_headers

log = logging.getLogger("gateway.proxy")


class Forwarder:
    def __init__(
        self,
        upstream: UpstreamClient,
        *,
        credential: UpstreamCredential,
        stream_max_duration_s: float = 900.0,
        backends: Backends | None = None,
    ) -> None:
        self.upstream = upstream
        self.credential = credential
        self.stream_max_duration_s = stream_max_duration_s
        self.backends = backends or Backends(
            [Backend("default", upstream, credential)], policy=BreakerPolicy()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = context_of(scope)
        match = ctx.match
        assert match is not None  # the operation middleware runs first
        upload = ctx.upload
        payload: bytes | UploadStream | None = upload
        if upload is None:
            payload = dump_json(ctx.body) if ctx.body is not None else None
        backend = self.backends.get(ctx.backend)
        try:
            credential = await backend.credential.header()
        except GatewayError:
            # No usable credential (an expired Entra token): nothing is sent; a probe taken
            # for this request is not spent on it (our refusal is not the backend's answer).
            if ctx.backend_probe:
                ctx.backend_probe = False
                self.backends.release_probe(backend)
            raise
        headers = upstream_request_headers(
            scope["headers"],
            credential=credential,
            request_id=ctx.request_id,
            has_body=payload is not None,
            content_type=upload.content_type if upload is not None else None,
        )
        length = upload.length() if upload is not None else None
        if length is not None:
            headers.append((b"content-length", str(length).encode("ascii")))
        ctx.upstream_started = time.perf_counter()
        response = await self._observed(
            backend, ctx, self._send_upstream(backend, ctx, scope, match, headers, payload, receive)
        )
        try:
            ctx.stages["upstream_ttfb"] = time.perf_counter() - ctx.upstream_started
            if response.status in (401, 403):
                log.error(
                    "Azure refused the gateway's credential (status %d)",
                    response.status,
                    extra={"request_id": ctx.request_id},
                )
                backend.credential.reload()
                raise BadGatewayError(
                    "The upstream service refused the gateway's credentials.",
                    code="upstream_auth_failed",
                )
            out = downstream_response_headers(response.headers, request_id=ctx.request_id)
            for name, value in out:
                if name == b"x-upstream-request-id":
                    ctx.upstream_request_id = value.decode("latin-1")
            if response.is_event_stream:
                ctx.stream = True
                out = [(n, v) for n, v in out if n not in (b"content-length", b"cache-control")]
                out += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            await self._relay(ctx, response, receive, send)
        finally:
            ctx.upstream_finished = time.perf_counter()
            await response.aclose()

    async def _observed(
        self, backend: Backend, ctx: RequestContext, sent: Awaitable[UpstreamResponse]
    ) -> UpstreamResponse:
        """The backend's answer, fed to its breaker (an absent answer too)."""
        probe, ctx.backend_probe = ctx.backend_probe, False  # a list's next page is no probe
        try:
            response = await sent
        except GatewayError as exc:
            # No answer: a timeout, or a connection that failed (the backend's fault); our own
            # limits (the pool) and a caller gone are not.
            failure: Failure | None = None
            if isinstance(exc, GatewayTimeoutError):
                failure = "timeout"
            elif isinstance(exc, BadGatewayError) and exc.code != "upstream_target_mismatch":
                failure = "unreachable"
            if failure is not None:
                self.backends.observe(backend, status=None, failure=failure, probe=probe)
            elif probe:
                self.backends.release_probe(backend)
            raise
        except (ClientGoneError, asyncio.CancelledError):
            if probe:
                self.backends.release_probe(backend)
            raise
        retry_after = response.header(b"retry-after")
        self.backends.observe(
            backend,
            status=response.status,
            retry_after=retry_after.decode("latin-1") if retry_after is not None else None,
            probe=probe,
        )
        return response

    async def _send_upstream(
        self,
        backend: Backend,
        ctx: RequestContext,
        scope: Scope,
        match: OperationMatch,
        headers: list[tuple[bytes, bytes]],
        payload: bytes | UploadStream | None,
        receive: Receive,
    ) -> UpstreamResponse:
        sent = backend.client.send(
            scope["method"],
            match.upstream_path,
            match.upstream_query,
            headers,
            payload,
            stream=ctx.stream,
        )
        if ctx.upload is not None:
            return await _uploaded(ctx.upload, sent)
        if not ctx.stream and match.row.op_class != "read":
            return await sent
        sending = asyncio.ensure_future(sent)
        watching = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait({sending, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
        if sending in done:
            return sending.result()
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, GatewayError):
            await sending
        raise ClientGoneError

    async def _relay(
        self, ctx: RequestContext, response: UpstreamResponse, receive: Receive, send: Send
    ) -> None:
        async def pump() -> None:
            async for chunk in response.iter_raw():
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        if not ctx.stream and response.has_length:
            # A body of known length (Azure's JSON answers): relay it without watching for a
            # disconnect (uvicorn drops writes to a gone client; the body is bounded). When it
            # has all arrived with the headers, it goes as one message (each passes every
            # middleware's send), never waiting for bytes still to come.
            whole = response.arrived()
            if whole is not None:
                await send({"type": "http.response.body", "body": whole, "more_body": False})
                return
            try:
                await pump()
            except (UpstreamBrokenError, ResponseCut) as broken:
                _mark_cut(ctx, broken)
            return
        pumping = asyncio.ensure_future(pump())
        watching = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait(
                {pumping, watching},
                timeout=self.stream_max_duration_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (pumping, watching):
                task.cancel()
            await asyncio.gather(pumping, watching, return_exceptions=True)
        if not done:
            ctx.stream_cut = True
            ctx.reason = "stream_deadline"
            log.warning("stream cut at its deadline", extra={"request_id": ctx.request_id})
            return
        if pumping not in done:
            ctx.client_disconnected = True
            return
        failure = pumping.exception()
        if isinstance(failure, UpstreamBrokenError | ResponseCut):
            _mark_cut(ctx, failure)
        elif isinstance(failure, OSError):  # the server could no longer write to the client
            ctx.client_disconnected = True
        elif failure is not None:
            raise failure


async def _uploaded(upload: UploadStream, sent: Awaitable[UpstreamResponse]) -> UpstreamResponse:
    """Azure's answer to a streamed upload; when the caller's body was refused (or stopped)
    midway, the upstream request was aborted before its end and the refusal is the answer."""
    try:
        response = await sent
    except GatewayError:
        if upload.failure is not None:
            raise upload.failure from None
        raise
    if upload.failure is not None:  # Azure answered before the body ended (an early refusal)
        await response.aclose()
        raise upload.failure
    return response


def _mark_cut(ctx: RequestContext, broken: Exception) -> None:
    """The body ended abnormally after the response started: the caller's response ends
    without its terminating chunk (never a made-up completion), and it is counted."""
    ctx.stream_cut = True
    log.warning("upstream body ended abnormally: %s", broken, extra={"request_id": ctx.request_id})


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
