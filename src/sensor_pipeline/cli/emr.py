"""``sensor-pipeline emr``: EMR Serverless job runs of the streaming job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sensor_pipeline.cli.common import reported, settings


@click.group()
def emr() -> None:
    """EMR Serverless job runs of the streaming job (set SP_AWS_ENDPOINT_URL for the emulator)."""


def _emr_call(action: str, *args: Any, **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    from sensor_pipeline.cloud import emr as emr_module

    with reported(emr_module.EmrError, ClientError, BotoCoreError):
        return getattr(emr_module, action)(settings(), *args, **kwargs)


size_options = [
    click.option("--driver-cores", type=click.Choice(["1", "2", "4", "8", "16"]), default="2", show_default=True),
    click.option("--driver-memory-gb", type=click.IntRange(1, 108), default=4, show_default=True),
    click.option("--executor-cores", type=click.Choice(["1", "2", "4", "8", "16"]), default="2", show_default=True),
    click.option("--executor-memory-gb", type=click.IntRange(1, 108), default=4, show_default=True),
    click.option("--executors", type=click.IntRange(1, 100), default=2, show_default=True),
]
application_option = click.option("--application-id", required=True, envvar="SP_EMR_APPLICATION_ID", show_envvar=True)
bucket_option = click.option(
    "--bucket", required=True, envvar="SP_ARTIFACTS_BUCKET", show_envvar=True, help="artifacts bucket"
)


@emr.command("upload")
@bucket_option
@click.option(
    "--archive",
    type=click.Path(dir_okay=False, path_type=Path),
    help="the packed Python environment (scripts/build_emr_archive.py)",
)
@click.option("--version", help="upload under jobs/VERSION/ (make deploy: the image tag)")
def emr_upload(bucket: str, archive: Path | None, version: str | None) -> None:
    """Upload the job file, the connector jars and the venv archive to S3."""
    from sensor_pipeline.local.artifacts import emr_jars
    from sensor_pipeline.local.definition import find_root, load

    root = find_root()
    jars = emr_jars(root, load(root).versions["spark"])
    job_file = root / "jobs" / "structure_validate_store.py"
    artifacts = _emr_call("upload", bucket, job_file, jars, archive, version=version)
    click.echo(json.dumps(artifacts.__dict__, indent=2))


@emr.command("submit")
@application_option
@bucket_option
@click.option("--role-arn", required=True, envvar="SP_EMR_JOB_ROLE_ARN", show_envvar=True, help="job runtime role")
@click.option("--log-group", envvar="SP_EMR_LOG_GROUP", show_envvar=True, help="CloudWatch log group for the run")
@click.option("--no-archive", is_flag=True, help="the application's image already has the dependencies")
@click.option("--force", is_flag=True, help="start even if a run of the job is active")
@click.option("--version", help="the build uploaded under jobs/VERSION/ (emr upload --version)")
@click.option("--replace-other-build", is_flag=True, help="cancel and replace an active run of another build")
@click.option(
    "--wait-running", type=click.IntRange(min=0), default=0, help="seconds to wait until RUNNING (0: no wait)"
)
@click.option("--stable-seconds", type=click.IntRange(min=0), default=0, help="then seconds it must stay RUNNING")
@size_options[0]
@size_options[1]
@size_options[2]
@size_options[3]
@size_options[4]
def emr_submit(
    application_id: str,
    bucket: str,
    role_arn: str,
    log_group: str | None,
    no_archive: bool,
    force: bool,
    version: str | None,
    replace_other_build: bool,
    wait_running: int,
    stable_seconds: int,
    **size: Any,
) -> None:
    """Start the streaming job run (STREAMING mode, retry policy, S3 + CloudWatch logs).

    Worker sizes are set here (driver + fixed executors) and checked against the application's
    maximum capacity; to scale up, raise emr_max_capacity in infra/ and pass bigger sizes.
    """
    from sensor_pipeline.cloud.emr import Artifacts, JobSize
    from sensor_pipeline.local.artifacts import emr_jars
    from sensor_pipeline.local.definition import find_root, load

    root = find_root()
    jars = [j.name for j in emr_jars(root, load(root).versions["spark"])]
    artifacts = Artifacts.in_bucket(bucket, jars, with_archive=not no_archive, version=version)
    job_size = JobSize(**{k: int(v) for k, v in size.items()})
    run_id = _emr_call(
        "submit",
        application_id,
        role_arn,
        artifacts,
        log_group=log_group,
        force=force,
        size=job_size,
        replace_other_build=replace_other_build,
    )
    if wait_running:
        _emr_call(
            "wait_for_run", application_id, run_id, ["RUNNING"], timeout=wait_running, stable_seconds=stable_seconds
        )
    click.echo(run_id)


@emr.command("status")
@application_option
@click.option("--run-id")
def emr_status(application_id: str, run_id: str | None) -> None:
    """State of the job's runs, with the Spark UI link while a run is active."""
    for run in _emr_call("status", application_id, run_id):
        dashboard = run["dashboard"] or "(no dashboard link)"
        click.echo(f"{run['id']}  {run['state']:<10} {run['name']}  {dashboard}  {run['details']}".rstrip())


@emr.command("cancel")
@application_option
@click.option("--run-id", help="default: every active run of the job")
def emr_cancel(application_id: str, run_id: str | None) -> None:
    """Cancel the job's run(s)."""
    cancelled = _emr_call("cancel", application_id, run_id)
    click.echo("cancelled: " + (", ".join(cancelled) or "nothing was running"))


@emr.command("shutdown")
@application_option
@click.option("--timeout", type=click.IntRange(min=1), default=600, show_default=True)
def emr_shutdown(application_id: str, timeout: int) -> None:
    """Cancel every run, wait for CANCELLED, stop the application, wait for STOPPED (before deleting it)."""
    cancelled = _emr_call("shutdown", application_id, timeout=timeout)
    click.echo(f"cancelled: {', '.join(cancelled) or 'nothing was running'}; application {application_id} stopped")


@emr.command("logs")
@application_option
@bucket_option
@click.option("--run-id", required=True)
@click.option("--stream", type=click.Choice(["stdout", "stderr"]), default="stderr", show_default=True)
def emr_logs(application_id: str, bucket: str, run_id: str, stream: str) -> None:
    """Print the driver's log of a run from S3."""
    click.echo(_emr_call("logs", application_id, run_id, bucket, stream=stream))
