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
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError

from sensor_pipeline.aws import aws_client
from sensor_pipeline.config import Settings

JOB_NAME = "structure_validate_store"
ACTIVE_STATES = ("SUBMITTED", "PENDING", "SCHEDULED", "RUNNING", "QUEUED")
FINAL_STATES = ("SUCCESS", "FAILED", "CANCELLED")
JOB_PREFIX = "jobs/"


class EmrError(RuntimeError):
    """An EMR Serverless or S3 call failed; the message says what to do."""


@dataclass(frozen=True)
class JobSize:
    """Driver and executor sizes of the streaming run, set at submit (EMR's defaults are 4 vCPU / 14 GB each).

    Each Spark process runs on its own EMR Serverless worker of ``cores`` vCPU and ``memory`` plus
    overhead (``spark.*.memoryOverhead``: 10 %, at least 384 MB), rounded up to a whole GB; the sum
    over the driver and the executors must fit the application's maximum capacity (infra/emr.tf,
    ``emr_max_capacity``). Valid workers: 1 vCPU 2-8 GB, 2 vCPU 4-16 GB, 4 vCPU 8-30 GB, 8 vCPU 16-60 GB,
    16 vCPU 32-120 GB (EMR Serverless User Guide, "Understanding application behavior": worker
    configurations and the 10 % / 384 MB overhead; https://docs.aws.amazon.com/emr/latest/EMR-Serverless-UserGuide/app-behavior.html).
    The job is a steady stream, so the executors are a fixed number (no dynamic allocation).
    """

    driver_cores: int = 2
    driver_memory_gb: int = 4
    executor_cores: int = 2
    executor_memory_gb: int = 4
    executors: int = 2

    WORKER_MEMORY: ClassVar[dict[int, tuple[int, int]]] = {
        1: (2, 8),
        2: (4, 16),
        4: (8, 30),
        8: (16, 60),
        16: (32, 120),
    }

    @staticmethod
    def worker_memory_gb(memory_gb: int, cores: int) -> int:
        """Memory + overhead, rounded up to the worker's step (1 GB; 4 GB for 8 vCPU, 8 GB for 16 vCPU)."""
        step = {8: 4, 16: 8}.get(cores, 1)
        overhead = max(0.384, 0.10 * memory_gb)
        return step * math.ceil((memory_gb + overhead) / step)

    def workers(self) -> list[tuple[int, int]]:
        """(vCPU, GB) of every worker the run asks for: the driver first."""
        driver = (self.driver_cores, self.worker_memory_gb(self.driver_memory_gb, self.driver_cores))
        executor = (self.executor_cores, self.worker_memory_gb(self.executor_memory_gb, self.executor_cores))
        return [driver] + [executor] * self.executors

    def check(self, max_cpu: float | None = None, max_memory_gb: float | None = None) -> None:
        for cores, memory in self.workers():
            if cores not in self.WORKER_MEMORY:
                raise EmrError(f"{cores} vCPU is not an EMR Serverless worker size: use 1, 2, 4, 8 or 16")
            low, high = self.WORKER_MEMORY[cores]
            if not low <= memory <= high:
                raise EmrError(
                    f"a {cores} vCPU worker takes {low}-{high} GB, but {memory} GB (memory + overhead) was asked for"
                )
        cpu = sum(c for c, _ in self.workers())
        memory = sum(m for _, m in self.workers())
        if (max_cpu is not None and cpu > max_cpu) or (max_memory_gb is not None and memory > max_memory_gb):
            raise EmrError(
                f"the run needs {cpu} vCPU and {memory} GB (driver + {self.executors} executors with overhead), "
                f"more than the application's maximum capacity ({max_cpu} vCPU, {max_memory_gb} GB): "
                "raise emr_max_capacity in your tfvars and `make deploy`, or submit with fewer/smaller executors"
            )

    def spark_conf(self) -> dict[str, str]:
        return {
            "spark.driver.cores": str(self.driver_cores),
            "spark.driver.memory": f"{self.driver_memory_gb}g",
            "spark.executor.cores": str(self.executor_cores),
            "spark.executor.memory": f"{self.executor_memory_gb}g",
            "spark.executor.instances": str(self.executors),
            "spark.dynamicAllocation.enabled": "false",
        }


def _capacity(value: str | None) -> float | None:
    """ "8 vCPU" / "32 GB" / "32768 MB" as a number of vCPU or GB."""
    if not value:
        return None
    match = re.match(r"\s*([0-9.]+)\s*([A-Za-z]*)", value)
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2).upper()
    return number / 1024 if unit == "MB" else number


@dataclass(frozen=True)
class Artifacts:
    """Where a job run finds its code in S3."""

    bucket: str
    entry_point: str
    archive: str | None
    jars: tuple[str, ...]

    @classmethod
    def in_bucket(
        cls, bucket: str, jar_names: Iterable[str], with_archive: bool = True, version: str | None = None
    ) -> Artifacts:
        """Where the job's files are: ``jobs/`` or, for a deploy, ``jobs/<version>/`` (one folder a build,
        so a running job never has its files replaced under it and a new build is a new entry point)."""
        base = f"s3://{bucket}/{JOB_PREFIX}{version + '/' if version else ''}"
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


def upload(
    settings: Settings,
    bucket: str,
    job_file: Path,
    jars: list[Path],
    archive: Path | None,
    version: str | None = None,
) -> Artifacts:
    """Upload the job's entry point, connector jars and (when built) the venv archive."""
    s3 = aws_client(settings, "s3")
    artifacts = Artifacts.in_bucket(bucket, [j.name for j in jars], with_archive=archive is not None, version=version)
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
        "SP_JOB_GROUP": settings.job_group,
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


def spark_submit_parameters(artifacts: Artifacts, size: JobSize | None = None) -> str:
    """Jars, the archive and the sizes: what contains no setting value (those go in spark_defaults)."""
    parts = ["--conf spark.sql.session.timeZone=UTC"]
    parts += [f"--conf {key}={value}" for key, value in (size or JobSize()).spark_conf().items()]
    if artifacts.jars:
        parts.append(f"--jars {','.join(artifacts.jars)}")
    if artifacts.archive:
        parts += [
            f"--conf spark.archives={artifacts.archive}#environment",
            "--conf spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON=./environment/bin/python",
            "--conf spark.emr-serverless.driverEnv.PYSPARK_PYTHON=./environment/bin/python",
            "--conf spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python",
        ]
    return " ".join(parts)


def spark_defaults(environment: dict[str, str]) -> dict[str, str]:
    """The job's settings as Spark properties for the driver and the executors, passed in the run's
    ``applicationConfiguration`` (classification ``spark-defaults``: a JSON map, where a Mongo URI's
    ``?`` and ``&`` are plain characters) rather than in ``sparkSubmitParameters``, a string EMR
    splits itself. Both are documented ways to set ``spark.emr-serverless.driverEnv.[KEY]`` and
    ``spark.executorEnv.[KEY]``; the submit parameters win when both set one
    (https://docs.aws.amazon.com/emr/latest/EMR-Serverless-UserGuide/jobs-spark.html)."""
    properties = {}
    for key, value in environment.items():
        properties[f"spark.emr-serverless.driverEnv.{key}"] = value
        properties[f"spark.executorEnv.{key}"] = value
    return properties


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
    size: JobSize | None = None,
    replace_other_build: bool = False,
) -> str:
    """Start the streaming job run; refuses while another run of the same job is active.

    With ``replace_other_build`` (what ``make deploy`` uses), an active run of a *different* entry
    point (an older build) is cancelled, waited for, and replaced; one of the same build is kept (the
    refusal names it). The checkpoint is the same, so the new run resumes where the old one stopped.
    """
    size = size or JobSize()
    emr = aws_client(settings, "emr-serverless")
    application = _call("reading the application", emr.get_application, applicationId=application_id)["application"]
    maximum = application.get("maximumCapacity", {})
    size.check(_capacity(maximum.get("cpu")), _capacity(maximum.get("memory")))
    running = active_runs(settings, application_id, name)
    if running and replace_other_build and not force:
        older = [r["id"] for r in running if _entry_point(emr, application_id, r["id"]) != artifacts.entry_point]
        _cancel_and_wait(settings, application_id, older)
        running = [r for r in running if r["id"] not in older]
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
                "sparkSubmitParameters": spark_submit_parameters(artifacts, size),
            }
        },
        configurationOverrides={
            "applicationConfiguration": [
                {
                    "classification": "spark-defaults",
                    "properties": spark_defaults(job_environment(settings, checkpoint)),
                }
            ],
            "monitoringConfiguration": monitoring,
        },
        tags={"job": name},
    )
    return str(response["jobRunId"])


def _entry_point(emr: Any, application_id: str, run_id: str) -> str:
    run = _call("reading the job run", emr.get_job_run, applicationId=application_id, jobRunId=run_id)["jobRun"]
    return str(run["jobDriver"]["sparkSubmit"]["entryPoint"])


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


def wait_for_run(
    settings: Settings,
    application_id: str,
    run_id: str,
    states: Iterable[str],
    timeout: float = 600.0,
    stable_seconds: float = 0.0,
) -> str:
    """Poll a run until it is in one of ``states``; a run that ends elsewhere, or a timeout, raises.

    With ``stable_seconds``, the run must then stay in that state, in the same attempt, that long: a
    streaming driver that dies at its first batch and is restarted by the retry policy is not
    "running". The attempt is the run's ``attempt`` number (GetJobRun, "The attempt of the job run",
    https://docs.aws.amazon.com/emr-serverless/latest/APIReference/API_JobRun.html); ``stateDetails``
    is free text that EMR may update while the state holds, so it is not compared.
    """
    wanted = set(states)
    emr = aws_client(settings, "emr-serverless")
    deadline = time.monotonic() + timeout
    while True:
        run = _call("reading the job run", emr.get_job_run, applicationId=application_id, jobRunId=run_id)["jobRun"]
        state = str(run["state"])
        if state in wanted:
            if stable_seconds > 0:
                _stays(emr, application_id, run_id, state, int(run.get("attempt", 1)), stable_seconds)
            return state
        if state in FINAL_STATES or time.monotonic() > deadline:  # ended elsewhere
            raise EmrError(
                f"job run {run_id} is {state} ({run.get('stateDetails', '')}), not {'/'.join(sorted(wanted))}; "
                + _see_logs(application_id, run_id)
            )
        time.sleep(2)


def _stays(emr: Any, application_id: str, run_id: str, state: str, attempt: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(3)
        run = _call("reading the job run", emr.get_job_run, applicationId=application_id, jobRunId=run_id)["jobRun"]
        now = (str(run["state"]), int(run.get("attempt", 1)))
        if now != (state, attempt):
            raise EmrError(
                f"job run {run_id} did not stay {state} in attempt {attempt}: now {now[0]}, attempt {now[1]} "
                f"({run.get('stateDetails', '')}); " + _see_logs(application_id, run_id)
            )


def _see_logs(application_id: str, run_id: str) -> str:
    return f"see `sensor-pipeline emr logs --application-id {application_id} --run-id {run_id}`"


def _cancel_and_wait(settings: Settings, application_id: str, run_ids: list[str], timeout: float = 600.0) -> None:
    """CancelJobRun is asynchronous: cancel every run, then wait until each has ended."""
    emr = aws_client(settings, "emr-serverless")
    for run_id in run_ids:
        _call(f"cancelling {run_id}", emr.cancel_job_run, applicationId=application_id, jobRunId=run_id)
    for run_id in run_ids:
        wait_for_run(settings, application_id, run_id, FINAL_STATES, timeout)


def wait_for_application(settings: Settings, application_id: str, state: str, timeout: float = 600.0) -> None:
    emr = aws_client(settings, "emr-serverless")
    deadline = time.monotonic() + timeout
    while True:
        current = _call("reading the application", emr.get_application, applicationId=application_id)
        if current["application"]["state"] == state:
            return
        if time.monotonic() > deadline:
            raise EmrError(f"application {application_id} is {current['application']['state']}, not {state}")
        time.sleep(2)


def shutdown(settings: Settings, application_id: str, timeout: float = 600.0) -> list[str]:
    """What DeleteApplication needs: every run cancelled (CancelJobRun is asynchronous), then STOPPED.

    AWS: DeleteApplication accepts only a CREATED or STOPPED application, and StopApplication only one
    whose runs are all finished (EMR Serverless API Reference, DeleteApplication / StopApplication).
    """
    emr = aws_client(settings, "emr-serverless")
    cancelling = [r["id"] for r in _list_runs(settings, application_id, states=["CANCELLING"])]
    cancelled = [r["id"] for r in _list_runs(settings, application_id, states=list(ACTIVE_STATES))]
    _cancel_and_wait(settings, application_id, cancelled, timeout)  # every run of the application, whatever its name
    for run_id in cancelling:  # cancelled before, still ending
        wait_for_run(settings, application_id, run_id, FINAL_STATES, timeout)
    state = _call("reading the application", emr.get_application, applicationId=application_id)["application"]
    if state["state"] not in ("CREATED", "STOPPED", "TERMINATED"):
        _call("stopping the application", emr.stop_application, applicationId=application_id)
        wait_for_application(settings, application_id, "STOPPED", timeout)
    return cancelled


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
