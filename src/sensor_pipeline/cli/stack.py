"""``sensor-pipeline stack``: the native local stack (what ``make local-*`` runs)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from sensor_pipeline.cli.common import reported


@click.group()
def stack() -> None:
    """The native local stack (what make local-up/down/status/clean run)."""


def _stack_call(action: str, **kwargs: Any) -> Any:
    from sensor_pipeline.local import runner
    from sensor_pipeline.local.artifacts import ArtifactError
    from sensor_pipeline.local.definition import find_root

    with reported(runner.StackError, ArtifactError, FileNotFoundError):
        return getattr(runner, action)(find_root(), **kwargs)


@stack.command("up")
@click.option("--infra-only", is_flag=True, help="only Kafka, the MongoDB server and the AWS emulator")
@click.option("--refuse-app-tier", is_flag=True, help="fail if local-up's pipeline services are running")
def stack_up(infra_only: bool, refuse_app_tier: bool) -> None:
    """Start the stack (idempotent) and print where everything runs."""
    _stack_call("up", infra_only=infra_only, refuse_app_tier=refuse_app_tier)


@stack.command("down")
def stack_down() -> None:
    """Stop everything the stack started."""
    _stack_call("down")


@stack.command("status")
def stack_status() -> None:
    """Show each service's state. Exit 0: every started service is up; 4: one failed or is not ready
    yet; 3: the stack is not running."""
    sys.exit(_stack_call("status"))


@stack.command("clean")
def stack_clean() -> None:
    """Stop the stack and delete its data, logs and checkpoints."""
    _stack_call("clean")


@stack.command("compose")
@click.option("--check", is_flag=True, help="exit 1 if localstack/docker-compose.yml is out of date")
def stack_compose(check: bool) -> None:
    """Render localstack/docker-compose.yml from localstack/services.toml."""
    from sensor_pipeline.local.definition import COMPOSE_FILE, find_root, load, render_compose

    root = find_root()
    text = render_compose(load(root))
    target = root / COMPOSE_FILE
    if check:
        if not target.is_file() or target.read_text() != text:
            raise click.ClickException(f"{target} is out of date: run `sensor-pipeline stack compose`")
        return
    Path(target).write_text(text)
    click.echo(f"wrote {target}")
