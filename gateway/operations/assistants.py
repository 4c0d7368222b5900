"""The Azure OpenAI Assistants API, one row per operation (pure data).

Paths, methods and api-version generations follow Microsoft's OpenAPI documents (v1 =
2024-02-15-preview, v2 = 2024-05-01-preview and later; see shared/reference and
``tests/specs``). Messages, runs and steps are reached through their thread: the thread is
the owned object their rows name.
"""

from __future__ import annotations

from gateway.operations.apiversions import Generation
from gateway.operations.row import (
    THREAD,
    Creation,
    Operation,
    QueryParam,
    id_of,
    include,
    pager,
    v2_only,
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
_INCLUDE_STEPS = QueryParam("include[]", include, lambda v: v.run_step_include)

ASSISTANTS: tuple[Operation, ...] = (
    Operation(
        "threads.create",
        "POST",
        "/openai/threads",
        V1V2,
        "write",
        body=check_create_thread,
        returns=THREAD,
        creates=Creation(THREAD, id_field="id", stamp_at=("metadata",)),
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
    ),
    Operation("threads.delete", "DELETE", _T, V1V2, "write", deletes=True),
    Operation(
        "messages.create", "POST", _T + "/messages", V1V2, "write", body=check_create_message
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
        V2,
        "write",
        body=check_create_thread_and_run,
        streams=True,
        creates=Creation(
            THREAD,
            id_field="thread_id",
            stamp_at=("thread", "metadata"),
            sse_event="thread.created",
        ),
    ),
    Operation(
        "runs.create",
        "POST",
        _T + "/runs",
        V2,
        "write",
        body=check_create_run,
        streams=True,
        query=(QueryParam("include[]", include, lambda v: v.create_run_include),),
    ),
    Operation("runs.list", "GET", _T + "/runs", V2, "read", query=pager("run_id")),
    Operation("runs.retrieve", "GET", _R, V2, "read"),
    Operation("runs.modify", "POST", _R, V2, "write", body=check_modify_metadata),
    Operation(
        "runs.submit_tool_outputs",
        "POST",
        _R + "/submit_tool_outputs",
        V2,
        "write",
        body=check_submit_tool_outputs,
        streams=True,
    ),
    Operation("runs.cancel", "POST", _R + "/cancel", V2, "write"),
    Operation(
        "runs.steps.list",
        "GET",
        _R + "/steps",
        V2,
        "read",
        query=(*pager("step_id"), _INCLUDE_STEPS),
    ),
    Operation(
        "runs.steps.retrieve", "GET", _R + "/steps/{step_id}", V2, "read", query=(_INCLUDE_STEPS,)
    ),
)
