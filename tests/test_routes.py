"""The route allow-list and target parser: table-driven, pure."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequestError, MethodNotAllowedError, NotFoundError
from gateway.operations.apiversions import DEFAULT_VERSIONS
from gateway.operations.table import OPERATIONS as ROUTES
from gateway.operations.table import OperationMatch, OperationTable

V1 = "2024-02-15-preview"
V2 = "2024-05-01-preview"
V25 = "2025-03-01-preview"
T = "thread_abc123"
M = "msg_abc123"
R = "run_abc123"

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
        ("GET", "/openai/assistants", NotFoundError),
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
        match("POST", f"/openai/threads/{T}/runs", f"api-version={V1}")


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
