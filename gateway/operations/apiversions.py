"""What each api-version is, as data (pure).

The gateway only accepts api-versions it knows the shape of: an unknown version could change
bodies or routes under us. Adding a version is adding a row here. Sources: the Azure REST specs
and docs summarised in shared/reference/azure-assistants-api.md, section 0.

Generations: ``v1`` and ``v2`` are the Assistants API's (dated versions, always required).
``openai-v1`` is the Azure OpenAI v1 API under ``/openai/v1/`` (``specification/ai/data-plane/
OpenAI.v1/azure-v1-{v1,preview}-generated.json``): its ``api-version`` is optional, ``v1`` (GA)
or ``preview``; absent means Azure's default, ``v1`` (``OPTIONAL_DEFAULT``), and is forwarded
absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Generation = Literal["v1", "v2", "openai-v1"]


@dataclass(frozen=True, slots=True)
class ApiVersion:
    name: str
    generation: Generation
    #: maxLength of a create-message ``content`` string (JSON Schema counts code points).
    max_content_chars: int
    #: ``include[]`` accepted on run creation / run-step reads.
    run_step_include: bool = False
    create_run_include: bool = False
    #: ``stream_options`` on create-thread-and-run (``createThreadAndRunRequest``).
    create_and_run_stream_options: bool = False

    @property
    def is_v1(self) -> bool:
        """The Assistants API's v1 (2024-02-15-preview), not the ``openai-v1`` generation."""
        return self.generation == "v1"


_V1_MAX = 32_768
_V2_MAX = 256_000

KNOWN_VERSIONS: dict[str, ApiVersion] = {
    v.name: v
    for v in (
        ApiVersion("2024-02-15-preview", "v1", _V1_MAX),
        ApiVersion("2024-05-01-preview", "v2", _V2_MAX),
        ApiVersion("2024-07-01-preview", "v2", _V2_MAX),
        ApiVersion("2024-08-01-preview", "v2", _V2_MAX),
        ApiVersion("2024-09-01-preview", "v2", _V2_MAX),
        ApiVersion("2024-10-01-preview", "v2", _V2_MAX),
        ApiVersion("2024-12-01-preview", "v2", _V2_MAX),
        ApiVersion("2025-01-01-preview", "v2", _V2_MAX, run_step_include=True),
        ApiVersion("2025-02-01-preview", "v2", _V2_MAX, run_step_include=True),
        ApiVersion(
            "2025-03-01-preview", "v2", _V2_MAX, run_step_include=True, create_run_include=True
        ),
        ApiVersion(
            "2025-04-01-preview",
            "v2",
            _V2_MAX,
            run_step_include=True,
            create_run_include=True,
            create_and_run_stream_options=True,
        ),
        # The v1 API (no create-message content cap of its own: the Assistants v2 one).
        # ``preview`` first: the newest-allowed pick (owner lookups) then prefers GA ``v1``.
        ApiVersion("preview", "openai-v1", _V2_MAX),
        ApiVersion("v1", "openai-v1", _V2_MAX),
    )
}

#: Generations whose ``api-version`` may be absent, and the version absent stands for (Azure's
#: default). Absent is accepted only where that version is allowed, and forwarded absent.
OPTIONAL_DEFAULT: dict[Generation, str] = {"openai-v1": "v1"}

DEFAULT_VERSIONS: tuple[str, ...] = tuple(KNOWN_VERSIONS)
