"""The package tree is the architecture: each layer imports only the layers below it.

config                      settings, from SP_* variables
aws | contract              AWS clients (the job's archive carries them); line format, rules,
                            stored document, clean message
source | job | dashboard    the pipeline's stages, independent of each other
cloud                       provisioning, EMR Serverless runs, deploy steps
local                       the native local stack (make local-up)
emulator                    the AWS emulator the local stack and the rehearsal run
cli                         the command line, over everything
"""

from __future__ import annotations

import ast
from pathlib import Path

import sensor_pipeline

PACKAGE = Path(sensor_pipeline.__file__).parent
LAYERS = {
    "config": 0,
    "aws": 1,
    "contract": 1,
    "source": 2,
    "job": 2,
    "dashboard": 2,
    "cloud": 3,
    "local": 4,
    "emulator": 5,
    "cli": 6,
}


def part_of(module: str) -> str:
    """``sensor_pipeline.job.store`` -> ``job``."""
    return module.split(".")[1]


def imports_of(path: Path) -> set[str]:
    """Every ``sensor_pipeline`` module ``path`` imports, at any depth: relative imports resolved, and
    names given to ``importlib.import_module`` as string constants."""
    package = ["sensor_pipeline", *path.relative_to(PACKAGE).parent.parts]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sensor_pipeline.")}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            if module == "sensor_pipeline":
                found |= {f"sensor_pipeline.{a.name}" for a in node.names}
            elif module.startswith("sensor_pipeline."):
                found.add(module)
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("sensor_pipeline.")
        ):
            found.add(node.value)  # importlib.import_module("sensor_pipeline....")
    return found


def test_every_module_belongs_to_a_layer() -> None:
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert parts - {"__init__"} <= set(LAYERS), f"place these in a layer: {parts - {'__init__'} - set(LAYERS)}"


def test_no_import_runs_up_a_layer_or_across_the_stages() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for module in imports_of(path):
            other = part_of(module)
            assert other in LAYERS, f"{path.relative_to(PACKAGE)} imports {module}, which is in no layer"
            if other != own and LAYERS[other] >= LAYERS[own]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, "\n".join(wrong)
