"""The deploy rehearsal: `make deploy ENV=local` / `make destroy ENV=local`, end to end, as a user runs them.

The same scripts/deploy.sh as ENV=dev applies the whole infra/ to the project's AWS emulator, runs the
init task and the services through the emulator's ECS runner and submits the streaming job run, which
the emulator's EMR runner executes from what was uploaded to S3 — each workload as its own IAM role
(every AWS call authorized), its own Kafka principal (ACLs made from its role's kafka-cluster
statements), TLS and the managed secret's password at the DocumentDB stand-in, and for the ECS tasks
the container runtime of their task definition and image. The pipeline it leaves running must store
and publish readings with nothing refused; a second deploy must be harmless; a copy of infra/ with one
permission or one writable path taken away must fail the rehearsal with a message that names it; and
destroy must leave nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from kafka import KafkaConsumer
from pymongo import MongoClient

from sensor_pipeline.cloud.deploy import emulated_processes
from sensor_pipeline.config import Settings
from sensor_pipeline.local.definition import find_root

pytestmark = [pytest.mark.integration, pytest.mark.aws_emulator]
ROOT = find_root(Path(__file__))
STATE = ROOT / ".local-stack"


#: What the first deploy proves before it says "deployed" (job run stable, late refusals): shortened here,
#: because the tests check the refusals again once readings have flowed through every workload.
QUICK = {"SP_DEPLOY_STABLE_SECONDS": "10", "SP_REHEARSAL_SETTLE_SECONDS": "0"}


def make(target: str, infra: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    env = {**os.environ, **(env or {}), **({"SP_INFRA_DIR": str(infra)} if infra is not None else {})}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "deploy.sh"), target, "local"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False, env=env,
    )  # fmt: skip
    print(f"{target} ENV=local{' (' + str(infra) + ')' if infra else ''}: exit {result.returncode} "
          f"in {time.monotonic() - started:.0f} s")  # fmt: skip
    print(result.stdout[-6000:], result.stderr[-4000:])
    return result


def emulator(service: str) -> Any:
    """A client of the emulator as the account root (what Terraform and deploy.sh are)."""
    return boto3.client(  # type: ignore[call-overload]
        service, endpoint_url="http://127.0.0.1:4566", region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip


def docdb_client() -> MongoClient[dict[str, Any]]:
    """The DocumentDB stand-in as the job reaches it: TLS with the local CA, the managed secret's credentials."""
    (cluster,) = [c for c in emulator("rds").describe_db_clusters()["DBClusters"] if c["Engine"] == "docdb"]
    secret = json.loads(
        emulator("secretsmanager").get_secret_value(SecretId=cluster["MasterUserSecret"]["SecretArn"])["SecretString"]
    )
    return MongoClient(
        f"mongodb://{cluster['Endpoint']}:{cluster['Port']}/", tls=True, tlsCAFile=str(STATE / "tls" / "ca.pem"),
        username=secret["username"], password=secret["password"], serverSelectionTimeoutMS=10_000,
    )  # fmt: skip


def stored_ids(settings: Settings, limit: int = 5000) -> set[object]:
    """MeasurementIDs in the DocumentDB stand-in (the deploy's own cluster: empty before this run)."""
    client = docdb_client()
    try:
        readings = client[settings.mongo_database][settings.mongo_collection]
        return {d["_id"] for d in readings.find({}, {"_id": 1}).limit(limit)}
    finally:
        client.close()


def stored(settings: Settings) -> int:
    client = docdb_client()
    try:
        return int(client[settings.mongo_database][settings.mongo_collection].estimated_document_count())
    finally:
        client.close()


#: What deploy.sh exports for ENV=local: the emulator, as the account root.
AS_ROOT = {"SP_AWS_ENDPOINT_URL": "http://127.0.0.1:4566", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "SP_AWS_REGION": "us-east-1"}  # fmt: skip
#: When the module's deploy began (epoch seconds): what the emulator refused from then on is checked.
DEPLOY_STARTED: list[float] = []
DEPLOY_ENDED: list[float] = []
#: A log group an earlier DocumentDB cluster of the same name created itself (before Terraform managed it).
LEFT_BY_DOCDB = "/aws/docdb/sensor-pipeline-local/audit"


@pytest.fixture(scope="module")
def deployed(stack: object) -> Iterator[subprocess.CompletedProcess[str]]:
    emulator("logs").create_log_group(logGroupName=LEFT_BY_DOCDB)
    DEPLOY_STARTED.append(time.time())
    result = make("deploy", env=QUICK)
    DEPLOY_ENDED.append(time.time())
    try:
        yield result
    finally:
        if (STATE / "rehearsal").exists():  # the last test destroys; this is for a failure before it
            make("destroy")


def mutated_infra(tmp_path: Path, file: str, old: str, new: str) -> Path:
    copy = tmp_path / "infra"
    shutil.copytree(ROOT / "infra", copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    text = (copy / file).read_text()
    assert old in text, f"{file} no longer holds {old!r}: update the mutation"
    (copy / file).write_text(text.replace(old, new, 1))
    return copy


def test_the_deployed_pipeline_runs_every_workload_as_aws_would_and_stores_and_publishes(
    deployed: subprocess.CompletedProcess[str], base_settings: Settings
) -> None:
    assert deployed.returncode == 0, "make deploy ENV=local failed"
    assert "nothing refused" in deployed.stdout, "the rehearsal's check of denials and failed tasks did not pass"
    assert f"adopt the existing log group {LEFT_BY_DOCDB}" in deployed.stdout, "an existing log group must be adopted"
    run_id = re.search(r"job run:\s+(\S+)", deployed.stdout).group(1)  # type: ignore[union-attr]
    request = json.loads((STATE / "emr-runs" / run_id / "request.json").read_text())
    entry = next(a for a in request["command"] if a.endswith(".py"))
    assert entry.endswith("emr-runs/" + run_id + "/job/structure_validate_store.py"), "the job from S3 runs"
    assert any("SCRAM as the role's principal" in change for change in request["translations"])
    running = emulated_processes()
    assert any(f"emr:{run_id}" in p for p in running), running
    assert {"ecs:ecs-api", "ecs:ecs-producer", "ecs:ecs-dashboard"} <= {p.split("(")[1].rstrip(")") for p in running}
    # Each ECS task runs under bwrap as the task definition's user on a read-only root.
    sandbox = json.loads(next((STATE / "ecs-tasks").glob("ecs-api-*/sandbox.json")).read_text())
    assert sandbox["argv"][:2] == ["bwrap", "--die-with-parent"] and "--reuid=10001" in sandbox["argv"]
    assert sandbox["argv"][sandbox["argv"].index("--ro-bind") + 1 : sandbox["argv"].index("--ro-bind") + 3] == [
        "/",
        "/",
    ]

    # The pipeline the deploy started: ECS API -> ECS producer -> Kafka -> the EMR run -> DocumentDB + topic.
    # (The test reads the topic on the broker's plain listener, as the development stack does.)
    clean = KafkaConsumer(
        base_settings.clean_topic, **base_settings.kafka_client_options(), auto_offset_reset="earliest",
        isolation_level="read_committed",
    )  # fmt: skip
    deadline = time.monotonic() + 300
    published: list[dict[str, object]] = []
    # The topic may hold earlier runs' messages: a reading counts when the fresh stand-in stored it too.
    both: set[object] = set()
    while time.monotonic() < deadline and not both:
        # poll, not iteration: an iterator with consumer_timeout_ms never ends while messages keep coming
        published += [json.loads(m.value) for ms in clean.poll(timeout_ms=1000).values() for m in ms]
        both = {m.get("MeasurementID") for m in published} & stored_ids(base_settings)
    clean.close()
    assert stored(base_settings) > 0, "the job run stored no reading in the DocumentDB stand-in"
    assert both, "no reading the job run stored reached CleanSensorData"
    acls = json.loads((STATE / "logs" / "kafka-acls.json").read_text())
    assert "User:sensor-pipeline-local-producer" in acls["principals"]
    # The deploy waited 10 s for the run to stay up (make deploy: 45 s) and 0 s for late refusals (20 s):
    # the same checks now, with readings through every workload and the run up for 30 s or more.
    time.sleep(max(0.0, DEPLOY_ENDED[0] + 20 - time.time()))
    application = re.search(r"job run:\s+\S+ \(application (\S+)\)", deployed.stdout).group(1)  # type: ignore[union-attr]
    job_run = emulator("emr-serverless").get_job_run(applicationId=application, jobRunId=run_id)["jobRun"]
    assert (job_run["state"], job_run.get("attempt", 1)) == ("RUNNING", 1), "the job run failed and was restarted"
    # With readings through every workload: still nothing AWS would have refused, no task failed.
    check = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "sensor-pipeline"), "aws", "rehearsal-check", "--since", str(DEPLOY_STARTED[0])],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, env={**os.environ, **AS_ROOT},
    )  # fmt: skip
    assert check.returncode == 0 and "nothing refused" in check.stdout, check.stderr


def test_the_stores_tls_and_password_are_enforced(deployed: subprocess.CompletedProcess[str]) -> None:
    from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

    (cluster,) = [c for c in emulator("rds").describe_db_clusters()["DBClusters"] if c["Engine"] == "docdb"]
    address = f"mongodb://{cluster['Endpoint']}:{cluster['Port']}/"
    plain: MongoClient[dict[str, Any]] = MongoClient(address, serverSelectionTimeoutMS=2000)
    with pytest.raises(ServerSelectionTimeoutError):
        plain.admin.command("ping")  # no TLS: no answer
    ca = str(STATE / "tls" / "ca.pem")
    wrong: MongoClient[dict[str, Any]] = MongoClient(
        address, tls=True, tlsCAFile=ca, username="pipeline", password="not-the-secret", serverSelectionTimeoutMS=5000
    )
    with pytest.raises(OperationFailure, match="Authentication failed"):
        wrong.admin.command("listDatabases")
    anonymous: MongoClient[dict[str, Any]] = MongoClient(address, tls=True, tlsCAFile=ca, serverSelectionTimeoutMS=5000)
    with pytest.raises(OperationFailure, match="requires authentication"):
        anonymous.water_quality.sensor_readings.find_one()
    for client in (plain, wrong, anonymous):
        client.close()


@pytest.mark.slow
def test_a_redeploy_is_harmless(deployed: subprocess.CompletedProcess[str]) -> None:
    again = make("deploy")
    assert again.returncode == 0, "a second deploy must be harmless"
    assert "already in ECR: kept" in again.stdout and "kept the running job run" in again.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("file", "old", "new", "named"),
    [
        pytest.param(
            "iam.tf",
            """sid       = "WriteRaw"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"]""",
            """sid       = "WriteRaw"
    actions   = ["kafka-cluster:DescribeTopic"]""",
            r"Kafka: role sensor-pipeline-local-producer: kafka-cluster:WriteData denied on "
            r"arn:aws:kafka:us-east-1:\d+:topic/sensor-pipeline-local/[^/]+/RawSensorData",
            id="kafka-permission",
        ),
        pytest.param(
            "iam.tf",
            """sid       = "IdempotentProducer"
    actions   = ["kafka-cluster:WriteDataIdempotently"]""",
            """sid       = "IdempotentProducer"
    actions   = ["kafka-cluster:DescribeCluster"]""",
            r"Kafka \(MSK only\): User:sensor-pipeline-local-producer: kafka-cluster:WriteData without "
            r"kafka-cluster:WriteDataIdempotently",
            id="kafka-idempotent-write",
        ),
        pytest.param(
            "iam.tf",
            '''sid       = "DocumentDbSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.docdb_secret_arn]
  }
}

resource "aws_iam_role_policy" "task"''',
            '''sid       = "DocumentDbSecret"
    actions   = ["secretsmanager:DescribeSecret"]
    resources = [local.docdb_secret_arn]
  }
}

resource "aws_iam_role_policy" "task"''',
            r"AWS: role sensor-pipeline-local-init: secretsmanager:GetSecretValue denied on "
            r"arn:aws:secretsmanager:us-east-1:\d+:secret:rds!cluster-",
            id="aws-permission",
        ),
        pytest.param(
            "ecs.tf",
            """      mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp" }]""",
            """      mountPoints            = []""",
            r"ECS: api: exited: .*No usable temporary directory",
            id="writable-path",
        ),
    ],
)
def test_a_missing_permission_or_writable_path_fails_the_rehearsal_naming_it(
    deployed: subprocess.CompletedProcess[str], tmp_path: Path, file: str, old: str, new: str, named: str
) -> None:
    """Each case deploys a copy of infra/ with one thing taken away over the running rehearsal; the next
    case's copy restores it (each copy differs from infra/ by its own mutation only)."""
    result = make("deploy", mutated_infra(tmp_path, file, old, new))
    assert result.returncode != 0, "the rehearsal passed without what the workload needs"
    assert re.search(named, result.stderr), f"the failure does not name what is missing ({named})"


def test_destroy_leaves_nothing(deployed: subprocess.CompletedProcess[str]) -> None:
    destroyed = make("destroy")
    assert destroyed.returncode == 0, "make destroy ENV=local failed"
    assert emulated_processes(STATE) == [], "a process of the rehearsal outlived the destroy"
    assert not (STATE / "rehearsal").exists()
