"""Payload policy of what a tenant builds: assistants (v1 and v2), assistant files, vector
stores, their files and batches; the profile's models, tools, instructions and file counts;
and the false refusals of issue 14 (each accepted now, as Microsoft's documents allow)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from gateway.errors import BadRequestError
from gateway.operations.apiversions import KNOWN_VERSIONS, ApiVersion
from gateway.policy.checks import POLICY_REASONS, PolicyLimits, limit_problems
from gateway.policy.jsonbody import dump_json
from gateway.policy.limits import effective_limits
from tests.policycases import check_request

V1 = KNOWN_VERSIONS["2024-02-15-preview"]
V2 = KNOWN_VERSIONS["2024-05-01-preview"]
V25 = KNOWN_VERSIONS["2025-04-01-preview"]
D = PolicyLimits()
AC, AM, AF = "assistants.create", "assistants.modify", "assistants.files.create"
VC, VM = "vector_stores.create", "vector_stores.modify"
VF, VB = "vector_stores.files.create", "vector_stores.file_batches.create"
R, CR, T = "runs.create", "threads.create_and_run", "threads.create"
ONLY_GPT = PolicyLimits(models=frozenset({"gpt-4o"}))
NO_CODE = PolicyLimits(tools=frozenset({"function", "file_search", "retrieval"}))
SHORT = PolicyLimits(max_instructions_chars=5)
FEW_FILES = PolicyLimits(max_assistant_files=2, max_vector_store_files=2)
FILES = [f"file-{i:03d}" for i in range(501)]
STATIC = {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}


def asst(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", **fields}


def run(**fields: Any) -> dict[str, Any]:
    return {"assistant_id": "asst_1", **fields}


def meta(pairs: int) -> dict[str, str]:
    return {f"k{i}": "v" for i in range(pairs)}


def case(
    op: str, version: ApiVersion, body: Any, code: str, param: str | None, limits: PolicyLimits = D
) -> Any:
    return pytest.param(
        op, version, body, limits, code, param, id=f"{op}-{version.name}-{code}-{param}"
    )


# fmt: off
BUILD_REFUSALS = [
    # assistants: closed schema, per version
    case(AC, V2, {}, "missing_field", "model"),
    case(AC, V2, asst(foo=1), "unknown_field", "foo"),
    case(AC, V2, asst(file_ids=["file-a"]), "field_not_allowed_in_version", "file_ids"),
    case(AC, V1, asst(tool_resources={}), "field_not_allowed_in_version", "tool_resources"),
    case(AC, V1, asst(temperature=1), "field_not_allowed_in_version", "temperature"),
    case(AC, V1, asst(response_format="auto"), "field_not_allowed_in_version", "response_format"),
    case(AC, V2, asst(model=""), "invalid_value", "model"),
    case(AC, V2, asst(model=7), "invalid_type", "model"),
    case(AC, V2, asst(name="n" * 257), "invalid_value", "name"),
    case(AC, V2, asst(description="d" * 513), "invalid_value", "description"),
    case(AC, V1, asst(instructions="i" * 32_769), "content_too_long", "instructions"),
    case(AC, V2, asst(instructions="i" * 256_001), "content_too_long", "instructions"),
    case(AC, V2, asst(tools=[{"type": "code_interpreter"}] * 129), "invalid_value", "tools"),
    case(AC, V2, asst(tools=[{"type": "retrieval"}]), "field_not_allowed_in_version",
        "tools[0].type"),
    case(AC, V1, asst(tools=[{"type": "file_search"}]), "field_not_allowed_in_version",
        "tools[0].type"),
    case(AC, V2, asst(temperature=2.5), "invalid_value", "temperature"),
    case(AC, V2, asst(top_p=-0.1), "invalid_value", "top_p"),
    case(AC, V2, asst(response_format={"type": "yaml"}), "invalid_value", "response_format.type"),
    case(AC, V1, asst(file_ids=FILES[:21]), "too_many_files", "file_ids"),
    case(AC, V1, asst(file_ids=["file-a", "file-a"]), "duplicate_file_id", "file_ids[1]"),
    case(AC, V1, asst(file_ids=["vs_1"]), "invalid_file_id", "file_ids[0]"),
    case(AC, V2, asst(metadata=meta(16)), "metadata_too_many_pairs", "metadata"),
    case(AC, V2, asst(metadata={"gateway_owner": "x"}), "metadata_key_reserved", "metadata"),
    case(AC, V2, asst(metadata={"k": "v" * 513}), "metadata_value_too_long", "metadata.k"),
    case(AC, V2, asst(tool_resources={"code_interpreter": {"file_ids": FILES[:21]}}),
        "too_many_code_interpreter_files", "tool_resources.code_interpreter.file_ids"),
    case(AC, V2, asst(tool_resources={"file_search": {"vector_store_ids": ["vs_1", "vs_2"]}}),
        "too_many_vector_stores", "tool_resources.file_search.vector_store_ids"),
    case(AM, V2, {"tool_resources": {"file_search": {"vector_stores": [{}]}}}, "unknown_field",
        "tool_resources.file_search.vector_stores"),
    case(AM, V2, {"model": None}, "invalid_type", "model"),
    case(AF, V1, {}, "missing_field", "file_id"),
    case(AF, V1, {"file_id": "file-a", "x": 1}, "unknown_field", "x"),
    case(AF, V1, {"file_id": "../x"}, "invalid_file_id", "file_id"),
    # profile: models, tools, instructions, files
    case(AC, V2, asst(model="gpt-35"), "model_not_allowed", "model", ONLY_GPT),
    case(AM, V2, {"model": "gpt-35"}, "model_not_allowed", "model", ONLY_GPT),
    case(R, V2, run(model="gpt-35"), "model_not_allowed", "model", ONLY_GPT),
    case(CR, V2, run(model="gpt-35"), "model_not_allowed", "model", ONLY_GPT),
    case(R, V1, run(model="gpt-35"), "model_not_allowed", "model", ONLY_GPT),
    case(AC, V2, asst(tools=[{"type": "code_interpreter"}]), "tool_not_allowed", "tools[0].type",
        NO_CODE),
    case(AC, V1, asst(tools=[{"type": "code_interpreter"}]), "tool_not_allowed", "tools[0].type",
        NO_CODE),
    case(R, V2, run(tools=[{"type": "code_interpreter"}]), "tool_not_allowed", "tools[0].type",
        NO_CODE),
    case(CR, V2, run(tool_choice={"type": "code_interpreter"}), "tool_not_allowed",
        "tool_choice.type", NO_CODE),
    case(AC, V2, asst(tool_resources={"code_interpreter": {"file_ids": []}}), "tool_not_allowed",
        "tool_resources.code_interpreter", NO_CODE),
    case(T, V2, {"tool_resources": {"code_interpreter": {"file_ids": []}}}, "tool_not_allowed",
        "tool_resources.code_interpreter", NO_CODE),
    case(AC, V2, asst(instructions="123456"), "content_too_long", "instructions", SHORT),
    case(R, V2, run(instructions="123456"), "content_too_long", "instructions", SHORT),
    case(R, V2, run(additional_instructions="123456"), "content_too_long",
        "additional_instructions", SHORT),
    case(CR, V2, run(instructions="123456"), "content_too_long", "instructions", SHORT),
    case(AC, V1, asst(file_ids=FILES[:3]), "too_many_files", "file_ids", FEW_FILES),
    case(AC, V2, asst(tool_resources={"code_interpreter": {"file_ids": FILES[:3]}}),
        "too_many_code_interpreter_files", "tool_resources.code_interpreter.file_ids", FEW_FILES),
    case(VC, V2, {"file_ids": FILES[:3]}, "too_many_files", "file_ids", FEW_FILES),
    case(VB, V2, {"file_ids": FILES[:3]}, "too_many_files", "file_ids", FEW_FILES),
    case(T, V2, {"tool_resources": {"file_search": {"vector_stores": [{"file_ids": FILES[:3]}]}}},
        "too_many_files", "tool_resources.file_search.vector_stores[0].file_ids", FEW_FILES),
    # vector stores
    case(VC, V2, {"x": 1}, "unknown_field", "x"),
    case(VC, V2, {"file_ids": FILES}, "too_many_files", "file_ids"),
    case(VC, V2, {"name": 1}, "invalid_type", "name"),
    case(VC, V2, {"expires_after": {"anchor": "created_at", "days": 1}}, "invalid_value",
        "expires_after.anchor"),
    case(VC, V2, {"expires_after": {"anchor": "last_active_at", "days": 366}}, "invalid_value",
        "expires_after.days"),
    case(VC, V2, {"expires_after": {"anchor": "last_active_at"}}, "missing_field",
        "expires_after.days"),
    case(VC, V2, {"chunking_strategy": {"type": "static"}}, "missing_field",
        "chunking_strategy.static"),
    case(VC, V2, {"chunking_strategy": {"type": "auto", "static": {}}}, "unknown_field",
        "chunking_strategy.static"),
    case(VC, V2, {"chunking_strategy": {"type": "static", "static": {
        "max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0}}}, "invalid_value",
        "chunking_strategy.static.max_chunk_size_tokens"),
    case(VC, V2, {"chunking_strategy": {"type": "static", "static": {
        "max_chunk_size_tokens": 4097, "chunk_overlap_tokens": 0}}}, "invalid_value",
        "chunking_strategy.static.max_chunk_size_tokens"),
    case(VC, V2, {"chunking_strategy": {"type": "static", "static": {
        "max_chunk_size_tokens": 800, "chunk_overlap_tokens": 401}}}, "invalid_value",
        "chunking_strategy.static.chunk_overlap_tokens"),
    case(VC, V2, {"metadata": meta(16)}, "metadata_too_many_pairs", "metadata"),
    case(VC, V2, {"metadata": {"gateway_owner": "x"}}, "metadata_key_reserved", "metadata"),
    case(VM, V2, {"file_ids": []}, "unknown_field", "file_ids"),
    case(VM, V2, {"metadata": meta(16)}, "metadata_too_many_pairs", "metadata"),
    case(VF, V2, {}, "missing_field", "file_id"),
    case(VF, V2, {"file_id": "vs_1"}, "invalid_file_id", "file_id"),
    case(VB, V2, {}, "missing_field", "file_ids"),
    case(VB, V2, {"file_ids": []}, "invalid_value", "file_ids"),
    case(VB, V2, {"file_ids": FILES}, "too_many_files", "file_ids"),
    # threads and runs: reserved stamp, version-bound fields
    case(T, V2, {"metadata": meta(16)}, "metadata_too_many_pairs", "metadata"),
    case(CR, V2, run(stream_options={"include_usage": True}), "field_not_allowed_in_version",
        "stream_options"),
    case(CR, V25, run(stream_options={"include_usage": 1}), "invalid_type",
        "stream_options.include_usage"),
    case(CR, V25, run(stream_options={"x": True}), "unknown_field", "stream_options.x"),
    case(R, V2, run(max_completion_tokens=255.0), "invalid_value", "max_completion_tokens"),
    case(R, V2, run(max_completion_tokens=1e300), "invalid_type", "max_completion_tokens"),
]

ACCEPTS = [
    (AC, V1, asst(name="n", description=None, instructions="i" * 32_768, metadata=meta(15),
                  tools=[{"type": "retrieval"}, {"type": "code_interpreter"}],
                  file_ids=FILES[:20])),
    (AC, V2, asst(tools=[{"type": "file_search", "file_search": {"max_num_results": 5}}],
                  tool_resources={"code_interpreter": {"file_ids": FILES[:20]},
                                  "file_search": {"vector_stores": [
                                      {"file_ids": ["file-a"], "chunking_strategy": STATIC,
                                       "metadata": {"k": "v"}}]}},
                  temperature=0.5, top_p=1, response_format={"type": "json_object"})),
    (AM, V2, {"tool_resources": {"file_search": {"vector_store_ids": ["vs_1"]}}, "name": None}),
    (AM, V1, {"file_ids": [], "instructions": None}),
    (AF, V1, {"file_id": "assistant-abc"}),
    (VC, V2, {}),
    (VC, V2, {"file_ids": FILES[:500], "name": "n", "metadata": meta(15),
              "expires_after": {"anchor": "last_active_at", "days": 365},
              "chunking_strategy": {"type": "auto"}}),
    (VM, V2, {"name": None, "expires_after": None, "metadata": None}),
    (VF, V2, {"file_id": "file-a", "chunking_strategy": STATIC}),
    (VB, V2, {"file_ids": FILES[:500], "chunking_strategy": {"type": "auto"}}),
    (AC, V2, asst(model="gpt-4o", tools=[{"type": "function", "function": {"name": "f"}}])),
]
# fmt: on


@pytest.mark.parametrize(("op", "version", "body", "limits", "code", "param"), BUILD_REFUSALS)
def test_refusals(
    op: str, version: ApiVersion, body: Any, limits: PolicyLimits, code: str, param: str | None
) -> None:
    with pytest.raises(BadRequestError) as info:
        check_request(op, version, body, limits)
    assert (info.value.code, info.value.param) == (code, param)
    assert info.value.code in POLICY_REASONS


@pytest.mark.parametrize(("op", "version", "body"), ACCEPTS)
def test_accepted_bodies_are_forwarded_as_given(op: str, version: ApiVersion, body: Any) -> None:
    before = copy.deepcopy(body)
    assert check_request(op, version, body, D) == body
    assert body == before


def test_profile_allows_what_it_lists() -> None:
    assert check_request(AC, V2, asst(), ONLY_GPT) == asst()
    assert check_request(R, V2, run(model="gpt-4o"), ONLY_GPT) == run(model="gpt-4o")
    assert check_request(R, V2, run(), ONLY_GPT) == run()  # no override: the assistant's model
    body = asst(tools=[{"type": "function", "function": {"name": "f"}}])
    assert check_request(AC, V2, body, NO_CODE) == body
    assert check_request(AC, V2, asst(instructions="12345"), SHORT) == asst(instructions="12345")


# --- issue 14 item 4: false refusals (each refused on main) ---------------------------------


def test_stream_options_on_create_and_run_where_the_document_has_it() -> None:
    body = run(stream=True, stream_options={"include_usage": True})
    assert check_request(CR, V25, body, D) == body
    assert check_request(CR, V25, run(stream_options=None), D) == run(stream_options=None)


def test_chunking_strategy_on_a_vector_store_made_with_a_thread() -> None:
    stores = [{"file_ids": ["file-a"], "chunking_strategy": STATIC}]
    body = {"tool_resources": {"file_search": {"vector_stores": stores}}}
    assert check_request(T, V25, body, D) == body
    nested = run(thread=body)
    assert check_request(CR, V25, nested, D) == nested


def test_an_integral_float_is_an_integer_and_forwarded_as_one() -> None:
    out = check_request(R, V25, run(max_completion_tokens=256.0, max_prompt_tokens=1000.0), D)
    assert out == run(max_completion_tokens=256, max_prompt_tokens=1000)
    assert out is not None
    assert isinstance(out["max_completion_tokens"], int)
    assert dump_json(out) == b'{"assistant_id":"asst_1","max_completion_tokens":256,' + (
        b'"max_prompt_tokens":1000}'
    )


def test_tool_choice_function_needs_only_its_type() -> None:
    """``assistantsNamedToolChoice`` requires ``type`` only."""
    body = run(tool_choice={"type": "function"})
    assert check_request(R, V25, body, D) == body
    assert check_request(CR, V2, body, D) == body


def test_a_thread_may_be_seeded_with_up_to_100_messages() -> None:
    """The documents set no maximum; the gateway's is 100 (deliberate, in the README)."""
    messages = [{"role": "user", "content": "hi"}] * 100
    assert check_request(T, V25, {"messages": messages}, D) == {"messages": messages}
    body = run(additional_messages=messages)
    assert check_request(R, V25, body, D) == body


# --- the new profile keys only tighten Azure's ceilings -------------------------------------

P = "profiles.x.policy"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"max_assistant_files": 21},
            f"{P}.max_assistant_files: must be an integer between 0 and 20",
        ),
        (
            {"max_assistant_files": -1},
            f"{P}.max_assistant_files: must be an integer between 0 and 20",
        ),
        (
            {"max_vector_store_files": 10_001},
            f"{P}.max_vector_store_files: must be an integer between 0 and 10000",
        ),
        (
            {"max_instructions_chars": 256_001},
            f"{P}.max_instructions_chars: must be null or an integer between 1 and 256000",
        ),
        (
            {"max_instructions_chars": 0},
            f"{P}.max_instructions_chars: must be null or an integer between 1 and 256000",
        ),
        (
            {"tools": frozenset({"browser"})},
            f"{P}.tools: must be a subset of "
            "['code_interpreter', 'computer_use_preview', 'file_search', 'function', "
            "'image_generation', 'local_shell', 'mcp', 'retrieval', 'web_search', "
            "'web_search_preview']",
        ),
        (
            {"models": frozenset({""})},
            f"{P}.models: must be a set of deployment names of 1 to 256 characters",
        ),
        (
            {"models": frozenset({"m" * 257})},
            f"{P}.models: must be a set of deployment names of 1 to 256 characters",
        ),
    ],
)
def test_limit_problems_of_the_new_keys(changes: dict[str, Any], problem: str) -> None:
    assert limit_problems(dataclasses.replace(D, **changes), P) == [problem]


def test_tight_new_keys_have_no_problems_and_are_clamped() -> None:
    tight = PolicyLimits(
        models=frozenset({"gpt-4o"}),
        tools=frozenset(),
        max_instructions_chars=1,
        max_assistant_files=0,
        max_vector_store_files=0,
    )
    assert limit_problems(tight, P) == []
    loose = dataclasses.replace(D, max_instructions_chars=10**9, max_vector_store_files=10**9)
    clamped = effective_limits(loose)
    assert (clamped.max_instructions_chars, clamped.max_vector_store_files) == (256_000, 10_000)


def test_a_vector_store_name_has_no_gateway_maximum() -> None:
    """The documents give ``name`` no maxLength: a long name is Azure's to judge."""
    body = {"name": "n" * 5000}
    assert check_request(VC, V2, body, D) == body
    assert check_request(VM, V2, body, D) == body
