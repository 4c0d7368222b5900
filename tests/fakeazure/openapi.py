"""Microsoft's documents (vendored under tests/specs, see its SOURCES.md) as JSON Schema
validators, per api-version and schema name.

    check("2024-05-01-preview", "vectorStoreObject", answer)   # raises jsonschema.ValidationError
    errors("2024-02-15-preview", "runObject", answer)          # -> list of messages

OpenAPI 3.0 (inference) and Swagger 2.0 (authoring: files) schemas are turned into JSON Schema
2020-12: ``nullable: true`` becomes a ``null`` alternative; ``$ref`` resolves inside the same
document. Documents are used as published except the ERRATA below: each is a defect of the
document itself (a reference to a property that is not defined, or an ``object`` value the
service and every SDK contradict), named with its reason so a reader can judge it.

Version mapping: 2024-02-15-preview has its own document. 2025-04-01-preview has its vector
store schemas vendored (``V2504_SCHEMAS``, checked against those); everything else of a v2
version is checked against the 2024-05-01-preview document (later versions add fields, which
the response schemas tolerate as they set no ``additionalProperties: false``). Files (all
versions) are checked against the 2024-05-01-preview authoring document.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SPECS = Path(__file__).resolve().parent.parent / "specs"
V1 = "2024-02-15-preview"
V2 = "2024-05-01-preview"
V2504 = "2025-04-01-preview"
_INFERENCE = {
    V1: SPECS / V1 / "inference.assistants.json",
    V2: SPECS / V2 / "inference.assistants.json",
    V2504: SPECS / V2504 / "inference.vector_stores.json",
}
_FILES = SPECS / V2 / "azureopenai.files.json"
FILE_SCHEMAS = frozenset({"File", "FileList", "ErrorResponse"})

#: (document version, schema, JSON pointer inside it, value to set, why). Applied on load.
ERRATA: tuple[tuple[str, str, str, Any, str], ...] = (
    (
        V1,
        "runObject",
        "properties/object/enum",
        ["thread.run"],
        "the v1 document says 'assistant.run'; the service, its v2 document and every SDK "
        "(openai 1.x Run.object: Literal['thread.run']) use 'thread.run'",
    ),
    (
        V1,
        "runStepObject",
        "properties/object/enum",
        ["thread.run.step"],
        "the document says 'assistant.run.step'; the service and the SDKs use 'thread.run.step'",
    ),
    (
        V2,
        "runStepObject",
        "properties/object/enum",
        ["thread.run.step"],
        "the document says 'assistant.run.step'; the service and the SDKs use 'thread.run.step'",
    ),
    (
        V1,
        "listAssistantFilesResponse",
        "required",
        ["object", "data", "first_id", "last_id", "has_more"],
        "'items' is listed under required but no such property is defined (data holds the items)",
    ),
    (
        V1,
        "listMessageFilesResponse",
        "required",
        ["object", "data", "first_id", "last_id", "has_more"],
        "'items' is listed under required but no such property is defined (data holds the items)",
    ),
    (
        V1,
        "createRunRequest",
        "required",
        ["assistant_id"],
        "'thread_id' is a path parameter, listed by mistake as a required body field",
    ),
    (
        V1,
        "createThreadAndRunRequest",
        "required",
        ["assistant_id"],
        "'thread_id' is listed as required, but create_and_run makes the thread",
    ),
    (
        V2,
        "createRunRequest",
        "required",
        ["assistant_id"],
        "'thread_id' is a path parameter, listed by mistake as a required body field",
    ),
    (
        V2,
        "createThreadAndRunRequest",
        "required",
        ["assistant_id"],
        "'thread_id' is listed as required, but create_and_run makes the thread",
    ),
)
#: Referenced by assistantToolsFunction but not vendored (a chat-completions schema: "the
#: parameters the functions accepts, described as a JSON Schema object"): any object.
_NOT_VENDORED = {"chatCompletionFunctionParameters": {"type": "object"}}


def document_version(api_version: str, schema: str = "") -> str:
    """Which vendored document checks ``schema`` for ``api_version``."""
    if api_version == V1:
        return V1
    if api_version == V2504 and schema in _document(V2504)["components"]["schemas"]:
        return V2504
    return V2


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable`` → JSON Schema, recursively."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        # ``allOf`` too: ``{type: object, allOf: [$ref X], nullable}`` (the v1 document's
        # way of writing "X or null") must let null past the referenced schema as well.
        composed = ("oneOf", "anyOf", "allOf")
        if "type" in out and "$ref" not in out and not any(k in out for k in composed):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            return {"anyOf": [out, {"type": "null"}]}
    return out


def _set(schema: dict[str, Any], pointer: str, value: Any) -> None:
    *path, last = pointer.split("/")
    node = schema
    for key in path:
        node = node[key]
    if last not in node:
        raise KeyError(f"erratum target {pointer} is not in the document")
    node[last] = value


@functools.cache
def _document(version: str) -> dict[str, Any]:
    doc = json.loads(_INFERENCE[version].read_text())
    schemas = doc["components"]["schemas"]
    for erratum_version, name, pointer, value, _why in ERRATA:
        if erratum_version == version:
            _set(schemas[name], pointer, copy.deepcopy(value))
    for name, schema in _NOT_VENDORED.items():
        schemas.setdefault(name, schema)
    return {"components": {"schemas": _nullable(schemas)}}


@functools.cache
def _files_document() -> dict[str, Any]:
    return {"definitions": json.loads(_FILES.read_text())["definitions"]}


@functools.cache
def validator(api_version: str, schema: str) -> jsonschema.Draft202012Validator:
    """A validator of the named schema as documented for ``api_version``."""
    if schema in FILE_SCHEMAS:
        root = {**_files_document(), "$ref": f"#/definitions/{schema}"}
    else:
        version = document_version(api_version, schema)
        doc = _document(version)
        if schema not in doc["components"]["schemas"]:
            raise KeyError(f"{schema} is not in the {version} document")
        root = {**doc, "$ref": f"#/components/schemas/{schema}"}
    return jsonschema.Draft202012Validator(root)


#: The v1 API (``/openai/v1/``): Microsoft's GA document, extract (tests/specs/v1/SOURCES).
V1_API = "v1"
#: Conversations, which neither v1 document defines: the OpenAI reference's shapes as the
#: stock SDK reads them (openai 2.x types/conversations), written out as a schema.
CONVERSATIONS = "openai-conversations"
_V1_DOCS = {
    V1_API: SPECS / "v1" / "azure-v1-v1.responses.json",
    CONVERSATIONS: SPECS / "v1" / "openai.conversations.json",
}
#: Referenced by the vendored v1 schemas but not vendored (the input item params' union, the
#: annotations' union): any object.
_V1_NOT_VENDORED: dict[str, Any] = {
    "OpenAI.ItemParam": {"type": "object"},
    "OpenAI.Annotation": {"type": "object", "required": ["type"]},
    "OpenAI.DeleteFileResponse": {"type": "object"},
}
#: The inline schema of ``DELETE /responses/{response_id}``'s 200 answer, by a name. The
#: document's ``paths`` of /responses and /files are vendored too (for conformance runs).
DELETED_RESPONSE = "(paths) deleteResponse 200"


def _discriminated(schemas: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI ``discriminator.mapping`` → JSON Schema. A base ``X`` with a mapping gets one
    ``if <prop> == k then $ref mapping[k]`` per entry (so an event or item is checked against
    its own schema, not only the base's fields). Every ``allOf: [$ref X]`` of a derived
    schema (a derived one may itself be a base: a message item is an item, and the base of
    the role-specific messages) points at ``X (base)``, ``X`` without the mapping, so a check
    never loops back into the mapping."""
    out = copy.deepcopy(schemas)
    bases = {n for n, sc in schemas.items() if isinstance(sc.get("discriminator"), dict)}
    refs = {f"#/components/schemas/{n}": f"#/components/schemas/{n} (base)" for n in bases}
    for sc in out.values():
        for entry in sc.get("allOf", []):
            if isinstance(entry, dict) and entry.get("$ref") in refs:
                entry["$ref"] = refs[entry["$ref"]]
    for name in bases:
        base = {k: v for k, v in out[name].items() if k != "discriminator"}
        out[f"{name} (base)"] = base
        disc = schemas[name]["discriminator"]
        prop, mapping = disc["propertyName"], disc.get("mapping", {})
        dispatch = [
            {
                "if": {"properties": {prop: {"const": key}}, "required": [prop]},
                "then": {"$ref": target},
            }
            for key, target in mapping.items()
        ]
        out[name] = {**base, "allOf": [*base.get("allOf", []), *dispatch]}
    return out


@functools.cache
def _v1_document(which: str) -> dict[str, Any]:
    doc = json.loads(_V1_DOCS[which].read_text())
    schemas = doc["components"]["schemas"]
    if which == V1_API:
        for name, schema in _V1_NOT_VENDORED.items():
            schemas.setdefault(name, schema)
        inline = doc["paths"]["/responses/{response_id}"]["delete"]["responses"]["200"]
        schemas[DELETED_RESPONSE] = inline["content"]["application/json"]["schema"]
    return {"components": {"schemas": _nullable(_discriminated(schemas))}}


@functools.cache
def v1_validator(which: str, schema: str) -> jsonschema.Draft202012Validator:
    doc = _v1_document(which)
    if schema not in doc["components"]["schemas"]:
        raise KeyError(f"{schema} is not in the {which} document")
    return jsonschema.Draft202012Validator({**doc, "$ref": f"#/components/schemas/{schema}"})


def errors(api_version: str, schema: str, instance: Any) -> list[str]:
    """Problems of ``instance`` against ``schema``; ``api_version`` a dated version, or
    ``V1_API`` / ``CONVERSATIONS`` for the v1 API's documents."""
    if api_version in _V1_DOCS:
        found = v1_validator(api_version, schema).iter_errors(instance)
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]
    found = validator(api_version, schema).iter_errors(instance)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]


def check(api_version: str, schema: str, instance: Any) -> None:
    """Raises AssertionError listing every way ``instance`` departs from the document."""
    problems = errors(api_version, schema, instance)
    if problems:
        raise AssertionError(f"{schema} @ {api_version}:\n  " + "\n  ".join(problems))
