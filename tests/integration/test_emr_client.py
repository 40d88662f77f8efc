"""The EMR job-run client and the deploy steps' AWS calls, for real against moto's server (port 4566)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensor_pipeline.aws import aws_client
from sensor_pipeline.cloud import emr, provision
from sensor_pipeline.config import Settings
from sensor_pipeline.local import artifacts
from sensor_pipeline.local.definition import find_root

pytestmark = [pytest.mark.integration, pytest.mark.aws_emulator]
ROOT = find_root(Path(__file__))
CLI = str(Path(sys.executable).parent / "sensor-pipeline")
ROLE = "arn:aws:iam::123456789012:role/test-emr-job"


@pytest.fixture
def aws(base_settings: Settings) -> Iterator[tuple[Settings, str, str]]:
    """An EMR Serverless application, a bucket and the job's execution role in the emulator.

    The emulator's EMR runner reads the entry point with the run's execution role, as EMR Serverless
    does: the role trusts the service and may read the bucket's jobs/. moto accepts only release labels
    shaped emr-X.Y.0, so the emulator's application uses emr-7.0.0; the client never depends on the
    label (infra/ pins emr-spark-8.0.0, checked by terraform test).
    """
    import json

    bucket = f"test-artifacts-{uuid.uuid4().hex[:10]}"
    provision.ensure_bucket(base_settings, bucket)
    iam = aws_client(base_settings, "iam")
    trust = {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "emr-serverless.amazonaws.com"}}
    read = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/jobs/*"}
    iam.create_role(
        RoleName="test-emr-job", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [trust]})
    )
    iam.put_role_policy(
        RoleName="test-emr-job",
        PolicyName="jobs",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [read]}),
    )
    client = aws_client(base_settings, "emr-serverless")
    application = client.create_application(name=f"test-{bucket}", releaseLabel="emr-7.0.0", type="SPARK")
    yield base_settings, application["applicationId"], bucket
    emr.shutdown(base_settings, application["applicationId"], timeout=120)  # every run, whatever its name
    iam.delete_role_policy(RoleName="test-emr-job", PolicyName="jobs")
    iam.delete_role(RoleName="test-emr-job")


def env(settings: Settings) -> dict[str, str]:
    import os

    return {**os.environ, "SP_AWS_ENDPOINT_URL": settings.aws_endpoint_url}


def test_upload_puts_the_job_jars_and_archive_in_s3(aws: tuple[Settings, str, str], tmp_path: Path) -> None:
    settings, _, bucket = aws
    archive = tmp_path / "pyspark_venv.tar.gz"
    archive.write_bytes(b"packed venv")
    jars = artifacts.emr_jars(ROOT, "4.0.2")
    uploaded = emr.upload(settings, bucket, ROOT / "jobs" / "structure_validate_store.py", jars, archive)
    s3 = aws_client(settings, "s3")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "jobs/structure_validate_store.py" in keys and "jobs/pyspark_venv.tar.gz" in keys
    assert {f"jobs/jars/{j.name}" for j in jars} <= keys
    assert any("spark-sql-kafka-0-10_2.13-4.0.2" in j for j in uploaded.jars)
    assert any("aws-msk-iam-auth" in j for j in uploaded.jars), "MSK IAM auth is needed on EMR"


def test_submit_builds_the_request_as_aws_reads_it(aws: tuple[Settings, str, str]) -> None:
    settings, application, bucket = aws
    jars = [j.name for j in artifacts.spark_jars(ROOT, "4.0.2")]
    job = emr.Artifacts.in_bucket(bucket, jars)
    run_id = emr.submit(settings, application, ROLE, job, log_group="/sensor-pipeline/dev/emr")

    described = aws_client(settings, "emr-serverless").get_job_run(applicationId=application, jobRunId=run_id)
    driver = described["jobRun"]["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"] == f"s3://{bucket}/jobs/structure_validate_store.py"
    assert driver["entryPointArguments"] == ["--checkpoint", f"s3://{bucket}/checkpoints/structure_validate_store/"]
    parameters = driver["sparkSubmitParameters"]
    assert f"--jars s3://{bucket}/jobs/jars/" in parameters and "spark.archives=" in parameters
    assert "spark.executor.instances=2" in parameters and "spark.driver.cores=2" in parameters
    (defaults,) = described["jobRun"]["configurationOverrides"]["applicationConfiguration"]
    assert defaults["properties"]["spark.executorEnv.SP_MONGO_URI"] == settings.mongo_uri
    assert not any("password" in key.lower() for key in defaults["properties"])
    # Nothing was uploaded: the emulator's EMR runner cannot fetch the entry point and fails the run.
    with pytest.raises(emr.EmrError, match="FAILED"):
        emr.wait_for_run(settings, application, run_id, ["RUNNING"], timeout=60)


def test_a_running_streaming_job_refuses_a_second_run_and_cancels_asynchronously(
    aws: tuple[Settings, str, str], tmp_path: Path
) -> None:
    """A real run: the emulator's EMR runner starts spark-submit on a job that runs until cancelled."""
    settings, application, bucket = aws
    entry = tmp_path / "until_cancelled.py"
    entry.write_text("import time\nwhile True:\n    time.sleep(1)\n")
    aws_client(settings, "s3").upload_file(str(entry), bucket, "jobs/until_cancelled.py")
    job = emr.Artifacts(bucket, f"s3://{bucket}/jobs/until_cancelled.py", archive=None, jars=())
    run_id = emr.submit(settings, application, ROLE, job, name="until_cancelled")
    assert emr.wait_for_run(settings, application, run_id, ["RUNNING"], timeout=120) == "RUNNING"
    first_workspace = ROOT / ".local-stack" / "emr-runs" / run_id
    assert (first_workspace / "job" / "until_cancelled.py").is_file(), "the run's entry point, from S3"

    with pytest.raises(emr.EmrError, match="already running"):
        emr.submit(settings, application, ROLE, job, name="until_cancelled")
    with pytest.raises(emr.EmrError, match="already running"):  # the same build is kept by a deploy
        emr.submit(settings, application, ROLE, job, name="until_cancelled", replace_other_build=True)

    # A deploy of another build (another jobs/<tag>/ entry point) replaces the running one.
    aws_client(settings, "s3").upload_file(str(entry), bucket, "jobs/v2/until_cancelled.py")
    newer = emr.Artifacts(bucket, f"s3://{bucket}/jobs/v2/until_cancelled.py", archive=None, jars=())
    replaced_by = emr.submit(settings, application, ROLE, newer, name="until_cancelled", replace_other_build=True)
    assert emr.status(settings, application, run_id)[0]["state"] == "CANCELLED"
    # A finished run's workspace goes, as a worker's disk does; what it was asked and printed stays.
    assert sorted(p.name for p in first_workspace.iterdir()) == ["driver.log", "request.json"]
    assert emr.wait_for_run(settings, application, replaced_by, ["RUNNING"], timeout=120) == "RUNNING"
    run_id = replaced_by

    assert emr.cancel(settings, application, run_id) == [run_id]
    assert emr.wait_for_run(settings, application, run_id, ["CANCELLED"], timeout=120) == "CANCELLED"
    assert emr.submit(settings, application, ROLE, newer, name="until_cancelled", force=False), "free again"
    emr.shutdown(settings, application, timeout=120)
    state = aws_client(settings, "emr-serverless").get_application(applicationId=application)["application"]["state"]
    assert state == "STOPPED"


def test_cli_reports_aws_errors_clearly(aws: tuple[Settings, str, str]) -> None:
    settings = aws[0]
    result = subprocess.run(
        [CLI, "emr", "status", "--application-id", "does-not-exist"],
        env=env(settings), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and "application id" in result.stderr
    result = subprocess.run(
        [CLI, "emr", "submit", "--application-id", "x"], env=env(settings), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "--bucket" in result.stderr
