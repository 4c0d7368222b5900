"""A faithful, recording fake of the Azure OpenAI Assistants API, for tests and the demo.

    fake = FakeAzure("upstream-key")
    with run_app(fake.app) as server:       # any ASGI server; tests use tests.servers.run_app
        client = openai.AzureOpenAI(azure_endpoint=server.url, api_key="upstream-key",
                                    api_version="2024-05-01-preview")
        ...
    fake.requests[-1].headers               # every request, recorded before any check
    fake.script(ScriptedResponse(status=429, headers=(("retry-after", "1"),)))

Modules, each layer importing only the ones before it: ``shapes`` (versions, errors, validation,
pagination, routes; pure), ``assistants`` / ``files`` / ``vectorstores`` (those objects' state
and rendering per api-version; files parse multipart themselves), ``store`` (threads, messages,
runs, steps, and the registries above; no I/O), ``runs`` (run simulation as stream events),
``surface`` (dispatch of the assistants/files/vector store operations), ``app`` (the Starlette
app: recording, auth, scripts, SSE, streamed file content). ``openapi`` checks answers against
Microsoft's documents vendored under tests/specs (tests only; the fake does not import it).

    fake.store.files.items[file_id].filename      # the filename exactly as uploaded
    fake.store.assistants.items[asst_id].metadata # metadata exactly as sent (gateway_owner...)
"""

from tests.fakeazure.app import FakeAzure, RecordedRequest, RequestOutcome, ScriptedResponse
from tests.fakeazure.runs import RunOptions, default_answer
from tests.fakeazure.shapes import VERSIONS, FakeError, new_id
from tests.fakeazure.store import Store

__all__ = [
    "VERSIONS",
    "FakeAzure",
    "FakeError",
    "RecordedRequest",
    "RequestOutcome",
    "RunOptions",
    "ScriptedResponse",
    "Store",
    "default_answer",
    "new_id",
]
