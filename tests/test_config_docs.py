"""The README's configuration tables are the declarations' (and the declarations are whole)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest

from gateway.auth.identity import CallerRule
from gateway.auth.tokens import IssuerPolicy
from gateway.config import (
    CallerSettings,
    Config,
    IssuerSettings,
    PolicySettings,
    RateLimitSettings,
    RateSettings,
    parse,
)
from gateway.config.docs import COMMAND, TABLES, begin_marker, drift, end_marker, splice
from gateway.config.document import OTHER_VARIABLES
from gateway.config.schema import is_section
from gateway.policy.limits import PolicyLimits
from gateway.ratelimit.gcra import Rate, RateLimitProfile
from tests.stack import base_config, deep_merge

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_readme_tables_are_the_declarations() -> None:
    problems = drift(README.read_text(encoding="utf-8"))
    assert problems == [], f"regenerate with `{COMMAND}`:\n" + "\n".join(problems)


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_drift_names_the_rows_that_differ() -> None:
    text = README.read_text(encoding="utf-8")
    port = next(line for line in text.splitlines() if line.startswith("| `server.port` |"))
    text = _edit(text, port, port.replace("`8080`", "`8081`"))
    host = next(line for line in text.splitlines() if line.startswith("| `redis.cluster` |"))
    text = _edit(text, host + "\n", "")
    text = _edit(text, "| `REDIS_URL` | `redis.url` |", "| `REDIS_HOST` | `redis.url` |")
    found = drift(text)
    assert found[0].startswith("environment: row `REDIS_URL` is declared but missing"), found
    assert found[1] == "environment: row `REDIS_HOST` is in the README but not declared"
    assert found[2].startswith("settings: row `server.port` differs:\n  README:   "), found
    assert "`8081`" in found[2] and "`8080`" in found[2]
    assert found[3].startswith("settings: row `redis.cluster` is declared but missing"), found
    assert len(found) == 4, found
    assert drift(splice(text)) == []
    assert splice(splice(text)) == splice(text) == README.read_text(encoding="utf-8")


def test_drift_notices_order_and_repeats_and_missing_markers() -> None:
    text = README.read_text(encoding="utf-8")
    lines = text.split("\n")
    first = lines.index("| `GATEWAY_HOST` | `server.host` |")
    lines[first], lines[first + 1] = lines[first + 1], lines[first]
    assert drift("\n".join(lines)) == [
        "environment: the rows are repeated or in another order than declared"
    ]
    gone = _edit(text, end_marker("settings"), "")
    assert drift(gone) == [
        f"settings: the README needs exactly one line {end_marker('settings')!r}"
    ]
    with pytest.raises(ValueError, match="exactly one line"):
        splice(gone)


def test_the_command_prints_writes_and_checks(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.config", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )

    printed = run("--markdown")
    assert printed.returncode == 0, printed.stderr
    for name, table in TABLES.items():
        assert "\n".join([begin_marker(name), *table(), end_marker(name)]) in printed.stdout
    assert run("--check-readme", str(README)).returncode == 0
    copy = tmp_path / "README.md"
    copy.write_text(README.read_text().replace("| `server.port` | `8080`", "| `server.port` | 1"))
    checked = run("--check-readme", str(copy))
    assert checked.returncode == 1
    assert "settings: row `server.port` differs" in checked.stdout
    assert run("--write-readme", str(copy)).returncode == 0
    assert copy.read_text() == README.read_text()


def test_other_variables_are_read_by_the_gateway() -> None:
    sources = "".join(p.read_text() for p in (ROOT / "gateway").rglob("*.py"))
    for name, _ in OTHER_VARIABLES:
        assert re.search(rf'environ\.get\(\s*"{name}"', sources), f"{name} is read nowhere"


@pytest.mark.parametrize(
    ("settings", "core", "not_settings"),
    [
        (PolicySettings, PolicyLimits, set()),
        (IssuerSettings, IssuerPolicy, {"legacy_tenants"}),  # from auth.legacy_tenant_issuer
        (CallerSettings, CallerRule, set()),
        (RateSettings, Rate, set()),
        (RateLimitSettings, RateLimitProfile, set()),
    ],
)
def test_each_core_rule_field_has_one_setting(
    settings: type, core: type, not_settings: set[str]
) -> None:
    """A field added to a core rule type needs its setting (and so its README row)."""
    names = {f.name for f in dataclasses.fields(settings)}
    assert names == {f.name for f in dataclasses.fields(core)} - not_settings


def test_policy_defaults_are_the_policy_cores() -> None:
    assert PolicySettings().build() == PolicyLimits()


def _sections(cls: type, seen: set[type]) -> set[type]:
    """Every declared section reachable from ``cls`` (shapes instead of the core types)."""
    seen.add(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        for inner in [f.metadata.get("shape") or kind, *typing.get_args(kind)]:
            shape = f.metadata.get("shape")
            declared = f.metadata.get("setting") and (shape is None or inner is shape)
            if declared and is_section(inner) and inner not in seen:
                _sections(inner, seen)
    return seen


def test_every_default_passes_its_own_check() -> None:
    sections = _sections(Config, set())
    assert {s.__name__ for s in sections} >= {"ServerConfig", "PolicySettings", "JwksConfig"}
    for section in sections:
        for f in dataclasses.fields(section):
            check = f.metadata.get("check")
            if check is None or f.default is dataclasses.MISSING or f.default is None:
                continue
            assert check(f.default) is None, f"{section.__name__}.{f.name}"


def test_readme_migration_example_is_a_valid_config() -> None:
    """The "Migrating from Assistants to Responses and Conversations" example profile is what
    ``check-config`` accepts (its keys exist, its values are within Azure's limits), and it
    governs both APIs' operations."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Migrating from Assistants to Responses and Conversations") :]
    example = re.search(r"```toml\n(.*?)```", section, re.S)
    assert example is not None
    data = tomllib.loads(example.group(1))
    config = parse(deep_merge(base_config("https://example.invalid", "/dev/null", None), data))
    profile = config.profiles["support-bot"]
    for op in (
        "messages.create",
        "conversations.items.create",
        "responses.create",
        "files.v1.upload",
    ):
        assert profile.allows(op), op
