"""The Azure OpenAI v1 API under ``/openai/v1/``, one row per operation (pure data):
responses, conversations and their items, and files.

Source: Microsoft's ``specification/ai/data-plane/OpenAI.v1/azure-v1-v1-generated.json`` (GA
``v1``) and ``azure-v1-preview-generated.json`` (``preview``); where the document is silent
(conversations, cancel, some list parameters) the OpenAI API reference shape the stock SDK
(openai 2.x) sends. ``api-version`` is optional on every row (``v1``/``preview``; absent is
forwarded absent: ``apiversions.OPTIONAL_DEFAULT``).

Query parameters:

* ``responses.retrieve``: ``include[]`` (repeatable), ``stream`` (``true`` answers the stored
  response's events: ``stream_query``), ``starting_after`` (an event sequence number),
  ``include_obfuscation``;
* ``responses.input_items.list``: ``limit``/``order``/``after``/``before`` (the document) and
  ``include[]`` (the SDK);
* ``conversations.items.list``: ``limit``/``order``/``after``/``include[]`` (the SDK);
  ``conversations.items.create`` and ``.retrieve``: ``include[]``;
* ``files.v1.list``: ``purpose``, ``limit`` (1 to 10,000), ``order``, ``after``.

Ownership: responses and conversations are owned (``RESPONSE``, ``CONVERSATION``: metadata
stamps); conversation items are reached through their conversation, input items through their
response. A streamed ``responses.create`` names its response in the ``response.created``
event (``data.response``: the owner helper's nested SSE id). ``conversations.items.delete``
answers the conversation (``returns``). Body references: ``conversation`` (an id or
``{"id"}``), ``previous_response_id``, every ``file_id`` of input parts (``input_file``,
``input_image``), ``file_search.vector_store_ids``, ``code_interpreter.container.file_ids``.
Files are the Assistants' FILE kind, uploaded with the same machinery (``upload``).
"""

from __future__ import annotations

from gateway.operations.apiversions import Generation
from gateway.operations.files import FILE_PURPOSES
from gateway.operations.row import (
    CONVERSATION,
    FILE,
    RESPONSE,
    VECTOR_STORE,
    Creation,
    Operation,
    QueryParam,
    Ref,
    boolean,
    choice,
    id_of,
    limit,
    limit_upto,
    order,
    response_include,
    sequence_number,
)
from gateway.policy.conversations import (
    check_create_conversation,
    check_create_items,
    check_update_conversation,
)
from gateway.policy.responses import check_create_response

V1API: frozenset[Generation] = frozenset({"openai-v1"})
_RS = "/openai/v1/responses"
_R = _RS + "/{response_id}"
_CS = "/openai/v1/conversations"
_C = _CS + "/{conversation_id}"
_FS = "/openai/v1/files"
_F = _FS + "/{file_id}"
_INCLUDE = QueryParam("include[]", response_include, repeats=True)
_ITEM_PAGER = (
    QueryParam("limit", limit),
    QueryParam("order", order),
    QueryParam("after", id_of("item_id")),
)


def _input_files(prefix: str) -> tuple[Ref, ...]:
    """The files input items name: message parts and function-output parts."""
    return (
        Ref(f"{prefix}[].content[].file_id", FILE),
        Ref(f"{prefix}[].output[].file_id", FILE),
    )


_RESPONSE_REFS = (
    Ref("conversation", CONVERSATION),
    Ref("conversation.id", CONVERSATION),
    Ref("previous_response_id", RESPONSE),
    *_input_files("input"),
    Ref("tools[].vector_store_ids[]", VECTOR_STORE),
    Ref("tools[].container.file_ids[]", FILE),
)

_RESPONSE_ROWS: tuple[Operation, ...] = (
    Operation(
        "responses.create",
        "POST",
        _RS,
        V1API,
        "write",
        body=check_create_response,
        streams=True,
        # A response with ``store: false`` is not kept by Azure: nothing is recorded.
        creates=Creation(
            RESPONSE,
            id_field="id",
            stamp_at=("metadata",),
            sse_event="response.created",
            not_kept_when=("store", False),
        ),
        returns=RESPONSE,
        refs=_RESPONSE_REFS,
    ),
    Operation(
        "responses.retrieve",
        "GET",
        _R,
        V1API,
        "read",
        query=(
            _INCLUDE,
            QueryParam("stream", boolean),
            QueryParam("starting_after", sequence_number),
            QueryParam("include_obfuscation", boolean),
        ),
        stream_query="stream",
        returns=RESPONSE,
    ),
    Operation("responses.delete", "DELETE", _R, V1API, "write", deletes=True),
    Operation("responses.cancel", "POST", _R + "/cancel", V1API, "write", returns=RESPONSE),
    Operation(
        "responses.input_items.list",
        "GET",
        _R + "/input_items",
        V1API,
        "read",
        query=(*_ITEM_PAGER, QueryParam("before", id_of("item_id")), _INCLUDE),
    ),
)

_CONVERSATION_ROWS: tuple[Operation, ...] = (
    Operation(
        "conversations.create",
        "POST",
        _CS,
        V1API,
        "write",
        body=check_create_conversation,
        creates=Creation(CONVERSATION, id_field="id", stamp_at=("metadata",)),
        returns=CONVERSATION,
        refs=_input_files("items"),
    ),
    Operation("conversations.retrieve", "GET", _C, V1API, "read", returns=CONVERSATION),
    Operation(
        "conversations.update",
        "POST",
        _C,
        V1API,
        "write",
        body=check_update_conversation,
        returns=CONVERSATION,
        restamp_at=("metadata",),
    ),
    Operation("conversations.delete", "DELETE", _C, V1API, "write", deletes=True),
    Operation(
        "conversations.items.create",
        "POST",
        _C + "/items",
        V1API,
        "write",
        body=check_create_items,
        query=(_INCLUDE,),
        refs=_input_files("items"),
    ),
    Operation(
        "conversations.items.list",
        "GET",
        _C + "/items",
        V1API,
        "read",
        query=(*_ITEM_PAGER, _INCLUDE),
    ),
    Operation(
        "conversations.items.retrieve",
        "GET",
        _C + "/items/{item_id}",
        V1API,
        "read",
        query=(_INCLUDE,),
    ),
    # Its answer is the conversation (the SDK's ``items.delete`` returns a ``Conversation``).
    Operation(
        "conversations.items.delete",
        "DELETE",
        _C + "/items/{item_id}",
        V1API,
        "write",
        returns=CONVERSATION,
    ),
)

_FILE_ROWS: tuple[Operation, ...] = (
    Operation(
        "files.v1.upload",
        "POST",
        _FS,
        V1API,
        "write",
        upload=True,
        creates=Creation(FILE, id_field="id", stamp_at=()),
        returns=FILE,
    ),
    Operation(
        "files.v1.list",
        "GET",
        _FS,
        V1API,
        "read",
        query=(
            QueryParam("purpose", choice(*FILE_PURPOSES)),
            QueryParam("limit", limit_upto(10_000)),
            QueryParam("order", order),
            QueryParam("after", id_of("file_id")),
        ),
        lists=FILE,
    ),
    Operation("files.v1.retrieve", "GET", _F, V1API, "read", returns=FILE),
    Operation("files.v1.delete", "DELETE", _F, V1API, "write", deletes=True),
    Operation("files.v1.content", "GET", _F + "/content", V1API, "read"),
)

V1_ROWS: tuple[Operation, ...] = _RESPONSE_ROWS + _CONVERSATION_ROWS + _FILE_ROWS
