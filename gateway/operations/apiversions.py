"""What each Assistants api-version is, as data (pure).

The gateway only accepts api-versions it knows the shape of: an unknown version could change
bodies or routes under us. Adding a version is adding a row here. Sources: the Azure REST specs
and docs summarised in shared/reference/azure-assistants-api.md, section 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Generation = Literal["v1", "v2"]


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
    )
}

DEFAULT_VERSIONS: tuple[str, ...] = tuple(KNOWN_VERSIONS)
