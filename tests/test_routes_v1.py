"""The v1 API's rows under ``/openai/v1/``: matching, the optional api-version, ids, queries
(table-driven, pure)."""

from __future__ import annotations

import pytest

from gateway.app import _lookup_versions
from gateway.errors import BadRequestError, MethodNotAllowedError, NotFoundError
from gateway.operations.apiversions import DEFAULT_VERSIONS
from gateway.operations.table import OperationMatch, OperationTable
from tests.test_ownership_config import config_of

RESP = "resp_" + "0123456789abcdef" * 3  # OpenAI's shape: resp_ and 48 hex digits
CONV = "conv_" + "fedcba9876543210" * 3
ITEM = "msg_" + "a1" * 24
FILE = "assistant-abc123"
DATED = "2025-04-01-preview"

table = OperationTable(DEFAULT_VERSIONS)


def match(method: str, path: str, query: str = "", t: OperationTable = table) -> OperationMatch:
    return t.match(method, path.encode(), query.encode())


def refused(method: str, path: str, query: str = "", t: OperationTable = table) -> BadRequestError:
    with pytest.raises(BadRequestError) as info:
        match(method, path, query, t)
    return info.value


V1_SURFACE = [
    ("POST", "/openai/v1/responses", "responses.create"),
    ("GET", f"/openai/v1/responses/{RESP}", "responses.retrieve"),
    ("DELETE", f"/openai/v1/responses/{RESP}", "responses.delete"),
    ("POST", f"/openai/v1/responses/{RESP}/cancel", "responses.cancel"),
    ("GET", f"/openai/v1/responses/{RESP}/input_items", "responses.input_items.list"),
    ("POST", "/openai/v1/conversations", "conversations.create"),
    ("GET", f"/openai/v1/conversations/{CONV}", "conversations.retrieve"),
    ("POST", f"/openai/v1/conversations/{CONV}", "conversations.update"),
    ("DELETE", f"/openai/v1/conversations/{CONV}", "conversations.delete"),
    ("POST", f"/openai/v1/conversations/{CONV}/items", "conversations.items.create"),
    ("GET", f"/openai/v1/conversations/{CONV}/items", "conversations.items.list"),
    ("GET", f"/openai/v1/conversations/{CONV}/items/{ITEM}", "conversations.items.retrieve"),
    ("DELETE", f"/openai/v1/conversations/{CONV}/items/{ITEM}", "conversations.items.delete"),
    ("POST", "/openai/v1/files", "files.v1.upload"),
    ("GET", "/openai/v1/files", "files.v1.list"),
    ("GET", f"/openai/v1/files/{FILE}", "files.v1.retrieve"),
    ("DELETE", f"/openai/v1/files/{FILE}", "files.v1.delete"),
    ("GET", f"/openai/v1/files/{FILE}/content", "files.v1.content"),
]


@pytest.mark.parametrize(("method", "path", "operation"), V1_SURFACE)
@pytest.mark.parametrize("version", ["v1", "preview"])
def test_every_v1_operation_matches_with_v1_or_preview(
    method: str, path: str, operation: str, version: str
) -> None:
    found = match(method, path, f"api-version={version}")
    assert found.operation == operation
    assert found.version.name == version
    assert found.query == (("api-version", version),)
    assert found.upstream_target == f"{path}?api-version={version}"


@pytest.mark.parametrize(("method", "path", "operation"), V1_SURFACE)
def test_an_absent_api_version_is_forwarded_absent(method: str, path: str, operation: str) -> None:
    found = match(method, path)
    assert found.operation == operation
    assert found.version.name == "v1"  # Azure's default
    assert found.query == ()
    assert (found.upstream_path, found.upstream_query, found.upstream_target) == (path, "", path)


@pytest.mark.parametrize(("method", "path", "operation"), V1_SURFACE)
def test_a_dated_api_version_is_not_the_v1_apis(method: str, path: str, operation: str) -> None:
    err = refused(method, path, f"api-version={DATED}")
    assert (err.code, err.param) == ("operation_not_in_api_version", "api-version")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/openai/threads"),
        ("GET", "/openai/assistants"),
        ("GET", "/openai/files"),
        ("POST", "/openai/vector_stores"),
        ("GET", "/openai/threads/thread_abc/runs/run_abc"),
    ],
)
def test_the_assistants_rows_still_require_a_dated_api_version(method: str, path: str) -> None:
    err = refused(method, path)
    assert (err.code, err.param) == ("missing_api_version", "api-version")
    for version in ("v1", "preview"):
        err = refused(method, path, f"api-version={version}")
        assert (err.code, err.param) == ("operation_not_in_api_version", "api-version")
    assert match(method, path, f"api-version={DATED}").version.name == DATED


def test_absent_needs_v1_allowed_and_given_needs_it_allowed() -> None:
    dated_only = OperationTable([DATED])
    err = refused("POST", "/openai/v1/responses", t=dated_only)
    assert err.code == "missing_api_version"
    assert refused("POST", "/openai/v1/responses", "api-version=v1", dated_only).code == (
        "unsupported_api_version"
    )
    preview_only = OperationTable(["preview"])
    assert refused("POST", "/openai/v1/responses", t=preview_only).code == "missing_api_version"
    assert match("POST", "/openai/v1/responses", "api-version=preview", preview_only)
    assert match("POST", "/openai/v1/responses", t=OperationTable(["v1"])).query == ()


@pytest.mark.parametrize(
    ("query", "code", "param"),
    [
        ("api-version=v1&api-version=v1", "duplicate_query_parameter", "api-version"),
        ("api-version=V1", "unsupported_api_version", "api-version"),
        ("api-version=v2", "unsupported_api_version", "api-version"),
        ("api-version=", "unsupported_api_version", "api-version"),
        ("api-version=latest", "unsupported_api_version", "api-version"),
        ("foo=bar", "unknown_query_parameter", "foo"),
    ],
)
def test_bad_api_versions_and_parameters(query: str, code: str, param: str) -> None:
    err = refused("POST", "/openai/v1/responses", query)
    assert (err.code, err.param) == (code, param)


@pytest.mark.parametrize(
    "path",
    [
        "/openai/v1/responses/resp_",
        "/openai/v1/responses/resp_" + "a" * 129,
        "/openai/v1/responses/resp-abc",
        "/openai/v1/responses/thread_abc",
        "/openai/v1/responses/resp_a_b",
        "/openai/v1/responses/resp_%2e%2e",
        "/openai/v1/responses/resp_abc/",
        "/openai/v1/responses/resp_abc/steps",
        "/openai/v1/conversations/conv_a-b",
        "/openai/v1/conversations/resp_abc",
        "/openai/v1/conversations/conv_abc/items/MSG_abc",
        "/openai/v1/conversations/conv_abc/items/m_abc",
        "/openai/v1/conversations/conv_abc/items/toolongprefix_abc",
        "/openai/v1/conversations/conv_abc/items/msg_" + "a" * 129,
        "/openai/v1/conversations/conv_abc/items/msg_abc/content",
        "/openai/v1/threads",
        "/openai/v1/assistants",
        "/openai/v1/vector_stores",
        "/openai/v1/chat/completions",
        "/openai/v1/files/file-abc/../content",
        "/openai/v1",
        "/openai/v2/responses",
        "/v1/responses",
    ],
)
def test_paths_outside_the_rows_are_404(path: str) -> None:
    with pytest.raises(NotFoundError):
        match("GET", path)
    with pytest.raises(NotFoundError):
        match("POST", path)


def test_ids_up_to_128_characters_match() -> None:
    long = "resp_" + "A1" * 64
    assert match("GET", f"/openai/v1/responses/{long}").ids == {"response_id": long}
    for item in ("fc_1", "rs_x", "mcpl_abc", "lsh_Z9", "ci_0", "msg_" + "b" * 128):
        path = f"/openai/v1/conversations/{CONV}/items/{item}"
        assert match("GET", path).ids == {"conversation_id": CONV, "item_id": item}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/openai/v1/responses", ["POST"]),
        ("GET", "/openai/v1/responses", ["POST"]),
        ("POST", f"/openai/v1/responses/{RESP}", ["DELETE", "GET"]),
        ("GET", f"/openai/v1/responses/{RESP}/cancel", ["POST"]),
        ("GET", "/openai/v1/conversations", ["POST"]),
        ("PATCH", f"/openai/v1/conversations/{CONV}", ["DELETE", "GET", "POST"]),
        ("POST", f"/openai/v1/conversations/{CONV}/items/{ITEM}", ["DELETE", "GET"]),
        ("PUT", "/openai/v1/files", ["GET", "POST"]),
    ],
)
def test_other_methods_are_405(method: str, path: str, allowed: list[str]) -> None:
    with pytest.raises(MethodNotAllowedError) as info:
        match(method, path)
    assert info.value.headers["Allow"] == ", ".join(allowed)


INCLUDE = "include%5B%5D"


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        (
            "GET",
            f"/openai/v1/responses/{RESP}",
            f"{INCLUDE}=file_search_call.results&{INCLUDE}=reasoning.encrypted_content"
            "&stream=true&starting_after=41&include_obfuscation=false",
        ),
        (
            "GET",
            f"/openai/v1/responses/{RESP}/input_items",
            f"limit=100&order=asc&after=msg_a&before=fc_b&{INCLUDE}=message.input_image.image_url",
        ),
        (
            "GET",
            f"/openai/v1/conversations/{CONV}/items",
            f"limit=1&order=desc&after=rs_x&{INCLUDE}=code_interpreter_call.outputs",
        ),
        ("POST", f"/openai/v1/conversations/{CONV}/items", f"{INCLUDE}=web_search_call.results"),
        (
            "GET",
            f"/openai/v1/conversations/{CONV}/items/{ITEM}",
            f"{INCLUDE}=message.output_text.logprobs",
        ),
        ("GET", "/openai/v1/files", "purpose=assistants&limit=10000&order=asc&after=file-x"),
    ],
)
def test_documented_queries_are_kept_in_order(method: str, path: str, query: str) -> None:
    found = match(method, path, f"api-version=preview&{query}")
    assert found.upstream_query == f"api-version=preview&{query}"
    assert match(method, path, query).upstream_query == query


@pytest.mark.parametrize(
    ("method", "path", "query", "code", "param"),
    [
        ("GET", f"/openai/v1/responses/{RESP}", "stream=1", "invalid_query_parameter", "stream"),
        ("GET", f"/openai/v1/responses/{RESP}", "stream=True", "invalid_query_parameter", "stream"),
        (
            "GET",
            f"/openai/v1/responses/{RESP}",
            "stream=true&stream=true",
            "duplicate_query_parameter",
            "stream",
        ),
        (
            "GET",
            f"/openai/v1/responses/{RESP}",
            "starting_after=-1",
            "invalid_query_parameter",
            "starting_after",
        ),
        (
            "GET",
            f"/openai/v1/responses/{RESP}",
            "starting_after=2147483648",
            "invalid_query_parameter",
            "starting_after",
        ),
        (
            "GET",
            f"/openai/v1/responses/{RESP}",
            "starting_after=01",
            "invalid_query_parameter",
            "starting_after",
        ),
        (
            "GET",
            f"/openai/v1/responses/{RESP}",
            f"{INCLUDE}=step_details.tool_calls[*].file_search.results[*].content",
            "invalid_query_parameter",
            "include[]",
        ),
        (
            "GET",
            f"/openai/v1/responses/{RESP}",
            "include=file_search_call.results",
            "unknown_query_parameter",
            "include",
        ),
        ("GET", f"/openai/v1/responses/{RESP}", "limit=5", "unknown_query_parameter", "limit"),
        (
            "GET",
            f"/openai/v1/responses/{RESP}/input_items",
            "limit=0",
            "invalid_query_parameter",
            "limit",
        ),
        (
            "GET",
            f"/openai/v1/responses/{RESP}/input_items",
            "limit=101",
            "invalid_query_parameter",
            "limit",
        ),
        (
            "GET",
            f"/openai/v1/responses/{RESP}/input_items",
            "after=msg-1",
            "invalid_query_parameter",
            "after",
        ),
        (
            "GET",
            f"/openai/v1/conversations/{CONV}/items",
            "before=msg_a",
            "unknown_query_parameter",
            "before",
        ),
        (
            "GET",
            f"/openai/v1/conversations/{CONV}/items",
            "order=random",
            "invalid_query_parameter",
            "order",
        ),
        (
            "GET",
            f"/openai/v1/conversations/{CONV}",
            f"{INCLUDE}=file_search_call.results",
            "unknown_query_parameter",
            "include[]",
        ),
        ("POST", "/openai/v1/responses", "stream=true", "unknown_query_parameter", "stream"),
        ("GET", "/openai/v1/files", "limit=10001", "invalid_query_parameter", "limit"),
        ("GET", "/openai/v1/files", "purpose=evil", "invalid_query_parameter", "purpose"),
        (
            "DELETE",
            f"/openai/v1/responses/{RESP}",
            "stream=true",
            "unknown_query_parameter",
            "stream",
        ),
    ],
)
def test_bad_queries_are_400(method: str, path: str, query: str, code: str, param: str) -> None:
    err = refused(method, path, query)
    assert (err.code, err.param) == (code, param)


def test_a_stream_is_asked_by_body_or_by_the_retrieve_query() -> None:
    retrieve = f"/openai/v1/responses/{RESP}"
    assert match("GET", retrieve, "stream=true").wants_stream(None)
    assert not match("GET", retrieve, "stream=false").wants_stream(None)
    assert not match("GET", retrieve).wants_stream(None)
    create = match("POST", "/openai/v1/responses")
    assert create.wants_stream({"stream": True})
    assert not create.wants_stream({"stream": False})
    assert not create.wants_stream(None)
    # a body's stream means nothing on a row that does not stream
    assert not match("POST", "/openai/v1/conversations").wants_stream({"stream": True})
    # and the Assistants rows keep theirs
    runs = match("POST", "/openai/threads/thread_a/runs", f"api-version={DATED}")
    assert runs.wants_stream({"stream": True})


def test_owner_lookups_of_the_v1_kinds_use_the_ga_version() -> None:
    """A conversation's or response's owner is read at Azure with ``v1`` (the newest allowed
    version of the lookup row's generation: GA over ``preview``); with no v1 API version
    allowed there is none (a lookup then fails closed), and the Assistants kinds keep theirs."""
    default = _lookup_versions(config_of({}))
    assert (default["conversation_id"], default["response_id"]) == ("v1", "v1")
    assert default["thread_id"] == DATED and default["file_id"] == DATED
    chosen = _lookup_versions(config_of({"ownership": {"lookup_api_version": DATED}}))
    assert chosen["conversation_id"] == "v1" and chosen["thread_id"] == DATED
    preview = _lookup_versions(config_of({"api": {"versions": [DATED, "preview"]}}))
    assert preview["response_id"] == "preview"
    dated = _lookup_versions(config_of({"api": {"versions": [DATED]}}))
    assert "conversation_id" not in dated and "response_id" not in dated
    assert dated["thread_id"] == DATED
