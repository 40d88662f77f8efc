"""``sensor-pipeline``: the project's command line.

    sensor-pipeline validate < lines.txt        one JSON verdict per input line (contract)
    sensor-pipeline api | produce | dashboard   run a pipeline service
    sensor-pipeline init                        create topics, indexes (and a bucket), idempotently
    sensor-pipeline stack up|down|status|clean|compose   the native local stack (make local-*)
    sensor-pipeline emr submit|status|cancel|logs        EMR Serverless job runs

Settings come from ``SP_*`` environment variables (sensor_pipeline.config); flags override them.
Bad arguments exit with code 2 and a message saying what is accepted.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from sensor_pipeline.config import Settings, load_settings


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(f"SP_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in error.errors())
        raise click.UsageError(f"invalid settings: {problems}") from error


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Real-time beach water-quality pipeline."""


@main.command()
@click.option(
    "--future-tolerance",
    type=click.IntRange(min=0),
    default=300,
    show_default=True,
    help="seconds a timestamp may lie ahead of now",
)
def validate(future_tolerance: int) -> None:
    """Validate raw lines from stdin; print {"valid", "reason", "record"} per line to stdout.

    Exit code 0 when every line is valid, 1 when some are not.
    """
    from sensor_pipeline.rules import validate_line

    tolerance = timedelta(seconds=future_tolerance)
    all_valid = True
    out = sys.stdout
    for raw in sys.stdin:
        line = raw.rstrip("\r\n")
        verdict = validate_line(line, future_tolerance=tolerance)
        all_valid &= verdict.valid
        out.write(json.dumps(verdict.to_json_dict()) + "\n")
    out.flush()
    sys.exit(0 if all_valid else 1)


@main.command()
@click.option("--host", help="address to bind (default SP_API_HOST, 127.0.0.1)")
@click.option("--port", type=click.IntRange(1, 65535), help="port (default SP_API_PORT, 3030)")
@click.option("--mode", type=click.Choice(["simulate", "replay"]), help="simulated beaches or the real data")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), help="data seconds per real second")
@click.option("--fault-rate", type=click.FloatRange(0, 1), help="share of faulty readings to inject")
@click.option("--seed", type=int, help="random seed for a repeatable simulation")
def api(
    host: str | None,
    port: int | None,
    mode: str | None,
    speed: float | None,
    fault_rate: float | None,
    seed: int | None,
) -> None:
    """Serve the sensor API (GET /sensordata, /sensordata/stream, /health)."""
    from sensor_pipeline.api import serve

    _logging()
    serve(_settings(sim_mode=mode, sim_speed=speed, sim_fault_rate=fault_rate, sim_seed=seed), host, port)


@main.command()
@click.option("--source", type=click.Choice(["stream", "poll"]), default="stream", show_default=True)
@click.option("--count", type=click.IntRange(min=1), help="stop after this many readings")
@click.option("--rate", type=click.FloatRange(min=0), help="max readings/s (0 = unlimited)")
@click.option("--api-url", help="sensor API base URL")
def produce(source: str, count: int | None, rate: float | None, api_url: str | None) -> None:
    """Stream readings from the sensor API into RawSensorData."""
    from sensor_pipeline import producer

    _logging()
    sys.exit(producer.main(_settings(api_url=api_url), source=source, count=count, rate=rate))


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), help="port (default SP_DASHBOARD_PORT, 5006)")
@click.option("--address", default="127.0.0.1", show_default=True)
def dashboard(port: int | None, address: str) -> None:
    """Serve the live Bokeh dashboard fed from CleanSensorData."""
    from sensor_pipeline.dashboard import serve

    _logging()
    serve(_settings(dashboard_port=port), address)


@main.command()
@click.option("--bucket", help="also create this S3 bucket (emulator or AWS)")
def init(bucket: str | None) -> None:
    """Create the topics and the store's indexes (idempotent)."""
    from sensor_pipeline import provision

    _logging()
    result = provision.ensure_all(_settings(), bucket=bucket)
    click.echo(json.dumps(result))


# --- local stack ------------------------------------------------------------------------------


@main.group()
def stack() -> None:
    """The native local stack (what make local-up/down/status/clean run)."""


def _stack_call(action: str, **kwargs: Any) -> Any:
    from sensor_pipeline.stack import runner
    from sensor_pipeline.stack.artifacts import ArtifactError
    from sensor_pipeline.stack.definition import find_root

    try:
        return getattr(runner, action)(find_root(), **kwargs)
    except (runner.StackError, ArtifactError, FileNotFoundError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)


@stack.command("up")
@click.option("--infra-only", is_flag=True, help="only Kafka, the MongoDB server and the AWS emulator")
def stack_up(infra_only: bool) -> None:
    """Start the stack (idempotent) and print where everything runs."""
    _stack_call("up", infra_only=infra_only)


@stack.command("down")
def stack_down() -> None:
    """Stop everything the stack started."""
    _stack_call("down")


@stack.command("status")
def stack_status() -> None:
    """Show each service's state."""
    sys.exit(_stack_call("status"))


@stack.command("clean")
def stack_clean() -> None:
    """Stop the stack and delete its data, logs and checkpoints."""
    _stack_call("clean")


@stack.command("compose")
@click.option("--check", is_flag=True, help="exit 1 if localstack/docker-compose.yml is out of date")
def stack_compose(check: bool) -> None:
    """Render localstack/docker-compose.yml from localstack/services.toml."""
    from sensor_pipeline.stack.definition import COMPOSE_FILE, find_root, load, render_compose

    root = find_root()
    text = render_compose(load(root))
    target = root / COMPOSE_FILE
    if check:
        if not target.is_file() or target.read_text() != text:
            click.echo(f"{target} is out of date: run `sensor-pipeline stack compose`", err=True)
            sys.exit(1)
        return
    Path(target).write_text(text)
    click.echo(f"wrote {target}")


# --- EMR Serverless ------------------------------------------------------------------------------


@main.group()
def emr() -> None:
    """EMR Serverless job runs of the streaming job (set SP_AWS_ENDPOINT_URL for the emulator)."""


def _emr_call(action: str, *args: Any, **kwargs: Any) -> Any:
    from sensor_pipeline import emr as emr_module

    try:
        return getattr(emr_module, action)(_settings(), *args, **kwargs)
    except emr_module.EmrError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)


application_option = click.option("--application-id", required=True, envvar="SP_EMR_APPLICATION_ID")
bucket_option = click.option("--bucket", required=True, envvar="SP_ARTIFACTS_BUCKET", help="artifacts bucket")


@emr.command("upload")
@bucket_option
@click.option("--archive", type=click.Path(dir_okay=False, path_type=Path), help="packed venv (make package-job)")
def emr_upload(bucket: str, archive: Path | None) -> None:
    """Upload the job file, the connector jars and the venv archive to S3."""
    from sensor_pipeline.stack.artifacts import emr_jars
    from sensor_pipeline.stack.definition import find_root, load

    root = find_root()
    jars = emr_jars(root, load(root).versions["spark"])
    artifacts = _emr_call("upload", bucket, root / "jobs" / "structure_validate_store.py", jars, archive)
    click.echo(json.dumps(artifacts.__dict__, indent=2))


@emr.command("submit")
@application_option
@bucket_option
@click.option("--role-arn", required=True, envvar="SP_EMR_JOB_ROLE_ARN", help="job runtime role")
@click.option("--log-group", envvar="SP_EMR_LOG_GROUP", help="CloudWatch log group for the run")
@click.option("--no-archive", is_flag=True, help="the application's image already has the dependencies")
@click.option("--force", is_flag=True, help="start even if a run of the job is active")
def emr_submit(
    application_id: str, bucket: str, role_arn: str, log_group: str | None, no_archive: bool, force: bool
) -> None:
    """Start the streaming job run (STREAMING mode, retry policy, S3 + CloudWatch logs)."""
    from sensor_pipeline.emr import Artifacts
    from sensor_pipeline.stack.artifacts import emr_jars
    from sensor_pipeline.stack.definition import find_root, load

    root = find_root()
    jars = [j.name for j in emr_jars(root, load(root).versions["spark"])]
    artifacts = Artifacts.in_bucket(bucket, jars, with_archive=not no_archive)
    run_id = _emr_call("submit", application_id, role_arn, artifacts, log_group=log_group, force=force)
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


@emr.command("logs")
@application_option
@bucket_option
@click.option("--run-id", required=True)
@click.option("--stream", type=click.Choice(["stdout", "stderr"]), default="stderr", show_default=True)
def emr_logs(application_id: str, bucket: str, run_id: str, stream: str) -> None:
    """Print the driver's log of a run from S3."""
    click.echo(_emr_call("logs", application_id, run_id, bucket, stream=stream))


if __name__ == "__main__":
    main()
