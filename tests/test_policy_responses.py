"""Payload policy of the v1 API: responses create, conversations create / update, conversation
items create; the profile's v1 keys (roles, items, sizes, files, images, URLs, metadata,
models, tools, MCP servers, store, background, output tokens) and their config check."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from gateway.errors import BadRequestError
from gateway.operations.apiversions import KNOWN_VERSIONS, ApiVersion
from gateway.policy.checks import POLICY_REASONS, PolicyLimits, limit_problems
from gateway.policy.fields import V1_API_REASONS
from gateway.policy.jsonbody import dump_json, parse_json_object
from gateway.policy.limits import effective_limits
from tests.policycases import check_request

V1 = KNOWN_VERSIONS["v1"]
PREVIEW = KNOWN_VERSIONS["preview"]
D = PolicyLimits()
RC, CC, CU, IC = (
    "responses.create",
    "conversations.create",
    "conversations.update",
    "conversations.items.create",
)
MCP_URL = "https://mcp.example.com/sse"
WITH_MCP = PolicyLimits(mcp_server_urls=frozenset({MCP_URL}))
NO_WEB = PolicyLimits(tools=frozenset({"function", "file_search"}))
ONLY_GPT = PolicyLimits(models=frozenset({"gpt-4o"}))
USERS = PolicyLimits(input_roles=frozenset({"user"}))
SMALL = PolicyLimits(
    max_content_chars=10,
    max_request_content_chars=15,
    max_input_items=2,
    max_input_files=1,
    max_input_images=1,
    max_instructions_chars=8,
)
NO_STORE = PolicyLimits(allow_store=False, allow_background=False)
CAPPED = PolicyLimits(max_output_tokens=1000)
DATA_ONLY = PolicyLimits(allow_external_image_urls=False)
NO_IMAGES = PolicyLimits(allow_image_url=False, allow_image_file=False)
TAGGED = PolicyLimits(required_metadata_keys=frozenset({"cc"}))


def resp(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", **fields}


def msg(content: Any, role: str = "user", **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


def text(value: str) -> dict[str, str]:
    return {"type": "input_text", "text": value}


def image(**fields: Any) -> dict[str, Any]:
    return {"type": "input_image", **fields}


def infile(**fields: Any) -> dict[str, Any]:
    return {"type": "input_file", **fields}


def meta(pairs: int) -> dict[str, str]:
    return {f"k{i}": "v" for i in range(pairs)}


def case(
    op: str, body: Any, code: str, param: str | None, limits: PolicyLimits = D, v: ApiVersion = V1
) -> Any:
    return pytest.param(op, v, body, limits, code, param, id=f"{op}-{code}-{param}")


# fmt: off
REFUSALS = [
    # closed schema, required fields, types
    case(RC, {}, "missing_field", "model"),
    case(RC, resp(prompt={"id": "pmpt_1"}), "unknown_field", "prompt"),
    case(RC, resp(service_tier="priority"), "unknown_field", "service_tier"),
    case(RC, resp(input="hi", x=1), "unknown_field", "x", v=PREVIEW),
    case(RC, resp(model=None), "invalid_type", "model"),
    case(RC, resp(model=""), "invalid_value", "model"),
    case(RC, resp(stream="true"), "invalid_type", "stream"),
    case(RC, resp(store=1), "invalid_type", "store"),
    case(RC, resp(temperature=2.1), "invalid_value", "temperature"),
    case(RC, resp(top_p=True), "invalid_type", "top_p"),
    case(RC, resp(top_logprobs=21), "invalid_value", "top_logprobs"),
    case(RC, resp(max_output_tokens=15), "invalid_value", "max_output_tokens"),
    case(RC, resp(max_output_tokens=1.5), "invalid_type", "max_output_tokens"),
    case(RC, resp(max_tool_calls=0), "invalid_value", "max_tool_calls"),
    case(RC, resp(truncation="last_messages"), "invalid_value", "truncation"),
    case(RC, resp(include=["step_details"]), "invalid_value", "include[0]"),
    case(RC, resp(include="file_search_call.results"), "invalid_type", "include"),
    case(RC, resp(reasoning={"effort": "max"}), "invalid_value", "reasoning.effort"),
    case(RC, resp(reasoning={"budget": 1}), "unknown_field", "reasoning.budget"),
    case(RC, resp(text={"format": {"type": "yaml"}}), "invalid_value", "text.format.type"),
    case(RC, resp(text={"format": {"type": "json_schema", "name": "x"}}), "missing_field",
         "text.format.schema"),
    case(RC, resp(text={"format": {"type": "text", "name": "x"}}), "unknown_field",
         "text.format.name"),
    case(RC, resp(stream_options={"include_usage": True}), "unknown_field",
         "stream_options.include_usage"),
    case(RC, resp(user="u" * 513), "content_too_long", "user"),
    case(RC, resp(prompt_cache_retention="forever"), "invalid_value", "prompt_cache_retention"),
    # references: shapes (ownership checks whose they are)
    case(RC, resp(previous_response_id="thread_1"), "invalid_value", "previous_response_id"),
    case(RC, resp(conversation="resp_1"), "invalid_value", "conversation"),
    case(RC, resp(conversation={"id": "conv_1", "x": 1}), "unknown_field", "conversation.x"),
    case(RC, resp(conversation={}), "missing_field", "conversation.id"),
    case(RC, resp(conversation="conv_1", previous_response_id="resp_1"), "invalid_value",
         "previous_response_id"),
    # input: strings, items, roles
    case(RC, resp(input=""), "content_empty", "input"),
    case(RC, resp(input=7), "invalid_type", "input"),
    case(RC, resp(input=[{"content": "hi"}]), "missing_field", "input[0].type"),
    case(RC, resp(input=[msg("hi", role="tool")]), "role_not_allowed", "input[0].role"),
    case(RC, resp(input=[msg("hi", role="system")]), "role_not_allowed", "input[0].role", USERS),
    case(RC, resp(input=[msg("hi", role="developer")]), "role_not_allowed", "input[0].role",
         USERS),
    case(RC, resp(input=[{"type": "message", "role": "user"}]), "missing_field",
         "input[0].content"),
    case(RC, resp(input=[msg("hi", name="bob")]), "unknown_field", "input[0].name"),
    case(RC, resp(input=[msg([])]), "content_empty", "input[0].content"),
    case(RC, resp(input=[msg([text("")])]), "content_empty", "input[0].content[0].text"),
    case(RC, resp(input=[msg([{"type": "text", "text": "hi"}])]), "invalid_content_part",
         "input[0].content[0].type"),
    case(RC, resp(input=[msg([{"type": "output_text", "text": "hi"}])]), "invalid_content_part",
         "input[0].content[0].type"),
    case(RC, resp(input=[msg([{"type": "output_text", "text": "a",
                                "annotations": [{"type": "file_citation", "file_id": "file-x"}]}],
                             role="assistant")]),
         "invalid_value", "input[0].content[0].annotations"),
    case(RC, resp(input=[{"type": "computer_call_output", "call_id": "c"}]), "invalid_value",
         "input[0].type"),
    # items naming stored items are refused (item ids are not owned)
    case(RC, resp(input=[{"type": "item_reference", "id": "msg_1"}]),
         "input_item_id_not_allowed", "input[0].type"),
    case(RC, resp(input=[{"type": "reasoning", "id": "rs_1", "summary": []}]),
         "input_item_id_not_allowed", "input[0].type"),
    case(RC, resp(input=[{"type": "mcp_approval_response", "approval_request_id": "mcpr_1",
                          "approve": True}]),
         "input_item_id_not_allowed", "input[0].type"),
    case(RC, resp(input=[msg("hi", role="assistant", id="msg_1")]),
         "input_item_id_not_allowed", "input[0].id"),
    case(RC, resp(input=[{"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f",
                          "arguments": "{}"}]),
         "input_item_id_not_allowed", "input[0].id"),
    # function calls and outputs
    case(RC, resp(input=[{"type": "function_call_output", "output": "x"}]), "missing_field",
         "input[0].call_id"),
    case(RC, resp(input=[{"type": "function_call_output", "call_id": "c/../d", "output": "x"}]),
         "invalid_value", "input[0].call_id"),
    case(RC, resp(input=[{"type": "function_call", "call_id": "c", "name": "bad name",
                          "arguments": "{}"}]),
         "invalid_value", "input[0].name"),
    case(RC, resp(input=[{"type": "function_call_output", "call_id": "c",
                          "output": [{"type": "output_text", "text": "x"}]}]),
         "invalid_content_part", "input[0].output[0].type"),
    # images and files: sources, URL rules, counts
    case(RC, resp(input=[msg([image(image_url="http://example.com/a.png")])]),
         "content_part_not_allowed", "input[0].content[0].image_url"),
    case(RC, resp(input=[msg([image(image_url="file:///etc/passwd")])]),
         "content_part_not_allowed", "input[0].content[0].image_url"),
    case(RC, resp(input=[msg([image(image_url="https://169.254.169.254/latest")])]),
         "content_part_not_allowed", "input[0].content[0].image_url"),
    case(RC, resp(input=[msg([image(image_url="https://localhost/a.png")])]),
         "content_part_not_allowed", "input[0].content[0].image_url"),
    case(RC, resp(input=[msg([image(image_url="https://example.com/a.png")])]),
         "content_part_not_allowed", "input[0].content[0].image_url", DATA_ONLY),
    case(RC, resp(input=[msg([image(image_url="data:text/html;base64,AAAA")])]),
         "invalid_content_part", "input[0].content[0].image_url"),
    case(RC, resp(input=[msg([image(file_id="file-a")])]), "content_part_not_allowed",
         "input[0].content[0].file_id", NO_IMAGES),
    case(RC, resp(input=[msg([image(file_id="vs_1")])]), "invalid_file_id",
         "input[0].content[0].file_id"),
    case(RC, resp(input=[msg([image(file_id="file-a", image_url="https://example.com/a.png")])]),
         "invalid_content_part", "input[0].content[0]"),
    case(RC, resp(input=[msg([image(detail="auto")])]), "invalid_content_part",
         "input[0].content[0]"),
    case(RC, resp(input=[msg([image(file_id="file-a", detail="max")])]), "invalid_value",
         "input[0].content[0].detail"),
    case(RC, resp(input=[msg([infile(file_id="file-a", file_data="QUJD")])]),
         "invalid_content_part", "input[0].content[0]"),
    case(RC, resp(input=[msg([infile(file_url="https://10.0.0.1/doc.pdf")])]),
         "content_part_not_allowed", "input[0].content[0].file_url"),
    case(RC, resp(input=[msg([infile(file_data="QUJD", filename="../etc/passwd")])]),
         "invalid_value", "input[0].content[0].filename"),
    case(RC, resp(input=[msg([infile(file_id="file-a"), infile(file_id="file-b")])]),
         "too_many_files", "input[0].content[1]", SMALL),
    case(RC, resp(input=[msg([image(file_id="file-a")]), msg([image(file_id="file-b")])]),
         "too_many_images", "input[1].content[0]", SMALL),
    # sizes: per text, per request (instructions included), items
    case(RC, resp(input="x" * 11), "content_too_long", "input", SMALL),
    case(RC, resp(input=[msg([text("x" * 11)])]), "content_too_long", "input[0].content[0].text",
         SMALL),
    case(RC, resp(input=[msg("x" * 8), msg("x" * 8)]), "request_content_too_long",
         "input[1].content", SMALL),
    case(RC, resp(instructions="x" * 8, input="y" * 8), "request_content_too_long", "input",
         SMALL),
    case(RC, resp(instructions="x" * 9), "content_too_long", "instructions", SMALL),
    case(RC, resp(input=[{"type": "function_call_output", "call_id": "c", "output": "x" * 11}]),
         "content_too_long", "input[0].output", SMALL),
    case(RC, resp(input=[msg("a"), msg("b"), msg("c")]), "too_many_input_items", "input", SMALL),
    # metadata: 16 / 64 / 512, gateway_owner reserved, 15 of the caller's
    case(RC, resp(metadata=meta(16)), "metadata_too_many_pairs", "metadata"),
    case(RC, resp(metadata={"gateway_owner": "t"}), "metadata_key_reserved", "metadata"),
    case(RC, resp(metadata={"k" * 65: "v"}), "metadata_key_too_long", "metadata"),
    case(RC, resp(metadata={"k": "v" * 513}), "metadata_value_too_long", "metadata.k"),
    case(RC, resp(metadata={"k": 1}), "metadata_value_not_string", "metadata.k"),
    case(RC, resp(metadata={"a": "b"}), "metadata_required_key_missing", "metadata", TAGGED),
    # models, tools, tool choice
    case(RC, resp(model="gpt-4o-mini"), "model_not_allowed", "model", ONLY_GPT),
    case(RC, resp(tools=[{"type": "web_search"}]), "tool_not_allowed", "tools[0].type", NO_WEB),
    case(RC, resp(tools=[{"type": "code_interpreter", "container": {"type": "auto"}}]),
         "tool_not_allowed", "tools[0].type", NO_WEB),
    case(RC, resp(tools=[{"type": "browser"}]), "invalid_value", "tools[0].type"),
    case(RC, resp(tools=[{"type": "function", "function": {"name": "f"}}]), "unknown_field",
         "tools[0].function"),
    case(RC, resp(tools=[{"type": "function"}]), "missing_field", "tools[0].name"),
    case(RC, resp(tools=[{"type": "function", "name": "f"}] * 129), "invalid_value", "tools"),
    case(RC, resp(tools=[{"type": "file_search"}]), "missing_field", "tools[0].vector_store_ids"),
    case(RC, resp(tools=[{"type": "file_search", "vector_store_ids": ["file-a"]}]),
         "invalid_value", "tools[0].vector_store_ids[0]"),
    case(RC, resp(tools=[{"type": "file_search", "vector_store_ids": ["vs_1"],
                          "max_num_results": 51}]),
         "invalid_value", "tools[0].max_num_results"),
    case(RC, resp(tools=[{"type": "code_interpreter", "container": "cntr_other_tenants"}]),
         "invalid_value", "tools[0].container"),
    case(RC, resp(tools=[{"type": "code_interpreter", "container": {"type": "auto",
                                                                     "file_ids": ["vs_1"]}}]),
         "invalid_file_id", "tools[0].container.file_ids[0]"),
    case(RC, resp(tools=[{"type": "image_generation", "input_image_mask": {"file_id": "file-a"}}]),
         "unknown_field", "tools[0].input_image_mask"),
    case(RC, resp(tools=[{"type": "web_search_preview", "search_context_size": "huge"}]),
         "invalid_value", "tools[0].search_context_size"),
    case(RC, resp(tools=[{"type": "computer_use_preview", "display_width": 0,
                          "display_height": 1, "environment": "mac"}]),
         "invalid_value", "tools[0].display_width"),
    case(RC, resp(tool_choice="any"), "invalid_value", "tool_choice"),
    case(RC, resp(tool_choice={"type": "web_search_preview"}), "tool_not_allowed",
         "tool_choice.type", NO_WEB),
    case(RC, resp(tool_choice={"type": "function"}), "missing_field", "tool_choice.name"),
    case(RC, resp(tool_choice={"type": "allowed_tools", "mode": "auto", "tools": []}),
         "invalid_value", "tool_choice.type"),
    # mcp: no server unless its exact URL is allowed
    case(RC, resp(tools=[{"type": "mcp", "server_label": "x", "server_url": MCP_URL}]),
         "mcp_server_not_allowed", "tools[0].server_url"),
    case(RC, resp(tools=[{"type": "mcp", "server_label": "x", "server_url": MCP_URL + "/"}]),
         "mcp_server_not_allowed", "tools[0].server_url", WITH_MCP),
    case(RC, resp(tools=[{"type": "mcp", "server_label": "x",
                          "server_url": "https://MCP.example.com/sse"}]),
         "mcp_server_not_allowed", "tools[0].server_url", WITH_MCP),
    case(RC, resp(tools=[{"type": "mcp", "server_label": "x", "connector_id": "connector_gmail"}]),
         "unknown_field", "tools[0].connector_id", WITH_MCP),
    case(RC, resp(tools=[{"type": "mcp", "server_label": "x"}]), "missing_field",
         "tools[0].server_url", WITH_MCP),
    case(RC, resp(tools=[{"type": "mcp", "server_label": "x", "server_url": MCP_URL,
                          "require_approval": "sometimes"}]),
         "invalid_value", "tools[0].require_approval", WITH_MCP),
    case(RC, resp(tools=[{"type": "mcp", "server_label": "x", "server_url": MCP_URL,
                          "headers": {"bad header": "v"}}]),
         "invalid_value", "tools[0].headers", WITH_MCP),
    # store, background, output tokens
    case(RC, resp(store=True), "store_not_allowed", "store", NO_STORE),
    case(RC, resp(background=True), "background_not_allowed", "background", NO_STORE),
    case(RC, resp(max_output_tokens=1001), "max_output_tokens_too_large", "max_output_tokens",
         CAPPED),
    # conversations create / update, items create
    case(CC, {"messages": []}, "unknown_field", "messages"),
    case(CC, {"items": [msg("hi")] * 21}, "too_many_input_items", "items"),
    case(CC, {"items": [msg("a"), msg("b"), msg("c")]}, "too_many_input_items", "items", SMALL),
    case(CC, {"items": [msg("hi", role="system")]}, "role_not_allowed", "items[0].role", USERS),
    case(CC, {"items": [{"type": "item_reference", "id": "msg_x"}]},
         "input_item_id_not_allowed", "items[0].type"),
    case(CC, {"metadata": meta(16)}, "metadata_too_many_pairs", "metadata"),
    case(CC, {"metadata": {"gateway_owner": "x"}}, "metadata_key_reserved", "metadata"),
    case(CC, {}, "metadata_required_key_missing", "metadata", TAGGED),
    case(CC, {"items": "hi"}, "invalid_type", "items"),
    case(CU, {}, "missing_field", "metadata"),
    case(CU, {"metadata": {}, "items": []}, "unknown_field", "items"),
    case(CU, {"metadata": meta(16)}, "metadata_too_many_pairs", "metadata"),
    case(CU, {"metadata": None}, "metadata_required_key_missing", "metadata", TAGGED),
    case(IC, {}, "missing_field", "items"),
    case(IC, {"items": []}, "invalid_value", "items"),
    case(IC, {"items": [msg("hi")] * 21}, "too_many_input_items", "items"),
    case(IC, {"items": [msg([infile(file_id="file-a"), infile(file_id="file-b")])]},
         "too_many_files", "items[0].content[1]", SMALL),
    case(IC, {"items": [msg("x" * 8), msg("x" * 8)]}, "request_content_too_long",
         "items[1].content", SMALL),
    case(IC, {"items": [msg("hi")], "include": []}, "unknown_field", "include"),
]

ACCEPTS = [
    pytest.param(RC, resp(input="hello"), id="string input"),
    pytest.param(RC, resp(
        input=[
            msg("be brief", role="developer"),
            msg("hi", role="system"),
            {"type": "message", "role": "user", "content": [
                text("look"),
                image(image_url="https://example.com/a.png", detail="high"),
                image(file_id="assistant-img"),
                image(image_url="data:image/png;base64,iVBORw0KGgo="),
                infile(file_id="file-doc"),
                infile(file_data="data:application/pdf;base64,QUJD", filename="a.pdf"),
                infile(file_url="https://example.com/doc.pdf"),
            ]},
            msg([{"type": "output_text", "text": "ok", "annotations": []},
                 {"type": "refusal", "refusal": "no"}], role="assistant", status="completed"),
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": "{\"city\": \"Oslo\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2",
             "output": [text("x"), image(file_id="file-b")]},
        ],
        instructions="You are kind.",
        tools=[
            {"type": "function", "name": "get_weather", "description": "d",
             "parameters": {"type": "object", "properties": {}}, "strict": True},
            {"type": "file_search", "vector_store_ids": ["vs_1"], "max_num_results": 5,
             "ranking_options": {"ranker": "auto", "score_threshold": 0.5},
             "filters": {"type": "eq", "key": "k", "value": "v"}},
            {"type": "web_search_preview", "search_context_size": "low",
             "user_location": {"type": "approximate", "country": "NO"}},
            {"type": "web_search", "filters": {"allowed_domains": ["example.com"]}},
            {"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-c"]}},
            {"type": "image_generation", "quality": "low", "size": "auto", "partial_images": 2},
            {"type": "computer_use_preview", "display_width": 1024, "display_height": 768,
             "environment": "browser"},
            {"type": "local_shell"},
        ],
        tool_choice={"type": "function", "name": "get_weather"},
        metadata=meta(15), store=True, background=False, stream=True,
        stream_options={"include_obfuscation": False},
        max_output_tokens=16, max_tool_calls=3, temperature=0.2, top_p=1, top_logprobs=0,
        text={"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"},
                         "strict": True}, "verbosity": "low"},
        reasoning={"effort": "minimal", "summary": "auto"}, truncation="auto",
        parallel_tool_calls=False, conversation={"id": "conv_1"},
        include=["file_search_call.results", "reasoning.encrypted_content"],
        user="u", safety_identifier="hash", prompt_cache_key="k", prompt_cache_retention="24h",
    ), id="every field"),
    pytest.param(RC, resp(previous_response_id="resp_" + "a" * 48, input=[msg("more")]),
                 id="previous response"),
    pytest.param(RC, resp(conversation="conv_abc", input="next"), id="conversation id"),
    pytest.param(RC, resp(tool_choice="required", tools=[{"type": "function", "name": "f"}]),
                 id="tool choice string"),
    pytest.param(RC, resp(instructions=None, temperature=None, metadata=None), id="nulls"),
    pytest.param(CC, {}, id="empty conversation"),
    pytest.param(CC, {"items": [msg("hi"), msg([text("there")], role="assistant")],
                      "metadata": {"topic": "x"}}, id="conversation with items"),
    pytest.param(CC, {"items": [msg("hi")] * 20, "metadata": None}, id="twenty items"),
    pytest.param(CU, {"metadata": {"topic": "y"}}, id="update"),
    pytest.param(CU, {"metadata": None}, id="update clears"),
    pytest.param(IC, {"items": [msg("hi"), {"type": "function_call_output", "call_id": "c",
                                            "output": "{}"}]}, id="items"),
]
# fmt: on


@pytest.mark.parametrize(("op", "version", "body", "limits", "code", "param"), REFUSALS)
def test_refusals(
    op: str, version: ApiVersion, body: Any, limits: PolicyLimits, code: str, param: str | None
) -> None:
    with pytest.raises(BadRequestError) as info:
        check_request(op, version, body, limits)
    assert (info.value.code, info.value.param) == (code, param)
    assert info.value.code in POLICY_REASONS
    assert info.value.status == 400


@pytest.mark.parametrize(("op", "body"), ACCEPTS)
@pytest.mark.parametrize("version", [V1, PREVIEW])
def test_accepted_bodies_are_forwarded_as_given(op: str, body: Any, version: ApiVersion) -> None:
    before = copy.deepcopy(body)
    limits = WITH_MCP
    out = check_request(op, version, parse_json_object(dump_json(body), "application/json"), limits)
    assert out == body
    assert body == before


def test_the_refusal_table_covers_every_v1_api_code() -> None:
    codes = {p.values[4] for p in REFUSALS}
    assert codes >= V1_API_REASONS
    assert POLICY_REASONS >= V1_API_REASONS


def test_an_allowed_mcp_server_passes_exactly() -> None:
    tool = {
        "type": "mcp",
        "server_label": "docs",
        "server_url": MCP_URL,
        "allowed_tools": ["search"],
        "require_approval": {"never": {"tool_names": ["search"]}},
        "headers": {"Authorization": "Bearer x"},
    }
    out = check_request(
        RC, V1, resp(tools=[tool], tool_choice={"type": "mcp", "server_label": "docs"}), WITH_MCP
    )
    assert out is not None and out["tools"] == [tool]


def test_without_store_an_absent_store_is_sent_false() -> None:
    out = check_request(RC, V1, resp(input="hi"), NO_STORE)
    assert out == resp(input="hi", store=False)
    assert check_request(RC, V1, resp(store=False), NO_STORE) == resp(store=False)
    # the default profile forwards what it was given
    assert check_request(RC, V1, resp(input="hi"), D) == resp(input="hi")


def test_an_output_token_ceiling_fills_an_absent_value() -> None:
    assert check_request(RC, V1, resp(), CAPPED) == resp(max_output_tokens=1000)
    assert check_request(RC, V1, resp(max_output_tokens=500), CAPPED) == resp(max_output_tokens=500)
    assert check_request(RC, V1, resp(max_output_tokens=None), CAPPED) == resp(
        max_output_tokens=1000
    )


def test_the_request_text_budget_counts_every_text() -> None:
    limits = PolicyLimits(max_request_content_chars=10)
    body = resp(
        instructions="ab",
        input=[
            msg([text("cd")]),
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "ef"},
            {"type": "function_call_output", "call_id": "c", "output": "gh"},
            msg([{"type": "output_text", "text": "ij"}], role="assistant"),
        ],
    )
    assert check_request(RC, V1, body, limits) == body
    body["input"].append(msg("k"))
    with pytest.raises(BadRequestError) as info:
        check_request(RC, V1, body, limits)
    assert (info.value.code, info.value.param) == ("request_content_too_long", "input[4].content")


def test_responses_and_conversations_metadata_leave_the_stamp_its_pair() -> None:
    for op, body in ((RC, resp(metadata=meta(15))), (CC, {"metadata": meta(15)})):
        assert check_request(op, V1, body, D) == body
    assert check_request(CU, V1, {"metadata": meta(15)}, D) == {"metadata": meta(15)}


# --- the profile's v1 keys: only tighten ------------------------------------------------------

P = "profiles.x.policy"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"input_roles": frozenset()},
            f"{P}.input_roles: must be a non-empty subset of "
            "['assistant', 'developer', 'system', 'user']",
        ),
        (
            {"input_roles": frozenset({"tool"})},
            f"{P}.input_roles: must be a non-empty subset of "
            "['assistant', 'developer', 'system', 'user']",
        ),
        ({"max_input_items": 1001}, f"{P}.max_input_items: must be an integer between 0 and 1000"),
        ({"max_input_items": -1}, f"{P}.max_input_items: must be an integer between 0 and 1000"),
        ({"max_input_files": 101}, f"{P}.max_input_files: must be an integer between 0 and 100"),
        ({"max_input_images": 501}, f"{P}.max_input_images: must be an integer between 0 and 500"),
        ({"max_input_images": True}, f"{P}.max_input_images: must be an integer between 0 and 500"),
        (
            {"max_request_content_chars": 0},
            f"{P}.max_request_content_chars: must be null or an integer between 1 and 2147483647",
        ),
        (
            {"max_output_tokens": 15},
            f"{P}.max_output_tokens: must be null or an integer between 16 and 2147483647",
        ),
        (
            {"mcp_server_urls": frozenset({"http://mcp.example.com"})},
            f"{P}.mcp_server_urls: must be a set of exact https:// URLs",
        ),
        (
            {"mcp_server_urls": frozenset({"https://mcp.example.com/?token=1"})},
            f"{P}.mcp_server_urls: must be a set of exact https:// URLs",
        ),
        (
            {"mcp_server_urls": frozenset({"https://user@mcp.example.com/"})},
            f"{P}.mcp_server_urls: must be a set of exact https:// URLs",
        ),
        ({"allow_store": "yes"}, f"{P}.allow_store: must be true or false"),
        ({"allow_background": 1}, f"{P}.allow_background: must be true or false"),
        (
            {"tools": frozenset({"web_browser"})},
            f"{P}.tools: must be a subset of "
            "['code_interpreter', 'computer_use_preview', 'file_search', 'function', "
            "'image_generation', 'local_shell', 'mcp', 'retrieval', 'web_search', "
            "'web_search_preview']",
        ),
    ],
)
def test_limit_problems_of_the_v1_keys(changes: dict[str, Any], problem: str) -> None:
    limits = dataclasses.replace(PolicyLimits(), **changes)
    assert limit_problems(limits, P) == [problem]


def test_tight_v1_profiles_pass_the_check_and_stay_as_written() -> None:
    tight = PolicyLimits(
        input_roles=frozenset({"user"}),
        max_input_items=5,
        max_request_content_chars=1000,
        max_input_files=0,
        max_input_images=0,
        mcp_server_urls=frozenset({MCP_URL}),
        allow_store=False,
        allow_background=False,
        max_output_tokens=512,
        tools=frozenset({"function"}),
    )
    assert limit_problems(tight, P) == []
    assert effective_limits(tight) == tight
    assert limit_problems(PolicyLimits(), P) == []


def test_effective_limits_clamp_the_v1_keys() -> None:
    loose = dataclasses.replace(
        PolicyLimits(),
        input_roles=frozenset({"user", "tool"}),
        max_input_items=5000,
        max_input_files=1000,
        max_input_images=1000,
        max_output_tokens=1,
    )
    clamped = effective_limits(loose)
    assert clamped.input_roles == frozenset({"user"})
    assert (clamped.max_input_items, clamped.max_input_files, clamped.max_input_images) == (
        1000,
        100,
        500,
    )
    assert clamped.max_output_tokens == 16


def test_effective_limits_are_worked_out_once_per_limits_object() -> None:
    """Remembered by identity (bounded): the same profile object gets the same clamped
    object; an equal but distinct one is clamped alike; the memo never grows past its size."""
    from gateway.policy import limits as module

    loose = dataclasses.replace(PolicyLimits(), max_input_items=5000)
    first = effective_limits(loose)
    assert effective_limits(loose) is first
    twin = dataclasses.replace(PolicyLimits(), max_input_items=5000)
    assert effective_limits(twin) == first and effective_limits(twin) is not first
    many = [dataclasses.replace(PolicyLimits(), max_files=i % 10) for i in range(300)]
    for limits in many:
        assert effective_limits(limits).max_input_items == 1000
    assert len(module._EFFECTIVE) <= module._EFFECTIVE_SIZE
    assert effective_limits(loose) == first  # worked out again after eviction: the same
