"""One record per operation: everything the pipeline needs to know about it (pure data).

An :class:`Operation` row says how the operation is addressed (method, path template,
api-version generations, query parameters), how it is limited (``op_class``), what its body
may hold (``body``: the policy checker, or None for an operation without a body), whether it
may stream, and what it does to owned objects:

* ``owner``: the path parameter naming the owned object the request acts on (derived from
  the template: the first placeholder of an ownable :class:`Kind`; messages, runs and steps
  are reached through their thread, so ``thread_id`` is their owner);
* ``creates``: the kind it creates, where the new id is in the answer (a JSON field, or the
  ``data.id`` of a named server-sent event), and where the owner stamp goes in the body;
  ``creates.inline``: objects of another kind it makes along the way (vector stores
  described in ``tool_resources``), each stamped too;
* ``restamp_at``: a body field that replaces the object's metadata (the stamp is put back);
* ``returns``: its JSON answer is an object of that kind (the stamp is taken off);
* ``deletes``: a success removes the path's owned object;
* ``refs``: body fields that name owned objects (each must be the caller's tenant's);
* ``lists``: its answer is a list of owned objects of that kind (only the caller's tenant's
  are shown, the pagination kept right);
* ``upload``: the body is a streamed file upload (multipart), not JSON.

Every middleware reads the row; none compares operation names (``tests/test_operations``
holds that). Adding an operation is adding a row (and a body checker when it has a body).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.operations.apiversions import ApiVersion, Generation

OpClass = Literal["read", "write"]
#: ``(body, version, profile limits) -> the body to forward`` (a 400 ``BadRequestError`` on
#: refusal); the limits' type belongs to the policy package.
BodyCheck = Callable[[dict[str, Any], ApiVersion, Any], dict[str, Any]]

ID_PATTERNS: dict[str, re.Pattern[str]] = {
    "thread_id": re.compile(r"thread_[A-Za-z0-9]{1,64}"),
    "message_id": re.compile(r"msg_[A-Za-z0-9]{1,64}"),
    "run_id": re.compile(r"run_[A-Za-z0-9]{1,64}"),
    "step_id": re.compile(r"step_[A-Za-z0-9]{1,64}"),
    "file_id": re.compile(r"(?:file|assistant)-[A-Za-z0-9_-]{1,64}"),
    "assistant_id": re.compile(r"asst_[A-Za-z0-9]{1,64}"),
    "vector_store_id": re.compile(r"vs_[A-Za-z0-9]{1,64}"),
    "batch_id": re.compile(r"vsfb_[A-Za-z0-9]{1,64}"),
    # The v1 API (``/openai/v1/``): OpenAI's ids are ``resp_``/``conv_`` and 48 hex digits,
    # Azure's may be longer (up to 128 allowed). An item id is any documented item prefix
    # (``msg_``, ``fc_``, ``rs_``, ``fs_``, ``ws_``, ``ci_``, ``ig_``, ``mcp_``, ``mcpl_``,
    # ``mcpr_``, ``cu_``, ``lsh_`` ...): lower-case letters, ``_``, then the id.
    "response_id": re.compile(r"resp_[A-Za-z0-9]{1,128}"),
    "conversation_id": re.compile(r"conv_[A-Za-z0-9]{1,128}"),
    "item_id": re.compile(r"[a-z]{2,8}_[A-Za-z0-9]{1,128}"),
}

INCLUDE_VALUES = frozenset({"step_details.tool_calls[*].file_search.results[*].content"})
#: ``include[]`` of the v1 API (``OpenAI.IncludeEnum``; the SDK's ``ResponseIncludable``).
RESPONSE_INCLUDE_VALUES = frozenset(
    {
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
    }
)
_LIMIT = re.compile(r"[1-9][0-9]{0,4}")
_SEQUENCE = re.compile(r"0|[1-9][0-9]{0,9}")


#: Where an object carries its owner stamp: a reserved key of its ``metadata`` map, or (for
#: objects without metadata: files) a reserved prefix of its ``filename``.
StampPlace = Literal["metadata", "filename"]


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of object the gateway keeps tenants apart on."""

    name: str
    #: The path parameter that names it.
    param: str
    #: The row the gateway itself uses to read the object's owner stamp at Azure.
    lookup: str
    #: The error code a foreign (or unknown, under ``deny``) object answers with (404).
    not_found_code: str
    stamp: StampPlace = "metadata"

    @property
    def pattern(self) -> re.Pattern[str]:
        return ID_PATTERNS[self.param]

    @property
    def events(self) -> EventShape | None:
        """How its objects travel in server-sent events (``EVENT_SHAPES``), if they do."""
        return EVENT_SHAPES.get(self.param)

    @property
    def max_object_bytes(self) -> int:
        """The largest JSON of one object the gateway reads whole (an answer it takes the
        stamp off, an owner lookup at Azure): a streaming kind's event bound (a response
        holds its whole output), else ``MAX_OBJECT_BYTES``."""
        return self.events.max_event_bytes if self.events is not None else MAX_OBJECT_BYTES


#: An owned object is a few KiB, an assistant's instructions (256,000 characters) at most
#: about 1 MiB of JSON.
MAX_OBJECT_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class EventShape:
    """Where a kind's objects are in the server-sent events of a stream (the owner stamp is
    taken off each, event by event; the opening one gives a new object's id).

    ``events``: the event types that may carry one (``event:`` field); None: every event,
    whatever its type (the SDKs read a Responses event's type from its ``data``, so its
    ``event:`` line is no safe filter). ``at``: the object's path in an event's ``data``
    (``()``: the data is the object). ``max_event_bytes``: the largest event held to check.
    """

    events: tuple[str, ...] | None
    at: tuple[str, ...] = ()
    max_event_bytes: int = 256 * 1024


#: The kinds whose objects stream, by path parameter. A ``response.*`` event carries the
#: whole response at ``data.response`` (``response.created`` … ``response.completed``: with
#: its output, hence the larger bound). A thread streams only in its ``thread.created`` event
#: (the default shape of a creating row's ``sse_event``).
EVENT_SHAPES: dict[str, EventShape] = {
    "response_id": EventShape(None, at=("response",), max_event_bytes=16 * 1024 * 1024),
}


THREAD = Kind("thread", "thread_id", lookup="threads.retrieve", not_found_code="thread_not_found")
ASSISTANT = Kind(
    "assistant", "assistant_id", lookup="assistants.retrieve", not_found_code="assistant_not_found"
)
VECTOR_STORE = Kind(
    "vector store",
    "vector_store_id",
    lookup="vector_stores.retrieve",
    not_found_code="vector_store_not_found",
)
FILE = Kind(
    "file", "file_id", lookup="files.retrieve", not_found_code="file_not_found", stamp="filename"
)
#: The v1 API's: conversation items are reached through their conversation, a response's
#: input items through the response.
CONVERSATION = Kind(
    "conversation",
    "conversation_id",
    lookup="conversations.retrieve",
    not_found_code="conversation_not_found",
)
RESPONSE = Kind(
    "response", "response_id", lookup="responses.retrieve", not_found_code="response_not_found"
)
#: The owned kinds by path parameter. A kind is enabled in the table only once its lookup row
#: exists (``table`` checks it), so the Assistants surface adds them with their rows.
ALL_KINDS: tuple[Kind, ...] = (THREAD, ASSISTANT, VECTOR_STORE, FILE, CONVERSATION, RESPONSE)
KINDS: dict[str, Kind] = {k.param: k for k in ALL_KINDS}


@dataclass(frozen=True, slots=True)
class Creation:
    """An operation that creates an owned object."""

    kind: Kind
    #: The JSON answer's field holding the new object's id.
    id_field: str
    #: Where the owner stamp goes in the request body (a path of object keys; the object at
    #: the last key is the metadata map; missing objects on the way are created).
    stamp_at: tuple[str, ...]
    #: A streamed answer: the event that opens the stream with the new object (its ``id``,
    #: its stamp), in its ``data`` or where the kind's ``events`` shape says (``response.
    #: created``: ``data.response``).
    sse_event: str | None = None
    #: Objects of other kinds made along the way (a thread's or an assistant's new vector
    #: stores): stamped where the body describes them, recorded from the answer.
    inline: tuple[Inline, ...] = ()
    #: A body field and the value that means Azure keeps no object (``("store", False)``: a
    #: response not stored): then nothing is recorded (there is nothing to look up later;
    #: the request is stamped all the same and its answer has the stamp taken off).
    not_kept_when: tuple[str, object] | None = None


@dataclass(frozen=True, slots=True)
class Inline:
    """Objects a creating request makes along the way, described in its body (``file_search.
    vector_stores[]`` of a new thread or assistant)."""

    kind: Kind
    #: The body path of each new object's description (a ``Ref``-style path); each gets the
    #: owner stamp in its ``metadata`` map (created when absent).
    at: str
    #: The answer's path listing the new objects' ids (recorded as the tenant's when the body
    #: described any); None: the answer does not show them (the stamp alone then holds).
    ids_at: str | None = None


#: Vector stores made inline by a thread or assistant create (Azure then answers with their
#: ids in ``tool_resources.file_search.vector_store_ids``).
NEW_VECTOR_STORES = Inline(
    VECTOR_STORE,
    "tool_resources.file_search.vector_stores[]",
    ids_at="tool_resources.file_search.vector_store_ids[]",
)
#: Those of a create-and-run's new thread (the answer is a run: it does not list them).
NEW_THREAD_VECTOR_STORES = Inline(VECTOR_STORE, "thread.tool_resources.file_search.vector_stores[]")


@dataclass(frozen=True, slots=True)
class Ref:
    """A body field naming an owned object: ``path`` is a dotted path where ``[]`` steps into
    every item of a list (``attachments[].file_id``, ``tool_resources.file_search.
    vector_store_ids[]``). The value there is an id, or an object naming one in its ``id``
    (``conversation``: ``"conv_…"`` or ``{"id": "conv_…"}``)."""

    path: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class QueryParam:
    name: str
    validate: Callable[[str, ApiVersion], bool]
    #: The parameter exists only where this returns True for the request's api-version.
    available: Callable[[ApiVersion], bool] = lambda v: True
    #: An array parameter (``include[]``): it may be given more than once, every value is
    #: validated and kept in order. Every other parameter is given at most once.
    repeats: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    method: str
    template: str
    generations: frozenset[Generation]
    op_class: OpClass
    query: tuple[QueryParam, ...] = ()
    #: The body checker; None: the operation takes no body (a non-empty one is refused).
    body: BodyCheck | None = None
    #: May answer with ``text/event-stream`` when the body says ``"stream": true``.
    streams: bool = False
    #: A read that answers ``text/event-stream`` when this query parameter is ``true``
    #: (``responses.retrieve?stream=true``: the stored response's events, replayed).
    stream_query: str | None = None
    creates: Creation | None = None
    returns: Kind | None = None
    restamp_at: tuple[str, ...] | None = None
    deletes: bool = False
    refs: tuple[Ref, ...] = ()
    lists: Kind | None = None
    #: The body is a file upload (``multipart/form-data``): never read whole, checked and
    #: re-emitted as it streams to Azure (``policy.uploads``); ``body`` is None.
    upload: bool = False
    segments: tuple[str, ...] = field(init=False)
    #: The kind of the owned object the request acts on, and its path parameter.
    owner: Kind | None = field(init=False)

    def __post_init__(self) -> None:
        segments = tuple(self.template.strip("/").split("/"))
        object.__setattr__(self, "segments", segments)
        params = [s[1:-1] for s in segments if s.startswith("{")]
        owner = next((KINDS[p] for p in params if p in KINDS), None)
        object.__setattr__(self, "owner", owner)
        if self.deletes and owner is None:
            raise ValueError(f"{self.name}: deletes needs an owned object in its path")

    @property
    def has_body(self) -> bool:
        return self.body is not None


# ---------------------------------------------------------------- query validators


def limit(value: str, _: ApiVersion) -> bool:
    return bool(_LIMIT.fullmatch(value)) and 1 <= int(value) <= 100


def limit_upto(most: int) -> Callable[[str, ApiVersion], bool]:
    return lambda value, _: bool(_LIMIT.fullmatch(value)) and 1 <= int(value) <= most


def boolean(value: str, _: ApiVersion) -> bool:
    """A query boolean as the SDKs send it."""
    return value in ("true", "false")


def sequence_number(value: str, _: ApiVersion) -> bool:
    """A stream's event sequence number (``starting_after``: int32, not negative)."""
    return bool(_SEQUENCE.fullmatch(value)) and int(value) <= 2**31 - 1


def response_include(value: str, _: ApiVersion) -> bool:
    return value in RESPONSE_INCLUDE_VALUES


def order(value: str, _: ApiVersion) -> bool:
    return value in ("asc", "desc")


def id_of(param: str) -> Callable[[str, ApiVersion], bool]:
    pattern = ID_PATTERNS[param]
    return lambda value, _: bool(pattern.fullmatch(value))


def include(value: str, _: ApiVersion) -> bool:
    return value in INCLUDE_VALUES


def choice(*values: str) -> Callable[[str, ApiVersion], bool]:
    allowed = frozenset(values)
    return lambda value, _: value in allowed


def pager(item_param: str) -> tuple[QueryParam, ...]:
    return (
        QueryParam("limit", limit),
        QueryParam("order", order),
        QueryParam("after", id_of(item_param)),
        QueryParam("before", id_of(item_param)),
    )


def v2_only(version: ApiVersion) -> bool:
    return version.generation == "v2"
