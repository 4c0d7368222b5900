"""``./dev``, the set-up script of the README's two commands, run for real with a PATH made for
each case (a directory of links to the tools it may find).

What it installs (apt-get as root, pip into .venv) is exercised by ``.ci/run`` itself, which is
``./dev check && ./dev test``; these tests hold what it says when it cannot."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What ./dev itself runs before any set-up (bash builtins aside).
BASICS = ["bash", "dirname", "cksum", "cat", "id", "sed", "env"]


def path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only ``tools`` (and ./dev's basics), as links to the real ones."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in [*BASICS, *tools]:
        real = sys.executable if tool == "python3" else shutil.which(tool)
        if real is None:
            pytest.fail(f"{tool} is not installed: this test links to it")
        (bin_dir / tool).symlink_to(real)
    return str(bin_dir)


def dev(*args: str, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "dev"), *args],
        cwd=ROOT,
        env={"PATH": path, "HOME": "/nonexistent", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_lists_the_two_commands(tmp_path: Path) -> None:
    path = path_with(tmp_path)
    shown = dev(path=path)
    assert shown.returncode == 0, shown.stderr
    assert "./dev demo" in shown.stdout and "./dev test" in shown.stdout
    unknown = dev("tests", path=path)
    assert unknown.returncode == 1 and "unknown command 'tests'" in unknown.stderr


def test_test_names_what_it_cannot_install_before_any_set_up(tmp_path: Path) -> None:
    # No apt-get here, no prometheus: it stops at once and says the command to run.
    path = path_with(tmp_path, "python3", "redis-server", "redis-cli", "kubectl")
    ran = dev("test", path=path)
    assert ran.returncode == 1, ran
    assert "the test suite needs prometheus" in ran.stderr
    assert "sudo apt-get install -y prometheus" in ran.stderr
    assert "pytest" not in ran.stdout and "installing" not in ran.stderr  # nothing ran


def test_test_says_where_kubectl_comes_from(tmp_path: Path) -> None:
    tools = ["python3", "redis-server", "redis-cli", "prometheus", "promtool"]
    ran = dev("test", path=path_with(tmp_path, *tools))
    assert ran.returncode == 1, ran
    assert "no kustomize or kubectl on PATH" in ran.stderr
    assert "https://kubernetes.io/docs/tasks/tools/" in ran.stderr
    assert "GATEWAY_KUSTOMIZE" in ran.stderr


def test_an_old_python_is_refused_by_name(tmp_path: Path) -> None:
    old = tmp_path / "python3.9"
    old.write_text(
        '#!/bin/sh\n[ "$1" = -c ] && case "$2" in *platform*) echo 3.9.2;; *) exit 1;; esac\n'
    )
    old.chmod(0o755)
    ran = dev("demo", path=path_with(tmp_path), PYTHON=str(old))
    assert ran.returncode == 1
    assert f"Python >= 3.11 is required; {old} is 3.9.2" in ran.stderr


def test_ci_runs_the_two_commands_machinery() -> None:
    lines = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[-2:] == ["./dev check", './dev test "$@"']
