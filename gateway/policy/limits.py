"""Per-profile payload limits, Azure's ceilings, and the config check that holds them (pure).

A profile may only tighten what Azure accepts. ``limit_problems`` lists every way a profile's
limits loosen beyond ``AZURE_LIMITS`` (for ``check-config``); ``effective_limits`` clamps them
again at request time, so even an unchecked profile never lets the gateway forward more than
Azure's ceilings.

Counts are 0-based where 0 means "none allowed" (``max_files=0`` forbids files on messages).
``max_thread_messages`` has no documented Azure maximum: its ceiling (and default) is a
deliberate gateway rule (``THREAD_MESSAGES_CEILING``, 100 messages seeding one thread or run;
more are added one by one with ``messages.create``), documented in the README.

What a tenant may build: ``models`` (deployment names for assistants and run overrides; empty =
any), ``tools`` (tool types), ``max_instructions_chars`` (None = the api-version's maximum),
``max_assistant_files`` (files on one assistant: v1 ``file_ids``, v2 code-interpreter files;
Azure: 20) and ``max_vector_store_files`` (files given when a vector store or a file batch is
made; Azure: 500 per request, 10,000 for a store made inside a thread or assistant).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gateway.operations.apiversions import KNOWN_VERSIONS
from gateway.ownership.rules import STAMP_KEY
from gateway.policy.urls import UrlError, parse_https_url

AZURE_ROLES: frozenset[str] = frozenset({"user", "assistant"})
AZURE_ATTACHMENT_TOOLS: frozenset[str] = frozenset({"code_interpreter", "file_search"})
#: Every tool type of every api-version (``retrieval`` is v1's, ``file_search`` v2's).
AZURE_TOOLS: frozenset[str] = frozenset(
    {"code_interpreter", "file_search", "function", "retrieval"}
)
#: The v1 API's tool types (``OpenAI.Tool`` of ``azure-v1-v1-generated.json``; each Assistants
#: checker still accepts only its own api-version's types).
V1_API_TOOLS: frozenset[str] = frozenset(
    {
        "function",
        "file_search",
        "web_search",
        "web_search_preview",
        "code_interpreter",
        "mcp",
        "image_generation",
        "computer_use_preview",
        "local_shell",
    }
)
ALL_TOOLS: frozenset[str] = AZURE_TOOLS | V1_API_TOOLS
#: Roles of v1 API input messages (``OpenAI.EasyInputMessage``/``InputMessage``).
AZURE_INPUT_ROLES: frozenset[str] = frozenset({"user", "assistant", "system", "developer"})
#: Items one conversations create / items create may carry (Azure: "up to 20 at a time").
AZURE_CONVERSATION_ITEMS = 20
#: Gateway ceilings (the documents set none): input items per request (``input`` of
#: responses create), ``input_file`` and ``input_image`` parts per request.
INPUT_ITEMS_CEILING = 1000
INPUT_FILES_CEILING = 100
INPUT_IMAGES_CEILING = 500
#: Files on one assistant (v1 ``file_ids`` maxItems, v2 ``code_interpreter.file_ids``).
AZURE_ASSISTANT_FILES = 20
#: Files named when a store is made inside a thread or assistant (``vector_stores[].file_ids``).
AZURE_VECTOR_STORE_FILES = 10_000
#: Largest create-message ``content`` over every known api-version (code points).
AZURE_MAX_CONTENT_CHARS = max(v.max_content_chars for v in KNOWN_VERSIONS.values())
#: Gateway ceiling for messages in one create-thread / ``additional_messages`` list.
THREAD_MESSAGES_CEILING = 100
#: Longest model (deployment) name a body may carry.
MAX_MODEL_CHARS = 256
#: Azure's largest file (512 MB per file: the Assistants quotas and limits page).
AZURE_MAX_FILE_BYTES = 512 * 1024 * 1024
#: The ``purpose`` values Microsoft's documents accept on ``POST /files`` (the authoring
#: documents' ``Purpose`` enum for 2024-02-15/2024-05-01-preview, and ``batch``/``vision`` of
#: the later inference documents).
AZURE_FILE_PURPOSES: frozenset[str] = frozenset(
    {"assistants", "assistants_output", "batch", "fine-tune", "fine-tune-results", "vision"}
)


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    """What one caller profile may send; the defaults are what Azure accepts."""

    roles: frozenset[str] = AZURE_ROLES
    #: Code points per message content (and instructions); None = the api-version's maximum.
    max_content_chars: int | None = None
    #: ``content`` as an array of parts (v2 api-versions only).
    allow_content_parts: bool = True
    allow_image_file: bool = True
    allow_image_url: bool = True
    #: True: ``https://`` and ``data:image/...;base64`` URLs. False: ``data:`` URLs only.
    #: Never ``http``, ``file`` or any other scheme.
    allow_external_image_urls: bool = True
    #: Refuse ``https`` image URLs to private, loopback, link-local, CGNAT, multicast or
    #: unspecified IP literals and to ``localhost``-style names (``policy_urls``): Azure
    #: fetches them, so this is defence in depth against SSRF through Azure.
    deny_private_image_urls: bool = True
    #: ``file_ids`` (v1) / ``attachments`` (v2) per message.
    max_files: int = 10
    attachment_tools: frozenset[str] = AZURE_ATTACHMENT_TOOLS
    max_metadata_pairs: int = 16
    max_metadata_key_chars: int = 64
    max_metadata_value_chars: int = 512
    #: Keys every created thread, message and run must carry (e.g. a cost-centre tag).
    required_metadata_keys: frozenset[str] = frozenset()
    #: Messages in create-thread ``messages`` and run ``additional_messages``.
    max_thread_messages: int = THREAD_MESSAGES_CEILING
    max_code_interpreter_files: int = 20
    max_vector_stores: int = 1
    #: Deployment names assistants and run ``model`` overrides may name (empty: any).
    models: frozenset[str] = frozenset()
    #: Tool types assistants, runs and responses may use (and tool resources they may carry).
    tools: frozenset[str] = ALL_TOOLS
    #: Code points of assistant and run ``instructions``; None = the api-version's maximum.
    max_instructions_chars: int | None = None
    max_assistant_files: int = AZURE_ASSISTANT_FILES
    max_vector_store_files: int = AZURE_VECTOR_STORE_FILES
    #: Bytes per uploaded file.
    max_file_bytes: int = AZURE_MAX_FILE_BYTES
    #: Purposes a file may be uploaded for (the Assistants' own by default).
    file_purposes: frozenset[str] = frozenset({"assistants"})
    # -- the v1 API (responses, conversations) ------------------------------------------
    #: Roles of input messages (``input``, conversation ``items``).
    input_roles: frozenset[str] = AZURE_INPUT_ROLES
    #: Input items per request (responses ``input``; conversation ``items``: also at most 20).
    max_input_items: int = INPUT_ITEMS_CEILING
    #: Code points of all the text one request carries (instructions and every text part);
    #: None: only the per-item limit (``max_content_chars``).
    max_request_content_chars: int | None = None
    #: ``input_file`` and ``input_image`` parts per request.
    max_input_files: int = INPUT_FILES_CEILING
    max_input_images: int = INPUT_IMAGES_CEILING
    #: The exact ``https`` ``server_url`` an ``mcp`` tool may name (empty: no ``mcp`` tool).
    mcp_server_urls: frozenset[str] = frozenset()
    #: ``store`` (false: ``store: true`` is refused, an absent ``store`` is sent as false).
    allow_store: bool = True
    allow_background: bool = True
    #: Ceiling of ``max_output_tokens`` (None: Azure's; set: an absent one is sent as it).
    max_output_tokens: int | None = None


AZURE_LIMITS = PolicyLimits(file_purposes=AZURE_FILE_PURPOSES)
#: Thread metadata leaves one of Azure's 16 pairs to the gateway's owner stamp.
THREAD_METADATA_PAIRS = AZURE_LIMITS.max_metadata_pairs - 1

# (field, smallest allowed value); the largest is the value in AZURE_LIMITS.
_COUNTS: tuple[tuple[str, int], ...] = (
    ("max_files", 0),
    ("max_metadata_pairs", 0),
    ("max_metadata_key_chars", 1),
    ("max_metadata_value_chars", 1),
    ("max_thread_messages", 0),
    ("max_code_interpreter_files", 0),
    ("max_vector_stores", 0),
    ("max_assistant_files", 0),
    ("max_vector_store_files", 0),
    ("max_file_bytes", 1),
    ("max_input_items", 0),
    ("max_input_files", 0),
    ("max_input_images", 0),
)
_FLAGS = (
    "allow_content_parts",
    "allow_image_file",
    "allow_image_url",
    "allow_external_image_urls",
    "deny_private_image_urls",
    "allow_store",
    "allow_background",
)
#: The smallest ``max_output_tokens`` Azure accepts.
MIN_OUTPUT_TOKENS = 16
#: Largest integer a count may hold (int32, as the documents type them).
_INT32 = 2**31 - 1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_set(value: object) -> bool:
    return isinstance(value, frozenset) and all(isinstance(item, str) for item in value)


def limit_problems(limits: PolicyLimits, prefix: str) -> list[str]:
    """Every way ``limits`` is malformed or looser than Azure, as ``path: problem`` lines."""
    problems: list[str] = []
    for name, low in _COUNTS:
        value, high = getattr(limits, name), getattr(AZURE_LIMITS, name)
        if not _is_int(value) or not low <= value <= high:
            problems.append(f"{prefix}.{name}: must be an integer between {low} and {high}")
    chars = limits.max_content_chars
    if chars is not None and (not _is_int(chars) or not 1 <= chars <= AZURE_MAX_CONTENT_CHARS):
        problems.append(
            f"{prefix}.max_content_chars: must be null or an integer between 1 and "
            f"{AZURE_MAX_CONTENT_CHARS}"
        )
    chars = limits.max_instructions_chars
    if chars is not None and (not _is_int(chars) or not 1 <= chars <= AZURE_MAX_CONTENT_CHARS):
        problems.append(
            f"{prefix}.max_instructions_chars: must be null or an integer between 1 and "
            f"{AZURE_MAX_CONTENT_CHARS}"
        )
    if not _is_str_set(limits.tools) or not limits.tools <= ALL_TOOLS:
        problems.append(f"{prefix}.tools: must be a subset of {sorted(ALL_TOOLS)}")
    if not _is_str_set(limits.models) or not all(
        0 < len(model) <= MAX_MODEL_CHARS for model in limits.models
    ):
        problems.append(
            f"{prefix}.models: must be a set of deployment names of 1 to {MAX_MODEL_CHARS} "
            "characters"
        )
    problems.extend(
        f"{prefix}.{name}: must be true or false"
        for name in _FLAGS
        if not isinstance(getattr(limits, name), bool)
    )
    if not _is_str_set(limits.roles) or not limits.roles or not limits.roles <= AZURE_ROLES:
        problems.append(f"{prefix}.roles: must be a non-empty subset of {sorted(AZURE_ROLES)}")
    if not _is_str_set(limits.attachment_tools) or not (
        limits.attachment_tools <= AZURE_ATTACHMENT_TOOLS
    ):
        problems.append(
            f"{prefix}.attachment_tools: must be a subset of {sorted(AZURE_ATTACHMENT_TOOLS)}"
        )
    if not _is_str_set(limits.file_purposes) or not (limits.file_purposes <= AZURE_FILE_PURPOSES):
        problems.append(
            f"{prefix}.file_purposes: must be a subset of {sorted(AZURE_FILE_PURPOSES)}"
        )
    problems.extend(_required_key_problems(limits, prefix))
    problems.extend(_v1_api_problems(limits, prefix))
    return problems


def _v1_api_problems(limits: PolicyLimits, prefix: str) -> list[str]:
    """The v1 API's keys (responses, conversations)."""
    problems: list[str] = []
    roles = limits.input_roles
    if not _is_str_set(roles) or not roles or not roles <= AZURE_INPUT_ROLES:
        problems.append(
            f"{prefix}.input_roles: must be a non-empty subset of {sorted(AZURE_INPUT_ROLES)}"
        )
    chars = limits.max_request_content_chars
    if chars is not None and (not _is_int(chars) or not 1 <= chars <= _INT32):
        problems.append(
            f"{prefix}.max_request_content_chars: must be null or an integer between 1 and {_INT32}"
        )
    tokens = limits.max_output_tokens
    if tokens is not None and (not _is_int(tokens) or not MIN_OUTPUT_TOKENS <= tokens <= _INT32):
        problems.append(
            f"{prefix}.max_output_tokens: must be null or an integer between "
            f"{MIN_OUTPUT_TOKENS} and {_INT32}"
        )
    urls = limits.mcp_server_urls
    if not _is_str_set(urls) or not all(_is_exact_https(url) for url in urls):
        problems.append(f"{prefix}.mcp_server_urls: must be a set of exact https:// URLs")
    return problems


def _is_exact_https(url: str) -> bool:
    """An allow-listed MCP server: a plain ``https://host[:port]/path`` (no userinfo, query
    or fragment; compared exactly, so written as callers send it)."""
    if not url.startswith("https://") or any(c in url for c in "?#@"):
        return False
    try:
        parse_https_url(url)
    except UrlError:
        return False
    return True


def _required_key_problems(limits: PolicyLimits, prefix: str) -> list[str]:
    keys, where = limits.required_metadata_keys, f"{prefix}.required_metadata_keys"
    if not _is_str_set(keys):
        return [f"{where}: must be a set of strings"]
    problems: list[str] = []
    key_chars = limits.max_metadata_key_chars
    if _is_int(key_chars) and any(not key or len(key) > key_chars for key in keys):
        problems.append(f"{where}: keys must have 1 to {key_chars} characters")
    pairs = limits.max_metadata_pairs
    if STAMP_KEY in keys:
        problems.append(f"{where}: {STAMP_KEY} is reserved for the gateway")
    if _is_int(pairs) and len(keys) > pairs:
        problems.append(f"{where}: more keys than max_metadata_pairs ({pairs})")
    elif len(keys) > THREAD_METADATA_PAIRS:
        problems.append(
            f"{where}: more keys than a thread's metadata can hold "
            f"({THREAD_METADATA_PAIRS}: the gateway keeps one pair)"
        )
    return problems


#: ``effective_limits`` answers, by the ``id`` of the limits object (which each entry holds, so
#: that id is not reused while the entry lives). Keyed by identity, not by value: hashing a
#: ``PolicyLimits`` (its ~40 fields) cost more than the lookup saved; a profile's limits are
#: one object for the life of the config.
_EFFECTIVE: dict[int, tuple[PolicyLimits, PolicyLimits]] = {}
_EFFECTIVE_SIZE = 128


def effective_limits(limits: PolicyLimits) -> PolicyLimits:
    """``limits`` clamped to ``AZURE_LIMITS`` (defence in depth behind ``limit_problems``);
    worked out once per limits object (the last ``_EFFECTIVE_SIZE`` kept)."""
    known = _EFFECTIVE.get(id(limits))
    if known is not None and known[0] is limits:
        return known[1]
    clamped = _clamped(limits)
    if len(_EFFECTIVE) >= _EFFECTIVE_SIZE:
        _EFFECTIVE.pop(next(iter(_EFFECTIVE)), None)  # the oldest
    _EFFECTIVE[id(limits)] = (limits, clamped)
    return clamped


def _clamped(limits: PolicyLimits) -> PolicyLimits:
    az, chars = AZURE_LIMITS, limits.max_content_chars
    instructions = limits.max_instructions_chars
    return dataclasses.replace(
        limits,
        roles=limits.roles & az.roles,
        attachment_tools=limits.attachment_tools & az.attachment_tools,
        tools=limits.tools & ALL_TOOLS,
        input_roles=limits.input_roles & az.input_roles,
        file_purposes=limits.file_purposes & az.file_purposes,
        max_content_chars=None if chars is None else min(chars, AZURE_MAX_CONTENT_CHARS),
        max_instructions_chars=None
        if instructions is None
        else min(instructions, AZURE_MAX_CONTENT_CHARS),
        max_output_tokens=None
        if limits.max_output_tokens is None
        else max(limits.max_output_tokens, MIN_OUTPUT_TOKENS),
        **{name: min(getattr(limits, name), getattr(az, name)) for name, _ in _COUNTS},
    )
