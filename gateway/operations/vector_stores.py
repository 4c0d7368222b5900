"""Vector stores, their files and file batches, one row per operation (pure data).

v2 only (2024-05-01-preview and later, ``inference.json``). The vector store is the owned
object of every row under ``/vector_stores/{vector_store_id}``; a vector store file's id is the
file's id (``file-…``/``assistant-…``), a batch's ``vsfb_…``. File lists take the pager and
``filter`` (a file status); ``vector_stores.list`` is a list of owned stores (``lists``).
"""

from __future__ import annotations

from gateway.operations.apiversions import Generation
from gateway.operations.row import (
    FILE,
    VECTOR_STORE,
    Creation,
    Operation,
    QueryParam,
    Ref,
    choice,
    pager,
)
from gateway.policy.vectorstores import (
    check_create_file_batch,
    check_create_vector_store,
    check_create_vector_store_file,
    check_modify_vector_store,
)

V2: frozenset[Generation] = frozenset({"v2"})
_VS = "/openai/vector_stores/{vector_store_id}"
_B = _VS + "/file_batches/{batch_id}"
_FILE_LIST = (
    *pager("file_id"),
    QueryParam("filter", choice("in_progress", "completed", "failed", "cancelled")),
)

VECTOR_STORES: tuple[Operation, ...] = (
    Operation(
        "vector_stores.create",
        "POST",
        "/openai/vector_stores",
        V2,
        "write",
        body=check_create_vector_store,
        returns=VECTOR_STORE,
        creates=Creation(VECTOR_STORE, id_field="id", stamp_at=("metadata",)),
        refs=(Ref("file_ids[]", FILE),),
    ),
    Operation(
        "vector_stores.list",
        "GET",
        "/openai/vector_stores",
        V2,
        "read",
        query=pager("vector_store_id"),
        lists=VECTOR_STORE,
    ),
    Operation("vector_stores.retrieve", "GET", _VS, V2, "read", returns=VECTOR_STORE),
    Operation(
        "vector_stores.modify",
        "POST",
        _VS,
        V2,
        "write",
        body=check_modify_vector_store,
        returns=VECTOR_STORE,
        restamp_at=("metadata",),
    ),
    Operation("vector_stores.delete", "DELETE", _VS, V2, "write", deletes=True),
    Operation(
        "vector_stores.files.create",
        "POST",
        _VS + "/files",
        V2,
        "write",
        body=check_create_vector_store_file,
        refs=(Ref("file_id", FILE),),
    ),
    Operation("vector_stores.files.list", "GET", _VS + "/files", V2, "read", query=_FILE_LIST),
    Operation("vector_stores.files.retrieve", "GET", _VS + "/files/{file_id}", V2, "read"),
    Operation("vector_stores.files.delete", "DELETE", _VS + "/files/{file_id}", V2, "write"),
    Operation(
        "vector_stores.file_batches.create",
        "POST",
        _VS + "/file_batches",
        V2,
        "write",
        body=check_create_file_batch,
        refs=(Ref("file_ids[]", FILE),),
    ),
    Operation("vector_stores.file_batches.retrieve", "GET", _B, V2, "read"),
    Operation("vector_stores.file_batches.cancel", "POST", _B + "/cancel", V2, "write"),
    Operation(
        "vector_stores.file_batches.list_files",
        "GET",
        _B + "/files",
        V2,
        "read",
        query=_FILE_LIST,
    ),
)
