"""Files, one row per operation (pure data): upload, list, retrieve, delete, content.

Azure serves files on the same api-versions as the Assistants surface (the v1 SDK uploads the
``file_ids`` it attaches with 2024-02-15-preview; ``authoring/preview/<version>/
azureopenai.json`` documents ``/files``). ``files.list`` takes ``purpose`` (a documented
purpose) and answers a list of the caller's files (``lists``); a file's owner stamp is in its
filename. ``files.content`` answers the file's bytes (relayed as they arrive, never held).

``files.upload`` takes ``multipart/form-data`` (``purpose``, ``file``; ``Files_Upload`` in the
authoring documents, ``UploadFile`` in the inference ones from 2024-07-01-preview). Its body
is never read whole: it is checked and re-emitted as it streams to Azure (``upload``:
``policy.uploads``), the filename carrying the owner stamp (``Creation.stamp_at`` is empty:
files have no metadata).
"""

from __future__ import annotations

from gateway.operations.apiversions import Generation
from gateway.operations.row import FILE, Creation, Operation, QueryParam, choice

V1V2: frozenset[Generation] = frozenset({"v1", "v2"})
_F = "/openai/files/{file_id}"

#: The ``purpose`` values a file can have (``files.list`` filters on one).
FILE_PURPOSES: tuple[str, ...] = (
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
)

FILES: tuple[Operation, ...] = (
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
    Operation(
        "files.list",
        "GET",
        "/openai/files",
        V1V2,
        "read",
        query=(QueryParam("purpose", choice(*FILE_PURPOSES)),),
        lists=FILE,
    ),
    Operation("files.retrieve", "GET", _F, V1V2, "read", returns=FILE),
    Operation("files.delete", "DELETE", _F, V1V2, "write", deletes=True),
    Operation("files.content", "GET", _F + "/content", V1V2, "read"),
)
