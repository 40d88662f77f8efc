"""The EMR job-run client's own rules, with AWS replaced by moto in-process (unit tests only)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sensor_pipeline.cloud import emr
from sensor_pipeline.config import Settings

ROLE = "arn:aws:iam::123456789012:role/job"


@pytest.fixture
def application(mocked_aws: None) -> Iterator[tuple[Settings, str]]:
    import boto3

    client = boto3.client("emr-serverless", region_name="us-east-1")
    app = client.create_application(name="unit", releaseLabel="emr-7.0.0", type="SPARK")["applicationId"]
    yield Settings(aws_endpoint_url=""), app


def test_a_second_streaming_run_is_refused_while_one_is_active(
    application: tuple[Settings, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, app = application
    # moto reports runs finished at once; AWS keeps a streaming run RUNNING: stand in for that state.
    running = [{"id": "00run", "name": emr.JOB_NAME, "state": "RUNNING"}]
    monkeypatch.setattr(emr, "active_runs", lambda *_a, **_k: running)
    job = emr.Artifacts.in_bucket("bucket", ["spark-sql-kafka.jar"])
    with pytest.raises(emr.EmrError, match=r"already running.*--force"):
        emr.submit(settings, app, ROLE, job)
    assert emr.submit(settings, app, ROLE, job, force=True)


def test_the_run_is_streaming_with_retries_and_the_secret_only_by_arn(application: tuple[Settings, str]) -> None:
    settings, app = application
    uri = "mongodb://docdb.example:27017/?tls=true&replicaSet=rs0&readPreference=secondaryPreferred"
    settings = settings.model_copy(
        update={"mongo_secret_arn": "arn:aws:secretsmanager:us-east-1:1:secret:x", "mongo_uri": uri}
    )
    job = emr.Artifacts.in_bucket("bucket", ["a.jar", "b.jar"])
    parameters = emr.spark_submit_parameters(job)
    assert "--jars s3://bucket/jobs/jars/a.jar,s3://bucket/jobs/jars/b.jar" in parameters
    assert "spark.sql.session.timeZone=UTC" in parameters
    assert "SP_" not in parameters, "settings travel as spark-defaults, never inside the submit string"
    run_id = emr.submit(settings, app, ROLE, job)
    import boto3

    described: dict[str, Any] = boto3.client("emr-serverless", region_name="us-east-1").get_job_run(
        applicationId=app, jobRunId=run_id
    )["jobRun"]
    assert described["jobDriver"]["sparkSubmit"]["entryPoint"] == "s3://bucket/jobs/structure_validate_store.py"
    assert described["executionRole"] == ROLE
    (defaults,) = described["configurationOverrides"]["applicationConfiguration"]
    assert defaults["classification"] == "spark-defaults"
    properties = defaults["properties"]
    # The URI's ? and & arrive whole, for the driver and the executors; the password never (only the ARN).
    assert properties["spark.emr-serverless.driverEnv.SP_MONGO_URI"] == uri
    assert properties["spark.executorEnv.SP_MONGO_URI"] == uri
    assert properties["spark.executorEnv.SP_MONGO_SECRET_ARN"] == "arn:aws:secretsmanager:us-east-1:1:secret:x"


def test_default_job_size_fits_the_default_application_capacity() -> None:
    size = emr.JobSize()
    # driver + 2 executors, 2 vCPU and 4 GB + 10 % overhead (5 GB workers) each: 6 vCPU, 15 GB <= 8 vCPU, 32 GB
    assert size.workers() == [(2, 5), (2, 5), (2, 5)]
    size.check(8, 32)
    conf = size.spark_conf()
    assert conf["spark.executor.instances"] == "2" and conf["spark.dynamicAllocation.enabled"] == "false"
    assert "--conf spark.driver.memory=4g" in emr.spark_submit_parameters(emr.Artifacts.in_bucket("b", []), size)


def test_a_run_larger_than_the_application_is_refused_with_what_to_change() -> None:
    with pytest.raises(emr.EmrError, match="emr_max_capacity"):
        emr.JobSize(executors=4).check(8, 32)
    with pytest.raises(emr.EmrError, match="2-8 GB"):
        emr.JobSize(driver_cores=1, driver_memory_gb=8).check()  # 8 GB + overhead does not fit a 1 vCPU worker
    with pytest.raises(emr.EmrError, match="worker size"):
        emr.JobSize(executor_cores=3).check()


def test_submit_checks_the_size_against_the_application(application: tuple[Settings, str]) -> None:
    settings, _ = application
    import boto3

    app = boto3.client("emr-serverless", region_name="us-east-1").create_application(
        name="small", releaseLabel="emr-7.0.0", type="SPARK", maximumCapacity={"cpu": "4 vCPU", "memory": "16 GB"}
    )["applicationId"]
    with pytest.raises(emr.EmrError, match="maximum capacity"):
        emr.submit(settings, app, ROLE, emr.Artifacts.in_bucket("bucket", []))
    assert emr.submit(settings, app, ROLE, emr.Artifacts.in_bucket("bucket", []), size=emr.JobSize(executors=1))


def test_a_deploy_uploads_each_build_to_its_own_folder() -> None:
    build = emr.Artifacts.in_bucket("b", ["a.jar"], version="0123abcd")
    assert build.entry_point == "s3://b/jobs/0123abcd/structure_validate_store.py"
    assert build.archive == "s3://b/jobs/0123abcd/pyspark_venv.tar.gz"
    assert build.jars == ("s3://b/jobs/0123abcd/jars/a.jar",)
