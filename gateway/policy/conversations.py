"""The v1 API's conversations policy (pure): conversations create and update, conversation
items create.

Shapes: the stock SDK's ``ConversationCreateParams`` / ``ConversationUpdateParams`` /
``ItemCreateParams`` (Azure's ``azure-v1-preview-generated.json`` documents the same), closed.
``items`` are input items (``inputs``: the same policy as responses create ``input``), at most
20 per request (Azure's cap) and at most the profile's ``max_input_items``. ``metadata``: 16
pairs / 64 / 512, ``gateway_owner`` reserved, at most 15 of the caller's (a conversation is
stamped); update must carry ``metadata`` (it replaces the map: the stamp is put back).
"""

from __future__ import annotations

from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.policy.fields import (
    check_keys,
    check_metadata,
    check_required_tags,
    require_fields,
)
from gateway.policy.inputs import InputBudget, check_items
from gateway.policy.jsonbody import child_path
from gateway.policy.limits import AZURE_CONVERSATION_ITEMS, PolicyLimits


def _items(value: Any, path: str, budget: InputBudget, *, allow_empty: bool) -> Any:
    most = min(budget.limits.max_input_items, AZURE_CONVERSATION_ITEMS)
    return check_items(value, path, budget, most, allow_empty=allow_empty)


def check_create_conversation(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    check_keys(body, "", frozenset({"items", "metadata"}), frozenset())
    budget = InputBudget(limits, version)
    out: dict[str, Any] = {}
    for key, item in body.items():
        where = child_path("", key)
        if key == "metadata":
            out[key] = check_metadata(item, where, limits, thread=True)
        else:
            out[key] = None if item is None else _items(item, where, budget, allow_empty=True)
    check_required_tags(body, "", limits, creating=True)
    return out


def check_update_conversation(
    body: dict[str, Any], _version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    check_keys(body, "", frozenset({"metadata"}), frozenset())
    require_fields(body, "", "metadata")
    check_required_tags(body, "", limits, creating=False)
    return {"metadata": check_metadata(body["metadata"], "metadata", limits, thread=True)}


def check_create_items(
    body: dict[str, Any], version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    check_keys(body, "", frozenset({"items"}), frozenset())
    require_fields(body, "", "items")
    budget = InputBudget(limits, version)
    return {"items": _items(body["items"], "items", budget, allow_empty=False)}
