"""``sensor-pipeline job``: the streaming job's progress."""

from __future__ import annotations

import click

from sensor_pipeline.cli.common import reported, service_errors, settings


@click.group()
def job() -> None:
    """The streaming job's progress (its consumer group's offsets, committed with its output)."""


@job.command("progress")
def job_progress() -> None:
    """Print the job's committed offsets and its lag per raw-topic partition."""
    from sensor_pipeline.job import progress

    current = settings()
    with reported(*service_errors(), RuntimeError):  # RuntimeError: the topic's metadata carried an error
        done, bounds = progress.committed(current), progress.watermarks(current)
    for partition, (first, end) in sorted(bounds.items()):
        at = done.get(partition)
        lag = end - (at if at is not None else first)
        click.echo(f"{current.raw_topic}[{partition}]  committed {at if at is not None else '-'}  end {end}  lag {lag}")


@job.command("reset-progress")
@click.option("--checkpoint", help="also delete this checkpoint (a folder or an s3:// prefix): the job's own")
@click.option(
    "--keep-checkpoint", is_flag=True, help="keep the checkpoint (only for the upgrade from the ledger build)"
)
@click.option("--missing-ok", is_flag=True, help="with --checkpoint: nothing is left at that path, go on")
@click.option("--yes", is_flag=True, help="do it (the job then reprocesses the raw topic from its start)")
def job_reset_progress(checkpoint: str | None, keep_checkpoint: bool, missing_ok: bool, yes: bool) -> None:
    """Forget the job's progress (after its raw topic was recreated): its group's offsets and its
    checkpoint. Stop the job first."""
    from sensor_pipeline.job import progress

    if missing_ok and not checkpoint:
        raise click.UsageError("--missing-ok goes with --checkpoint")
    if checkpoint and keep_checkpoint:
        raise click.UsageError("--checkpoint deletes the checkpoint, --keep-checkpoint keeps it: pass one")
    if not checkpoint and not keep_checkpoint:
        # Kept after a recreated raw topic, the checkpoint's offsets are the old topic's: Spark would resume
        # from them on the new topic and never read the records below them.
        raise click.UsageError(
            "name the job's checkpoint with --checkpoint, to delete it with the offsets (here SP_CHECKPOINT_LOCATION "
            f"is {settings().checkpoint_location}; on EMR, the s3:// prefix the job run was given); "
            "--keep-checkpoint is only for the upgrade from the ledger build (docs/design.md)"
        )
    if not yes:
        raise click.UsageError("this deletes the job's progress; pass --yes to do it")
    with reported(progress.NothingReset, *service_errors()):
        done = progress.reset(settings(), checkpoint, missing_ok=missing_ok)
    for line in done:
        click.echo(line)
    if keep_checkpoint:
        click.echo("kept the checkpoint (--keep-checkpoint)")
