"""How a fake run proceeds, as a sequence of Assistants stream events (shared reference §4).

Rules of this module:
- A run's future is a generator kept on ``Run.pending``. Each ``next()`` takes one step:
  it changes the store and yields the ``(event name, data)`` that step produced. Callers hold
  ``store.lock`` around every step (``next_event`` does), so a step is atomic.
- The same generator drives an SSE stream (one event per step) and a polled run (each retrieve
  advances it to its next run status; ``catch_up`` finishes runs older than a given age).
- Cancelling or failing swaps the generator for one that ends the run; a stream that is
  driving the run picks that up at its next step.
- A run whose ``tools`` include a function first stops in ``requires_action`` with one call
  per function; ``submit_tool_outputs`` resumes it. Otherwise it writes one assistant message.
- No I/O. ``stream_frames`` is the one coroutine: it only sleeps between events and yields the
  SSE frames (``event: X``, ``data: <json>``, blank line) for the app to send.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass

from tests.fakeazure.assistants import check_tools
from tests.fakeazure.shapes import (
    CutStreamError,
    Generation,
    Json,
    check_metadata,
    invalid,
    new_id,
    parse_new_message,
    text_part,
)
from tests.fakeazure.store import Event, Run, Store, Thread, message_json, run_json, step_json

DONE_FRAME = b"event: done\ndata: [DONE]\n\n"
_RUN_DEFAULTS: Json = {
    "model": "gpt-4o",
    "instructions": "You are a helpful assistant.",
    "tools": [],
    "tool_resources": {},
    "temperature": 1.0,
    "top_p": 1.0,
    "max_prompt_tokens": None,
    "max_completion_tokens": None,
    "truncation_strategy": {"type": "auto", "last_messages": None},
    "response_format": "auto",
    "tool_choice": "auto",
    "parallel_tool_calls": True,
}
_RUN_FIELDS = frozenset(_RUN_DEFAULTS) | {
    "assistant_id",
    "additional_instructions",
    "additional_messages",
    "metadata",
    "stream",
}
#: createRunRequest / createThreadAndRunRequest of 2024-02-15-preview: no streaming, no
#: sampling or truncation controls, tools code_interpreter | retrieval | function.
_V1_RUN_FIELDS = frozenset({"assistant_id", "model", "instructions", "tools", "metadata"})


def default_answer(prompt: str) -> str:
    topic = " ".join(prompt.split())[:120] or "your message"
    return f"This is a simulated answer from the fake Azure OpenAI upstream about: {topic}"


@dataclass(frozen=True)
class RunOptions:
    """Read from the ``FakeAzure`` instance when a run starts or resumes."""

    answer: Callable[[str], str] = default_answer
    fail: bool = False


def sse_frame(event: str, data: Json) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def split_answer(text: str, parts: int = 4) -> list[str]:
    """``text`` in up to ``parts`` pieces cut at spaces; the pieces join back to ``text``."""
    words = text.split(" ")
    tokens = [w + " " for w in words[:-1]] + [words[-1]]
    size = -(-len(tokens) // max(1, min(parts, len(tokens))))
    return ["".join(tokens[i : i + size]) for i in range(0, len(tokens), size)]


def _run_params(store: Store, body: Json, gen: Generation) -> tuple[str, Json, bool]:
    for key in body:
        if key not in (_RUN_FIELDS if gen == "v2" else _V1_RUN_FIELDS):
            raise invalid(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
    assistant_id = body.get("assistant_id")
    if not isinstance(assistant_id, str) or not assistant_id:
        raise invalid(
            "Missing required parameter: 'assistant_id'.",
            "assistant_id",
            "missing_required_parameter",
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise invalid("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    check_tools(body.get("tools"), gen, most=20)
    defaults = copy.deepcopy(_RUN_DEFAULTS)
    known = store.assistants.items.get(assistant_id)
    if known is not None:  # the assistant's settings, as Azure runs it
        defaults.update(model=known.model, instructions=known.instructions or "", tools=known.tools)
    params = {
        k: copy.deepcopy(body[k] if body.get(k) is not None else v) for k, v in defaults.items()
    }
    if isinstance(body.get("additional_instructions"), str):
        params["instructions"] += "\n" + body["additional_instructions"]
    return assistant_id, params, bool(stream)


def create_run(
    store: Store, thread_id: str, body: Json, opts: RunOptions, gen: Generation = "v2"
) -> tuple[Run, bool]:
    """A queued run on ``thread_id`` (after ``additional_messages``); returns it and ``stream``."""
    with store.lock:
        assistant_id, params, stream = _run_params(store, body, gen)
        extra = body.get("additional_messages") or []
        if not isinstance(extra, list):
            raise invalid("Invalid type for 'additional_messages'.", "additional_messages")
        parsed = [
            parse_new_message(m, "v2", f"additional_messages[{i}].") for i, m in enumerate(extra)
        ]
        metadata = check_metadata(body.get("metadata"))
        active = store.active_run(thread_id)
        if active is not None:
            raise invalid(f"Thread {thread_id} already has an active run {active.id}.")
        for fields in parsed:
            store.add_message(thread_id, **fields)
        run = Run(
            new_id("run_"),
            thread_id,
            store.now(),
            store.next_seq(),
            assistant_id,
            params,
            metadata,
            store.clock(),
            gen=gen,
        )
        known = store.assistants.items.get(assistant_id)
        run.file_ids = list(known.file_ids) if known is not None else []
        store.add_run(run)
        run.pending = _lifecycle(store, run, opts)
        return run, stream


def create_thread_and_run(
    store: Store, body: Json, gen: Generation, opts: RunOptions
) -> tuple[Thread, Run, bool]:
    with store.lock:
        thread_body = body.get("thread") or {}
        if not isinstance(thread_body, dict):
            raise invalid("Invalid type for 'thread': expected an object.", "thread")
        run_body = {k: v for k, v in body.items() if k != "thread"}
        _run_params(store, run_body, gen)  # validate before creating anything
        thread = store.create_thread(thread_body, gen)
        run, stream = create_run(store, thread.id, run_body, opts, gen)
        return thread, run, stream


def submit_tool_outputs(store: Store, run: Run, body: Json, opts: RunOptions) -> bool:
    """Resumes a ``requires_action`` run; returns ``stream``."""
    with store.lock:
        if run.status != "requires_action" or run.required_action is None:
            raise invalid(f'Runs in status "{run.status}" do not accept tool outputs.')
        outputs = body.get("tool_outputs")
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("tool_call_id"), str) for o in outputs
        ):
            raise invalid(
                "Invalid 'tool_outputs': expected an array of {tool_call_id, output}.",
                "tool_outputs",
            )
        calls = run.required_action["submit_tool_outputs"]["tool_calls"]
        expected = sorted(c["id"] for c in calls)
        if sorted(o["tool_call_id"] for o in outputs) != expected:
            raise invalid(f"Expected tool outputs for call_ids {expected}.", "tool_outputs")
        stream = body.get("stream", False)
        run.tool_outputs = list(outputs)
        run.required_action = None
        run.status = "queued"
        run.pending = _resumed(store, run, opts)
        return bool(stream)


def cancel(store: Store, run: Run) -> None:
    with store.lock:
        if run.status not in ("queued", "in_progress", "requires_action"):
            raise invalid(f"Cannot cancel run with status '{run.status}'.")
        run.status = "cancelling"
        run.pending = _ended(store, run, "cancelled")


def fail(store: Store, run: Run) -> None:
    """Ends an unfinished run as failed at once (the stream driving it was cut)."""
    with store.lock:
        if run.pending is not None:
            run.pending = _ended(store, run, "failed")
            drain(store, run)


def next_event(store: Store, run: Run) -> Event | None:
    with store.lock:
        event = next(run.pending, None) if run.pending is not None else None
        if event is None:
            run.pending = None
        return event


def drain(store: Store, run: Run) -> None:
    with store.lock:
        while next_event(store, run) is not None:
            pass


def poll(store: Store, run: Run) -> None:
    """A retrieve of a run nobody streams: advance it to its next run status."""
    with store.lock:
        start = run.status
        while not run.streaming and run.status == start and next_event(store, run) is not None:
            pass


def catch_up(store: Store, thread_id: str, older_than_s: float) -> None:
    """Finishes unstreamed runs on ``thread_id`` started more than ``older_than_s`` ago."""
    with store.lock:
        now = store.clock()
        for run in list(store.runs.get(thread_id, {}).values()):
            if run.pending is not None and not run.streaming and now - run.clock_at >= older_than_s:
                drain(store, run)


def _lifecycle(store: Store, run: Run, opts: RunOptions) -> Iterator[Event]:
    yield "thread.run.created", run_json(run)
    yield "thread.run.queued", run_json(run)
    yield from _work(store, run, opts)


def _resumed(store: Store, run: Run, opts: RunOptions) -> Iterator[Event]:
    yield "thread.run.queued", run_json(run)
    yield from _work(store, run, opts)


def _work(store: Store, run: Run, opts: RunOptions) -> Iterator[Event]:
    run.status, run.started_at = "in_progress", run.started_at or store.now()
    yield "thread.run.in_progress", run_json(run)
    functions = [t["function"] for t in run.params["tools"] if t.get("type") == "function"]
    if functions and run.tool_outputs is None:
        calls: list[Json] = [
            {
                "id": new_id("call_"),
                "type": "function",
                "function": {"name": f["name"], "arguments": "{}", "output": None},
            }
            for f in functions
        ]
        step = store.add_step(run, "tool_calls", {"type": "tool_calls", "tool_calls": calls})
        run.tool_step_id = step.id
        yield "thread.run.step.created", step_json(step)
        yield "thread.run.step.in_progress", step_json(step)
        wanted = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["function"]["name"], "arguments": "{}"},
            }
            for c in calls
        ]
        run.status = "requires_action"
        run.required_action = {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {"tool_calls": wanted},
        }
        yield "thread.run.requires_action", run_json(run)
        return
    if run.tool_step_id is not None and run.tool_outputs is not None:
        step = store.steps[run.id][run.tool_step_id]
        given = {o["tool_call_id"]: o.get("output") for o in run.tool_outputs}
        for call in step.details["tool_calls"]:
            call["function"]["output"] = given.get(call["id"])
        step.status, step.completed_at = "completed", store.now()
        yield "thread.run.step.completed", step_json(step)
    if opts.fail:
        yield from _ended(store, run, "failed")
        return
    yield from _answer(store, run, opts.answer(store.last_user_text(run.thread_id)))


def _answer(store: Store, run: Run, answer: str) -> Iterator[Event]:
    message = store.add_message(
        run.thread_id,
        role="assistant",
        content=[],
        assistant_id=run.assistant_id,
        run_id=run.id,
        status="in_progress",
    )
    step = store.add_step(
        run,
        "message_creation",
        {"type": "message_creation", "message_creation": {"message_id": message.id}},
    )
    yield "thread.run.step.created", step_json(step)
    yield "thread.run.step.in_progress", step_json(step)
    yield "thread.message.created", message_json(message, run.gen)
    yield "thread.message.in_progress", message_json(message, run.gen)
    for piece in split_answer(answer):
        if message.content:
            message.content[0]["text"]["value"] += piece
        else:
            message.content.append(text_part(piece))
        delta = {"content": [{"index": 0, **text_part(piece)}]}
        yield (
            "thread.message.delta",
            {"id": message.id, "object": "thread.message.delta", "delta": delta},
        )
    message.status, message.completed_at = "completed", store.now()
    yield "thread.message.completed", message_json(message, run.gen)
    prompt = len(store.last_user_text(run.thread_id).split()) + 20
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": len(answer.split()),
        "total_tokens": prompt + len(answer.split()),
    }
    step.status, step.completed_at, step.usage = "completed", store.now(), usage
    yield "thread.run.step.completed", step_json(step)
    run.status, run.completed_at, run.usage = "completed", store.now(), dict(usage)
    yield "thread.run.completed", run_json(run)


def _ended(store: Store, run: Run, status: str) -> Iterator[Event]:
    """Ends the run as ``cancelled`` or ``failed``, closing its open messages and steps."""
    now = store.now()
    reason = "run_cancelled" if status == "cancelled" else "run_failed"
    for message in store.run_messages(run):
        if message.status == "in_progress":
            message.status, message.incomplete_at = "incomplete", now
            message.incomplete_details = {"reason": reason}
    for step in store.run_steps(run):
        if step.status == "in_progress":
            step.status = status
            step.cancelled_at, step.failed_at = (
                (now, None) if status == "cancelled" else (None, now)
            )
    run.status, run.required_action = status, None
    if status == "cancelled":
        run.cancelled_at = now
    else:
        run.failed_at = now
        run.last_error = {"code": "server_error", "message": "Sorry, something went wrong."}
    yield f"thread.run.{status}", run_json(run)


async def stream_frames(
    store: Store, run: Run, prelude: list[Event], delay_s: float, cut_after: int | None
) -> AsyncGenerator[bytes, None]:
    """The SSE frames of ``run`` (already marked ``streaming``), ``delay_s`` apart, then
    ``done``. After ``cut_after`` frames it raises ``CutStreamError`` and the run fails; if the
    consumer stops early (client gone), the run finishes server-side."""
    sent, outcome = 0, "abandoned"
    try:
        for event in prelude:
            yield sse_frame(*event)
            sent += 1
        while (step := next_event(store, run)) is not None:
            if cut_after is not None and sent >= cut_after:
                outcome = "cut"
                raise CutStreamError
            if sent:
                await asyncio.sleep(delay_s)
            yield sse_frame(*step)
            sent += 1
        outcome = "done"
        yield DONE_FRAME
    finally:
        with store.lock:
            run.streaming = False
            if outcome == "cut":
                fail(store, run)
            elif outcome == "abandoned":
                drain(store, run)
