"""The AWS calls of ``make deploy`` / ``make destroy`` / ``make bootstrap-state`` (scripts/deploy.sh), in boto3.

    sensor-pipeline aws bootstrap-state --env dev       state bucket + infra/env/dev.s3.tfbackend (idempotent)
    sensor-pipeline aws service-linked-role             AWSServiceRoleForECS when the account lacks it
    sensor-pipeline aws image-exists --repository-url U --tag T     exit 0 if the tag is in ECR
    sensor-pipeline aws run-task --cluster C --task-definition D --subnets a,b --security-group S
    sensor-pipeline aws leftovers --name sensor-pipeline-local      what a destroy left behind

The same code runs against AWS and, with ``SP_AWS_ENDPOINT_URL``, against the project's emulator (the
deploy rehearsal), so the rehearsal exercises these calls too. Errors are :class:`DeployError` with a
message that says what to do.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from sensor_pipeline.aws import aws_client
from sensor_pipeline.config import Settings


class DeployError(RuntimeError):
    """A deploy step failed; the message says what to check."""


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


# --- remote state ---------------------------------------------------------------------------------


def state_bucket_name(account_id: str, region: str, project: str = "sensor-pipeline") -> str:
    return f"{project}-tfstate-{account_id}-{region}"


def bootstrap_state(settings: Settings, env_name: str, backend_file: Path, project: str = "sensor-pipeline") -> str:
    """Create (or confirm) the Terraform state bucket and write the backend file; safe to run again.

    The bucket is versioned (a state file can be recovered), encrypted, closed to the public and to
    plain HTTP. Locking uses Terraform's S3 lock file (``use_lockfile``, Terraform >= 1.10), no table.
    """
    account = aws_client(settings, "sts").get_caller_identity()["Account"]
    region = settings.aws_region
    bucket = state_bucket_name(account, region, project)
    s3 = aws_client(settings, "s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        if _code(error) not in ("404", "NoSuchBucket", "NotFound"):
            raise DeployError(
                f"state bucket {bucket}: {error} (is it another account's? set the project name)"
            ) from error
        location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, **location)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}, "BucketKeyEnabled": True}]
        },
    )
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    backend_file.write_text(
        "# Written by `make bootstrap-state ENV=" + env_name + "` (sensor-pipeline aws bootstrap-state).\n"
        f'bucket       = "{bucket}"\n'
        f'key          = "{project}/{env_name}/terraform.tfstate"\n'
        f'region       = "{region}"\n'
        "use_lockfile = true\n"
        "encrypt      = true\n"
    )
    return bucket


# --- ECS ------------------------------------------------------------------------------------------


def ensure_service_linked_role(settings: Settings, service: str = "ecs.amazonaws.com") -> bool:
    """Create the service-linked role (AWSServiceRoleForECS); False when the account already has it."""
    try:
        aws_client(settings, "iam").create_service_linked_role(AWSServiceName=service)
        return True
    except ClientError as error:
        # AWS answers InvalidInput "... has been taken in this account"; moto EntityAlreadyExists.
        if (_code(error) == "InvalidInput" and "has been taken" in str(error)) or _code(error) == "EntityAlreadyExists":
            return False
        raise DeployError(f"creating the {service} service-linked role failed: {error}") from error


def run_task(
    settings: Settings, cluster: str, task_definition: str, subnets: list[str], security_group: str, timeout: float
) -> int:
    """Run a one-off Fargate task, wait until it stops, and return its container's exit code."""
    ecs = aws_client(settings, "ecs")
    response = ecs.run_task(
        cluster=cluster,
        taskDefinition=task_definition,
        launchType="FARGATE",
        count=1,
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": subnets,
                "securityGroups": [security_group],
                "assignPublicIp": "DISABLED",
            }
        },
    )
    if response.get("failures") or not response.get("tasks"):
        raise DeployError(f"the task did not start: {response.get('failures')}")
    arn = response["tasks"][0]["taskArn"]
    try:
        ecs.get_waiter("tasks_stopped").wait(
            cluster=cluster, tasks=[arn], WaiterConfig={"Delay": 3, "MaxAttempts": max(1, int(timeout / 3))}
        )
    except WaiterError as error:
        ecs.stop_task(cluster=cluster, task=arn, reason="make deploy: the init task timed out")
        raise DeployError(f"task {arn} did not stop within {timeout:.0f} s (stopped now): {error}") from error
    task = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
    code = task["containers"][0].get("exitCode")
    if code is None:
        raise DeployError(f"task {arn} stopped without an exit code: {task.get('stoppedReason')}")
    return int(code)


# --- ECR ------------------------------------------------------------------------------------------


def _repository(repository_url: str) -> tuple[str, str]:
    """(registry id, repository name) of ``<account>.dkr.ecr.<region>.amazonaws.com/<name>``."""
    host, _, name = repository_url.partition("/")
    return host.split(".", 1)[0], name


def image_exists(settings: Settings, repository_url: str, tag: str) -> bool:
    """True when the tag is already in the repository (tags are immutable: push each tag once)."""
    registry, name = _repository(repository_url)
    try:
        aws_client(settings, "ecr").describe_images(
            registryId=registry, repositoryName=name, imageIds=[{"imageTag": tag}]
        )
        return True
    except ClientError as error:
        if _code(error) == "ImageNotFoundException":
            return False
        raise DeployError(f"reading {repository_url}:{tag} failed: {error}") from error


def register_local_image(settings: Settings, repository_url: str, tag: str, digest_of: str) -> None:
    """The rehearsal's "push": an image manifest under the tag, so ECS finds the image reference.

    There is no Docker engine locally; the ECS runner runs the containers' commands from the project's
    venv. ``digest_of`` (the commit) makes the manifest, so a tag names one build.
    """
    registry, name = _repository(repository_url)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 0,
            "digest": "sha256:" + digest_of,
        },
        "layers": [],
    }
    aws_client(settings, "ecr").put_image(
        registryId=registry, repositoryName=name, imageManifest=json.dumps(manifest), imageTag=tag
    )


def ecr_password(settings: Settings) -> str:
    import base64

    token = aws_client(settings, "ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    return base64.b64decode(token).decode().partition(":")[2]


# --- what a destroy leaves -------------------------------------------------------------------------


def leftovers(settings: Settings, name: str) -> list[str]:
    """Resources of the stack ``name`` (``<project>-<environment>``) still in the account/emulator."""
    found: list[str] = []

    def collect(kind: str, names: list[Any]) -> None:
        found.extend(f"{kind}: {n}" for n in names if name in str(n))

    ec2 = aws_client(settings, "ec2")
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [name]}])["Vpcs"]
    collect("vpc", [f"{name} {v['VpcId']}" for v in vpcs])
    groups = ec2.describe_security_groups()["SecurityGroups"]
    collect("security group", [g["GroupName"] for g in groups])
    buckets = aws_client(settings, "s3").list_buckets().get("Buckets", [])
    found.extend(f"s3 bucket: {b['Name']}" for b in buckets if b["Name"].startswith(f"{name}-"))
    collect("iam role", [r["RoleName"] for r in aws_client(settings, "iam").list_roles()["Roles"]])
    ecs = aws_client(settings, "ecs")
    arns = ecs.list_clusters()["clusterArns"]
    clusters = ecs.describe_clusters(clusters=arns)["clusters"] if arns else []
    # A deleted cluster stays listed as INACTIVE for a while, on AWS as in the emulator.
    collect("ecs cluster", [c["clusterName"] for c in clusters if c["status"] == "ACTIVE"])
    collect(
        "ecr repository",
        [r["repositoryName"] for r in aws_client(settings, "ecr").describe_repositories()["repositories"]],
    )
    collect(
        "msk cluster", [c["ClusterName"] for c in aws_client(settings, "kafka").list_clusters_v2()["ClusterInfoList"]]
    )
    collect(
        "docdb cluster",
        [c["DBClusterIdentifier"] for c in aws_client(settings, "docdb").describe_db_clusters()["DBClusters"]],
    )
    applications = aws_client(settings, "emr-serverless").list_applications()["applications"]
    collect("emr application", [a["name"] for a in applications if a["state"] != "TERMINATED"])
    secrets = aws_client(settings, "secretsmanager").list_secrets()["SecretList"]
    # DocumentDB's managed secret is named rds!cluster-<id>, not after the stack.
    found.extend(f"secret: {s['Name']}" for s in secrets if name in s["Name"] or s["Name"].startswith("rds!cluster"))
    logs = aws_client(settings, "logs").describe_log_groups(logGroupNamePrefix="/")["logGroups"]
    # /<project>/<environment>/<workload> compared as <project>-<environment>-<workload>.
    collect("log group", [g["logGroupName"].replace("/", "-").strip("-") for g in logs])
    balancers = aws_client(settings, "elbv2").describe_load_balancers()["LoadBalancers"]
    collect("load balancer", [b["LoadBalancerName"] for b in balancers])
    return found


def object_exists(settings: Settings, bucket: str, key: str) -> bool:
    """True when the object is in the bucket (a build's files, uploaded once per tag)."""
    try:
        aws_client(settings, "s3").head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as error:
        if _code(error) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise DeployError(f"reading s3://{bucket}/{key} failed: {error}") from error


def log_group_exists(settings: Settings, name: str) -> bool:
    groups = aws_client(settings, "logs").describe_log_groups(logGroupNamePrefix=name).get("logGroups", [])
    return any(g["logGroupName"] == name for g in groups)


def msk_clusters(settings: Settings) -> list[str]:
    """ARNs of the account's MSK clusters (provisioned and serverless)."""
    response = aws_client(settings, "kafka").list_clusters_v2()
    return [str(c["ClusterArn"]) for c in response.get("ClusterInfoList", [])]


def emulated_processes(state: Path | None = None) -> list[str]:
    """Local processes an emulator's ECS/EMR runners started (``SP_EMULATED_BY``); of one state folder if given."""
    found = []
    wanted = f"SP_EMULATOR_STATE={state.resolve()}".encode() if state else None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            marker = next((v for v in environ if v.startswith(b"SP_EMULATED_BY=")), None)
            if marker and (wanted is None or wanted in environ):
                found.append(f"pid {proc.name} ({marker.decode().partition('=')[2]})")
        except OSError:
            continue
    return found


def wait_gone(settings: Settings, name: str, timeout: float = 60.0, processes_of: Path | None = None) -> list[str]:
    """Leftovers (and the emulator's processes, with ``processes_of``), after ``timeout`` s for async deletions."""
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(settings, name)
        if processes_of is not None:
            left += [f"process: {p}" for p in emulated_processes(processes_of)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(3)
