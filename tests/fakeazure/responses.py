"""Responses of the v1 API (``/openai/v1/responses...``): create, retrieve (JSON, or a streamed
replay), delete, cancel, input items; how a response proceeds, as its stream events.

Rules of this module:
- A response's future is a generator on ``Response.pending``; each ``next_event`` takes one
  step under ``Store.lock`` and appends the event it produced (with its ``sequence_number``,
  0, 1, ...) to ``Response.events``. The same log serves the create stream, the streamed
  retrieval (``starting_after``) and polling: a response that is not being streamed completes
  when it is ``complete_after_s`` old (``catch_up``); each retrieve moves a queued one to
  ``in_progress``.
- The event sequence is the documented one for a text answer: ``response.created``
  (``queued`` for ``background``), ``response.in_progress``, ``response.output_item.added``,
  ``response.content_part.added``, ``response.output_text.delta`` (several),
  ``response.output_text.done``, ``response.content_part.done``,
  ``response.output_item.done``, ``response.completed`` (``response.failed`` when the fake is
  told to fail). Every ``response.*`` lifecycle event carries the whole response.
- ``conversation``: the input items are appended to it on create, the output items when the
  response completes. ``previous_response_id`` must name a stored response. ``store: false``
  responses are answered but never kept (retrieve: 404). ``background`` requires ``store``.
  Only background responses can be cancelled or streamed again (the OpenAI reference's rules;
  Azure's GA document has neither operation, its preview document has cancel).
- Metadata is stored and answered exactly as sent (the gateway's ``gateway_owner``).
No I/O; ``stream_frames`` is the one coroutine (sleeps between live events).
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
from collections.abc import AsyncGenerator, Callable, Container, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fakeazure.conversations import Conversations
from tests.fakeazure.files import Files
from tests.fakeazure.items import (
    check_file_refs,
    item_id,
    last_user_text,
    output_text,
    parse_items,
)
from tests.fakeazure.shapes import (
    CutStreamError,
    Json,
    ListQuery,
    check_metadata,
    invalid,
    list_json,
    paginate,
    reject_unknown,
    v1_not_found,
)

#: Top-level fields of a create request (AzureCreateResponse / the SDK's create params).
CREATE_FIELDS = frozenset(
    {
        "background",
        "conversation",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "model",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    }
)
TERMINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})
#: Echoed on the response when the request does not set them (the service's defaults).
_DEFAULTS: Json = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "parallel_tool_calls": True,
    "prompt_cache_key": None,
    "reasoning": None,
    "safety_identifier": None,
    "service_tier": "default",
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}


def split_text(text: str, parts: int = 4) -> list[str]:
    """``text`` in up to ``parts`` pieces cut at spaces; the pieces join back to ``text``."""
    words = text.split(" ")
    tokens = [w + " " for w in words[:-1]] + [words[-1]]
    size = -(-len(tokens) // max(1, min(parts, len(tokens))))
    return ["".join(tokens[i : i + size]) for i in range(0, len(tokens), size)]


@dataclass(eq=False)
class Response:
    id: str
    created_at: int
    seq: int
    clock_at: float
    params: Json  # the echoed request fields (model, instructions, tools, ...)
    metadata: dict[str, str]
    store: bool
    background: bool
    conversation_id: str | None
    previous_response_id: str | None
    input_items: list[Json]
    answer: str
    status: str = "queued"
    output: list[Json] = field(default_factory=list)
    completed_at: int | None = None
    error: Json | None = None
    usage: Json | None = None
    events: list[Json] = field(default_factory=list)
    pending: Iterator[Json] | None = None
    streaming: bool = False


def response_json(r: Response) -> Json:
    out: Json = {
        "id": r.id,
        "object": "response",
        "created_at": r.created_at,
        "status": r.status,
        "background": r.background,
        "completed_at": r.completed_at,
        "conversation": {"id": r.conversation_id} if r.conversation_id else None,
        "error": copy.deepcopy(r.error),
        "incomplete_details": None,
        "metadata": dict(r.metadata),
        "model": r.params["model"],
        "output": copy.deepcopy(r.output),
        "previous_response_id": r.previous_response_id,
        "store": r.store,
    }
    if r.usage is not None:  # the document's ``usage`` is an object, not nullable: omitted
        out["usage"] = copy.deepcopy(r.usage)
    for key, default in _DEFAULTS.items():
        out[key] = copy.deepcopy(r.params.get(key, default))
    return out


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


class Responses:
    """The stored responses of one fake resource (``store: false`` ones are never here)."""

    def __init__(
        self,
        now: Callable[[], int],
        clock: Callable[[], float],
        next_seq: Callable[[], int],
        files: Files,
        conversations: Conversations,
        vector_stores: Container[str],
    ) -> None:
        self._now, self._clock, self._next_seq = now, clock, next_seq
        self._files, self._conversations = files, conversations
        self._vector_stores = vector_stores
        self.items: dict[str, Response] = {}

    def get(self, response_id: str) -> Response:
        if response_id not in self.items:
            raise v1_not_found("Response", response_id)
        return self.items[response_id]

    def create(self, body: Json, answer: Callable[[str], str], fail: bool) -> Response:
        reject_unknown(body, CREATE_FIELDS)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise invalid(
                "Missing required parameter: 'model'.", "model", "missing_required_parameter"
            )
        store = body.get("store", True) is not False
        background = body.get("background") is True
        if background and not store:
            raise invalid(
                "Background mode requires 'store' to be true.", "background", "invalid_value"
            )
        # The service's rules, which the document does not state: background needs store,
        # and max_output_tokens is at least 16.
        tokens = body.get("max_output_tokens")
        if tokens is not None and (not isinstance(tokens, int) or tokens < 16):
            raise invalid(
                "Invalid 'max_output_tokens': integer below minimum value. Expected a value "
                "greater than or equal to 16.",
                "max_output_tokens",
                "integer_below_min_value",
            )
        tools = body.get("tools", [])
        if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("type"), str) for t in tools
        ):
            raise invalid("Invalid 'tools': expected an array of tool objects.", "tools")
        check_create_fields(body)
        for i, tool in enumerate(tools):
            if tool["type"] != "file_search":
                continue
            ids = tool.get("vector_store_ids")
            if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
                where = f"tools[{i}].vector_store_ids"
                raise invalid(f"Invalid '{where}': expected an array of ids.", where)
            for j, vs_id in enumerate(ids):
                if vs_id not in self._vector_stores:
                    where = f"tools[{i}].vector_store_ids[{j}]"
                    raise v1_not_found("Vector store", vs_id, where)
        conv_id = _conversation_id(body.get("conversation"))
        previous = body.get("previous_response_id")
        if conv_id is not None and previous is not None:
            raise invalid(
                "Mutually exclusive parameters: Ensure you are only providing one of: "
                "'previous_response_id' or 'conversation'.",
                None,
                "mutually_exclusive_parameters",
            )
        if previous is not None and (not isinstance(previous, str) or previous not in self.items):
            raise invalid(
                f"Previous response with id '{previous}' not found.",
                "previous_response_id",
                "previous_response_not_found",
            )
        conv = self._conversations.get(conv_id, "conversation") if conv_id else None
        raw = body.get("input")
        inputs = [] if raw is None else parse_items(raw, "input")
        check_file_refs(self._files.items, inputs, "input")
        history: list[Json] = []
        if conv is not None:
            history = [item for _, item in conv.items]
        elif isinstance(previous, str):
            history = self.context(self.items[previous])
        prompt = last_user_text(history + inputs)
        r = Response(
            "resp_" + secrets.token_hex(24),
            self._now(),
            self._next_seq(),
            self._clock(),
            {k: copy.deepcopy(body[k]) for k in _DEFAULTS.keys() | {"model"} if k in body},
            check_metadata(body.get("metadata")),
            store,
            background,
            conv.id if conv else None,
            previous if isinstance(previous, str) else None,
            inputs,
            answer(prompt),
        )
        r.status = "queued" if background else "in_progress"
        r.pending = self._lifecycle(r, fail)
        if store:
            self.items[r.id] = r
        if conv is not None:
            self._conversations.append(conv, inputs)
        next_event(r)  # response.created
        return r

    def context(self, r: Response) -> list[Json]:
        """The items a response saw and made, its previous responses' first."""
        earlier = self.items.get(r.previous_response_id or "")
        return (self.context(earlier) if earlier else []) + r.input_items + r.output

    def _lifecycle(self, r: Response, fail: bool) -> Iterator[Json]:
        r.status = "in_progress"  # a background response leaves ``queued`` here
        yield {"type": "response.in_progress", "response": response_json(r)}
        msg: Json = {
            "id": item_id("message"),
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        r.output.append(msg)
        where = {"output_index": len(r.output) - 1}
        yield {"type": "response.output_item.added", **where, "item": copy.deepcopy(msg)}
        if fail:
            yield from self._end(r, "failed")
            return
        part = output_text("")
        msg["content"].append(part)
        at = {"item_id": msg["id"], **where, "content_index": 0}
        yield {"type": "response.content_part.added", **at, "part": copy.deepcopy(part)}
        for piece in split_text(r.answer):
            part["text"] += piece
            # ``obfuscation`` (random characters evening out payload sizes) is required by
            # the document's ResponseTextDeltaEvent; the service sends it by default.
            noise = secrets.token_urlsafe(8)[: max(1, 16 - len(piece) % 16)]
            yield {
                "type": "response.output_text.delta",
                **at,
                "delta": piece,
                "logprobs": [],
                "obfuscation": noise,
            }
        yield {"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []}
        yield {"type": "response.content_part.done", **at, "part": copy.deepcopy(part)}
        msg["status"] = "completed"
        yield {"type": "response.output_item.done", **where, "item": copy.deepcopy(msg)}
        yield from self._end(r, "completed")

    def _end(self, r: Response, status: str) -> Iterator[Json]:
        r.status = status
        if status == "completed":
            r.completed_at = self._now()
            prompt = " ".join(json.dumps(i) for i in r.input_items)
            used_in, used_out = _tokens(prompt), _tokens(r.answer)
            r.usage = {
                "input_tokens": used_in,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": used_out,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": used_in + used_out,
            }
            conv = self._conversations.items.get(r.conversation_id or "")
            if conv is not None:
                self._conversations.append(conv, r.output)
        else:
            r.error = {"code": "server_error", "message": "The model produced an error."}
            for item in r.output:
                item["status"] = "incomplete"
        yield {"type": f"response.{status}", "response": response_json(r)}

    def fail(self, r: Response) -> None:
        """Ends ``r`` now in ``failed`` (a stream cut in the middle)."""
        if r.pending is not None and r.status not in TERMINAL:
            r.pending = self._end(r, "failed")
            drain(r)

    def delete(self, response_id: str) -> Json:
        self.get(response_id)
        del self.items[response_id]
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    def cancel(self, response_id: str) -> Response:
        r = self.get(response_id)
        if not r.background:
            raise invalid(
                "Only responses created with background=true can be cancelled.",
                None,
                "invalid_request",
            )
        if r.status in TERMINAL and r.status != "cancelled":
            raise invalid(f"Cannot cancel a response that is {r.status}.", None, "invalid_request")
        if r.status != "cancelled":
            r.status = "cancelled"
            r.pending = None
            for item in r.output:
                item["status"] = "incomplete"
        return r

    def input_items(self, response_id: str, q: ListQuery) -> Json:
        r = self.get(response_id)
        indexed = list(enumerate(r.input_items))
        page, more = paginate(indexed, q, lambda e: (e[0], 0), lambda e: str(e[1].get("id")))
        return list_json([copy.deepcopy(item) for _, item in page], more)

    def catch_up(self, complete_after_s: float) -> None:
        """Finishes every response not being streamed that is ``complete_after_s`` old."""
        now = self._clock()
        for r in list(self.items.values()):
            if r.pending is not None and not r.streaming and now - r.clock_at >= complete_after_s:
                drain(r)


#: Ranges and types of AzureCreateResponse's scalar fields: (field, types, low, high).
_NUMBERS: tuple[tuple[str, tuple[type, ...], float, float], ...] = (
    ("temperature", (int, float), 0, 2),
    ("top_p", (int, float), 0, 1),
    ("top_logprobs", (int,), 0, 20),
)
_FLAGS = ("background", "store", "stream", "parallel_tool_calls")
INCLUDABLE = frozenset(
    {
        "code_interpreter_call.outputs",
        "computer_call_output.output.image_url",
        "file_search_call.results",
        "message.input_image.image_url",
        "message.output_text.logprobs",
        "reasoning.encrypted_content",
    }
)


def check_create_fields(body: Json) -> None:
    """The create request's scalar fields as AzureCreateResponse types and bounds them
    (``null`` allowed where the document says nullable)."""
    for name, types, low, high in _NUMBERS:
        value = body.get(name)
        if name not in body or (value is None and name != "top_logprobs"):  # not nullable
            continue
        number = value if isinstance(value, types) and not isinstance(value, bool) else None
        if not isinstance(number, (int, float)) or not low <= number <= high:
            raise invalid(
                f"Invalid '{name}': expected a number between {low} and {high}.",
                name,
                "invalid_value",
            )
    for name in _FLAGS:
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise invalid(f"Invalid type for '{name}': expected a boolean.", name, "invalid_type")
    for name in ("instructions", "previous_response_id", "user"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise invalid(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
    if body.get("truncation") not in (None, "auto", "disabled"):
        raise invalid("Invalid 'truncation': 'auto' or 'disabled'.", "truncation", "invalid_value")
    include = body.get("include")
    if include is not None and (
        not isinstance(include, list) or not all(i in INCLUDABLE for i in include)
    ):
        raise invalid("Invalid 'include'.", "include", "invalid_value")
    choice = body.get("tool_choice")
    named = isinstance(choice, dict) and isinstance(choice.get("type"), str)
    if choice not in (None, "none", "auto", "required") and not named:
        raise invalid("Invalid 'tool_choice'.", "tool_choice", "invalid_value")


def _conversation_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str) and set(value) == {"id"}:
        return str(value["id"])
    raise invalid(
        "Invalid 'conversation': expected a conversation id or an object with an 'id'.",
        "conversation",
        "invalid_type",
    )


def next_event(r: Response) -> Json | None:
    """One step of ``r`` (caller holds the store lock): the event it produced, logged."""
    if r.pending is None:
        return None
    if not r.events:
        event: Json | None = {"type": "response.created", "response": response_json(r)}
    else:
        event = next(r.pending, None)
    if event is None:
        r.pending = None
        return None
    event["sequence_number"] = len(r.events)
    r.events.append(event)
    return event


def drain(r: Response) -> None:
    while next_event(r) is not None:
        pass


def poll(r: Response) -> None:
    """A retrieve of a queued response not being streamed moves it to ``in_progress``."""
    if r.status == "queued" and not r.streaming:
        next_event(r)


def sse_frame(event: Json, obfuscation: bool = True) -> bytes:
    """One SSE frame; without ``obfuscation`` (``include_obfuscation: false``) the deltas'
    ``obfuscation`` field is left out, as the service does."""
    data = event if obfuscation else {k: v for k, v in event.items() if k != "obfuscation"}
    return f"event: {event['type']}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass(frozen=True)
class StreamPlan:
    """How one SSE answer of a response is sent (the app's knobs, per request)."""

    starting_after: int = -1  # a sequence number; -1: from the first event
    delay_s: float = 0.02  # between live events
    first_delay_s: float = 0.0  # before the first frame (headers already sent)
    cut_after: int | None = None  # drop the connection after this many frames; r fails
    drain_on_exit: bool = True  # a foreground response finishes if the client leaves
    obfuscation: bool = True


def include_obfuscation(value: Any, param: str) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid(f"Invalid type for '{param}': expected a boolean.", param, "invalid_type")


def parse_starting_after(query: dict[str, str]) -> int:
    raw = query.get("starting_after", "-1")
    try:
        return int(raw)
    except ValueError:
        raise invalid(
            "Invalid 'starting_after': expected an integer.", "starting_after", "invalid_type"
        ) from None


async def stream_frames(
    lock: Any, r: Response, plan: StreamPlan, fail: Callable[[Response], None]
) -> AsyncGenerator[bytes, None]:
    """The SSE frames of ``r`` after sequence number ``plan.starting_after``: those already
    logged at once, then each new step ``plan.delay_s`` apart until the response ends. After
    ``plan.cut_after`` frames it raises ``CutStreamError`` and ``fail`` ends the response. If
    the consumer leaves early, the response goes on server-side (``drain_on_exit``: finish it
    now; else ``catch_up`` finishes it later)."""
    index, sent = max(0, plan.starting_after + 1), 0
    try:
        if plan.first_delay_s:
            await asyncio.sleep(plan.first_delay_s)
        while True:
            with lock:
                live = index >= len(r.events)
            if live and sent:
                await asyncio.sleep(plan.delay_s)
            with lock:
                event = r.events[index] if index < len(r.events) else next_event(r)
            if event is None:
                return
            if plan.cut_after is not None and sent >= plan.cut_after:
                with lock:
                    fail(r)
                raise CutStreamError
            yield sse_frame(event, plan.obfuscation)
            index, sent = index + 1, sent + 1
    finally:
        with lock:
            r.streaming = False
            if plan.drain_on_exit:
                drain(r)
