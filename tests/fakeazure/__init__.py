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

The v1 API under ``/openai/v1/`` (``api-version`` absent, ``v1`` or ``preview``; anything else
400 "API version not supported"): ``responses`` (create as JSON or SSE, retrieve, streamed
retrieval ``?stream=true&starting_after=N`` of background responses, delete, cancel,
input_items), ``conversations`` and their ``items``, and ``files`` on the same store as the
dated files paths. Modules ``items`` (input items, pure), ``conversations``, ``responses``
(state and the event sequence); the app streams. Knobs on the instance:

    fake.response_event_delay_s = 0.02     # pause between live SSE events
    fake.response_complete_after_s = 2.0   # background responses complete once this old
    fake.response_first_event_delay_s = 0  # pause before a stream's first frame (TTFE)
    fake.fail_responses = True             # responses end in response.failed
    fake.fail_responses_after_events = 4   # cut every response stream after 4 frames
    fake.store.responses.items[resp_id].metadata        # as sent; store:false ones never here
    fake.store.responses.items[resp_id].events          # every event sent or to replay
    fake.store.conversations.items[conv_id].items       # (seq, item) in order
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
