"""The create-message policy, applied to every message a request carries (pure).

One function checks ``messages.create`` bodies and every message nested in
``threads.create`` ``messages``, ``threads.create_and_run`` ``thread.messages`` and
``runs.create`` ``additional_messages``: there is no second, laxer path.

Per api-version (shared/reference/azure-assistants-api.md section 1.1): v1 accepts role
``user`` only, string content only and ``file_ids``; v2 accepts ``user``/``assistant``,
string or content-part arrays and ``attachments``.

Image URLs: with ``allow_external_image_urls`` an ``image_url`` may be ``https://`` (its
full syntax checked: ``policy_urls``; with ``deny_private_image_urls``, not to a private,
loopback or link-local host) or ``data:image/{png,jpeg,gif,webp};base64,...``; without it
only such ``data:`` URLs. ``http``, ``file`` and every other scheme are always refused.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.operations.apiversions import ApiVersion
from gateway.policy.fields import (
    ATTACHMENT_TOOL_NOT_ALLOWED,
    CONTENT_EMPTY,
    CONTENT_PART_NOT_ALLOWED,
    CONTENT_TOO_LONG,
    DUPLICATE_FILE_ID,
    FIELD_NOT_ALLOWED_IN_VERSION,
    FILE_ID,
    INVALID_CONTENT_PART,
    INVALID_FILE_ID,
    INVALID_TYPE,
    INVALID_VALUE,
    ROLE_NOT_ALLOWED,
    TOO_MANY_FILES,
    as_choice,
    as_id,
    as_id_list,
    as_list,
    as_object,
    as_str,
    check_keys,
    check_metadata,
    check_required_tags,
    refuse,
    require_fields,
)
from gateway.policy.jsonbody import child_path, field_path, item_path
from gateway.policy.limits import PolicyLimits
from gateway.policy.urls import UrlError, is_private, parse_https_url

_V1_FIELDS = frozenset({"role", "content", "file_ids", "metadata"})
_V2_FIELDS = frozenset({"role", "content", "attachments", "metadata"})
_V1_ROLES = frozenset({"user"})
_V2_ROLES = frozenset({"user", "assistant"})
_DETAILS = frozenset({"auto", "low", "high"})
_DATA_IMAGE_URL = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2}")


def content_max_chars(version: ApiVersion, limits: PolicyLimits) -> int:
    """Code points allowed in one message's content (and in run instructions)."""
    if limits.max_content_chars is None:
        return version.max_content_chars
    return min(version.max_content_chars, limits.max_content_chars)


def check_message(
    value: Any, path: str, version: ApiVersion, limits: PolicyLimits
) -> dict[str, Any]:
    msg = as_object(value, path)
    fields, other = (_V1_FIELDS, _V2_FIELDS) if version.is_v1 else (_V2_FIELDS, _V1_FIELDS)
    check_keys(msg, path, fields, other)
    require_fields(msg, path, "role", "content")
    out: dict[str, Any] = {}
    for key, item in msg.items():
        where = field_path(path, key)  # check_keys has held it to the field list
        if key == "role":
            out[key] = _role(item, where, version, limits)
        elif key == "content":
            out[key] = _content(item, where, version, limits)
        elif key == "file_ids":
            out[key] = _file_ids(item, where, limits)
        elif key == "attachments":
            out[key] = _attachments(item, where, limits)
        else:
            out[key] = check_metadata(item, where, limits)
    check_required_tags(msg, path, limits, creating=True)
    return out


def _role(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> str:
    versions_roles = _V1_ROLES if version.is_v1 else _V2_ROLES
    role = as_str(value, path)
    if role not in limits.roles or role not in versions_roles:
        allowed = limits.roles & versions_roles
        refuse(ROLE_NOT_ALLOWED, path, f"Role must be one of: {', '.join(sorted(allowed))}.")
    return role


def _content(value: Any, path: str, version: ApiVersion, limits: PolicyLimits) -> Any:
    max_chars = content_max_chars(version, limits)
    if isinstance(value, str):
        if not value:
            refuse(CONTENT_EMPTY, path, "Message content must not be empty.")
        if len(value) > max_chars:
            refuse(
                CONTENT_TOO_LONG, path, f"Message content may have at most {max_chars} characters."
            )
        return value
    if not isinstance(value, list):
        refuse(INVALID_TYPE, path, "Message content must be a string or an array of parts.")
    if version.is_v1:
        refuse(FIELD_NOT_ALLOWED_IN_VERSION, path, "Content parts need a v2 api-version.")
    if not limits.allow_content_parts:
        refuse(CONTENT_PART_NOT_ALLOWED, path, "Message content must be a string.")
    if not value:
        refuse(CONTENT_EMPTY, path, "Message content must not be empty.")
    parts: list[dict[str, Any]] = []
    total = 0
    for i, part in enumerate(value):
        checked = _part(part, item_path(path, i), limits, max_chars)
        total += len(checked.get("text", ""))
        if total > max_chars:
            refuse(
                CONTENT_TOO_LONG, path, f"Message content may have at most {max_chars} characters."
            )
        parts.append(checked)
    return parts


def _part(value: Any, path: str, limits: PolicyLimits, max_chars: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        refuse(INVALID_CONTENT_PART, path, "A content part must be an object.")
    require_fields(value, path, "type")
    kind = value["type"]
    allowed = {
        "text": True,
        "image_file": limits.allow_image_file,
        "image_url": limits.allow_image_url,
    }
    if not isinstance(kind, str) or kind not in allowed:
        refuse(INVALID_CONTENT_PART, child_path(path, "type"), "Unknown content part type.")
    if not allowed[kind]:
        refuse(
            CONTENT_PART_NOT_ALLOWED,
            child_path(path, "type"),
            "This content part type is not allowed.",
        )
    check_keys(value, path, frozenset({"type", kind}), frozenset())
    require_fields(value, path, kind)
    where = child_path(path, kind)
    if kind == "text":
        text = as_str(value["text"], where)
        if not text:
            refuse(CONTENT_EMPTY, where, "A text part must not be empty.")
        if len(text) > max_chars:
            refuse(
                CONTENT_TOO_LONG, where, f"Message content may have at most {max_chars} characters."
            )
        return {"type": kind, "text": text}
    image = as_object(value[kind], where)
    ref = "file_id" if kind == "image_file" else "url"
    check_keys(image, where, frozenset({ref, "detail"}), frozenset())
    require_fields(image, where, ref)
    out: dict[str, Any] = {}
    for key, item in image.items():
        if key == "detail":
            out[key] = as_choice(item, child_path(where, key), _DETAILS)
        elif key == "file_id":
            out[key] = as_id(item, child_path(where, key), FILE_ID, INVALID_FILE_ID)
        else:
            out[key] = _image_url(item, child_path(where, key), limits)
    return {"type": kind, kind: out}


def check_image_url(value: Any, path: str, limits: PolicyLimits) -> str:
    """An image (or v1 API ``input_file``) URL under the profile's URL rules."""
    return _image_url(value, path, limits)


def _image_url(value: Any, path: str, limits: PolicyLimits) -> str:
    url = as_str(value, path)
    if url[:5].lower() == "data:":
        if not _DATA_IMAGE_URL.fullmatch(url):
            refuse(
                INVALID_CONTENT_PART,
                path,
                "A data URL must be a base64 png, jpeg, gif or webp image.",
            )
        return url
    if not limits.allow_external_image_urls:
        refuse(CONTENT_PART_NOT_ALLOWED, path, "Only data: image URLs are allowed.")
    if url[:8].lower() != "https://":
        refuse(CONTENT_PART_NOT_ALLOWED, path, "Image URLs must use https.")
    try:
        parsed = parse_https_url(url)
    except UrlError as exc:
        refuse(INVALID_CONTENT_PART, path, str(exc))
    if limits.deny_private_image_urls and is_private(parsed):
        refuse(
            CONTENT_PART_NOT_ALLOWED,
            path,
            "Image URLs must not point at private, loopback or link-local hosts.",
        )
    return url


def _file_ids(value: Any, path: str, limits: PolicyLimits) -> list[str]:
    ids = as_id_list(
        value,
        path,
        pattern=FILE_ID,
        max_items=limits.max_files,
        too_many=TOO_MANY_FILES,
        malformed=INVALID_FILE_ID,
        duplicate=DUPLICATE_FILE_ID,
    )
    if not ids:
        refuse(INVALID_VALUE, path, "file_ids must not be empty (omit it instead).")
    return ids


def _attachments(value: Any, path: str, limits: PolicyLimits) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    items = as_list(value, path)
    if len(items) > limits.max_files:
        refuse(TOO_MANY_FILES, path, f"At most {limits.max_files} attachments are allowed.")
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = item_path(path, i)
        attachment = as_object(item, where)
        check_keys(attachment, where, frozenset({"file_id", "tools"}), frozenset())
        require_fields(attachment, where, "file_id", "tools")
        file_id = as_id(
            attachment["file_id"], child_path(where, "file_id"), FILE_ID, INVALID_FILE_ID
        )
        if file_id in seen:
            refuse(
                DUPLICATE_FILE_ID, child_path(where, "file_id"), "The same file is attached twice."
            )
        seen.add(file_id)
        tools = _attachment_tools(attachment["tools"], child_path(where, "tools"), limits)
        out.append({"file_id": file_id, "tools": tools})
    return out


def _attachment_tools(value: Any, path: str, limits: PolicyLimits) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for i, item in enumerate(as_list(value, path)):
        where = item_path(path, i)
        tool = as_object(item, where)
        check_keys(tool, where, frozenset({"type"}), frozenset())
        require_fields(tool, where, "type")
        kind = as_str(tool["type"], child_path(where, "type"))
        if kind not in limits.attachment_tools:
            refuse(
                ATTACHMENT_TOOL_NOT_ALLOWED,
                child_path(where, "type"),
                f"Attachment tools must be among: {', '.join(sorted(limits.attachment_tools))}.",
            )
        if {"type": kind} in out:
            refuse(INVALID_VALUE, child_path(where, "type"), "The same tool is listed twice.")
        out.append({"type": kind})
    return out
