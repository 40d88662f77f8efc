"""Plumbing: the AWS steps of ``make deploy``/``destroy``/``bootstrap-state`` (``scripts/deploy.sh``)."""

from __future__ import annotations

import sys
from typing import Any

import click

from sensor_pipeline.cli.common import reported, settings


@click.group("aws", hidden=True)
def aws_group() -> None:
    """AWS steps of make deploy/destroy/bootstrap-state (SP_AWS_ENDPOINT_URL: the emulator)."""


def _deploy_call(action: str, *args: Any, **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    from sensor_pipeline.cloud import deploy

    with reported(deploy.DeployError, ClientError, BotoCoreError):
        return getattr(deploy, action)(settings(), *args, **kwargs)


@aws_group.command("bootstrap-state")
@click.option("--env", "env_name", required=True, help="environment name (dev, staging, prod)")
def aws_bootstrap_state(env_name: str) -> None:
    """Create the Terraform state bucket (versioned, encrypted, private) and write infra/env/ENV.s3.tfbackend."""
    from sensor_pipeline.local.definition import find_root

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
    from sensor_pipeline.local.definition import find_root
    from sensor_pipeline.local.runner import Paths

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
    from sensor_pipeline.local.definition import find_root
    from sensor_pipeline.local.runner import Paths

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
