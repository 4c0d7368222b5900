"""The ``gateway`` command line as a user meets it: help, version, ``python -m gateway``,
and ``gateway token``'s refusals. Each runs the real CLI in a subprocess."""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from gateway.cli import parser
from tests.demo import demo_config_text, generate_keys
from tests.demostate import DemoFiles

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["serve", "check-config", "demo", "token"]


def run(*args: str, module: bool = True) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway"] if module else [_script()]
    return subprocess.run(
        [*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def _script() -> str:
    script = Path(sys.executable).parent / "gateway"
    if not script.is_file():
        pytest.fail(f"no `gateway` script beside {sys.executable}: pip install -e '.[test]'")
    return str(script)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_is_plain_text(command: str) -> None:
    shown = run(*command.split(), "--help")
    assert shown.returncode == 0, shown.stderr
    assert "usage: gateway" in shown.stdout
    assert "`" not in shown.stdout  # no reStructuredText (or Markdown) literals


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_and_shows_its_default(command: str) -> None:
    shown = _flat(run(command, "--help").stdout)
    options = [a for a in _subparsers()[command]._actions if a.option_strings]
    for action in options:
        if action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings}: no help"
        if "(default: " in action.help:  # said in words ("a free port", "$GATEWAY_CONFIG")
            assert _flat(action.help) in shown
        else:
            assert action.default is not None, f"{action.option_strings}: say the default"
            assert f"{_flat(action.help)} (default: {action.default})" in shown, shown


def test_ttl_says_it_is_seconds() -> None:
    shown = _flat(run("token", "--help").stdout)
    assert "--ttl SECONDS the token's lifetime in seconds, 1 to 86400 (default: 3600)" in shown


def test_version_from_the_script_and_from_python_m() -> None:
    expected = f"gateway {importlib.metadata.version('assistants-gateway')} (Python "
    for shown in (run("--version"), run("--version", module=False)):
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(expected), shown.stdout


def test_python_m_gateway_runs_the_commands() -> None:
    checked = run("check-config", "config/gateway.toml")
    assert checked.returncode == 0 and checked.stdout.endswith(": ok\n"), checked
    bare = run()
    assert bare.returncode == 2 and "COMMAND" in bare.stderr


@pytest.mark.parametrize(
    "ttl", ["-5", "0", "86401", "1000000000000", "abc", "1.5", "", "1e3", "1_000", " 60", "+60"]
)
def test_token_refuses_a_ttl_out_of_range(ttl: str, tmp_path: Path) -> None:
    refused = run("token", "--config", str(demo_state(tmp_path)), f"--ttl={ttl}")
    assert refused.returncode == 2, refused
    assert refused.stdout == ""  # no token minted
    assert (
        f"argument --ttl: must be a whole number of seconds from 1 to 86400 (one day), "
        f"not {ttl!r}" in refused.stderr
    )


@pytest.mark.parametrize("ttl", [1, 86400])
def test_token_mints_within_the_range(ttl: int, tmp_path: Path) -> None:
    minted = run("token", "--config", str(demo_state(tmp_path)), "--ttl", str(ttl))
    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(minted.stdout.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == ttl


def test_token_reads_the_key_beside_the_config_it_is_given(tmp_path: Path) -> None:
    config = demo_state(tmp_path)
    minted = run("token", "--config", str(config), "--namespace", "team-b")
    assert minted.returncode == 0, minted.stderr
    public = jwt.PyJWKSet.from_json((config.parent / "jwks.json").read_text()).keys[0]
    claims = jwt.decode(
        minted.stdout.strip(), public.key, algorithms=["RS256"], audience="azure-openai-gateway"
    )
    assert re.fullmatch(r"system:serviceaccount:team-b:demo-app", claims["sub"])


def demo_state(tmp_path: Path) -> Path:
    """A demo's state directory as ``gateway demo`` writes it (no demo running)."""
    files = DemoFiles(tmp_path / "state")
    files.state_dir.mkdir(mode=0o700)
    generate_keys(files)
    files.config.write_text(
        demo_config_text(
            files,
            upstream_url="http://127.0.0.1:9",
            redis_url=None,
            host="127.0.0.1",
            port=8080,
            metrics_port=9464,
        )
    )
    return files.config


@pytest.mark.parametrize("command", ["demo", "token"])
def test_ports_are_checked_before_anything_starts(command: str) -> None:
    for port in ("0", "65536", "-1", "http"):
        refused = run(command, f"--port={port}")
        assert refused.returncode == 2, refused
        assert f"argument --port: must be a port from 1 to 65535, not {port!r}" in refused.stderr
