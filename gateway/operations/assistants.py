"""The Azure OpenAI Assistants API, one row per operation (pure data): assistants (and v1
assistant files), threads, messages, runs and run steps. Files are in ``files``, vector stores
in ``vector_stores``.

Paths, methods and api-version generations follow Microsoft's OpenAPI documents
(``inference/preview/<version>/inference.json``; v1 = 2024-02-15-preview, v2 =
2024-05-01-preview and later): v1 has runs, steps and create-and-run with v1 bodies, assistant
files and message files; v2 drops the file sub-resources and adds message delete. Messages,
runs and steps are reached through their thread, an assistant file through its assistant: the
first owned placeholder is the object the row acts on. ``refs`` name every body field that
points at an owned object, at the paths the policy checker keeps them.
"""

from __future__ import annotations

from gateway.operations.apiversions import Generation
from gateway.operations.row import (
    ASSISTANT,
    FILE,
    NEW_THREAD_VECTOR_STORES,
    NEW_VECTOR_STORES,
    THREAD,
    VECTOR_STORE,
    Creation,
    Operation,
    QueryParam,
    Ref,
    id_of,
    include,
    pager,
    v2_only,
)
from gateway.policy.assistants import (
    check_create_assistant,
    check_create_assistant_file,
    check_modify_assistant,
)
from gateway.policy.checks import (
    check_create_message,
    check_create_run,
    check_create_thread,
    check_create_thread_and_run,
    check_modify_metadata,
    check_modify_thread,
    check_submit_tool_outputs,
)

V1V2: frozenset[Generation] = frozenset({"v1", "v2"})
V1: frozenset[Generation] = frozenset({"v1"})
V2: frozenset[Generation] = frozenset({"v2"})
_T = "/openai/threads/{thread_id}"
_M = _T + "/messages/{message_id}"
_R = _T + "/runs/{run_id}"
_A = "/openai/assistants/{assistant_id}"
_INCLUDE_STEPS = QueryParam("include[]", include, lambda v: v.run_step_include, repeats=True)


def _resources(prefix: str, *, new_stores: bool) -> tuple[Ref, ...]:
    """The references a ``tool_resources`` object holds."""
    refs: tuple[Ref, ...] = (
        Ref(f"{prefix}tool_resources.code_interpreter.file_ids[]", FILE),
        Ref(f"{prefix}tool_resources.file_search.vector_store_ids[]", VECTOR_STORE),
    )
    if new_stores:
        refs += (Ref(f"{prefix}tool_resources.file_search.vector_stores[].file_ids[]", FILE),)
    return refs


def _message_files(prefix: str) -> tuple[Ref, ...]:
    """The references one message holds (v1 ``file_ids``, v2 ``attachments``)."""
    return (Ref(f"{prefix}file_ids[]", FILE), Ref(f"{prefix}attachments[].file_id", FILE))


_ASSISTANT_REFS = (Ref("file_ids[]", FILE), *_resources("", new_stores=True))
_ASSISTANT_MODIFY_REFS = (Ref("file_ids[]", FILE), *_resources("", new_stores=False))
_THREAD_REFS = (*_message_files("messages[]."), *_resources("", new_stores=True))
#: ``additional_messages`` is v2 only: its messages carry ``attachments``, never ``file_ids``.
_RUN_REFS = (
    Ref("assistant_id", ASSISTANT),
    Ref("additional_messages[].attachments[].file_id", FILE),
)
_CREATE_AND_RUN_REFS = (
    Ref("assistant_id", ASSISTANT),
    *_message_files("thread.messages[]."),
    *_resources("thread.", new_stores=True),
    *_resources("", new_stores=False),
)

_ASSISTANT_ROWS: tuple[Operation, ...] = (
    Operation(
        "assistants.create",
        "POST",
        "/openai/assistants",
        V1V2,
        "write",
        body=check_create_assistant,
        returns=ASSISTANT,
        creates=Creation(
            ASSISTANT, id_field="id", stamp_at=("metadata",), inline=(NEW_VECTOR_STORES,)
        ),
        refs=_ASSISTANT_REFS,
    ),
    Operation(
        "assistants.list",
        "GET",
        "/openai/assistants",
        V1V2,
        "read",
        query=pager("assistant_id"),
        lists=ASSISTANT,
    ),
    Operation("assistants.retrieve", "GET", _A, V1V2, "read", returns=ASSISTANT),
    Operation(
        "assistants.modify",
        "POST",
        _A,
        V1V2,
        "write",
        body=check_modify_assistant,
        returns=ASSISTANT,
        restamp_at=("metadata",),
        refs=_ASSISTANT_MODIFY_REFS,
    ),
    Operation("assistants.delete", "DELETE", _A, V1V2, "write", deletes=True),
    Operation(
        "assistants.files.create",
        "POST",
        _A + "/files",
        V1,
        "write",
        body=check_create_assistant_file,
        refs=(Ref("file_id", FILE),),
    ),
    Operation("assistants.files.list", "GET", _A + "/files", V1, "read", query=pager("file_id")),
    Operation("assistants.files.retrieve", "GET", _A + "/files/{file_id}", V1, "read"),
    Operation("assistants.files.delete", "DELETE", _A + "/files/{file_id}", V1, "write"),
)

_THREAD_ROWS: tuple[Operation, ...] = (
    Operation(
        "threads.create",
        "POST",
        "/openai/threads",
        V1V2,
        "write",
        body=check_create_thread,
        returns=THREAD,
        creates=Creation(
            THREAD, id_field="id", stamp_at=("metadata",), inline=(NEW_VECTOR_STORES,)
        ),
        refs=_THREAD_REFS,
    ),
    Operation("threads.retrieve", "GET", _T, V1V2, "read", returns=THREAD),
    Operation(
        "threads.modify",
        "POST",
        _T,
        V1V2,
        "write",
        body=check_modify_thread,
        returns=THREAD,
        restamp_at=("metadata",),
        refs=_resources("", new_stores=False),
    ),
    Operation("threads.delete", "DELETE", _T, V1V2, "write", deletes=True),
    Operation(
        "messages.create",
        "POST",
        _T + "/messages",
        V1V2,
        "write",
        body=check_create_message,
        refs=_message_files(""),
    ),
    Operation(
        "messages.list",
        "GET",
        _T + "/messages",
        V1V2,
        "read",
        query=(*pager("message_id"), QueryParam("run_id", id_of("run_id"), v2_only)),
    ),
    Operation("messages.retrieve", "GET", _M, V1V2, "read"),
    Operation("messages.modify", "POST", _M, V1V2, "write", body=check_modify_metadata),
    Operation("messages.delete", "DELETE", _M, V2, "write"),
    Operation("messages.files.list", "GET", _M + "/files", V1, "read", query=pager("file_id")),
    Operation("messages.files.retrieve", "GET", _M + "/files/{file_id}", V1, "read"),
    Operation(
        "threads.create_and_run",
        "POST",
        "/openai/threads/runs",
        V1V2,
        "write",
        body=check_create_thread_and_run,
        streams=True,
        creates=Creation(
            THREAD,
            id_field="thread_id",
            stamp_at=("thread", "metadata"),
            sse_event="thread.created",
            inline=(NEW_THREAD_VECTOR_STORES,),
        ),
        refs=_CREATE_AND_RUN_REFS,
    ),
    Operation(
        "runs.create",
        "POST",
        _T + "/runs",
        V1V2,
        "write",
        body=check_create_run,
        streams=True,
        query=(QueryParam("include[]", include, lambda v: v.create_run_include, repeats=True),),
        refs=_RUN_REFS,
    ),
    Operation("runs.list", "GET", _T + "/runs", V1V2, "read", query=pager("run_id")),
    Operation("runs.retrieve", "GET", _R, V1V2, "read"),
    Operation("runs.modify", "POST", _R, V1V2, "write", body=check_modify_metadata),
    Operation(
        "runs.submit_tool_outputs",
        "POST",
        _R + "/submit_tool_outputs",
        V1V2,
        "write",
        body=check_submit_tool_outputs,
        streams=True,
    ),
    Operation("runs.cancel", "POST", _R + "/cancel", V1V2, "write"),
    Operation(
        "runs.steps.list",
        "GET",
        _R + "/steps",
        V1V2,
        "read",
        query=(*pager("step_id"), _INCLUDE_STEPS),
    ),
    Operation(
        "runs.steps.retrieve",
        "GET",
        _R + "/steps/{step_id}",
        V1V2,
        "read",
        query=(_INCLUDE_STEPS,),
    ),
)

ASSISTANTS: tuple[Operation, ...] = _ASSISTANT_ROWS + _THREAD_ROWS
