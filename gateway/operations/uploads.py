"""File uploads, one row (pure data).

``POST /openai/files`` takes ``multipart/form-data`` (``purpose``, ``file``), as Microsoft's
documents define it for 2024-02-15-preview and 2024-05-01-preview (the authoring documents,
``authoring/preview/<version>/azureopenai.json``, ``Files_Upload``) and for 2024-07-01-preview
and later (``inference/preview/<version>/inference.json``). The body is never read whole: it
is checked and re-emitted as it streams to Azure (``policy.uploads``), the filename carrying
the owner stamp (``Creation.stamp_at`` is empty: files have no metadata).
"""

from __future__ import annotations

from gateway.operations.apiversions import Generation
from gateway.operations.row import FILE, Creation, Operation

V1V2: frozenset[Generation] = frozenset({"v1", "v2"})

UPLOADS: tuple[Operation, ...] = (
    Operation(
        "files.upload",
        "POST",
        "/openai/files",
        V1V2,
        "write",
        upload=True,
        creates=Creation(FILE, id_field="id", stamp_at=()),
        returns=FILE,
    ),
)
