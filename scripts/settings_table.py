#!/usr/bin/env python3
"""The README's settings table, generated from :class:`sensor_pipeline.config.Settings`.

    python scripts/settings_table.py           print the table
    python scripts/settings_table.py --write   replace the table in README.md (make docs)

``tests/unit/test_docs.py`` fails when README.md's table is not what this prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, get_args

from sensor_pipeline.config import Settings, env_name

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- settings:begin (scripts/settings_table.py --write) -->", "<!-- settings:end -->"


def _default(value: Any) -> str:
    return "(empty)" if value in ("", None) else f"`{value}`"


def _accepts(annotation: Any, metadata: list[Any]) -> str:
    choices = [c for c in get_args(annotation) if isinstance(c, str)]
    if choices and all(isinstance(c, str) for c in get_args(annotation)):
        return " / ".join(f"`{c}`" if c else "(empty)" for c in choices)
    bounds = []
    for item in metadata:
        for name, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(item, name, None) is not None:
                bounds.append(f"{sign} {getattr(item, name)}")
    kinds = get_args(annotation) or (annotation,)  # int | None -> (int, NoneType)
    kind = " or ".join("empty" if k is type(None) else getattr(k, "__name__", str(k)) for k in kinds)
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def table() -> str:
    rows = ["| variable | default | accepts | what it is |", "|---|---|---|---|"]
    for field, info in Settings.model_fields.items():
        what = (info.description or "").replace("|", "\\|")
        rows.append(
            f"| `{env_name(field)}` | {_default(info.get_default())} | {_accepts(info.annotation, info.metadata)} "
            f"| {what} |"
        )
    return "\n".join(rows) + "\n"


def with_table(readme: str) -> str:
    """``readme`` with the text between the markers replaced by :func:`table`."""
    head, found, rest = readme.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise SystemExit(f"error: README.md lacks the markers {BEGIN} ... {END}")
    return f"{head}{BEGIN}\n{table()}{END}{tail}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = parser.parse_args(argv)
    if args.write:
        README.write_text(with_table(README.read_text()))
        print(f"wrote the settings table in {README}")
    else:
        sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
