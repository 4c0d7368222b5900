"""The fake Azure OpenAI Assistants upstream as a Starlette app that records every request.

How a request is handled (one pure ASGI handler mounted at ``/``):
  1. read the whole body and record a ``RecordedRequest`` (before any check: rejected ones too);
  2. a scripted response whose path prefix matches replaces everything below;
  3. the ``api-key`` header (or the optional bearer token) → else 401 in Azure's words;
  4. ``api-version`` present (else 404 "Resource not found") and known (else 400);
  5. route on the raw path's segments and the version's generation → else 404;
  6. store and run simulation under the store lock → a JSON body, an SSE stream of run
     events with ``run_event_delay_s`` between events, or a file's content in 64 KiB body
     chunks (no content-length: chunked). ``files.upload`` parses the raw multipart body.

JSON answers are gzip-compressed (``content-encoding: gzip``) when the request's
``Accept-Encoding`` accepts gzip, as Azure's front end does; event streams never are.

While a response is produced, a watcher waits for ``http.disconnect``. If the client leaves
before the response is complete, the record's ``closed_early`` is set and the handler is
cancelled (a streamed run then finishes server-side, as on Azure). ``finished`` is set when the
final body message has been sent. Cut responses (``cut_after``, ``fail_runs_after_events``)
end without that message, so uvicorn drops the connection in the middle of the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from tests.fakeazure import responses, runs, surface
from tests.fakeazure.files import CONTENT_CHUNK, StoredFile, file_json
from tests.fakeazure.responses import Response, response_json
from tests.fakeazure.shapes import (
    V1_API_VERSIONS,
    V1_PREFIX,
    VERSIONS,
    CutStreamError,
    FakeError,
    Generation,
    Json,
    apim_error,
    invalid,
    match_route,
    match_v1_route,
    parse_body,
    parse_list_query,
    v1_error,
)
from tests.fakeazure.store import (
    Event,
    Run,
    Store,
    message_json,
    run_json,
    step_json,
    thread_json,
)

Headers = tuple[tuple[str, str], ...]
_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API "
    "endpoint for your resource."
)


class RequestOutcome:
    """What became of one request's response; set from the server thread, read by tests."""

    def __init__(self) -> None:
        self.finished = threading.Event()  # the complete response was sent
        self.closed_early = threading.Event()  # the client left before the response completed
        self.ended = threading.Event()  # handling is over, whatever the reason
        self.status: int | None = None
        self.ended_at: float | None = None  # time.monotonic()


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # raw path as received, percent-encoding intact
    query: str  # raw query string
    headers: Headers  # lower-cased names, in order, duplicates kept
    body: bytes
    received_at: float  # time.monotonic() when the request reached the app
    outcome: RequestOutcome = field(default_factory=RequestOutcome, compare=False, repr=False)

    @property
    def closed_early(self) -> threading.Event:
        return self.outcome.closed_early

    @property
    def finished(self) -> threading.Event:
        return self.outcome.finished

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        return next((v for k, v in self.headers if k == name.lower()), None)

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class ScriptedResponse:
    status: int = 200
    headers: Headers = ()
    chunks: tuple[bytes, ...] = ()
    chunk_delay_s: float = 0.0  # pause before every chunk but the first
    cut_after: int | None = None  # drop the connection after this many chunks
    delay_headers_s: float = 0.0


@dataclass
class _Script:
    response: ScriptedResponse
    path_prefix: str | None
    remaining: int


@dataclass(frozen=True)
class _Content:
    file: StoredFile


@dataclass(frozen=True)
class _RunStream:
    run: Run
    prelude: list[Event]


@dataclass(frozen=True)
class _ResponseStream:
    response: Response
    starting_after: int  # sequence number; -1: from the first event
    drain_on_exit: bool  # a foreground response finishes server-side if the client leaves
    obfuscation: bool = True


class _Responder:
    """Writes one response with the headers Azure adds to all of them."""

    def __init__(
        self,
        send: Send,
        outcome: RequestOutcome,
        started: float,
        remaining: int,
        *,
        gzip_json: bool = False,
    ) -> None:
        self._send, self._outcome, self._started = send, outcome, started
        self._gzip_json = gzip_json
        request_id = str(uuid.uuid4())
        self._common: Headers = (
            ("x-request-id", request_id),
            ("apim-request-id", request_id),
            ("x-ms-region", "fake-region"),
            ("x-ratelimit-remaining-requests", str(remaining)),
            ("set-cookie", f"ARRAffinity={uuid.uuid4().hex}; Path=/; HttpOnly"),
        )

    async def start(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        elapsed = str(int((time.monotonic() - self._started) * 1000))
        given = {name.lower() for name, _ in headers}
        extra = [
            (k, v) for k, v in (*self._common, ("openai-processing-ms", elapsed)) if k not in given
        ]
        self._outcome.status = status
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in (*headers, *extra)
                ],
            }
        )

    async def body(self, chunk: bytes, more: bool) -> None:
        await self._send({"type": "http.response.body", "body": chunk, "more_body": more})
        if not more:
            self._outcome.finished.set()

    async def json(self, status: int, obj: Json) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        headers = [("content-type", "application/json")]
        if self._gzip_json:
            data = gzip.compress(data)
            headers.append(("content-encoding", "gzip"))
        await self.start(status, [*headers, ("content-length", str(len(data)))])
        await self.body(data, more=False)

    async def stream(
        self, status: int, headers: Sequence[tuple[str, str]], chunks: AsyncGenerator[bytes, None]
    ) -> None:
        await self.start(status, headers)
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    await self.body(chunk, more=True)
        except CutStreamError:
            return
        await self.body(b"", more=False)


def accepts_gzip(values: Sequence[str]) -> bool:
    """Whether ``Accept-Encoding`` values accept gzip (RFC 9110 12.5.3: ``q=0`` refuses a
    coding; ``*`` stands for codings not named)."""
    weights: dict[str, float] = {}
    for value in values:
        for item in value.split(","):
            coding, _, params = item.strip().partition(";")
            q = params.strip().lower().removeprefix("q=").strip() if params else "1"
            try:
                weights[coding.strip().lower()] = float(q)
            except ValueError:
                continue
    for name in ("gzip", "x-gzip", "*"):
        if name in weights:
            return weights[name] > 0
    return False


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(parts), True
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts), False


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _watching(receive: Receive, outcome: RequestOutcome, work: Awaitable[None]) -> None:
    """Runs ``work``; cancels it and sets ``closed_early`` if the client leaves first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and not outcome.finished.is_set():
            outcome.closed_early.set()
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for pending in (task, watcher):
            pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)


class FakeAzure:
    """A recording, scriptable stand-in for an Azure OpenAI resource's Assistants API."""

    run_event_delay_s: float = 0.02
    #: Cut every run stream (no ``done``, no final chunk) after this many events.
    fail_runs_after_events: int | None = None
    #: Runs end in ``failed`` (``thread.run.failed``, last_error server_error).
    fail_runs: bool = False
    #: Unstreamed runs complete on their own once this old (each retrieve also advances them).
    run_complete_after_s: float = 2.0
    #: v1 API: pause between live events of a streamed response.
    response_event_delay_s: float = 0.02
    #: Background responses not being streamed complete once this old (checked on every v1
    #: request; each retrieve also moves a queued one to ``in_progress``).
    response_complete_after_s: float = 2.0
    #: v1 API: pause before the first SSE frame of a response stream (headers sent first).
    response_first_event_delay_s: float = 0.0
    #: v1 responses end in ``failed`` (``response.failed``, error server_error).
    fail_responses: bool = False
    #: Cut every response stream (no final chunk) after this many events; the response fails.
    fail_responses_after_events: int | None = None

    def __init__(
        self,
        api_key: str,
        *,
        clock: Callable[[], float] = time.time,
        bearer_token: str | None = None,
        bearer: Callable[[str], bool] | None = None,
    ) -> None:
        self.api_key = api_key
        self.bearer_token = bearer_token
        #: Accepts ``Authorization: Bearer <token>`` for each token it says is valid (an Entra
        #: token the fake token endpoint issued and that has not expired), as an alternative
        #: to the api-key; a request carrying an ``api-key`` is judged by the key alone.
        self.bearer = bearer
        self.answer: Callable[[str], str] = runs.default_answer
        self.store = Store(clock)
        self.requests: list[RecordedRequest] = []
        self._scripts: list[_Script] = []
        self._changed = threading.Condition()
        self._remaining = 1000
        self.app = Starlette(routes=[Mount("/", app=self._asgi)])

    def reset(self) -> None:
        """Forgets state, records and scripts, and turns the failure switches back off."""
        with self._changed:
            self.requests.clear()
            self._scripts.clear()
            self._remaining = 1000
        self.store.reset()
        self.fail_runs_after_events = None
        self.fail_runs = False
        self.fail_responses = False
        self.fail_responses_after_events = None

    def script(
        self, response: ScriptedResponse, *, path_prefix: str | None = None, count: int = 1
    ) -> None:
        """The next ``count`` requests whose raw path starts with ``path_prefix`` get
        ``response`` instead of normal handling (before auth); scripts match in FIFO order."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._changed:
            self._scripts.append(_Script(response, path_prefix, count))

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.requests) >= n, timeout)

    def _record(self, record: RecordedRequest) -> int:
        with self._changed:
            self.requests.append(record)
            self._remaining = max(0, self._remaining - 1)
            self._changed.notify_all()
            return self._remaining

    def _take_script(self, path: str) -> ScriptedResponse | None:
        with self._changed:
            for script in self._scripts:
                if script.path_prefix is None or path.startswith(script.path_prefix):
                    script.remaining -= 1
                    if script.remaining == 0:
                        self._scripts.remove(script)
                    return script.response
            return None

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        body, gone = await _read_body(receive)
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        record = RecordedRequest(
            scope["method"],
            raw_path.decode("latin-1"),
            scope["query_string"].decode("latin-1"),
            tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]),
            body,
            started,
        )
        responder = _Responder(
            send,
            record.outcome,
            started,
            self._record(record),
            gzip_json=accepts_gzip(record.header_values("accept-encoding")),
        )
        try:
            if gone:
                record.outcome.closed_early.set()
            else:
                await _watching(receive, record.outcome, self._handle(record, responder))
        finally:
            record.outcome.ended_at = time.monotonic()
            record.outcome.ended.set()

    async def _handle(self, record: RecordedRequest, responder: _Responder) -> None:
        script = self._take_script(record.path)
        if script is not None:
            await self._play(script, responder)
            return
        try:
            result = self._answer(record)
        except FakeError as error:
            await responder.json(error.status, error.body)
            return
        if isinstance(result, _RunStream):
            await self._stream_run(result, responder)
        elif isinstance(result, _ResponseStream):
            await self._stream_response(result, responder)
        elif isinstance(result, _Content):
            await self._stream_content(result, responder)
        else:
            await responder.json(200, result)

    def _authorized(self, record: RecordedRequest) -> bool:
        keys = record.header_values("api-key")
        if keys:
            return len(keys) == 1 and hmac.compare_digest(
                keys[0].encode("latin-1"), self.api_key.encode("latin-1")
            )
        auths = record.header_values("authorization")
        if len(auths) != 1:
            return False
        if self.bearer is not None:
            scheme, _, token = auths[0].partition(" ")
            if scheme == "Bearer" and token and self.bearer(token):
                return True
        return self.bearer_token is not None and hmac.compare_digest(
            auths[0].encode("latin-1"), f"Bearer {self.bearer_token}".encode("latin-1")
        )

    def _answer(self, record: RecordedRequest) -> Json | _RunStream | _ResponseStream | _Content:
        if not self._authorized(record):
            raise apim_error(401, "401", _DENIED)
        query: dict[str, str] = {}
        for key, value in parse_qsl(record.query, keep_blank_values=True):
            query.setdefault(key, value)
        if record.path.startswith(V1_PREFIX):
            try:
                return self._answer_v1(record, query)
            except FakeError as error:
                raise FakeError(error.status, v1_error(error.body)) from None
        if "api-version" not in query:
            raise apim_error(404, "404", "Resource not found")
        gen = VERSIONS.get(query["api-version"])
        if gen is None:
            raise apim_error(400, "BadRequest", "API version not supported")
        route = match_route(record.method, record.path, gen)
        if route is None:
            raise apim_error(404, "404", "Resource not found")
        name, params = route
        if name == "files.upload":
            with self.store.lock:
                stored = self.store.files.upload(record.header("content-type"), record.body)
                return file_json(stored)
        body = parse_body(record.method, record.body)
        with self.store.lock:
            if name == "files.content":
                return _Content(self.store.files.get(params["file_id"]))
            if "." in name:
                return surface.dispatch(
                    self.store, name, gen, params, parse_list_query(query, gen), body
                )
            return self._dispatch(name, gen, params, query, body)

    def _answer_v1(
        self, record: RecordedRequest, query: dict[str, str]
    ) -> Json | _ResponseStream | _Content:
        """The v1 API: ``api-version`` absent (Azure's default, v1), ``v1`` or ``preview``."""
        version = query.get("api-version")
        if version is not None and version not in V1_API_VERSIONS:
            raise apim_error(400, "BadRequest", "API version not supported")
        route = match_v1_route(record.method, record.path)
        if route is None:
            raise apim_error(404, "404", "Resource not found")
        name, params = route
        if name == "files.v1.upload":
            with self.store.lock:
                upload = self.store.files.upload(
                    record.header("content-type"), record.body, v1=True
                )
                return file_json(upload)
        body = parse_body(record.method, record.body)
        with self.store.lock:
            rs = self.store.responses
            rs.catch_up(self.response_complete_after_s)
            if name == "responses.create":
                return self._create_response(body)
            if name == "responses.retrieve":
                r = rs.get(params["response_id"])
                if query.get("stream", "false").lower() == "true":
                    if not r.background:
                        raise invalid(
                            "Only responses created with background=true can be streamed.",
                            "stream",
                            "invalid_request",
                        )
                    r.streaming = True
                    obfuscation = responses.include_obfuscation(
                        query.get("include_obfuscation"), "include_obfuscation"
                    )
                    after = responses.parse_starting_after(query)
                    return _ResponseStream(r, after, False, obfuscation)
                responses.poll(r)
                return response_json(r)
            result = surface.dispatch_v1(
                self.store, name, params, parse_list_query(query, "v2"), body
            )
            return _Content(result) if isinstance(result, StoredFile) else result

    def _create_response(self, body: Json) -> Json | _ResponseStream:
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise invalid(
                "Invalid type for 'stream': expected a boolean.", "stream", "invalid_type"
            )
        options = body.get("stream_options")
        if options is not None and (
            not isinstance(options, dict) or set(options) - {"include_obfuscation"}
        ):
            raise invalid("Invalid 'stream_options'.", "stream_options", "invalid_value")
        obfuscation = responses.include_obfuscation(
            (options or {}).get("include_obfuscation"), "stream_options.include_obfuscation"
        )
        r = self.store.responses.create(body, self.answer, self.fail_responses)
        if stream:
            r.streaming = True
            return _ResponseStream(r, -1, not r.background, obfuscation)
        if not r.background:
            responses.drain(r)
        return response_json(r)

    def _dispatch(
        self, name: str, gen: Generation, p: dict[str, str], q: dict[str, str], body: Json
    ) -> Json | _RunStream:
        s, tid = self.store, p.get("thread_id", "")
        opts = runs.RunOptions(self.answer, self.fail_runs)
        if tid:
            runs.catch_up(s, tid, self.run_complete_after_s)
        match name:
            case "create_thread":
                return thread_json(s.create_thread(body, gen), gen)
            case "get_thread":
                return thread_json(s.thread(tid), gen)
            case "modify_thread":
                return thread_json(s.modify_thread(tid, body, gen), gen)
            case "delete_thread":
                return s.delete_thread(tid)
            case "create_message":
                return message_json(s.create_message(tid, body, gen), gen)
            case "list_messages":
                return s.list_messages(tid, parse_list_query(q, gen), gen)
            case "get_message":
                return message_json(s.message(tid, p["message_id"]), gen)
            case "modify_message":
                return message_json(s.modify_message(tid, p["message_id"], body), gen)
            case "delete_message":
                return s.delete_message(tid, p["message_id"])
            case "list_message_files":
                return s.list_message_files(tid, p["message_id"], parse_list_query(q, gen))
            case "get_message_file":
                return s.message_file(tid, p["message_id"], p["file_id"])
            case "create_thread_and_run":
                thread, run, stream = runs.create_thread_and_run(s, body, gen, opts)
                return _streamed(run, [("thread.created", thread_json(thread, gen))], stream)
            case "create_run":
                run, stream = runs.create_run(s, tid, body, opts, gen)
                return _streamed(run, [], stream)
            case "list_runs":
                return s.list_runs(tid, parse_list_query(q, gen))
            case "get_run":
                run = s.run(tid, p["run_id"])
                runs.poll(s, run)
                return run_json(run)
            case "modify_run":
                return run_json(s.modify_run(tid, p["run_id"], body))
            case "submit_tool_outputs":
                run = s.run(tid, p["run_id"])
                return _streamed(run, [], runs.submit_tool_outputs(s, run, body, opts))
            case "cancel_run":
                run = s.run(tid, p["run_id"])
                runs.cancel(s, run)
                return run_json(run)
            case "list_steps":
                return s.list_steps(tid, p["run_id"], parse_list_query(q, gen))
            case "get_step":
                return step_json(s.step(tid, p["run_id"], p["step_id"]))
        raise AssertionError(f"unrouted operation {name}")

    async def _stream_run(self, plan: _RunStream, responder: _Responder) -> None:
        store, run = self.store, plan.run
        frames = runs.stream_frames(
            store, run, plan.prelude, self.run_event_delay_s, self.fail_runs_after_events
        )
        try:
            await responder.stream(
                200, [("content-type", "text/event-stream"), ("cache-control", "no-cache")], frames
            )
        finally:
            with store.lock:
                if run.streaming:  # the client left before the first frame was asked for
                    run.streaming = False
                    runs.drain(store, run)

    async def _stream_response(self, plan: _ResponseStream, responder: _Responder) -> None:
        store, r = self.store, plan.response
        frames = responses.stream_frames(
            store.lock,
            r,
            responses.StreamPlan(
                plan.starting_after,
                self.response_event_delay_s,
                self.response_first_event_delay_s,
                self.fail_responses_after_events,
                plan.drain_on_exit,
                plan.obfuscation,
            ),
            store.responses.fail,
        )
        try:
            await responder.stream(
                200, [("content-type", "text/event-stream"), ("cache-control", "no-cache")], frames
            )
        finally:
            with store.lock:
                if r.streaming:  # the client left before the first frame was asked for
                    r.streaming = False
                    if plan.drain_on_exit:
                        responses.drain(r)

    async def _stream_content(self, content: _Content, responder: _Responder) -> None:
        data = content.file.content

        async def chunks() -> AsyncGenerator[bytes, None]:
            for start in range(0, len(data), CONTENT_CHUNK):
                yield data[start : start + CONTENT_CHUNK]
                await asyncio.sleep(0)

        # The authoring document's files content operation produces application/octet-stream.
        headers = [("content-type", "application/octet-stream")]
        await responder.stream(200, headers, chunks())

    async def _play(self, script: ScriptedResponse, responder: _Responder) -> None:
        if script.delay_headers_s:
            await asyncio.sleep(script.delay_headers_s)
        headers = list(script.headers)
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.insert(0, ("content-type", "application/json"))

        async def chunks() -> AsyncGenerator[bytes, None]:
            for i, chunk in enumerate(script.chunks):
                if script.cut_after is not None and i >= script.cut_after:
                    raise CutStreamError
                if i and script.chunk_delay_s:
                    await asyncio.sleep(script.chunk_delay_s)
                yield chunk
            if script.cut_after is not None:
                raise CutStreamError

        await responder.stream(script.status, headers, chunks())


def _streamed(run: Run, prelude: list[Event], stream: bool) -> Json | _RunStream:
    if not stream:
        return run_json(run)
    run.streaming = True  # caller holds the store lock; polls and catch-up leave it alone now
    return _RunStream(run, prelude)
