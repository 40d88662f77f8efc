"""``sensor-pipeline job``: the streaming job's progress."""

from __future__ import annotations

import click

from sensor_pipeline.cli.common import settings


@click.group()
def job() -> None:
    """The streaming job's progress (its consumer group's offsets, committed with its output)."""


@job.command("progress")
def job_progress() -> None:
    """Print the job's committed offsets and its lag per raw-topic partition."""
    from sensor_pipeline.job import progress

    current = settings()
    done, bounds = progress.committed(current), progress.watermarks(current)
    for partition, (first, end) in sorted(bounds.items()):
        at = done.get(partition)
        lag = end - (at if at is not None else first)
        click.echo(f"{current.raw_topic}[{partition}]  committed {at if at is not None else '-'}  end {end}  lag {lag}")


@job.command("reset-progress")
@click.option("--checkpoint", help="also delete this checkpoint (a folder or an s3:// prefix)")
@click.option("--yes", is_flag=True, help="do it (the job then reprocesses the raw topic from its start)")
def job_reset_progress(checkpoint: str | None, yes: bool) -> None:
    """Forget the job's progress (after its raw topic was recreated): its group's offsets and, with
    --checkpoint, its checkpoint. Stop the job first."""
    from sensor_pipeline.job import progress

    if not yes:
        raise click.UsageError("this deletes the job's progress; pass --yes to do it")
    for line in progress.reset(settings(), checkpoint):
        click.echo(line)
    if not checkpoint:
        click.echo("kept the checkpoint: after a recreated raw topic, pass --checkpoint too (old topic's offsets)")
