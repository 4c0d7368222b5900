"""The README's configuration and environment tables, generated from the declarations (pure).

Each table sits between two markers in the README::

    <!-- config:settings (generated: python -m gateway.config --write-readme README.md) -->
    | Key | Default | Meaning |
    ...
    <!-- /config:settings -->

``splice`` rewrites the tables in a README text; ``drift`` names every row that differs.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.config.document import OTHER_VARIABLES, Config
from gateway.config.schema import env_overrides, rows

COMMAND = "python -m gateway.config --write-readme README.md"


def _cells(*cells: str) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def settings_table() -> list[str]:
    lines = ["| Key | Default | Meaning |", "|---|---|---|"]
    lines += [_cells(f"`{r.key}`", r.default, r.doc) for r in rows(Config)]
    return lines


def environment_table() -> list[str]:
    lines = ["| Variable | Overrides |", "|---|---|"]
    lines += [_cells(f"`{var}`", f"`{'.'.join(path)}`") for var, path, _ in env_overrides(Config)]
    lines += [_cells(f"`{var}`", meaning) for var, meaning in OTHER_VARIABLES]
    return lines


TABLES: dict[str, Callable[[], list[str]]] = {
    "environment": environment_table,
    "settings": settings_table,
}


def begin_marker(name: str) -> str:
    return f"<!-- config:{name} (generated: {COMMAND}) -->"


def end_marker(name: str) -> str:
    return f"<!-- /config:{name} -->"


def _block(lines: list[str], name: str) -> tuple[int, int]:
    """The line indexes of a table's markers (ValueError naming the one missing)."""
    begin, end = begin_marker(name), end_marker(name)
    for marker in (begin, end):
        if lines.count(marker) != 1:
            raise ValueError(f"the README needs exactly one line {marker!r}")
    first, last = lines.index(begin), lines.index(end)
    if last < first:
        raise ValueError(f"{end!r} comes before {begin!r}")
    return first, last


def splice(readme: str) -> str:
    """``readme`` with every generated table replaced by what the declarations give."""
    lines = readme.split("\n")
    for name, table in TABLES.items():
        first, last = _block(lines, name)
        lines[first + 1 : last] = table()
    return "\n".join(lines)


def _key(line: str) -> str:
    return line.split("|")[1].strip() if line.count("|") >= 2 else line


def _differences(name: str, written: list[str], generated: list[str]) -> list[str]:
    have = {_key(line): line for line in written}
    want = {_key(line): line for line in generated}
    out: list[str] = []
    for key, line in want.items():
        if key not in have:
            out.append(f"{name}: row {key} is declared but missing from the README:\n  {line}")
        elif have[key] != line:
            out.append(f"{name}: row {key} differs:\n  README:   {have[key]}\n  declared: {line}")
    out += [
        f"{name}: row {key} is in the README but not declared" for key in have if key not in want
    ]
    if not out and written != generated:
        out.append(f"{name}: the rows are repeated or in another order than declared")
    return out


def drift(readme: str) -> list[str]:
    """Every difference between the README's tables and the declarations (empty: none)."""
    lines = readme.split("\n")
    out: list[str] = []
    for name, table in TABLES.items():
        try:
            first, last = _block(lines, name)
        except ValueError as exc:
            out.append(f"{name}: {exc}")
            continue
        out.extend(_differences(name, lines[first + 1 : last], table()))
    return out
