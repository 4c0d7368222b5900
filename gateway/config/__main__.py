"""``python -m gateway.config --markdown`` prints the README's generated tables;
``--write-readme PATH`` rewrites them in place; ``--check-readme PATH`` exits 1 on drift."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.config.docs import TABLES, begin_marker, drift, end_marker, splice


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.config")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="print the generated tables")
    group.add_argument("--write-readme", metavar="PATH", help="rewrite the tables in PATH")
    group.add_argument("--check-readme", metavar="PATH", help="exit 1 when PATH's tables drift")
    args = parser.parse_args(argv)
    if args.markdown:
        for name, table in TABLES.items():
            print("\n".join([begin_marker(name), *table(), end_marker(name)]), end="\n\n")
        return 0
    path = Path(args.write_readme or args.check_readme)
    text = path.read_text(encoding="utf-8")
    if args.write_readme:
        path.write_text(splice(text), encoding="utf-8")
        return 0
    problems = drift(text)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
