"""In-memory state of the fake Azure OpenAI Assistants upstream: threads, messages, runs, steps.

Rules of this module:
- No I/O. Time comes only from the injected clock (``created_at`` is whole unix seconds).
- One re-entrant lock, ``Store.lock``, guards all state. Store methods do not take it: callers
  do (the app around each operation, ``runs.py`` around each run step), so an operation or a
  step is atomic for concurrent request handlers.
- Objects are mutable records, rendered per api-version generation when answered
  (v1 = 2024-02-15-preview: ``file_ids``, no ``status``; v2: ``attachments``, ``status``,
  ``incomplete_details``, ``completed_at``, ``incomplete_at``), shared reference section 1.2.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fakeazure.assistants import Assistants
from tests.fakeazure.conversations import Conversations
from tests.fakeazure.files import Files
from tests.fakeazure.responses import Responses
from tests.fakeazure.shapes import (
    Generation,
    Json,
    ListQuery,
    check_metadata,
    invalid,
    list_json,
    new_id,
    not_found,
    paginate,
    parse_new_message,
    reject_unknown,
)
from tests.fakeazure.vectorstores import VectorStores

Event = tuple[str, Json]
ACTIVE_RUN_STATUSES = frozenset({"queued", "in_progress", "requires_action", "cancelling"})


@dataclass(eq=False)
class Thread:
    id: str
    created_at: int
    seq: int
    metadata: dict[str, str]
    tool_resources: Json


@dataclass(eq=False)
class Message:
    id: str
    thread_id: str
    created_at: int
    seq: int
    role: str
    content: list[Json]
    metadata: dict[str, str] = field(default_factory=dict)
    file_ids: list[str] = field(default_factory=list)
    attachments: list[Json] = field(default_factory=list)
    assistant_id: str | None = None
    run_id: str | None = None
    status: str = "completed"
    incomplete_details: Json | None = None
    completed_at: int | None = None
    incomplete_at: int | None = None


@dataclass(eq=False)
class Run:
    id: str
    thread_id: str
    created_at: int
    seq: int
    assistant_id: str
    params: Json
    metadata: dict[str, str]
    clock_at: float  # the injected clock when created, for "finish runs older than N s"
    status: str = "queued"
    started_at: int | None = None
    completed_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    required_action: Json | None = None
    last_error: Json | None = None
    usage: Json | None = None
    tool_outputs: list[Json] | None = None
    tool_step_id: str | None = None
    gen: Generation = "v2"
    file_ids: list[str] = field(default_factory=list)  # v1: the assistant's files
    streaming: bool = False
    pending: Iterator[Event] | None = None


@dataclass(eq=False)
class Step:
    id: str
    run_id: str
    thread_id: str
    assistant_id: str
    created_at: int
    seq: int
    type: str
    details: Json
    status: str = "in_progress"
    completed_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    last_error: Json | None = None
    usage: Json | None = None
    gen: Generation = "v2"


def thread_json(t: Thread, gen: Generation) -> Json:
    out: Json = {"id": t.id, "object": "thread", "created_at": t.created_at}
    if gen == "v2":
        out["tool_resources"] = copy.deepcopy(t.tool_resources)
    out["metadata"] = dict(t.metadata)
    return out


def message_json(m: Message, gen: Generation) -> Json:
    out: Json = {
        "id": m.id,
        "object": "thread.message",
        "created_at": m.created_at,
        "assistant_id": m.assistant_id,
        "thread_id": m.thread_id,
        "run_id": m.run_id,
    }
    if gen == "v2":
        out.update(
            status=m.status,
            incomplete_details=copy.deepcopy(m.incomplete_details),
            completed_at=m.completed_at,
            incomplete_at=m.incomplete_at,
        )
    out.update(role=m.role, content=copy.deepcopy(m.content))
    if gen == "v1":
        out["file_ids"] = list(m.file_ids)
    else:
        out["attachments"] = copy.deepcopy(m.attachments)
    out["metadata"] = dict(m.metadata)
    return out


#: Run parameters a v1 (2024-02-15-preview) run object carries; the rest are v2's.
V1_RUN_PARAMS = ("model", "instructions", "tools")
RUN_EXPIRY_S = 600


def run_json(r: Run) -> Json:
    """A run as its api-version's ``runObject``. ``expires_at`` is typed ``integer`` and not
    nullable in both documents, so every run carries one (created_at + 10 minutes), finished
    or not. v1's object has ``file_ids`` and none of v2's sampling/truncation fields."""
    out: Json = {
        "id": r.id,
        "object": "thread.run",
        "created_at": r.created_at,
        "assistant_id": r.assistant_id,
        "thread_id": r.thread_id,
        "status": r.status,
        "started_at": r.started_at,
        "expires_at": r.created_at + RUN_EXPIRY_S,
        "cancelled_at": r.cancelled_at,
        "failed_at": r.failed_at,
        "completed_at": r.completed_at,
        "required_action": copy.deepcopy(r.required_action),
        "last_error": copy.deepcopy(r.last_error),
    }
    if r.gen == "v1":
        out.update({k: copy.deepcopy(r.params[k]) for k in V1_RUN_PARAMS})
        out.update(file_ids=list(r.file_ids), metadata=dict(r.metadata))
        return out
    out["incomplete_details"] = None
    out.update(copy.deepcopy(r.params))
    out.update(metadata=dict(r.metadata), usage=copy.deepcopy(r.usage))
    return out


def step_json(s: Step) -> Json:
    """A run step; both documents name the expiry field ``expired_at`` (nullable)."""
    out: Json = {
        "id": s.id,
        "object": "thread.run.step",
        "created_at": s.created_at,
        "run_id": s.run_id,
        "assistant_id": s.assistant_id,
        "thread_id": s.thread_id,
        "type": s.type,
        "status": s.status,
        "cancelled_at": s.cancelled_at,
        "completed_at": s.completed_at,
        "expired_at": None,
        "failed_at": s.failed_at,
        "last_error": copy.deepcopy(s.last_error),
        "step_details": copy.deepcopy(s.details),
        "metadata": {},
    }
    if s.gen == "v2":
        out["usage"] = copy.deepcopy(s.usage)
    return out


def _by_time(x: Message | Run | Step) -> tuple[int, int]:
    return (x.created_at, x.seq)


class Store:
    """All threads and what hangs off them. Methods validate and change; callers hold ``lock``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.threads: dict[str, Thread] = {}
            self.messages: dict[str, dict[str, Message]] = {}
            self.runs: dict[str, dict[str, Run]] = {}
            self.steps: dict[str, dict[str, Step]] = {}
            self._seq = 0
            self.files = Files(self.now, self.next_seq)
            self.vector_stores = VectorStores(self.now, self.next_seq, self.files)
            self.assistants = Assistants(self.now, self.next_seq, self.vector_stores.expand)
            self.conversations = Conversations(self.now, self.next_seq, self.files)
            self.responses = Responses(
                self.now,
                self.clock,
                self.next_seq,
                self.files,
                self.conversations,
                self.vector_stores.items,
            )

    def now(self) -> int:
        return int(self.clock())

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # threads -------------------------------------------------------------------------------
    def create_thread(self, body: Json, gen: Generation) -> Thread:
        reject_unknown(
            body, {"messages", "metadata"} | ({"tool_resources"} if gen == "v2" else set())
        )
        raw = body.get("messages") or []
        if not isinstance(raw, list):
            raise invalid("Invalid type for 'messages': expected an array.", "messages")
        parsed = [parse_new_message(m, gen, f"messages[{i}].") for i, m in enumerate(raw)]
        thread = Thread(
            new_id("thread_"),
            self.now(),
            self.next_seq(),
            check_metadata(body.get("metadata")),
            self.vector_stores.expand(body.get("tool_resources") or {}),
        )
        self.threads[thread.id] = thread
        self.messages[thread.id], self.runs[thread.id] = {}, {}
        for fields in parsed:
            self.add_message(thread.id, **fields)
        return thread

    def thread(self, thread_id: str) -> Thread:
        if thread_id not in self.threads:
            raise not_found("thread", thread_id)
        return self.threads[thread_id]

    def modify_thread(self, thread_id: str, body: Json, gen: Generation) -> Thread:
        """``metadata`` given (an object or null) replaces the thread's whole map; absent, the
        map stays. Microsoft's documents describe the field as the object's "set of 16
        key-value pairs" and the 2024-05-01-preview example ``modify_thread.json`` answers
        with exactly the map sent; nothing documents a merge or a per-key delete."""
        thread = self.thread(thread_id)
        reject_unknown(body, {"metadata", "tool_resources"} if gen == "v2" else {"metadata"})
        if "metadata" in body:
            thread.metadata = check_metadata(body["metadata"])
        if body.get("tool_resources") is not None:
            thread.tool_resources = copy.deepcopy(body["tool_resources"])
        return thread

    def delete_thread(self, thread_id: str) -> Json:
        self.thread(thread_id)
        del self.threads[thread_id], self.messages[thread_id]
        for run_id in self.runs.pop(thread_id):
            self.steps.pop(run_id, None)
        return {"id": thread_id, "object": "thread.deleted", "deleted": True}

    # messages ------------------------------------------------------------------------------
    def active_run(self, thread_id: str) -> Run | None:
        self.thread(thread_id)
        active = [r for r in self.runs[thread_id].values() if r.status in ACTIVE_RUN_STATUSES]
        return active[0] if active else None

    def create_message(self, thread_id: str, body: Json, gen: Generation) -> Message:
        self.thread(thread_id)
        fields = parse_new_message(body, gen)
        run = self.active_run(thread_id)
        if run is not None:
            raise invalid(f"Can't add messages to {thread_id} while a run {run.id} is active.")
        return self.add_message(thread_id, **fields)

    def add_message(self, thread_id: str, **fields: Any) -> Message:
        now = self.now()
        fields.setdefault("completed_at", now if fields.get("status") is None else None)
        message = Message(new_id("msg_"), thread_id, now, self.next_seq(), **fields)
        self.messages[thread_id][message.id] = message
        return message

    def message(self, thread_id: str, message_id: str) -> Message:
        self.thread(thread_id)
        if message_id not in self.messages[thread_id]:
            raise not_found("message", message_id)
        return self.messages[thread_id][message_id]

    def list_messages(self, thread_id: str, q: ListQuery, gen: Generation) -> Json:
        self.thread(thread_id)
        items = [
            m for m in self.messages[thread_id].values() if q.run_id is None or m.run_id == q.run_id
        ]
        page, more = paginate(items, q, _by_time, lambda m: m.id)
        return list_json([message_json(m, gen) for m in page], more)

    def modify_message(self, thread_id: str, message_id: str, body: Json) -> Message:
        message = self.message(thread_id, message_id)
        reject_unknown(body, {"metadata"})
        if "metadata" in body:
            message.metadata = check_metadata(body["metadata"])
        return message

    def delete_message(self, thread_id: str, message_id: str) -> Json:
        self.message(thread_id, message_id)
        del self.messages[thread_id][message_id]
        return {"id": message_id, "object": "thread.message.deleted", "deleted": True}

    def list_message_files(self, thread_id: str, message_id: str, q: ListQuery) -> Json:
        message = self.message(thread_id, message_id)
        files = [self._message_file(message, f) for f in message.file_ids]
        ranked = {f["id"]: i for i, f in enumerate(files)}
        page, more = paginate(
            files, q, lambda f: (f["created_at"], ranked[f["id"]]), lambda f: str(f["id"])
        )
        return list_json(page, more)

    def message_file(self, thread_id: str, message_id: str, file_id: str) -> Json:
        message = self.message(thread_id, message_id)
        if file_id not in message.file_ids:
            raise not_found("file", file_id)
        return self._message_file(message, file_id)

    @staticmethod
    def _message_file(message: Message, file_id: str) -> Json:
        return {
            "id": file_id,
            "object": "thread.message.file",
            "created_at": message.created_at,
            "message_id": message.id,
        }

    def last_user_text(self, thread_id: str) -> str:
        for message in sorted(
            self.messages.get(thread_id, {}).values(), key=_by_time, reverse=True
        ):
            texts = [p["text"]["value"] for p in message.content if p["type"] == "text"]
            if message.role == "user" and texts:
                return str(texts[0])
        return ""

    # runs and steps ------------------------------------------------------------------------
    def add_run(self, run: Run) -> None:
        self.runs[run.thread_id][run.id] = run
        self.steps[run.id] = {}

    def run(self, thread_id: str, run_id: str) -> Run:
        self.thread(thread_id)
        if run_id not in self.runs[thread_id]:
            raise not_found("run", run_id)
        return self.runs[thread_id][run_id]

    def list_runs(self, thread_id: str, q: ListQuery) -> Json:  # runs render by their gen
        self.thread(thread_id)
        page, more = paginate(list(self.runs[thread_id].values()), q, _by_time, lambda r: r.id)
        return list_json([run_json(r) for r in page], more)

    def modify_run(self, thread_id: str, run_id: str, body: Json) -> Run:
        run = self.run(thread_id, run_id)
        reject_unknown(body, {"metadata"})
        if "metadata" in body:
            run.metadata = check_metadata(body["metadata"])
        return run

    def add_step(self, run: Run, kind: str, details: Json) -> Step:
        step = Step(
            new_id("step_"),
            run.id,
            run.thread_id,
            run.assistant_id,
            self.now(),
            self.next_seq(),
            kind,
            details,
            gen=run.gen,
        )
        self.steps.setdefault(run.id, {})[step.id] = step
        return step

    def step(self, thread_id: str, run_id: str, step_id: str) -> Step:
        self.run(thread_id, run_id)
        if step_id not in self.steps[run_id]:
            raise not_found("run step", step_id)
        return self.steps[run_id][step_id]

    def list_steps(self, thread_id: str, run_id: str, q: ListQuery) -> Json:
        self.run(thread_id, run_id)
        page, more = paginate(list(self.steps[run_id].values()), q, _by_time, lambda s: s.id)
        return list_json([step_json(s) for s in page], more)

    def run_messages(self, run: Run) -> list[Message]:
        return [m for m in self.messages.get(run.thread_id, {}).values() if m.run_id == run.id]

    def run_steps(self, run: Run) -> list[Step]:
        return list(self.steps.get(run.id, {}).values())
