"""Conformance from Microsoft's OpenAPI documents themselves (issue 14, item 6).

For every Assistants operation (paths under ``/assistants``, ``/threads``, ``/files`` and
``/vector_stores``) of each vendored document (``tests/specs``), schemathesis generates requests
the document allows (positive mode: bodies, query parameters and multipart uploads valid
against its schemas) and sends them as a writer tenant through a real gateway (real uvicorn,
the session's real Redis, ownership on) to the recording fake Azure. Path ids are the tenant's
own objects (a fresh set per operation: deletes do not starve the others), and body fields
that name owned objects (``assistant_id``, ``file_id(s)``, ``vector_store_ids``) are pointed
at them too, so the generated requests can get past ownership to Azure.

Properties, per generated request:

* no 5xx;
* it reached the fake Azure, or the gateway refused it itself with Azure's error shape and a
  documented code (one of the fixed refusal sets: ``POLICY_REASONS``, the route and intake
  codes, ownership's; ``gateway.observability.labels.refusal``), nothing forwarded;
* what was relayed from Azure matches the document's response schema for its status.

And per operation: at least one generated request reached Azure (an operation the document
defines is never refused wholesale).

Bounded: ``GATEWAY_CONFORMANCE_EXAMPLES`` examples per operation (default 8), derandomized
(the same cases every run; no example database), a deadline per example. It runs in the
README's ``python -m pytest`` like every other test.
"""

from __future__ import annotations

import json
import os
import re
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
from tests.servers import RedisServer
from tests.stack import Stack, running_stack
from tests.tenantobjects import Tenant, make_tenant

pytestmark = pytest.mark.conformance

SPECS = Path(__file__).resolve().parent / "specs"
#: The documents tried, by api-version (``tests/specs/SOURCES.md`` names their commit).
VERSIONS = ("2024-02-15-preview", "2024-05-01-preview", "2025-04-01-preview")
ASSISTANTS_PATHS = r"^/(assistants|threads|files|vector_stores)(/|$)"
EXAMPLES = int(os.environ.get("GATEWAY_CONFORMANCE_EXAMPLES", "8"))
#: Refusals a request the document allows may meet: the gateway's own stricter rules (each a
#: documented, stable code). Authentication, permission and rate limits never apply here.
REFUSING_STAGES = frozenset({"policy", "route", "intake", "ownership"})
OWNED: dict[str, Any] = {
    "threads": {"ownership": True, "unknown": "deny"},
    "rate_limit": {"enabled": False},
}


def document_path(version: str) -> Path:
    return SPECS / version / "inference.json"


def load(version: str) -> schemathesis.BaseSchema:
    raw = json.loads(document_path(version).read_text())
    return schemathesis.openapi.from_dict(raw).include(path_regex=ASSISTANTS_PATHS)


def _collect() -> list[tuple[str, str]]:
    cases = []
    for version in VERSIONS:
        if not document_path(version).is_file():
            cases.append((version, "<missing document>"))
            continue
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


def check_one(stack: Stack, tenant: Tenant, case: Any, tally: Counter[str]) -> None:
    if isinstance(case.body, dict | list):
        case.body = adopt(case.body, tenant)
    since = len(stack.fake.requests)
    response = case.call(base_url=f"{stack.url}/openai", headers=stack.auth(), timeout=30)
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
    assert stage is not None and stage[0] in REFUSING_STAGES, shown
    tally[error["code"]] += 1


@pytest.mark.parametrize(("version", "label"), CASES, ids=[f"{v}:{op}" for v, op in CASES])
def test_documented_requests_reach_azure_or_a_documented_refusal(
    stack: Stack, tenant: Tenant, version: str, label: str
) -> None:
    assert document_path(version).is_file(), f"vendor {document_path(version)}"
    operation = schema_of(version).find_operation_by_label(label)
    assert operation is not None
    names = {p.name for p in operation.path_parameters}
    strategy = operation.as_strategy(
        path_parameters={k: v for k, v in tenant.ids.items() if k in names},
        query={"api-version": version},
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
        check_one(stack, tenant, case, tally)

    run()
    assert tally["forwarded"] >= 1, f"{label} on {version}: nothing reached Azure: {tally}"


def test_every_document_is_vendored_and_has_assistants_operations() -> None:
    for version in VERSIONS:
        labels = [label for v, label in CASES if v == version]
        assert "<missing document>" not in labels, f"vendor {document_path(version)}"
        assert any(re.match(r"POST /threads$", label) for label in labels), labels
