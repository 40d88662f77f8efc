"""``sensor-pipeline``: the project's command line.

    sensor-pipeline validate < lines.txt        one JSON verdict per input line (contract)
    sensor-pipeline api | produce | dashboard   run a pipeline service
    sensor-pipeline simulate [--report]         simulated lines, or how close the simulation is to the real data
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
    # kafka-python logs every failed connection attempt at ERROR: an outage would flood the log.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


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
@click.option("--count", type=click.IntRange(min=1), help="lines to print  [default: 6, one simulated hour]")
@click.option("--mode", type=click.Choice(["simulate", "replay"]), default="simulate", show_default=True)
@click.option("--seed", type=int, help="random seed for a repeatable simulation (--report: 1)")
@click.option("--fault-rate", type=click.FloatRange(0, 1), help="share of faulty lines (--report: the real rate)")
@click.option("--gaps", is_flag=True, help="let beaches miss hours at the real data's rate")
@click.option("--report", is_flag=True, help="simulate a season; print its KS distances and fault and gap rates")
def simulate(
    count: int | None, mode: str, seed: int | None, fault_rate: float | None, gaps: bool, report: bool
) -> None:
    """Print simulated (or replayed) raw lines, as GET /sensordata serves them.

    With --report, simulate a season (the months the real buoys report, with their gaps and faults)
    and print, per beach, the Kolmogorov-Smirnov distance of water temperature, turbidity and
    battery to the packaged real data, and the real and simulated gap and fault rates.
    """
    from sensor_pipeline import simulator

    if report:
        clashes = [flag for flag, given in (("--count", count), ("--gaps", gaps or None)) if given is not None]
        if mode != "simulate":
            clashes.append("--mode replay")
        if clashes:
            raise click.UsageError(f"--report simulates a whole season with gaps; drop {', '.join(clashes)}")
        click.echo(simulator.fidelity_report(seed=1 if seed is None else seed, fault_rate=fault_rate).table())
        return
    if gaps and mode != "simulate":
        raise click.UsageError("--gaps applies to --mode simulate (replay has the real gaps)")
    source = simulator.Simulator(mode=mode, seed=seed, fault_rate=fault_rate or 0.0, gaps=gaps)
    for line in source.take(count or len(simulator.BEACHES)):
        click.echo(line)


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


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=4566, show_default=True)
@click.option(
    "--kafka-secure-bootstrap",
    default="127.0.0.1:9098",
    show_default=True,
    help="the broker's SASL_SSL listener: what MSK's bootstrap brokers answer (ACLs from IAM enforced there)",
)
@click.option(
    "--ferretdb",
    type=click.Path(dir_okay=False, path_type=Path),
    help="FerretDB binary run for each DocumentDB cluster (TLS, SCRAM); without it clusters are records only",
)
def emulator(host: str, port: int, kafka_secure_bootstrap: str, ferretdb: Path | None) -> None:
    """Serve the AWS emulator (moto, extended) with its ECS and EMR Serverless runners."""
    from urllib.parse import urlsplit

    from sensor_pipeline.emulator.server import serve
    from sensor_pipeline.stack.definition import find_root
    from sensor_pipeline.stack.runner import Paths

    _logging()
    settings = _settings()
    mongo = urlsplit(settings.mongo_uri)
    root = find_root()
    paths = Paths.of(root)
    serve(
        host, port, paths.state, paths.venv_bin, settings.kafka_bootstrap, kafka_secure_bootstrap,
        mongo.hostname or "127.0.0.1", mongo.port or 27017, ferretdb, root,
    )  # fmt: skip


# --- local stack ------------------------------------------------------------------------------


@main.group()
def job() -> None:
    """The streaming job's progress (its consumer group's offsets, committed with its output)."""


@job.command("progress")
def job_progress() -> None:
    """Print the job's committed offsets and its lag per raw-topic partition."""
    from sensor_pipeline import progress

    settings = _settings()
    done, bounds = progress.committed(settings), progress.watermarks(settings)
    for partition, (first, end) in sorted(bounds.items()):
        at = done.get(partition)
        lag = end - (at if at is not None else first)
        click.echo(
            f"{settings.raw_topic}[{partition}]  committed {at if at is not None else '-'}  end {end}  lag {lag}"
        )


@job.command("reset-progress")
@click.option("--checkpoint", help="also delete this checkpoint (a folder or an s3:// prefix)")
@click.option("--yes", is_flag=True, help="do it (the job then reprocesses the raw topic from its start)")
def job_reset_progress(checkpoint: str | None, yes: bool) -> None:
    """Forget the job's progress (after its raw topic was recreated): its group's offsets and, with
    --checkpoint, its checkpoint. Stop the job first."""
    from sensor_pipeline import progress

    if not yes:
        raise click.UsageError("this deletes the job's progress; pass --yes to do it")
    for line in progress.reset(_settings(), checkpoint):
        click.echo(line)


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


size_options = [
    click.option("--driver-cores", type=click.Choice(["1", "2", "4", "8", "16"]), default="2", show_default=True),
    click.option("--driver-memory-gb", type=click.IntRange(1, 108), default=4, show_default=True),
    click.option("--executor-cores", type=click.Choice(["1", "2", "4", "8", "16"]), default="2", show_default=True),
    click.option("--executor-memory-gb", type=click.IntRange(1, 108), default=4, show_default=True),
    click.option("--executors", type=click.IntRange(1, 100), default=2, show_default=True),
]
application_option = click.option("--application-id", required=True, envvar="SP_EMR_APPLICATION_ID")
bucket_option = click.option("--bucket", required=True, envvar="SP_ARTIFACTS_BUCKET", help="artifacts bucket")


@emr.command("upload")
@bucket_option
@click.option("--archive", type=click.Path(dir_okay=False, path_type=Path), help="packed venv (make package-job)")
@click.option("--version", help="upload under jobs/VERSION/ (make deploy: the image tag)")
def emr_upload(bucket: str, archive: Path | None, version: str | None) -> None:
    """Upload the job file, the connector jars and the venv archive to S3."""
    from sensor_pipeline.stack.artifacts import emr_jars
    from sensor_pipeline.stack.definition import find_root, load

    root = find_root()
    jars = emr_jars(root, load(root).versions["spark"])
    job_file = root / "jobs" / "structure_validate_store.py"
    artifacts = _emr_call("upload", bucket, job_file, jars, archive, version=version)
    click.echo(json.dumps(artifacts.__dict__, indent=2))


@emr.command("submit")
@application_option
@bucket_option
@click.option("--role-arn", required=True, envvar="SP_EMR_JOB_ROLE_ARN", help="job runtime role")
@click.option("--log-group", envvar="SP_EMR_LOG_GROUP", help="CloudWatch log group for the run")
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
    from sensor_pipeline.emr import Artifacts, JobSize
    from sensor_pipeline.stack.artifacts import emr_jars
    from sensor_pipeline.stack.definition import find_root, load

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


# --- deploy steps (scripts/deploy.sh) ------------------------------------------------------------


@main.group("aws")
def aws_group() -> None:
    """AWS steps of make deploy/destroy/bootstrap-state (SP_AWS_ENDPOINT_URL: the emulator)."""


def _deploy_call(action: str, *args: Any, **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    from sensor_pipeline import deploy

    try:
        return getattr(deploy, action)(_settings(), *args, **kwargs)
    except (deploy.DeployError, ClientError, BotoCoreError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)


@aws_group.command("bootstrap-state")
@click.option("--env", "env_name", required=True, help="environment name (dev, staging, prod)")
def aws_bootstrap_state(env_name: str) -> None:
    """Create the Terraform state bucket (versioned, encrypted, private) and write infra/env/ENV.s3.tfbackend."""
    from sensor_pipeline.stack.definition import find_root

    backend = find_root() / "infra" / "env" / f"{env_name}.s3.tfbackend"
    bucket = _deploy_call("bootstrap_state", env_name, backend)
    click.echo(f"state bucket {bucket} ready; wrote {backend}")


@aws_group.command("service-linked-role")
@click.option("--service", default="ecs.amazonaws.com", show_default=True)
def aws_service_linked_role(service: str) -> None:
    """Create the service's linked role when the account lacks it (idempotent)."""
    created = _deploy_call("ensure_service_linked_role", service)
    click.echo(f"{service} service-linked role {'created' if created else 'already there'}")


@aws_group.command("image-exists")
@click.option("--repository-url", required=True)
@click.option("--tag", required=True)
def aws_image_exists(repository_url: str, tag: str) -> None:
    """Exit 0 when the tag is in ECR, 3 when it is not."""
    sys.exit(0 if _deploy_call("image_exists", repository_url, tag) else 3)


@aws_group.command("register-image")
@click.option("--repository-url", required=True)
@click.option("--tag", required=True)
@click.option("--digest-of", required=True, help="the commit the tag names")
def aws_register_image(repository_url: str, tag: str, digest_of: str) -> None:
    """The rehearsal's push: an image manifest under the tag (no Docker engine locally)."""
    import hashlib

    _deploy_call("register_local_image", repository_url, tag, hashlib.sha256(digest_of.encode()).hexdigest())


@aws_group.command("run-task")
@click.option("--cluster", required=True)
@click.option("--task-definition", required=True)
@click.option("--subnets", required=True, help="comma-separated subnet ids")
@click.option("--security-group", required=True)
@click.option("--timeout", type=click.IntRange(min=1), default=600, show_default=True)
def aws_run_task(cluster: str, task_definition: str, subnets: str, security_group: str, timeout: int) -> None:
    """Run a one-off Fargate task, wait for it, and exit with its container's exit code."""
    code = _deploy_call("run_task", cluster, task_definition, subnets.split(","), security_group, timeout)
    click.echo(f"task exited {code}")
    sys.exit(code)


@aws_group.command("object-exists")
@click.option("--bucket", required=True)
@click.option("--key", required=True)
def aws_object_exists(bucket: str, key: str) -> None:
    """Exit 0 if the S3 object exists, 1 if it does not."""
    sys.exit(0 if _deploy_call("object_exists", bucket, key) else 1)


@aws_group.command("log-group-exists")
@click.option("--name", required=True)
def aws_log_group_exists(name: str) -> None:
    """Exit 0 if the CloudWatch log group exists, 1 if it does not."""
    sys.exit(0 if _deploy_call("log_group_exists", name) else 1)


@aws_group.command("ecr-password")
def aws_ecr_password() -> None:
    """Print the registry password for `docker login --username AWS --password-stdin` (no AWS CLI needed)."""
    click.echo(_deploy_call("ecr_password"))


@aws_group.command("leftovers")
@click.option("--name", required=True, help="<project>-<environment>, e.g. sensor-pipeline-local")
@click.option("--timeout", type=click.IntRange(min=0), default=60, show_default=True)
@click.option("--processes", is_flag=True, help="also local processes the emulator's runners started")
def aws_leftovers(name: str, timeout: int, processes: bool) -> None:
    """List what of the stack is still there; exit 1 if anything is."""
    from sensor_pipeline.stack.definition import find_root
    from sensor_pipeline.stack.runner import Paths

    state = Paths.of(find_root()).state if processes else None
    left = _deploy_call("wait_gone", name, timeout, processes_of=state)
    for item in left:
        click.echo(item)
    sys.exit(1 if left else 0)


@aws_group.command("rehearsal-check")
@click.option("--since", type=float, required=True, help="epoch seconds: what was refused from then on")
@click.option("--settle", type=click.IntRange(min=0), default=0, show_default=True, help="seconds to wait first")
def aws_rehearsal_check(since: float, settle: int) -> None:
    """Rehearsal: list what AWS would have refused (denied AWS calls, denied Kafka requests, failed tasks);
    exit 1 if anything was."""
    import time

    from sensor_pipeline.emulator.findings import findings, translation_notes
    from sensor_pipeline.stack.definition import find_root
    from sensor_pipeline.stack.runner import Paths

    time.sleep(settle)
    clusters = _deploy_call("msk_clusters")
    state = Paths.of(find_root()).state
    found = findings(state, since, clusters)
    for item in found:
        click.echo(f"    {item}", err=True)
    for note in translation_notes(state):
        click.echo(f"    note (MSK IAM -> Kafka ACLs): {note}")
    if not found:
        click.echo("    nothing refused: every AWS call and Kafka request of the workloads was allowed, every task ran")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
