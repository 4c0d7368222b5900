"""The route allow-list and target parser: table-driven, pure."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequestError, MethodNotAllowedError, NotFoundError
from gateway.operations.apiversions import DEFAULT_VERSIONS, KNOWN_VERSIONS
from gateway.operations.table import OPERATIONS as ROUTES
from gateway.operations.table import OperationMatch, OperationTable

V1 = "2024-02-15-preview"
V2 = "2024-05-01-preview"
V25 = "2025-03-01-preview"
T = "thread_abc123"
M = "msg_abc123"
R = "run_abc123"
A = "asst_abc123"
VS = "vs_abc123"
F = "assistant-abc123"
B = "vsfb_abc123"

table = OperationTable(DEFAULT_VERSIONS)


def match(method: str, path: str, query: str = f"api-version={V2}") -> OperationMatch:
    return table.match(method, path.encode(), query.encode())


@pytest.mark.parametrize(
    ("method", "path", "version", "operation"),
    [
        ("POST", "/openai/threads", V2, "threads.create"),
        ("GET", f"/openai/threads/{T}", V2, "threads.retrieve"),
        ("POST", f"/openai/threads/{T}", V2, "threads.modify"),
        ("DELETE", f"/openai/threads/{T}", V2, "threads.delete"),
        ("POST", f"/openai/threads/{T}/messages", V1, "messages.create"),
        ("POST", f"/openai/threads/{T}/messages", V2, "messages.create"),
        ("GET", f"/openai/threads/{T}/messages", V2, "messages.list"),
        ("GET", f"/openai/threads/{T}/messages/{M}", V2, "messages.retrieve"),
        ("POST", f"/openai/threads/{T}/messages/{M}", V2, "messages.modify"),
        ("DELETE", f"/openai/threads/{T}/messages/{M}", V2, "messages.delete"),
        ("GET", f"/openai/threads/{T}/messages/{M}/files", V1, "messages.files.list"),
        ("GET", f"/openai/threads/{T}/messages/{M}/files/file-abc", V1, "messages.files.retrieve"),
        ("POST", "/openai/threads/runs", V2, "threads.create_and_run"),
        ("POST", f"/openai/threads/{T}/runs", V2, "runs.create"),
        ("GET", f"/openai/threads/{T}/runs", V2, "runs.list"),
        ("GET", f"/openai/threads/{T}/runs/{R}", V2, "runs.retrieve"),
        ("POST", f"/openai/threads/{T}/runs/{R}", V2, "runs.modify"),
        (
            "POST",
            f"/openai/threads/{T}/runs/{R}/submit_tool_outputs",
            V2,
            "runs.submit_tool_outputs",
        ),
        ("POST", f"/openai/threads/{T}/runs/{R}/cancel", V2, "runs.cancel"),
        ("GET", f"/openai/threads/{T}/runs/{R}/steps", V2, "runs.steps.list"),
        ("GET", f"/openai/threads/{T}/runs/{R}/steps/step_abc", V2, "runs.steps.retrieve"),
    ],
)
def test_known_routes(method: str, path: str, version: str, operation: str) -> None:
    found = match(method, path, f"api-version={version}")
    assert found.operation == operation
    assert found.upstream_path == path
    assert found.upstream_query == f"api-version={version}"


def test_list_query_is_validated_and_rebuilt_with_api_version_first() -> None:
    found = match(
        "GET",
        f"/openai/threads/{T}/messages",
        f"limit=5&api-version={V2}&order=asc&after=msg_x1&run_id=run_9",
    )
    assert found.upstream_query == f"api-version={V2}&limit=5&order=asc&after=msg_x1&run_id=run_9"


def test_include_is_encoded_and_only_where_the_version_has_it() -> None:
    value = "step_details.tool_calls%5B*%5D.file_search.results%5B*%5D.content"
    found = match(
        "GET", f"/openai/threads/{T}/runs/{R}/steps", f"api-version={V25}&include%5B%5D={value}"
    )
    assert found.query[1] == (
        "include[]",
        "step_details.tool_calls[*].file_search.results[*].content",
    )
    assert "include%5B%5D=" in found.upstream_query
    with pytest.raises(BadRequestError) as err:
        match(
            "GET", f"/openai/threads/{T}/runs/{R}/steps", f"api-version={V2}&include%5B%5D={value}"
        )
    assert err.value.code == "unknown_query_parameter"


@pytest.mark.parametrize(
    ("method", "path", "error"),
    [
        ("GET", "/openai/assistant", NotFoundError),
        ("GET", "/openai/assistants/thread_abc", NotFoundError),
        ("GET", "/openai/vector_stores/vs_abc/file_batches/vs_b_abc", NotFoundError),
        ("GET", "/openai/files/vs_abc", NotFoundError),
        ("GET", "/openai/files/file-abc/content/x", NotFoundError),
        ("POST", "/openai/deployments/gpt/chat/completions", NotFoundError),
        ("GET", "/openai/threads/", NotFoundError),
        ("GET", "/openai/threads//messages", NotFoundError),
        ("GET", "/openai//threads/thread_abc", NotFoundError),
        ("GET", "/threads/thread_abc/messages", NotFoundError),
        ("GET", "/openai/threads/thread_abc/messages/", NotFoundError),
        ("GET", "/openai/threads/../messages", NotFoundError),
        ("GET", "/openai/threads/thread_abc/../../assistants", NotFoundError),
        ("GET", "/openai/threads/%2e%2e/messages", NotFoundError),
        ("GET", "/openai/threads/.%2e/messages", NotFoundError),
        ("GET", "/openai/threads/x%2F..%2F..%2Fassistants/messages", NotFoundError),
        ("GET", "/openai/threads/thread_abc%2Fmessages", NotFoundError),
        ("GET", "/openai/threads/thread_abc%252F/messages", NotFoundError),
        ("GET", "/openai/threads/x\\..\\y/messages", NotFoundError),
        ("GET", "/openai/threads/x;/messages", NotFoundError),
        ("GET", "/openai/threads/thread_abc?x/messages", NotFoundError),
        ("GET", "/openai/threads/thread_abc#f/messages", NotFoundError),
        ("GET", "/openai/threads/thread_a%00/messages", NotFoundError),
        ("GET", "/openai/threads/thread_\u00e9/messages", NotFoundError),
        ("GET", "/openai/threads/msg_abc/messages", NotFoundError),
        ("GET", "/openai/threads/thread_" + "a" * 65, NotFoundError),
        ("GET", "/OPENAI/threads/thread_abc", NotFoundError),
        ("PUT", "/openai/threads/thread_abc", MethodNotAllowedError),
        ("PATCH", "/openai/threads/thread_abc/messages/msg_abc", MethodNotAllowedError),
        ("GET", "/openai/threads", MethodNotAllowedError),
        ("DELETE", "/openai/threads/thread_abc/messages", MethodNotAllowedError),
    ],
)
def test_unknown_paths_and_methods(method: str, path: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        table.match(method, path.encode("utf-8"), f"api-version={V2}".encode())


def test_method_not_allowed_lists_allowed_methods() -> None:
    with pytest.raises(MethodNotAllowedError) as err:
        match("PUT", f"/openai/threads/{T}")
    assert err.value.headers["Allow"] == "DELETE, GET, POST"


@pytest.mark.parametrize(
    ("query", "code", "param"),
    [
        ("", "missing_api_version", "api-version"),
        ("limit=5", "missing_api_version", "api-version"),
        (f"api-version={V2}&api-version={V1}", "duplicate_query_parameter", "api-version"),
        (f"api-version={V2}&api-version={V2}", "duplicate_query_parameter", "api-version"),
        ("api-version=2023-01-01", "unsupported_api_version", "api-version"),
        ("api-version=2024-05-01-PREVIEW", "unsupported_api_version", "api-version"),
        (f"API-VERSION={V2}", "missing_api_version", "api-version"),
        (f"api-version={V2}&API-VERSION={V1}", "unknown_query_parameter", "API-VERSION"),
        (f"api-version={V2}&limit=0", "invalid_query_parameter", "limit"),
        (f"api-version={V2}&limit=101", "invalid_query_parameter", "limit"),
        (f"api-version={V2}&limit=-1", "invalid_query_parameter", "limit"),
        (f"api-version={V2}&limit=05", "invalid_query_parameter", "limit"),
        (f"api-version={V2}&limit=1e2", "invalid_query_parameter", "limit"),
        (f"api-version={V2}&limit=5&limit=6", "duplicate_query_parameter", "limit"),
        (f"api-version={V2}&order=random", "invalid_query_parameter", "order"),
        (f"api-version={V2}&after=run_abc", "invalid_query_parameter", "after"),
        (f"api-version={V2}&after=msg_a%26api-version%3D2023", "invalid_query_parameter", "after"),
        (f"api-version={V2}&before=../x", "invalid_query_parameter", "before"),
        (f"api-version={V1}&run_id=run_abc", "unknown_query_parameter", "run_id"),
        (f"api-version={V2}&access_token=abc", "unknown_query_parameter", "access_token"),
        (f"api-version={V2}&", "invalid_query_string", None),
        (f"api-version={V2}&&limit=2", "invalid_query_string", None),
        (f"api-version={V2}&limit", "invalid_query_string", None),
        (f"api-version={V2}&order=asc+desc", "invalid_query_string", None),
        (f"api-version={V2}&x=%ff", "invalid_query_string", None),
        ("api-version=" + "9" * 3000, "invalid_query_string", None),
    ],
)
def test_query_validation(query: str, code: str, param: str | None) -> None:
    with pytest.raises(BadRequestError) as err:
        match("GET", f"/openai/threads/{T}/messages", query)
    assert err.value.code == code
    assert err.value.param == param


def test_operation_not_in_version() -> None:
    with pytest.raises(BadRequestError) as err:
        match("DELETE", f"/openai/threads/{T}/messages/{M}", f"api-version={V1}")
    assert err.value.code == "operation_not_in_api_version"
    with pytest.raises(BadRequestError):
        match("GET", f"/openai/threads/{T}/messages/{M}/files", f"api-version={V2}")
    with pytest.raises(BadRequestError):
        match("GET", f"/openai/assistants/{A}/files", f"api-version={V2}")
    with pytest.raises(BadRequestError):
        match("GET", "/openai/vector_stores", f"api-version={V1}")


def test_allowed_versions_come_from_config() -> None:
    narrow = OperationTable([V2])
    with pytest.raises(BadRequestError) as err:
        narrow.match("GET", f"/openai/threads/{T}".encode(), f"api-version={V1}".encode())
    assert err.value.code == "unsupported_api_version"
    with pytest.raises(ValueError, match="unknown api-version"):
        OperationTable(["2099-01-01"])


def test_no_query_parameter_is_allowed_on_create_message() -> None:
    with pytest.raises(BadRequestError) as err:
        match("POST", f"/openai/threads/{T}/messages", f"api-version={V2}&limit=5")
    assert err.value.code == "unknown_query_parameter"


def test_every_route_template_has_known_placeholders_only() -> None:
    for route in ROUTES:
        for segment in route.segments:
            assert segment.startswith("{") or segment.replace("_", "").isalnum()


# --- issue 14: the whole Assistants surface, per api-version ---------------------------------

#: The Assistants API's dated api-versions (``v1``/``preview`` are the v1 API's).
ALL = tuple(v for v in DEFAULT_VERSIONS if KNOWN_VERSIONS[v].generation != "openai-v1")
V2S = tuple(v for v in ALL if v != V1)


@pytest.mark.parametrize(
    ("method", "path", "operation", "versions"),
    [
        ("POST", "/openai/assistants", "assistants.create", ALL),
        ("GET", "/openai/assistants", "assistants.list", ALL),
        ("GET", f"/openai/assistants/{A}", "assistants.retrieve", ALL),
        ("POST", f"/openai/assistants/{A}", "assistants.modify", ALL),
        ("DELETE", f"/openai/assistants/{A}", "assistants.delete", ALL),
        ("POST", f"/openai/assistants/{A}/files", "assistants.files.create", (V1,)),
        ("GET", f"/openai/assistants/{A}/files", "assistants.files.list", (V1,)),
        ("GET", f"/openai/assistants/{A}/files/{F}", "assistants.files.retrieve", (V1,)),
        ("DELETE", f"/openai/assistants/{A}/files/{F}", "assistants.files.delete", (V1,)),
        ("GET", "/openai/files", "files.list", ALL),
        ("GET", f"/openai/files/{F}", "files.retrieve", ALL),
        ("DELETE", f"/openai/files/{F}", "files.delete", ALL),
        ("GET", f"/openai/files/{F}/content", "files.content", ALL),
        ("POST", "/openai/vector_stores", "vector_stores.create", V2S),
        ("GET", "/openai/vector_stores", "vector_stores.list", V2S),
        ("GET", f"/openai/vector_stores/{VS}", "vector_stores.retrieve", V2S),
        ("POST", f"/openai/vector_stores/{VS}", "vector_stores.modify", V2S),
        ("DELETE", f"/openai/vector_stores/{VS}", "vector_stores.delete", V2S),
        ("POST", f"/openai/vector_stores/{VS}/files", "vector_stores.files.create", V2S),
        ("GET", f"/openai/vector_stores/{VS}/files", "vector_stores.files.list", V2S),
        ("GET", f"/openai/vector_stores/{VS}/files/{F}", "vector_stores.files.retrieve", V2S),
        ("DELETE", f"/openai/vector_stores/{VS}/files/{F}", "vector_stores.files.delete", V2S),
        (
            "POST",
            f"/openai/vector_stores/{VS}/file_batches",
            "vector_stores.file_batches.create",
            V2S,
        ),
        (
            "GET",
            f"/openai/vector_stores/{VS}/file_batches/{B}",
            "vector_stores.file_batches.retrieve",
            V2S,
        ),
        (
            "POST",
            f"/openai/vector_stores/{VS}/file_batches/{B}/cancel",
            "vector_stores.file_batches.cancel",
            V2S,
        ),
        (
            "GET",
            f"/openai/vector_stores/{VS}/file_batches/{B}/files",
            "vector_stores.file_batches.list_files",
            V2S,
        ),
        # v1 runs (2024-02-15-preview defines all nine)
        ("POST", "/openai/threads/runs", "threads.create_and_run", ALL),
        ("POST", f"/openai/threads/{T}/runs", "runs.create", ALL),
        ("GET", f"/openai/threads/{T}/runs", "runs.list", ALL),
        ("GET", f"/openai/threads/{T}/runs/{R}", "runs.retrieve", ALL),
        ("POST", f"/openai/threads/{T}/runs/{R}", "runs.modify", ALL),
        ("POST", f"/openai/threads/{T}/runs/{R}/cancel", "runs.cancel", ALL),
        (
            "POST",
            f"/openai/threads/{T}/runs/{R}/submit_tool_outputs",
            "runs.submit_tool_outputs",
            ALL,
        ),
        ("GET", f"/openai/threads/{T}/runs/{R}/steps", "runs.steps.list", ALL),
        ("GET", f"/openai/threads/{T}/runs/{R}/steps/step_1", "runs.steps.retrieve", ALL),
    ],
)
def test_the_surface_per_api_version(
    method: str, path: str, operation: str, versions: tuple[str, ...]
) -> None:
    # every known version: ``v1`` and ``preview`` (the v1 API's) never reach an Assistants row
    for version in DEFAULT_VERSIONS:
        if version in versions:
            assert match(method, path, f"api-version={version}").operation == operation
        else:
            with pytest.raises(BadRequestError) as err:
                match(method, path, f"api-version={version}")
            assert err.value.code == "operation_not_in_api_version"


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/openai/assistants", "limit=5&order=asc&after=asst_a&before=asst_b"),
        ("/openai/vector_stores", "limit=100&order=desc&after=vs_a"),
        (f"/openai/vector_stores/{VS}/files", "limit=1&after=file-a&filter=completed"),
        (f"/openai/vector_stores/{VS}/file_batches/{B}/files", "filter=in_progress&before=file-b"),
        ("/openai/files", "purpose=assistants"),
        (f"/openai/assistants/{A}/files", "limit=2&after=assistant-x"),
    ],
)
def test_list_queries_are_kept(path: str, query: str) -> None:
    version = V1 if "/files" in path and path.startswith("/openai/assistants/") else V2
    found = match("GET", path, f"api-version={version}&{query}")
    assert found.upstream_query == f"api-version={version}&{query}"


@pytest.mark.parametrize(
    ("path", "query", "code", "param"),
    [
        ("/openai/assistants", "after=vs_a", "invalid_query_parameter", "after"),
        ("/openai/vector_stores", "before=asst_a", "invalid_query_parameter", "before"),
        ("/openai/vector_stores", "filter=completed", "unknown_query_parameter", "filter"),
        (f"/openai/vector_stores/{VS}/files", "filter=done", "invalid_query_parameter", "filter"),
        ("/openai/files", "purpose=anything", "invalid_query_parameter", "purpose"),
        (
            "/openai/files",
            "purpose=assistants&purpose=batch",
            "duplicate_query_parameter",
            "purpose",
        ),
        ("/openai/files", "limit=5", "unknown_query_parameter", "limit"),
        (f"/openai/files/{F}", "purpose=assistants", "unknown_query_parameter", "purpose"),
    ],
)
def test_list_queries_are_validated(path: str, query: str, code: str, param: str) -> None:
    with pytest.raises(BadRequestError) as err:
        match("GET", path, f"api-version={V2}&{query}")
    assert (err.value.code, err.value.param) == (code, param)


INCLUDE = "step_details.tool_calls%5B%2A%5D.file_search.results%5B%2A%5D.content"
V2504 = "2025-04-01-preview"


def test_an_array_parameter_may_repeat_and_every_value_is_kept() -> None:
    """Issue 14 item 4: ``include[]`` given twice was refused as a duplicate."""
    query = f"api-version={V2504}&include%5B%5D={INCLUDE}&include%5B%5D={INCLUDE}"
    for path in (f"/openai/threads/{T}/runs/{R}/steps", f"/openai/threads/{T}/runs"):
        method = "GET" if path.endswith("steps") else "POST"
        found = match(method, path, query)
        assert [k for k, _ in found.query] == ["api-version", "include[]", "include[]"]
        assert found.upstream_query == query


def test_a_repeated_array_parameter_is_still_validated() -> None:
    query = f"api-version={V2504}&include%5B%5D={INCLUDE}&include%5B%5D=secrets"
    with pytest.raises(BadRequestError) as err:
        match("GET", f"/openai/threads/{T}/runs/{R}/steps", query)
    assert (err.value.code, err.value.param) == ("invalid_query_parameter", "include[]")


def test_other_parameters_still_appear_once() -> None:
    with pytest.raises(BadRequestError) as err:
        match("GET", f"/openai/threads/{T}/runs/{R}/steps", f"api-version={V2504}&limit=1&limit=2")
    assert (err.value.code, err.value.param) == ("duplicate_query_parameter", "limit")
