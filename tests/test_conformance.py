"""Conformance from Microsoft's OpenAPI documents themselves (issue 14, item 6).

The documents are the vendored ones (``tests/specs``, see its SOURCES.md): the Assistants
operations (``paths``) and schemas of the 2024-02-15-preview and 2024-05-01-preview inference
documents, the files operations of the 2024-05-01-preview authoring document (Swagger 2.0),
and the vector store operations of the 2025-04-01-preview document (chunking strategies).
The schemas' known defects are fixed on load as the fake's own checks fix them
(``tests.fakeazure.openapi.ERRATA``), the operations' ones by ``PATH_ERRATA`` below.

For every operation, schemathesis generates requests the document allows (positive mode:
bodies, query parameters and multipart uploads valid against its schemas) and sends them as a
writer tenant through a real gateway (real uvicorn, the session's real Redis, ownership on) to
the recording fake Azure. Path ids are the tenant's own objects (a fresh set per operation:
deletes do not starve the others), and body fields that name owned objects (``assistant_id``,
``file_id(s)``, ``vector_store_ids``) are pointed at them too, so generated requests can get
past ownership to Azure.

Properties, per generated request:

* no 5xx;
* it reached the fake Azure, or the gateway refused it itself, nothing forwarded, with Azure's
  error shape and a documented code of a stage that may refuse a request the document allows
  (policy, intake, ownership; of the route stage only a query value outside the documented
  ranges): ``gateway.observability.labels.refusal`` names the fixed sets;
* what was relayed from Azure with a documented status matches that status's schema.

And per operation: at least one generated request reached Azure (an operation the document
defines is never refused wholesale).

Bounded: ``GATEWAY_CONFORMANCE_EXAMPLES`` examples per operation (default 20, about 1,000
requests in all), derandomized (the same cases every run, no example database), a deadline per
example. It runs in the README's ``python -m pytest`` like every other test.
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from gateway.observability.labels import refusal
from tests.fakeazure.openapi import ERRATA
from tests.servers import RedisServer
from tests.stack import Stack, running_stack
from tests.tenantobjects import Tenant, make_tenant

pytestmark = pytest.mark.conformance

SPECS = Path(__file__).resolve().parent / "specs"
V1, V2, V2504 = "2024-02-15-preview", "2024-05-01-preview", "2025-04-01-preview"
#: The documents tried: (label, api-version sent, the vendored files: paths, schemas).
DOCUMENTS: dict[str, tuple[str, str, str]] = {
    V1: (V1, f"{V1}/inference.paths.json", f"{V1}/inference.assistants.json"),
    V2: (V2, f"{V2}/inference.paths.json", f"{V2}/inference.assistants.json"),
    f"{V2} files": (V2, f"{V2}/azureopenai.files.paths.json", f"{V2}/azureopenai.files.json"),
    f"{V2504} vector stores": (
        V2504,
        f"{V2504}/inference.vector_stores.paths.json",
        f"{V2504}/inference.vector_stores.json",
    ),
}
EXAMPLES = int(os.environ.get("GATEWAY_CONFORMANCE_EXAMPLES", "20"))
#: Refusals a request the document allows may meet: the gateway's own stricter rules (each a
#: documented, stable code). Authentication, permission and rate limits never apply here, and
#: a route refusal is only for a query value outside what the README documents (``limit``
#: 1-100, ``after``/``before``/``run_id`` ids of their kind; a ``+`` in a query is refused as
#: ambiguous, ``invalid_query_string``): the documents define every operation, path and
#: parameter tried, so an unknown one would be a false refusal.
REFUSING_STAGES = frozenset({"policy", "intake", "ownership"})
ROUTE_REFUSALS = frozenset({"invalid_query_parameter", "invalid_query_string"})
OWNED: dict[str, Any] = {
    "threads": {"ownership": True, "unknown": "deny"},
    "rate_limit": {"enabled": False},
}
#: Defects of the documents' operations (not of their schemas: ``fakeazure.openapi.ERRATA``),
#: as (document, JSON pointer into ``paths``, value, why).
PATH_ERRATA: tuple[tuple[str, str, Any, str], ...] = (
    (
        f"{V2} files",
        "~1files/post/responses",
        {
            "200": {"description": "Success", "schema": {"$ref": "#/definitions/File"}},
            "default": {"description": "Error", "schema": {"$ref": "#/definitions/ErrorResponse"}},
        },
        "the document says 201; the service and the SDKs (openai FileObject) get 200",
    ),
    (
        f"{V2} files",
        "~1files~1{file-id}/delete/responses",
        {
            "200": {"description": "Deleted"},
            "default": {"description": "Error", "schema": {"$ref": "#/definitions/ErrorResponse"}},
        },
        "the document says 204 without a body; the service answers 200 with a deletion status "
        "(openai FileDeleted), which the document does not define",
    ),
)


def _set(node: Any, pointer: str, value: Any) -> None:
    *path, last = [p.replace("~1", "/") for p in pointer.split("/")]
    for key in path:
        node = node[key]
    if last not in node:
        raise KeyError(f"erratum target {pointer} is not in the document")
    node[last] = value


def raw_document(name: str) -> dict[str, Any]:
    """The vendored paths and schemas of ``name`` as one document, errata applied."""
    _, paths_file, schemas_file = DOCUMENTS[name]
    paths = json.loads((SPECS / paths_file).read_text())
    schemas = json.loads((SPECS / schemas_file).read_text())
    for doc, pointer, value, _why in PATH_ERRATA:
        if doc == name:
            _set(paths["paths"], pointer, copy.deepcopy(value))
    if "swagger" in schemas:
        return {
            "swagger": "2.0",
            "info": schemas["info"],
            "consumes": ["application/json"],
            "produces": ["application/json"],
            **paths,
            "definitions": schemas["definitions"],
        }
    components = copy.deepcopy(schemas["components"]["schemas"])
    version = DOCUMENTS[name][0]
    for erratum_version, schema, pointer, value, _why in ERRATA:
        if erratum_version == version:
            _set(components[schema], pointer, copy.deepcopy(value))
    components.setdefault("chatCompletionFunctionParameters", {"type": "object"})
    return {
        "openapi": schemas["openapi"],
        "info": schemas["info"],
        "paths": paths["paths"],
        "components": {"schemas": components},
    }


def load(name: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_dict(raw_document(name))


def _collect() -> list[tuple[str, str]]:
    cases = []
    for version in DOCUMENTS:
        for result in load(version).get_all_operations():
            # An operation schemathesis cannot read fails its own test, by its error.
            label = result.ok().label if isinstance(result, Ok) else f"<invalid: {result.err()}>"
            cases.append((version, label))
    return cases


CASES = _collect()
_SCHEMAS: dict[str, schemathesis.BaseSchema] = {}


def schema_of(version: str) -> schemathesis.BaseSchema:
    if version not in _SCHEMAS:
        _SCHEMAS[version] = load(version)
    return _SCHEMAS[version]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Stack]:
    url = os.environ.get("GATEWAY_TEST_REDIS_URL") or redis_server.url
    with running_stack(tmp_path_factory.mktemp("conf"), redis_url=url, overrides=OWNED) as s:
        yield s


@pytest.fixture
def tenant(stack: Stack) -> Iterator[Tenant]:
    stack.fake.reset()
    headers = {**stack.auth(), "Accept-Encoding": "identity"}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=10) as client:
        yield make_tenant(client, "team-a")


def adopt(value: Any, tenant: Tenant) -> Any:
    """``value`` with every owned reference pointed at the tenant's own objects."""
    if isinstance(value, list):
        return [adopt(item, tenant) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "assistant_id" and isinstance(item, str):
            out[key] = tenant.ids["assistant_id"]
        elif key == "file_id" and isinstance(item, str):
            out[key] = tenant.files[0]
        elif key == "file_ids" and isinstance(item, list) and item:
            out[key] = list(tenant.files[: len(item)])
        elif key == "vector_store_ids" and isinstance(item, list) and item:
            out[key] = [tenant.ids["vector_store_id"]]
        else:
            out[key] = adopt(item, tenant)
    return out


def is_json(response: Any) -> bool:
    return str(response.headers.get("content-type", "")).startswith("application/json")


def check_one(
    stack: Stack, tenant: Tenant, case: Any, api_version: str, tally: Counter[str]
) -> None:
    if isinstance(case.body, dict | list):
        case.body = adopt(case.body, tenant)
    since = len(stack.fake.requests)
    response = case.call(
        base_url=f"{stack.url}/openai",
        headers=stack.auth(),
        # Also where the document omits the parameter (2024-02-15-preview, some writes).
        params={"api-version": api_version},
        timeout=30,
    )
    reached = stack.fake.requests[since:]
    shown = f"{case.method} {case.formatted_path} {case.query} {case.body!r:.300} -> "
    shown += f"{response.status_code} {response.text[:300]}"
    assert response.status_code < 500, shown
    if reached:
        tally["forwarded"] += 1
        if is_json(response):
            case.validate_response(response, checks=[response_schema_conformance])
        return
    assert 400 <= response.status_code < 500, shown
    error = response.json()["error"]
    assert set(error) == {"code", "message", "param", "type"}, shown
    stage = refusal(response.status_code, error["code"], None)
    assert stage is not None, shown
    assert stage[0] in REFUSING_STAGES or (
        stage[0] == "route" and error["code"] in ROUTE_REFUSALS
    ), shown
    tally[error["code"]] += 1


def path_ids(tenant: Tenant) -> dict[str, str]:
    """The tenant's objects by the documents' path parameter names (the authoring document
    names a file ``file-id``)."""
    return {**tenant.ids, "file-id": tenant.ids["file_id"]}


@pytest.mark.parametrize(("document", "label"), CASES, ids=[f"{d}:{op}" for d, op in CASES])
def test_documented_requests_reach_azure_or_a_documented_refusal(
    stack: Stack, tenant: Tenant, document: str, label: str
) -> None:
    api_version = DOCUMENTS[document][0]
    operation = schema_of(document).find_operation_by_label(label)
    assert operation is not None, label
    names = {p.name for p in operation.path_parameters}
    declared = {p.name for p in operation.query}
    strategy = operation.as_strategy(
        path_parameters={k: v for k, v in path_ids(tenant).items() if k in names},
        query={"api-version": api_version} if "api-version" in declared else None,
    )
    tally: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=timedelta(seconds=10),
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(case: Any) -> None:
        check_one(stack, tenant, case, api_version, tally)

    run()
    assert tally["forwarded"] >= 1, f"{label} ({document}): nothing reached Azure: {tally}"


def test_the_documents_define_the_operations_tried() -> None:
    """What is generated from: every Assistants operation of each document (the counts are
    the documents': v1 has assistant and message files, 2024-05-01-preview vector stores)."""
    counts = Counter(name for name, _ in CASES)
    assert counts == {V1: 28, V2: 35, f"{V2} files": 5, f"{V2504} vector stores": 13}, counts
    assert (V1, "GET /threads/{thread_id}/messages/{message_id}/files") in CASES
    assert (V2, "POST /vector_stores/{vector_store_id}/file_batches") in CASES
