"""The guided tour ``gateway demo`` prints: a shell script a newcomer pastes as it is.

Every line of prose is a shell comment, so the whole banner, or any step of it after step 0,
runs when pasted into bash or zsh: no placeholders, each id taken from the output of the
command that created it. The tour shows two tenants, the cross-tenant 404, a policy refusal,
a streamed run, a 429 with ``Retry-After``, the v1 API, the metrics and the openai SDK.
``tests/test_demo.py`` pastes the banner into ``bash`` and checks each step's answer.

The interpreter named in the tour is the one running the demo (``sys.executable``): it has the
openai SDK, whether or not the user's shell has activated the virtual environment.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

DEMO_API_VERSION = "2024-05-01-preview"
#: The deployment the examples name (the fake Azure serves any; the demo profile allows it).
DEMO_MODEL = "gpt-4o"
#: A deployment the demo profile does not allow (the policy refusal of step 3).
REFUSED_MODEL = "gpt-5"
TENANT_A = "demo"
TENANT_B = "team-b"
#: Team-b's write budget (its profile in ``tests.demo.demo_config_text``): the 429 of step 5.
TEAM_B_WRITE_BURST = 3
TEAM_B_WRITES_PER_MINUTE = 3
#: The banner's last line (tests read the banner up to it).
LAST_LINE = "# Serving until Ctrl-C or SIGTERM; the state directory goes with the demo."


@dataclass(frozen=True)
class Tour:
    gateway_url: str
    metrics_url: str
    token_a: str
    token_b: str
    token_file: str
    state_dir: str
    python: str  # the interpreter running the demo
    gateway_command: str  # how the user's shell runs `gateway` (a name on PATH or a path)
    redis: str  # one line on the demo's Redis


AUTH_A = "-H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json'"
AUTH_B = "-H \"Authorization: Bearer $TOKEN_B\" -H 'Content-Type: application/json'"
V = f"api-version={DEMO_API_VERSION}"
SHOW_STATUS = "-w '  -> HTTP %{http_code}\\n'"


def header(t: Tour) -> str:
    return f"""# Assistants gateway demo: {t.gateway_url} -> a fake Azure (in this process)
# {t.redis}
# Metrics: {t.metrics_url}
# State: {t.state_dir} (keys and config of this demo only)
#
# A guided tour: paste it into bash, step by step or all at once (zsh: first run
# `setopt interactivecomments`, or the comments are taken for commands).
"""


def tenants(t: Tour) -> str:
    seconds = 60 // TEAM_B_WRITES_PER_MINUTE
    return f"""
# 0. Two tenants (the Kubernetes namespaces {TENANT_A} and {TENANT_B}), a token each, valid 1 hour.
#    Mint more in any shell: {t.gateway_command} token --namespace {TENANT_B}
#    ({TENANT_B}'s profile: {TEAM_B_WRITE_BURST} writes at once, then one every {seconds} s.)
GW={t.gateway_url}
export TOKEN='{t.token_a}'
export TOKEN_B='{t.token_b}'
id_of() {{ {shlex.quote(t.python)} -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }}
"""


def assistants_steps() -> str:
    return f"""
# 1. Tenant {TENANT_A} creates a thread and a message in it (the Assistants API):
THREAD=$(curl -sf -X POST "$GW/openai/threads?{V}" {AUTH_A} \\
  -d '{{}}' | id_of)
echo "thread: $THREAD"
curl -sf -X POST "$GW/openai/threads/$THREAD/messages?{V}" {AUTH_A} \\
  -d '{{"role": "user", "content": "Hello"}}'; echo

# 2. Tenant {TENANT_B} asks for that thread: 404, as if it did not exist (not forwarded):
curl -s {SHOW_STATUS} "$GW/openai/threads/$THREAD?{V}" \\
  -H "Authorization: Bearer $TOKEN_B"

# 3. A policy refusal: the {TENANT_A} profile may use the model {DEMO_MODEL} only (400, not
#    forwarded):
curl -s {SHOW_STATUS} -X POST "$GW/openai/v1/responses" {AUTH_A} \\
  -d '{{"model": "{REFUSED_MODEL}", "input": "Hello"}}'

# 4. A streamed run: an assistant, then a run of it on the thread, as server-sent events
#    (their names shown here, as they arrive):
ASSISTANT=$(curl -sf -X POST "$GW/openai/assistants?{V}" {AUTH_A} \\
  -d '{{"model": "{DEMO_MODEL}", "name": "tour"}}' | id_of)
curl -sfN -X POST "$GW/openai/threads/$THREAD/runs?{V}" {AUTH_A} \\
  -d '{{"assistant_id": "'"$ASSISTANT"'", "stream": true}}' \\
  | grep --line-buffered '^event:'
"""


def limit_step() -> str:
    n = TEAM_B_WRITE_BURST + 1
    return f"""
# 5. A rate limit: {TENANT_B} creates {n} threads at once; the last is 429 with Retry-After
#    (seconds until the next write is allowed):
for i in {" ".join(str(i) for i in range(1, n + 1))}; do
  curl -s -o /dev/null -D - -X POST "$GW/openai/threads?{V}" {AUTH_B} \\
    -d '{{}}' | grep -i -e '^HTTP/' -e '^retry-after:'
done
"""


def v1_steps(t: Tour) -> str:
    return f"""
# 6. Responses and Conversations (the v1 API, no api-version): a conversation, a response in
#    it, then a response streamed:
CONV=$(curl -sf -X POST "$GW/openai/v1/conversations" {AUTH_A} \\
  -d '{{"items": [{{"type": "message", "role": "user", "content": "Hello"}}]}}' | id_of)
curl -sf -X POST "$GW/openai/v1/responses" {AUTH_A} \\
  -d '{{"model": "{DEMO_MODEL}", "conversation": "'"$CONV"'", "input": "And now?"}}'; echo
curl -sfN -X POST "$GW/openai/v1/responses" {AUTH_A} \\
  -d '{{"model": "{DEMO_MODEL}", "input": "Stream it", "stream": true}}' \\
  | grep --line-buffered '^event:'

# 7. The metrics (Prometheus text format, on a port of their own): requests and refusals so far:
curl -sf {t.metrics_url} | grep -E '^gateway_(requests|refusals)_total'
"""


def python_step(t: Tour) -> str:
    """The openai SDK; it reads the token from ``$TOKEN``, else from the demo's token file,
    so it runs as pasted in any shell."""
    return f"""
# 8. The same with the openai SDK (the token: $TOKEN, else this demo's token file):
{shlex.quote(t.python)} - <<'EOF'
import os, pathlib, warnings
from openai import AzureOpenAI, OpenAI
warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's "Assistants is deprecated"
token = os.environ.get("TOKEN") or pathlib.Path("{t.token_file}").read_text().strip()
# Assistants (deprecated by Microsoft and OpenAI): threads, messages, runs
assistants = AzureOpenAI(azure_endpoint="{t.gateway_url}",
                         api_version="{DEMO_API_VERSION}", azure_ad_token=token)
thread = assistants.beta.threads.create()
assistants.beta.threads.messages.create(thread.id, role="user", content="Hello")
print(assistants.beta.threads.messages.list(thread.id).data[0].content[0].text.value)
# Responses and Conversations (the v1 API): the same token, the v1 base URL
client = OpenAI(base_url="{t.gateway_url}/openai/v1/", api_key=token)
conversation = client.conversations.create(
    items=[{{"type": "message", "role": "user", "content": "Hello"}}])
response = client.responses.create(
    model="{DEMO_MODEL}", conversation=conversation.id, input="And now?")
print(response.output_text)
with client.responses.stream(model="{DEMO_MODEL}", input="Stream it") as stream:
    for event in stream:
        if event.type == "response.output_text.delta":
            print(event.delta, end="", flush=True)
print()
for item in client.conversations.items.list(conversation.id):
    print(item.type, item.id)
EOF
"""


def banner(t: Tour) -> str:
    return "".join(
        [
            header(t),
            tenants(t),
            assistants_steps(),
            limit_step(),
            v1_steps(t),
            python_step(t),
            f"\n{LAST_LINE}\n",
        ]
    )
