"""`gateway demo` and `gateway token` as a user runs them: real processes on loopback.

The tour is pasted into ``bash`` as printed, with a PATH that has no virtual environment on it
(as in a second terminal); two demos of one user keep their own keys; the private
``redis-server`` child goes when the demo is stopped with SIGTERM, and when it is killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import openai
import pytest
from openai.types.beta.threads import TextContentBlock

from tests.demotour import LAST_LINE, TEAM_B_WRITE_BURST
from tests.servers import free_port, redis_server_binary, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = [sys.executable, "-m", "gateway"]
#: A second terminal's PATH: curl, grep and bash, no virtual environment.
PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin"
#: The redis child must be gone this soon after the demo is stopped or killed.
CHILD_GONE_S = 10.0
V = "api-version=2024-05-01-preview"


class Demo:
    def __init__(self, proc: subprocess.Popen[str], port: int, env: dict[str, str]) -> None:
        self.proc, self.port, self.env = proc, port, env
        self.banner = read_banner(proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*GATEWAY, "token", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def line(self, prefix: str) -> str:
        return next(line for line in self.banner if line.startswith(prefix))


def start_demo(root: Path, port: int | None = None, **env: str) -> Demo:
    port = port or free_port()
    environ = {**os.environ, "GATEWAY_DEMO_DIR": str(root), **env}
    proc = subprocess.Popen(
        [*GATEWAY, "demo", "--port", str(port)],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, timeout=30)
        return Demo(proc, port, environ)
    except BaseException:
        stop(proc, signal.SIGKILL)
        raise


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[str, str]:
    """Ctrl-C (or ``sig``), as a user stops the demo; its output."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


@contextlib.contextmanager
def running_demo(root: Path, port: int | None = None, **env: str) -> Iterator[Demo]:
    demo = start_demo(root, port, **env)
    try:
        yield demo
    finally:
        stop(demo.proc)


def read_banner(proc: subprocess.Popen[str]) -> list[str]:
    """The demo's banner, line by line, up to its last line."""
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or lines[-1] != LAST_LINE:
        line = proc.stdout.readline()
        assert line, f"the demo ended before its banner: {lines}"
        lines.append(line.rstrip("\n"))
    return lines


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie (this container's init does not reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def redis_child(demo: Demo) -> int:
    [child] = children(demo.proc.pid)
    assert f"redis-server child (pid {child})" in demo.line("# Redis:")
    assert "redis-server" in Path(f"/proc/{child}/cmdline").read_text()
    return child


def wait_gone(pid: int, timeout: float = CHILD_GONE_S) -> float:
    start = time.monotonic()
    while alive(pid):
        assert time.monotonic() - start < timeout, f"redis-server {pid} still runs after {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - start


def need_redis_server() -> None:
    if redis_server_binary() is None:
        pytest.fail("these tests need redis-server (Debian/Ubuntu: apt-get install redis-server)")


def paste(text: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``text`` pasted into a new bash in a second terminal (no virtual environment)."""
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail"],
        input=text,
        env={**env, "PATH": PLAIN_PATH},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_the_tour_runs_as_pasted_and_shows_each_step(tmp_path: Path) -> None:
    with running_demo(tmp_path / "demos") as demo:
        printed = "\n".join(demo.banner) + "\n"
        ran = paste(printed, demo.env)
        assert ran.returncode == 0, (printed, ran.stdout, ran.stderr)
        out = ran.stdout
        # 1. tenant demo's thread and message; 2. team-b gets 404 on it, not 403.
        thread = re.search(r"^thread: (thread_\w+)$", out, re.M)
        assert thread, out
        assert '"object":"thread.message"' in out
        assert '"code":"thread_not_found"' in out and "-> HTTP 404" in out
        # 3. the policy refusal; 4. a streamed run to its end.
        assert '"code":"model_not_allowed"' in out and "-> HTTP 400" in out
        assert "event: thread.run.created" in out and "event: thread.run.completed" in out
        # 5. team-b's burst, then 429 with a Retry-After in whole seconds.
        statuses = re.findall(r"^HTTP/1.1 (\d+)", out, re.M)
        assert statuses == ["200"] * TEAM_B_WRITE_BURST + ["429"], out
        retry = re.search(r"^retry-after: (\d+)", out, re.M | re.I)
        assert retry and int(retry[1]) >= 1, out
        # 6. the v1 API; 7. the metrics count what was refused, by stage.
        assert '"object":"response"' in out and "event: response.completed" in out
        assert 'stage="ownership"' in out and 'reason="thread_not_found"' in out
        assert 'reason="model_not_allowed"' in out and 'stage="ratelimit"' in out
        # 8. the SDK, run by the demo's interpreter named in the tour.
        assert "\nHello\n" in out and "message msg_" in out, out
        # "Mint more in any shell": the command as printed gives team-b a working token.
        mint = demo.line("#    Mint more in any shell: ").split(": ", 1)[1]
        minted = paste(mint + "\n", demo.env)
        assert minted.returncode == 0, minted.stderr
        claims = jwt.decode(minted.stdout.strip(), options={"verify_signature": False})
        assert claims["kubernetes.io"]["namespace"] == "team-b"
        team_b = {"Authorization": f"Bearer {minted.stdout.strip()}"}
        listed = httpx.get(f"{demo.url}/openai/assistants?{V}", headers=team_b)
        assert listed.status_code == 200 and listed.json()["data"] == []  # not demo's
        hidden = httpx.get(f"{demo.url}/openai/threads/{thread[1]}?{V}", headers=team_b)
        assert hidden.status_code == 404
        metrics = demo.line("# Metrics: ").split(": ", 1)[1]
        assert "gateway_requests_total" in httpx.get(metrics).text


def test_the_sdk_snippet_reads_the_token_file_without_an_export(tmp_path: Path) -> None:
    with running_demo(tmp_path / "demos") as demo:
        begin = next(i for i, line in enumerate(demo.banner) if line.endswith(" - <<'EOF'"))
        end = demo.banner.index("EOF", begin)
        snippet = "\n".join(demo.banner[begin : end + 1]) + "\n"
        env = {k: v for k, v in demo.env.items() if k != "TOKEN"}
        ran = paste(snippet, env)
        assert ran.returncode == 0, (snippet, ran.stderr)
        assert ran.stdout.startswith("Hello\n") and "message msg_" in ran.stdout


def test_the_sdk_and_minted_tokens_work_and_secrets_stay_private(tmp_path: Path) -> None:
    with running_demo(tmp_path / "demos") as demo:
        minted = demo.token("--namespace", "demo", "--service-account", "tester")
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()
        with openai.AzureOpenAI(  # closed: its pooled sockets would warn in a later test
            azure_endpoint=demo.url,
            api_version="2024-05-01-preview",
            azure_ad_token=token,
            max_retries=0,
        ) as client:
            thread = client.beta.threads.create()
            client.beta.threads.messages.create(thread.id, role="user", content="Hello")
            [message] = client.beta.threads.messages.list(thread.id).data
        block = message.content[0]
        assert isinstance(block, TextContentBlock) and block.text.value == "Hello"
        auth = {"Authorization": f"Bearer {token}"}
        raw = httpx.post(f"{demo.url}/openai/threads?{V}", headers=auth, json={})
        assert raw.headers["x-gateway-overhead-ms"]
        assert httpx.post(f"{demo.url}/openai/threads?{V}", json={}).status_code == 401
        state = tmp_path / "demos" / f"127.0.0.1-{demo.port}"
        assert demo.line("# State: ").startswith(f"# State: {state} ")
        config = (state / "gateway.toml").read_text()
        assert "demo = true" in config and "metrics_port = " in config
        assert "api_key =" not in config  # the fake Azure key lives in its own 0600 file
        for secret in ("azure-api-key", "demo-signing-key.pem", "token"):
            assert oct((state / secret).stat().st_mode & 0o777) == "0o600", secret
        assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert not state.exists()  # the demo's keys go with it


def test_two_demos_keep_their_own_keys_and_tokens(tmp_path: Path) -> None:
    root = tmp_path / "demos"
    with running_demo(root) as first, running_demo(root) as second:
        one = first.token("--port", str(first.port))
        two = second.token("--port", str(second.port))
        assert one.returncode == 0 and two.returncode == 0, (one.stderr, two.stderr)

        def status(demo: Demo, token: str) -> int:
            auth = {"Authorization": f"Bearer {token.strip()}"}
            return httpx.post(f"{demo.url}/openai/threads?{V}", headers=auth, json={}).status_code

        assert status(first, one.stdout) == 200 and status(second, two.stdout) == 200
        assert status(first, two.stdout) == 401 and status(second, one.stdout) == 401
        ambiguous = first.token()
        assert ambiguous.returncode == 1 and "choose one with --port" in ambiguous.stderr
        # A third demo on the first one's address is refused before it touches its keys.
        again = subprocess.run(
            [*GATEWAY, "demo", "--port", str(first.port)],
            cwd=ROOT,
            env=first.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert again.returncode == 1, again.stderr
        assert "another `gateway demo` is running on this address" in again.stderr
        assert status(first, one.stdout) == 200
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = subprocess.run(
            [*GATEWAY, "demo", "--port", str(busy.getsockname()[1])],
            cwd=ROOT,
            env=first.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert taken.returncode == 1 and "is not free" in taken.stderr, taken.stderr
    assert "choose another --port" in taken.stderr
    gone = subprocess.run(
        [*GATEWAY, "token"], cwd=ROOT, env=first.env, capture_output=True, text=True, check=False
    )
    assert gone.returncode == 1 and "no `gateway demo` running" in gone.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stopped_demo_stops_its_redis_child_and_removes_the_state(
    sig: signal.Signals, tmp_path: Path
) -> None:
    need_redis_server()
    demo = start_demo(tmp_path / "demos")
    try:
        child = redis_child(demo)
        _, err = stop(demo.proc, sig)
        assert demo.proc.returncode == 0, err
        wait_gone(child)
    finally:
        stop(demo.proc, signal.SIGKILL)
    assert list((tmp_path / "demos").iterdir()) == []


def test_a_killed_demo_takes_its_redis_child_with_it(tmp_path: Path) -> None:
    need_redis_server()
    demo = start_demo(tmp_path / "demos")
    try:
        child = redis_child(demo)
        demo.proc.kill()  # SIGKILL: no handler, no finally; only the kernel can clean up
        demo.proc.wait(timeout=10)
        wait_gone(child)
    finally:
        stop(demo.proc, signal.SIGKILL)
    # Its state stays (nothing ran to remove it); the next demo on that address takes it over.
    with running_demo(tmp_path / "demos", demo.port) as again:
        assert again.token().returncode == 0


def test_demo_without_redis_server_runs_the_same_limits_in_process(tmp_path: Path) -> None:
    # No redis-server to be found on this PATH.
    with running_demo(tmp_path / "demos", PATH=str(Path(sys.executable).parent)) as demo:
        assert "in-process (fakeredis" in demo.line("# Redis: ")
        assert children(demo.proc.pid) == []
        token = demo.token().stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=demo.url, headers=headers) as client:
            statuses = [client.post(f"/openai/threads?{V}", json={}).status_code for _ in range(25)]
            # The demo profile's write burst is 20: the limiter's script ran (in-process).
            assert statuses[:20] == [200] * 20
            assert set(statuses[20:]) == {429}
            limited = client.post(f"/openai/threads?{V}", json={})
            assert limited.headers["retry-after-ms"] and limited.headers["retry-after"]
