"""Caller profiles: the operations a profile may call, its payload policy, its rate limits.

``PolicyLimits`` and its validation (``limit_problems``: a profile may only tighten Azure's
limits) belong to the policy core (``gateway.policy.limits``); ``PolicySettings`` declares the
keys it is read from, with the core's defaults.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.config.limits import RateLimitSettings
from gateway.config.schema import setting, table_name
from gateway.operations.table import OPERATIONS as ROWS
from gateway.policy.limits import PolicyLimits, limit_problems
from gateway.ratelimit.gcra import RateLimitProfile

OPERATIONS = frozenset(r.name for r in ROWS)
_AZURE = PolicyLimits()


def _limit(name: str, doc: str, **options: Any) -> Any:
    """A policy setting whose default is the core's (Azure's limit)."""
    return setting(getattr(_AZURE, name), doc, **options)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySettings:
    """``profiles.<name>.policy``: one key per ``PolicyLimits`` field (a test holds this)."""

    roles: frozenset[str] = _limit("roles", "message roles callers may send")
    max_content_chars: int | None = _limit(
        "max_content_chars",
        "code points per message content (and instructions)",
        shown="the api-version's maximum",
    )
    allow_content_parts: bool = _limit(
        "allow_content_parts", "`content` as an array of parts (v2 api-versions only)"
    )
    allow_image_file: bool = _limit("allow_image_file", "`image_file` content parts")
    allow_image_url: bool = _limit("allow_image_url", "`image_url` content parts")
    allow_external_image_urls: bool = _limit(
        "allow_external_image_urls",
        "`https://` image URLs too (false: `data:image/...;base64` only; never `http`, `file` "
        "or any other scheme)",
    )
    deny_private_image_urls: bool = _limit(
        "deny_private_image_urls",
        "refuse `https` image URLs to private, loopback, link-local, CGNAT, multicast or "
        "unspecified IP literals and to `localhost`-style names ([Image URLs](#image-urls))",
    )
    max_files: int = _limit("max_files", "`file_ids` (v1) / `attachments` (v2) per message")
    attachment_tools: frozenset[str] = _limit(
        "attachment_tools", "tools a message attachment may name"
    )
    max_metadata_pairs: int = _limit("max_metadata_pairs", "metadata pairs per object")
    max_metadata_key_chars: int = _limit("max_metadata_key_chars", "characters per metadata key")
    max_metadata_value_chars: int = _limit(
        "max_metadata_value_chars", "characters per metadata value"
    )
    required_metadata_keys: frozenset[str] = _limit(
        "required_metadata_keys",
        "keys every created thread, message and run must carry (e.g. a cost-centre tag)",
    )
    max_thread_messages: int = _limit(
        "max_thread_messages",
        "messages in create-thread `messages` and run `additional_messages` (at most 100: a "
        "gateway rule, the documents set none)",
    )
    max_code_interpreter_files: int = _limit(
        "max_code_interpreter_files", "`code_interpreter` files in a thread's tool resources"
    )
    max_vector_stores: int = _limit(
        "max_vector_stores", "`file_search` vector stores in a thread's tool resources"
    )
    models: frozenset[str] = _limit(
        "models",
        "deployment names an assistant's `model` and a run's or create-and-run's `model` "
        "override may name (empty: any)",
    )
    tools: frozenset[str] = _limit(
        "tools",
        "tool types assistants, runs and responses may use, and tool resources they may carry "
        "(Assistants: `code_interpreter`, `file_search`, `function`, `retrieval` (v1); the v1 "
        "API also `web_search`, `web_search_preview`, `mcp`, `image_generation`, "
        "`computer_use_preview`, `local_shell`)",
    )
    max_instructions_chars: int | None = _limit(
        "max_instructions_chars",
        "code points of assistant and run `instructions` / `additional_instructions`",
        shown="the api-version's maximum",
    )
    max_assistant_files: int = _limit(
        "max_assistant_files",
        "files on one assistant: v1 `file_ids`, v2 `tool_resources.code_interpreter.file_ids`",
    )
    max_vector_store_files: int = _limit(
        "max_vector_store_files",
        "files named when a vector store or a file batch is made (Azure: 500 a request; "
        "10,000 for a store made inside a thread or assistant)",
    )
    max_file_bytes: int = _limit(
        "max_file_bytes",
        "bytes per uploaded file (Azure: 512 MB), counted as the upload streams",
        shown="`536870912` (512 MiB)",
    )
    file_purposes: frozenset[str] = _limit(
        "file_purposes",
        "`purpose` values a file may be uploaded for (a subset of Azure's: `assistants`, "
        "`assistants_output`, `batch`, `fine-tune`, `fine-tune-results`, `vision`)",
    )

    input_roles: frozenset[str] = _limit(
        "input_roles", "roles of v1 API input messages (responses `input`, conversation `items`)"
    )
    max_input_items: int = _limit(
        "max_input_items",
        "input items per request (responses `input`; conversation `items`: Azure's 20 too; "
        "1000 is a gateway rule, the documents set none)",
    )
    max_request_content_chars: int | None = _limit(
        "max_request_content_chars",
        "code points of all the text one v1 API request carries (`instructions` and every "
        "text part)",
        shown="no limit beyond `max_content_chars` per text",
    )
    max_input_files: int = _limit(
        "max_input_files", "`input_file` parts per v1 API request (100: a gateway rule)"
    )
    max_input_images: int = _limit(
        "max_input_images", "`input_image` parts per v1 API request (500: a gateway rule)"
    )
    mcp_server_urls: frozenset[str] = _limit(
        "mcp_server_urls",
        "exact `https://` `server_url`s an `mcp` tool may name (empty: no `mcp` tool)",
    )
    allow_store: bool = _limit(
        "allow_store",
        "stored responses (false: `store: true` is refused, an absent `store` is sent false)",
    )
    allow_background: bool = _limit("allow_background", "`background: true` responses")
    max_output_tokens: int | None = _limit(
        "max_output_tokens",
        "ceiling of a response's `max_output_tokens` (set: an absent one is sent as it)",
        shown="Azure's",
    )

    def build(self) -> PolicyLimits:
        return PolicyLimits(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def __check__(self, path: str) -> Iterable[str]:
        return limit_problems(self.build(), path)


def matches_an_operation(pattern: str) -> str | None:
    if any(fnmatch.fnmatchcase(op, pattern) for op in OPERATIONS):
        return None
    return f"matches no operation: {pattern!r}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    name: str = table_name()
    #: The operations allowed: glob patterns as written, every matching name once built.
    operations: frozenset[str] = setting(
        frozenset({"*"}),
        "glob patterns over operation names (`messages.*`, `*.list`)",
        each=matches_an_operation,
    )
    policy: PolicyLimits = setting(
        _AZURE,
        "payload policy; a profile may only tighten Azure's limits",
        shape=PolicySettings,
        shown="Azure's limits",
    )
    rate_limit: RateLimitProfile = setting(factory=RateLimitProfile, shape=RateLimitSettings)

    def __post_init__(self) -> None:
        patterns = self.operations
        ops = frozenset(
            op for op in OPERATIONS if any(fnmatch.fnmatchcase(op, p) for p in patterns)
        )
        object.__setattr__(self, "operations", ops)

    def allows(self, operation: str) -> bool:
        return operation in self.operations
