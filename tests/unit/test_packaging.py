"""Every third-party module the project imports is declared in pyproject.toml, not just present because
another package brought it."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\s\[=<>~!;]", requirement, maxsplit=1)[0]).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {_name(r) for r in requirements}


def imported_modules(folders: list[Path]) -> dict[str, Path]:
    """Top-level module -> a file that imports it (absolute imports, wherever they are in the file)."""
    found: dict[str, Path] = {}
    for path in (p for folder in folders for p in sorted(folder.rglob("*.py"))):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return found


def test_every_imported_third_party_module_is_declared() -> None:
    distributions = importlib.metadata.packages_distributions()
    wanted = declared()
    undeclared = {}
    for module, path in imported_modules([ROOT / "src", ROOT / "jobs"]).items():
        if module in sys.stdlib_module_names or module in {"sensor_pipeline", "__future__"}:
            continue
        providers = {_name(d) for d in distributions.get(module, [])}
        if not providers & wanted:
            where = f"installed by {sorted(providers)}" if providers else "not installed: install '.[local,dev,bench]'"
            undeclared[module] = f"{path.relative_to(ROOT)} ({where})"
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
