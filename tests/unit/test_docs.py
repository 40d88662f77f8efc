"""The README says what the code does: its settings table, its make targets and its links."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT / "scripts"))

import settings_table  # noqa: E402


def test_the_settings_table_is_generated_from_settings() -> None:
    text = README.read_text()
    assert settings_table.with_table(text) == text, "run: python scripts/settings_table.py --write"


def test_every_make_target_the_docs_name_exists() -> None:
    targets = set(re.findall(r"^([a-zA-Z0-9_-]+):", (ROOT / "Makefile").read_text(), re.M))
    docs = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "infra" / "README.md"]
    named = {t for doc in docs for t in re.findall(r"`make ([a-z][a-z0-9-]*)", doc.read_text())}
    assert named and named <= targets, f"not in the Makefile: {named - targets}"


def test_every_relative_link_resolves() -> None:
    for doc in [README, *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which is not there"


def test_every_cli_command_the_readme_names_exists() -> None:
    cli = str(Path(sys.executable).parent / "sensor-pipeline")
    named = set(re.findall(r"sensor-pipeline ((?:job|stack|emr) [a-z-]+|[a-z]+)", README.read_text()))
    assert named
    for command in sorted(named):
        result = subprocess.run([cli, *command.split(), "--help"], check=False, capture_output=True, text=True)
        assert result.returncode == 0, f"`sensor-pipeline {command}` does not exist: {result.stderr}"


def test_every_file_the_docs_name_exists() -> None:
    docs = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "infra" / "README.md"]
    pattern = r"`((?:src|tests|scripts|jobs|benchmarks|localstack|infra|docker)/[\w./-]+\.\w+)"
    missing = [(doc.name, path) for doc in docs for path in re.findall(pattern, doc.read_text())
               if not (ROOT / path).exists() and not (doc.parent / path).exists()]  # fmt: skip
    assert not missing, f"named but not there: {missing}"
