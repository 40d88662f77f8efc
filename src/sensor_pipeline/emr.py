"""EMR Serverless job runs of the streaming job, and the artifacts they need in S3 (boto3).

    sensor-pipeline emr upload  --bucket B                   job file, venv archive, connector jars -> S3
    sensor-pipeline emr submit  --application-id A --role-arn R --bucket B [--force]
    sensor-pipeline emr status  --application-id A [--run-id J]
    sensor-pipeline emr cancel  --application-id A [--run-id J]
    sensor-pipeline emr logs    --application-id A --run-id J --bucket B

The job runs in STREAMING mode with a retry policy; the entry point, the project's packed venv
(``spark.archives``) and the Kafka connector jars (``--jars``) come from S3, so the job never downloads
packages in its private VPC. Settings reach the driver and executors as ``SP_*`` environment
variables; the DocumentDB password is read at run time from its secret, by ARN, never passed by value.
Point ``SP_AWS_ENDPOINT_URL`` at the local emulator (http://127.0.0.1:4566) to run all of this locally.

Errors: every AWS error becomes an :class:`EmrError` whose message says what failed and what to check.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sensor_pipeline.aws import aws_client
from sensor_pipeline.config import Settings

JOB_NAME = "structure_validate_store"
ACTIVE_STATES = ("SUBMITTED", "PENDING", "SCHEDULED", "RUNNING", "QUEUED")
JOB_PREFIX = "jobs/"


class EmrError(RuntimeError):
    """An EMR Serverless or S3 call failed; the message says what to do."""


@dataclass(frozen=True)
class Artifacts:
    """Where a job run finds its code in S3."""

    bucket: str
    entry_point: str
    archive: str | None
    jars: tuple[str, ...]

    @classmethod
    def in_bucket(cls, bucket: str, jar_names: Iterable[str], with_archive: bool = True) -> Artifacts:
        base = f"s3://{bucket}/{JOB_PREFIX}"
        return cls(
            bucket=bucket,
            entry_point=f"{base}{JOB_NAME}.py",
            archive=f"{base}pyspark_venv.tar.gz" if with_archive else None,
            jars=tuple(f"{base}jars/{name}" for name in sorted(jar_names)),
        )


def _client_error(what: str, error: ClientError) -> EmrError:
    info = error.response.get("Error", {})
    return EmrError(
        f"{what} failed: {info.get('Code', 'error')}: {info.get('Message', error)}. "
        "Check the application id / bucket, your AWS credentials and region (SP_AWS_REGION)."
    )


def _call(what: str, function: Any, **kwargs: Any) -> Any:
    try:
        return function(**kwargs)
    except ClientError as error:
        raise _client_error(what, error) from error
    except BotoCoreError as error:
        raise EmrError(f"{what} failed: {error}. Is the endpoint reachable (SP_AWS_ENDPOINT_URL)?") from error


# --- artifacts ---------------------------------------------------------------------------------


def upload(settings: Settings, bucket: str, job_file: Path, jars: list[Path], archive: Path | None) -> Artifacts:
    """Upload the job's entry point, connector jars and (when built) the venv archive."""
    s3 = aws_client(settings, "s3")
    artifacts = Artifacts.in_bucket(bucket, [j.name for j in jars], with_archive=archive is not None)
    uploads = [(job_file, artifacts.entry_point), *zip(jars, artifacts.jars, strict=True)]
    if archive is not None and artifacts.archive:
        uploads.append((archive, artifacts.archive))
    for path, uri in uploads:
        if not path.is_file():
            raise EmrError(f"{path} does not exist: run `make package-job` first")
        key = uri.removeprefix(f"s3://{bucket}/")
        _call(f"upload of {path.name} to {uri}", s3.upload_file, Filename=str(path), Bucket=bucket, Key=key)
    return artifacts


# --- job runs ----------------------------------------------------------------------------------


def job_environment(settings: Settings, checkpoint: str) -> dict[str, str]:
    """The SP_* settings the job needs, for the driver and the executors."""
    values = {
        "SP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SP_KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "SP_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "SP_RAW_TOPIC": settings.raw_topic,
        "SP_CLEAN_TOPIC": settings.clean_topic,
        "SP_INVALID_TOPIC": settings.invalid_topic,
        "SP_MONGO_URI": settings.mongo_uri,
        "SP_MONGO_DATABASE": settings.mongo_database,
        "SP_MONGO_COLLECTION": settings.mongo_collection,
        "SP_MONGO_SECRET_ARN": settings.mongo_secret_arn,
        "SP_MONGO_TLS_CA_FILE": settings.mongo_tls_ca_file,
        "SP_CHECKPOINT_LOCATION": checkpoint,
        "SP_TRIGGER_SECONDS": str(settings.trigger_seconds),
        "SP_AWS_REGION": settings.aws_region,
    }
    return {k: v for k, v in values.items() if v}


def spark_submit_parameters(artifacts: Artifacts, environment: dict[str, str]) -> str:
    parts = ["--conf spark.sql.session.timeZone=UTC"]
    if artifacts.jars:
        parts.append(f"--jars {','.join(artifacts.jars)}")
    if artifacts.archive:
        parts += [
            f"--conf spark.archives={artifacts.archive}#environment",
            "--conf spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON=./environment/bin/python",
            "--conf spark.emr-serverless.driverEnv.PYSPARK_PYTHON=./environment/bin/python",
            "--conf spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python",
        ]
    for key, value in environment.items():
        parts.append(f"--conf spark.emr-serverless.driverEnv.{key}={value}")
        parts.append(f"--conf spark.executorEnv.{key}={value}")
    return " ".join(parts)


def _list_runs(settings: Settings, application_id: str, **filters: Any) -> list[dict[str, Any]]:
    emr = aws_client(settings, "emr-serverless")
    try:
        response = emr.list_job_runs(applicationId=application_id, **filters)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise _client_error("listing job runs", error) from error
        # moto answers "application does not exist" for an application without runs: check which.
        _call("reading the application", emr.get_application, applicationId=application_id)
        return []
    return list(response.get("jobRuns", []))


def active_runs(settings: Settings, application_id: str, name: str = JOB_NAME) -> list[dict[str, Any]]:
    runs = _list_runs(settings, application_id, states=list(ACTIVE_STATES))
    return [run for run in runs if run.get("name") == name]


def submit(
    settings: Settings,
    application_id: str,
    role_arn: str,
    artifacts: Artifacts,
    log_group: str | None = None,
    force: bool = False,
    name: str = JOB_NAME,
) -> str:
    """Start the streaming job run; refuses while another run of the same job is active."""
    running = active_runs(settings, application_id, name)
    if running and not force:
        ids = ", ".join(r["id"] for r in running)
        raise EmrError(
            f"{name} is already running ({ids}): two streaming runs would share one checkpoint. "
            "Cancel it first (`sensor-pipeline emr cancel`) or pass --force."
        )
    checkpoint = f"s3://{artifacts.bucket}/checkpoints/{name}/"
    monitoring: dict[str, Any] = {
        "s3MonitoringConfiguration": {"logUri": f"s3://{artifacts.bucket}/emr-logs/"},
    }
    if log_group:
        monitoring["cloudWatchLoggingConfiguration"] = {"enabled": True, "logGroupName": log_group}
    emr = aws_client(settings, "emr-serverless")
    response = _call(
        "starting the job run",
        emr.start_job_run,
        applicationId=application_id,
        executionRoleArn=role_arn,
        name=name,
        mode="STREAMING",
        retryPolicy={"maxFailedAttemptsPerHour": 5},
        jobDriver={
            "sparkSubmit": {
                "entryPoint": artifacts.entry_point,
                "entryPointArguments": ["--checkpoint", checkpoint],
                "sparkSubmitParameters": spark_submit_parameters(artifacts, job_environment(settings, checkpoint)),
            }
        },
        configurationOverrides={"monitoringConfiguration": monitoring},
        tags={"job": name},
    )
    return str(response["jobRunId"])


def status(settings: Settings, application_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """State of one run, or of this job's recent runs, with the Spark UI link where AWS gives one."""
    emr = aws_client(settings, "emr-serverless")
    if run_id:
        runs = [_call("reading the job run", emr.get_job_run, applicationId=application_id, jobRunId=run_id)["jobRun"]]
    else:
        runs = [r for r in _list_runs(settings, application_id) if r.get("name") == JOB_NAME][:10]
    result = []
    for run in runs:
        identifier = run.get("jobRunId") or run.get("id")
        try:
            dashboard = emr.get_dashboard_for_job_run(applicationId=application_id, jobRunId=identifier)["url"]
        except (ClientError, BotoCoreError, KeyError):
            dashboard = None  # only while a run is active on AWS; the emulator does not implement it
        result.append(
            {
                "id": identifier,
                "name": run.get("name"),
                "state": run.get("state"),
                "details": run.get("stateDetails", ""),
                "dashboard": dashboard,
            }
        )
    return result


def cancel(settings: Settings, application_id: str, run_id: str | None = None) -> list[str]:
    """Cancel one run, or every active run of the job; returns the cancelled ids."""
    emr = aws_client(settings, "emr-serverless")
    ids = [run_id] if run_id else [r["id"] for r in active_runs(settings, application_id)]
    for identifier in ids:
        _call(f"cancelling {identifier}", emr.cancel_job_run, applicationId=application_id, jobRunId=identifier)
    return ids


def stop_application(settings: Settings, application_id: str) -> None:
    emr = aws_client(settings, "emr-serverless")
    _call("stopping the application", emr.stop_application, applicationId=application_id)


def logs(settings: Settings, application_id: str, run_id: str, bucket: str, stream: str = "stdout") -> str:
    """The driver's log from the run's S3 monitoring folder."""
    s3 = aws_client(settings, "s3")
    key = f"emr-logs/applications/{application_id}/jobs/{run_id}/SPARK_DRIVER/{stream}.gz"
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        raise EmrError(
            f"no driver log at s3://{bucket}/{key} yet ({error.response.get('Error', {}).get('Code')}); "
            "logs appear while the run is active and for 30 days after. CloudWatch has them too."
        ) from error
    return gzip.decompress(body).decode(errors="replace")
