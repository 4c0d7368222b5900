"""`gateway demo` and `gateway token` as a user runs them: a real process on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
from openai.types.beta.threads import TextContentBlock

from tests.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


def interrupt(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C, as a user stops the demo; its output."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def read_banner(proc: subprocess.Popen[str]) -> list[str]:
    """The demo's banner, line by line, up to its last line."""
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or lines[-1] != "Serving until Ctrl-C.":
        line = proc.stdout.readline()
        assert line, f"the demo ended before its banner: {lines}"
        lines.append(line.rstrip("\n"))
    return lines


def pasted(banner: list[str]) -> str:
    """What a user copies from the banner into a shell: the ``export TOKEN`` line, the curl
    block (the indented lines under "With curl") and the SDK's here-document, as printed."""
    export = next(line for line in banner if line.strip().startswith("export TOKEN="))
    start = next(i for i, line in enumerate(banner) if line.startswith("With curl"))
    curl: list[str] = []
    for line in banner[start + 2 :]:
        if not line.startswith("  "):
            break
        curl.append(line)
    begin = banner.index("python3 - <<'EOF'")
    end = banner.index("EOF", begin)
    assert len(curl) > 10 and end - begin > 10, banner
    return "\n".join([export, *curl, *banner[begin : end + 1]]) + "\n"


def test_demo_serves_the_sdk_and_mints_tokens(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "GATEWAY_DEMO_DIR": str(tmp_path / "demo")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, timeout=20)
        # Both APIs, exactly as the banner prints them (python3: this interpreter's).
        banner = read_banner(proc)
        script = pasted(banner)
        ran = subprocess.run(
            ["bash", "-e", "-o", "pipefail"],
            input=script,
            env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0, (script, ran.stdout, ran.stderr)
        shown = ran.stdout
        assert '"object":"thread.message"' in shown.replace(" ", ""), shown
        assert '"object":"response"' in shown.replace(" ", ""), shown
        assert "event: response.created" in shown and "event: response.completed" in shown
        assert "message msg_" in shown  # the SDK listed the conversation's items
        minted = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "token",
                "--namespace",
                "demo",
                "--service-account",
                "tester",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        token = minted.stdout.strip()
        client = openai.AzureOpenAI(
            azure_endpoint=f"http://127.0.0.1:{port}",
            api_version="2024-05-01-preview",
            azure_ad_token=token,
            max_retries=0,
        )
        thread = client.beta.threads.create()
        client.beta.threads.messages.create(thread.id, role="user", content="Hello")
        [message] = client.beta.threads.messages.list(thread.id).data
        block = message.content[0]
        assert isinstance(block, TextContentBlock) and block.text.value == "Hello"
        raw = httpx.post(
            f"http://127.0.0.1:{port}/openai/threads",
            params={"api-version": "2024-05-01-preview"},
            headers={"Authorization": f"Bearer {token}"},
            json={},
        )
        assert raw.headers["x-gateway-overhead-ms"]
        refused = httpx.post(
            f"http://127.0.0.1:{port}/openai/threads",
            params={"api-version": "2024-05-01-preview"},
            json={},
        )
        assert refused.status_code == 401
        config = (tmp_path / "demo" / "gateway.toml").read_text()
        assert "demo = true" in config
        assert "api_key =" not in config  # the fake Azure key lives in its own 0600 file
        key_file = tmp_path / "demo" / "azure-api-key"
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    finally:
        interrupt(proc)
    printed = "\n".join(banner)
    assert "AzureOpenAI(" in printed and "OpenAI(base_url=" in printed
    assert "/openai/v1/responses" in printed and "/openai/threads" in printed


def test_demo_without_redis_server_runs_the_same_limits_in_process(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DEMO_DIR": str(tmp_path / "demo"),
        "PATH": str(Path(sys.executable).parent),
    }  # no redis-server to be found
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, timeout=20)
        token = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "token"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            statuses = [
                client.post(
                    "/openai/threads", params={"api-version": "2024-05-01-preview"}, json={}
                ).status_code
                for _ in range(25)
            ]
            # The demo profile's write burst is 20: the limiter's script ran (in-process).
            assert statuses[:20] == [200] * 20
            assert set(statuses[20:]) == {429}
            limited = client.post(
                "/openai/threads", params={"api-version": "2024-05-01-preview"}, json={}
            )
            assert limited.headers["retry-after-ms"]
    finally:
        _, err = interrupt(proc)
    assert "in-process Redis" in err
