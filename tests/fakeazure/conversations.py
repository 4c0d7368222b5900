"""Conversations of the v1 API and their items (``/openai/v1/conversations...``).

Azure's v1 documents (GA and preview, tests/specs/v1/SOURCES) define no conversations; the
shapes are the OpenAI reference's as the stock SDK (openai 2.x ``types/conversations``) reads
them: ``Conversation {id, object: "conversation", created_at, metadata}``, the deleted
resource ``{id, object: "conversation.deleted", deleted}``, an item list ``{object: "list",
data, first_id, last_id, has_more}``. Items create answers that list (the items made); items
delete answers the conversation. A conversation holds at most 20 items per request.

Metadata is stored exactly as sent (the gateway's ``gateway_owner`` included) and replaced
wholesale on update. Responses append their input and output items here (``append``).
No I/O; callers hold ``Store.lock``.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.fakeazure.files import Files
from tests.fakeazure.items import MAX_ITEMS_PER_REQUEST, check_file_refs, parse_items
from tests.fakeazure.shapes import (
    Json,
    ListQuery,
    check_metadata,
    invalid,
    list_json,
    paginate,
    reject_unknown,
    v1_not_found,
)


@dataclass(eq=False)
class Conversation:
    id: str
    created_at: int
    seq: int
    metadata: dict[str, str]
    items: list[tuple[int, Json]] = field(default_factory=list)  # (seq, item), in order


def conversation_json(c: Conversation) -> Json:
    return {
        "id": c.id,
        "object": "conversation",
        "created_at": c.created_at,
        "metadata": dict(c.metadata),
    }


class Conversations:
    """The conversations of one fake resource."""

    def __init__(
        self,
        now: Callable[[], int],
        next_seq: Callable[[], int],
        files: Files,
    ) -> None:
        self._now, self._next_seq, self._files = now, next_seq, files
        self.items: dict[str, Conversation] = {}

    def get(self, conversation_id: str, param: str | None = None) -> Conversation:
        if conversation_id not in self.items:
            raise v1_not_found("Conversation", conversation_id, param)
        return self.items[conversation_id]

    def create(self, body: Json) -> Conversation:
        reject_unknown(body, {"items", "metadata"})
        raw = body.get("items")
        parsed = [] if raw is None else parse_items(raw, "items", limit=MAX_ITEMS_PER_REQUEST)
        if raw is not None and not isinstance(raw, list):
            raise invalid("Invalid type for 'items': expected an array.", "items", "invalid_type")
        check_file_refs(self._files.items, parsed, "items")
        conv = Conversation(
            "conv_" + secrets.token_hex(24),
            self._now(),
            self._next_seq(),
            check_metadata(body.get("metadata")),
        )
        self.items[conv.id] = conv
        self.append(conv, parsed)
        return conv

    def update(self, conversation_id: str, body: Json) -> Conversation:
        conv = self.get(conversation_id)
        reject_unknown(body, {"metadata"})
        if "metadata" not in body:
            raise invalid(
                "Missing required parameter: 'metadata'.", "metadata", "missing_required_parameter"
            )
        conv.metadata = check_metadata(body["metadata"])
        return conv

    def delete(self, conversation_id: str) -> Json:
        self.get(conversation_id)
        del self.items[conversation_id]
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    def append(self, conv: Conversation, items: list[Json]) -> None:
        for item in items:
            if item.get("type") != "item_reference":
                conv.items.append((self._next_seq(), copy.deepcopy(item)))

    def add_items(self, conversation_id: str, body: Json) -> Json:
        conv = self.get(conversation_id)
        reject_unknown(body, {"items"})
        if "items" not in body:
            raise invalid(
                "Missing required parameter: 'items'.", "items", "missing_required_parameter"
            )
        if not isinstance(body["items"], list) or not body["items"]:
            raise invalid("Invalid 'items': expected a non-empty array.", "items", "invalid_value")
        parsed = parse_items(body["items"], "items", limit=MAX_ITEMS_PER_REQUEST)
        check_file_refs(self._files.items, parsed, "items")
        self.append(conv, parsed)
        return list_json(copy.deepcopy(parsed), False)

    def _find(self, conv: Conversation, item_id: str) -> tuple[int, Json]:
        for entry in conv.items:
            if entry[1].get("id") == item_id:
                return entry
        raise v1_not_found("Item", item_id)

    def item(self, conversation_id: str, item_id: str) -> Json:
        return copy.deepcopy(self._find(self.get(conversation_id), item_id)[1])

    def delete_item(self, conversation_id: str, item_id: str) -> Json:
        conv = self.get(conversation_id)
        conv.items.remove(self._find(conv, item_id))
        return conversation_json(conv)

    def list_items(self, conversation_id: str, q: ListQuery) -> Json:
        conv = self.get(conversation_id)
        page, more = paginate(conv.items, q, lambda e: (e[0], 0), lambda e: str(e[1]["id"]))
        return list_json([copy.deepcopy(item) for _, item in page], more)
