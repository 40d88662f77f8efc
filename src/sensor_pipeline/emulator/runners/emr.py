"""The EMR Serverless runner: each submitted job run, run with spark-submit in local mode."""

from __future__ import annotations

import gzip
import json
import logging
import shlex
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensor_pipeline.emulator import moto_ext, translate
from sensor_pipeline.emulator.runners.base import (
    LOG_UPLOAD_SECONDS,
    Process,
    Runner,
    RunnerContext,
    _redacted,
    _write_private,
    pyspark_file,
    ship_logs,
)

log = logging.getLogger("sensor_pipeline.emulator")


def parse_spark_submit_parameters(text: str) -> tuple[dict[str, str], list[str]]:
    """``--conf k=v`` pairs and ``--jars`` of an EMR ``sparkSubmitParameters`` string."""
    conf: dict[str, str] = {}
    jars: list[str] = []
    words = shlex.split(text)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--conf" and i + 1 < len(words):
            key, _, value = words[i + 1].partition("=")
            conf[key] = value
            i += 2
        elif word == "--jars" and i + 1 < len(words):
            jars += [j for j in words[i + 1].split(",") if j]
            i += 2
        elif word.startswith("--") and i + 1 < len(words):
            conf[f"spark-submit{word}"] = words[i + 1]  # e.g. --driver-memory; kept as given
            i += 2
        else:
            raise ValueError(f"unsupported word in sparkSubmitParameters: {word!r}")
    return conf, jars


@dataclass
class EmrRun:
    application_id: str
    job: Any  # moto's JobRun
    folder: Path
    process: Process | None = None
    failures: list[float] = field(default_factory=list)
    last_upload: float = 0.0
    uploaded_size: int = -1
    command: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)


#: A run in one of these states never starts again (EMR Serverless's terminal job run states).
FINISHED = ("SUCCESS", "FAILED", "CANCELLED")
#: What a finished run keeps of its folder: what it was asked and what it printed (also in S3/CloudWatch).
KEPT = ("request.json", "driver.log")


def _working_in(folders: list[Path]) -> set[Path]:
    """The folders some live process has its working directory in (or below)."""
    busy: set[Path] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = (entry / "cwd").resolve(strict=True)
        except OSError:  # gone, or not ours to read
            continue
        busy.update(f for f in folders if cwd == f.resolve() or f.resolve() in cwd.parents)
    return busy


def _release(folder: Path) -> None:
    """A finished run's workspace goes, as an EMR Serverless worker's disk does: the entry point, jars
    and unpacked archives (a few hundred MB per run) would otherwise pile up in the stack's state."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name in KEPT:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


class EmrRunner(Runner):
    """Executes EMR Serverless job runs recorded by the emulator (see the module docstring)."""

    def __init__(self, context: RunnerContext) -> None:
        super().__init__(context, "emr-runner")
        self.runs: dict[str, EmrRun] = {}
        # Runs of an emulator before this one (stopped with it, or killed with a crashed stack), unless
        # a process still works in one (a driver that outlived a crash, for a moment).
        stale = sorted((context.state / "emr-runs").glob("*"))
        busy = _working_in(stale)
        for folder in stale:
            if folder not in busy:
                _release(folder)

    def stopped(self) -> None:
        for run in self.runs.values():
            _release(run.folder)

    def tick(self) -> None:
        for application_id, job in moto_ext.emr_job_runs():
            try:
                self._step(application_id, job)
            except Exception as error:  # one bad run fails, the others go on
                log.exception("job run %s: failed in the runner", job.id)
                if job.state not in FINISHED:
                    self._set(job, "FAILED", f"runner error: {error}")

    def _step(self, application_id: str, job: Any) -> None:
        # StartJobRun already auto-started the application (moto_ext): only the run is this runner's.
        run = self.runs.get(job.id)
        if job.state == "SUBMITTED" and run is None:
            run = self.runs[job.id] = EmrRun(application_id, job, self.context.state / "emr-runs" / job.id)
            self._set(job, "SCHEDULED", "preparing the run on the local stack")
            try:
                self._start(run)
            except Exception as error:  # a bad request fails the run, never the runner
                log.exception("job run %s could not start", job.id)
                self._set(job, "FAILED", f"could not start: {error}")
                return
            if job.state != "SCHEDULED":  # cancelled while it was being prepared
                if run.process is not None:
                    run.process.stop()
                self._set(job, "CANCELLED", "cancelled by request while starting")
                return
            job.attempt = 1
            self._set(job, "RUNNING", "attempt 1")
            return
        if job.state == "CANCELLING" and (run is None or run.process is None):
            self._set(job, "CANCELLED", "cancelled by request before it ran")
            return
        if run is None or run.process is None:
            return
        if job.state == "CANCELLING":
            code = run.process.stop()
            self._upload_logs(run)
            self._set(job, "CANCELLED", f"cancelled by request (exit {code})")
            return
        if job.state == "RUNNING" and not run.process.alive():
            code = run.process.exit_code()
            self._upload_logs(run)
            if code == 0:
                self._set(job, "SUCCESS", "")
                return
            if self._retry(run):
                log.warning("job run %s failed (exit %s); restarting within its retry policy", job.id, code)
                job.attempt = len(run.failures) + 1
                self._launch(run)
                self._set(job, "RUNNING", f"attempt {len(run.failures) + 1}: the previous one exited {code}")
                return
            self._set(job, "FAILED", f"driver exited {code}: {run.process.tail()}")
            return
        if job.state == "RUNNING" and time.monotonic() - run.last_upload > LOG_UPLOAD_SECONDS:
            self._upload_logs(run)

    def _set(self, job: Any, state: str, details: str) -> None:
        from moto.core.utils import utcnow

        run = self.runs.get(job.id)
        if state in FINISHED and run is not None and (run.process is None or not run.process.alive()):
            _release(run.folder)  # before the state: a client that sees the run finished finds it gone
        job.state = state
        job.state_details = details
        job.updated_at = utcnow()
        log.info("job run %s: %s %s", job.id, state, details)

    def _retry(self, run: EmrRun) -> bool:
        if getattr(run.job, "mode", "BATCH") != "STREAMING":
            return False
        policy = getattr(run.job, "retry_policy", None) or {}
        limit = int(policy.get("maxFailedAttemptsPerHour", 5))
        now = time.monotonic()
        run.failures = [t for t in run.failures if now - t < 3600] + [now]
        return len(run.failures) <= limit

    def _role(self, run: EmrRun) -> dict[str, str]:
        """A session of the run's execution role, as EMR Serverless assumes it for the run."""
        from sensor_pipeline.emulator import iam

        application = run.job.arn.split("/jobruns/")[0]
        return iam.assume_role_as_service(
            run.job.execution_role_arn, "emr-serverless.amazonaws.com", f"emr-{run.job.id}", application
        )

    def _download(self, uri: str, target: Path, credentials: dict[str, str]) -> Path:
        """EMR Serverless reads the entry point, jars and archives with the run's execution role."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.context.client("s3", credentials).download_file(bucket, key, str(target))
        except Exception as error:
            raise RuntimeError(f"{uri} could not be read with the execution role ({error})") from error
        return target

    def _start(self, run: EmrRun) -> None:
        driver = run.job.job_driver["sparkSubmit"]
        run.folder.mkdir(parents=True, exist_ok=True)
        credentials = self._role(run)
        # Spark properties: the application configuration's spark-defaults, then sparkSubmitParameters
        # (which win: EMR Serverless's order of precedence).
        conf: dict[str, str] = {}
        for classification in (run.job.configuration_overrides or {}).get("applicationConfiguration", []):
            if classification.get("classification") == "spark-defaults":
                conf |= {str(k): str(v) for k, v in (classification.get("properties") or {}).items()}
        submitted, jar_uris = parse_spark_submit_parameters(driver.get("sparkSubmitParameters", ""))
        conf |= submitted
        entry = self._download(driver["entryPoint"], run.folder / "job" / Path(driver["entryPoint"]).name, credentials)
        jars = [self._download(uri, run.folder / "jars" / Path(uri).name, credentials) for uri in jar_uris]
        archives = conf.pop("spark.archives", "")
        for spec in filter(None, archives.split(",")):
            uri, _, alias = spec.partition("#")
            packed = self._download(uri, run.folder / "archives" / Path(uri).name, credentials)
            with tarfile.open(packed) as archive:
                archive.extractall(run.folder / (alias or Path(uri).name), filter="tar")
        changes: list[str] = []
        login = self.context.kafka_login(run.job.execution_role_arn)
        ca = str(self.context.ca_file) if self.context.ca_file else ""
        driver_env = {
            k.removeprefix("spark.emr-serverless.driverEnv."): v for k, v in conf.items() if ".driverEnv." in k
        }
        conf = {k: v for k, v in conf.items() if ".driverEnv." not in k}
        env = translate.environment(driver_env, self.context.endpoint_url, login, ca)
        changes += env.changes
        executor = {
            k.removeprefix("spark.executorEnv."): v for k, v in conf.items() if k.startswith("spark.executorEnv.")
        }
        executor_env = translate.environment(executor, self.context.endpoint_url, login, ca).values
        conf = {k: v for k, v in conf.items() if not k.startswith("spark.executorEnv.")}
        # Local mode: the executors are threads of the driver's JVM, their Python workers its children.
        conf |= {f"spark.executorEnv.{k}": v for k, v in executor_env.items()}
        sized = translate.spark_conf(conf, scratch=run.folder / "scratch")
        changes += sized.changes
        arguments = list(driver.get("entryPointArguments", []))
        for i, arg in enumerate(arguments):
            if arg.startswith("s3://"):
                local = translate.s3_path(arg, self.context.state)
                arguments[i] = local.values["path"]
                changes += local.changes
        argv = [str(self.context.venv_bin / "spark-submit"), "--master", "local[2]"]
        changes.append("--master local[2] (EMR Serverless workers -> Spark local mode)")
        if jars:
            argv += ["--jars", ",".join(str(j) for j in jars)]
        for key, value in sized.values.items():
            if key.startswith("spark-submit--"):
                argv += [key.removeprefix("spark-submit"), value]
            elif not key.startswith("spark.emr-serverless."):
                argv += ["--conf", f"{key}={value}"]
        argv += ["--conf", "spark.ui.enabled=false", str(entry), *arguments]
        run.command = argv
        # EMR provides Spark (SPARK_HOME) and spark-submit puts its pyspark on the archive Python's path.
        spark_home = {"SPARK_HOME": str(Path(pyspark_file()).parent)}
        # The run's AWS calls (the DocumentDB secret) are signed with its execution role, as on EMR.
        # (Assumed as EMR assumes it: aws:SourceArn = the application.)
        role = self.context.credentials.grant(
            run.job.execution_role_arn, "emr-serverless.amazonaws.com", f"emr-{run.job.id}",
            run.job.arn.split("/jobruns/")[0],
        ) if self.context.credentials is not None else {}  # fmt: skip
        # Never the dummy root keys (sensor_pipeline.aws), nor a shared credentials file of this machine's
        # $HOME, which boto's chain reads before the container credentials endpoint.
        emr = {"AWS_EXECUTION_ENV": "AWS_EMR_SERVERLESS", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
               "AWS_CONFIG_FILE": "/dev/null"}  # fmt: skip
        run.environment = (
            self.context.base_env() | spark_home | env.values | role | emr | {"SP_EMULATED_BY": f"emr:{run.job.id}"}
        )
        for change in changes:
            log.info("job run %s: translated for the local stack: %s", run.job.id, change)
        _write_private(
            run.folder / "request.json",
            json.dumps(
                {"jobDriver": run.job.job_driver, "command": _redacted(argv), "translations": changes}, indent=2
            ),
        )
        self._launch(run)

    def _launch(self, run: EmrRun) -> None:
        run.process = Process.start(
            run.command,
            run.environment,
            cwd=run.folder,
            log_path=run.folder / "driver.log",
            term_group=False,
        )

    def _upload_logs(self, run: EmrRun) -> None:
        """Where the run's monitoring configuration sends logs (S3 as AWS lays them out; CloudWatch),
        written with the run's execution role as EMR Serverless does."""
        run.last_upload = time.monotonic()
        size = run.process.log_path.stat().st_size if run.process and run.process.log_path.exists() else 0
        if size == run.uploaded_size or run.process is None:
            return
        previous, run.uploaded_size = max(0, run.uploaded_size), size
        monitoring = (run.job.configuration_overrides or {}).get("monitoringConfiguration", {})
        try:
            credentials = self._role(run)
        except Exception as error:
            log.warning("job run %s: logs not written (%s)", run.job.id, error)
            return
        uri = monitoring.get("s3MonitoringConfiguration", {}).get("logUri")
        if uri:
            bucket, _, prefix = uri.removeprefix("s3://").partition("/")
            body = gzip.compress(run.process.log_path.read_bytes())
            key = f"{prefix.rstrip('/')}/applications/{run.application_id}/jobs/{run.job.id}/SPARK_DRIVER/stderr.gz"
            try:
                s3 = self.context.client("s3", credentials)
                s3.put_object(Bucket=bucket, Key=key.lstrip("/"), Body=body)
                s3.put_object(Bucket=bucket, Key=key.lstrip("/").replace("stderr.gz", "stdout.gz"), Body=body)
            except Exception as error:  # the bucket may be gone during a destroy; a denial is recorded by IAM
                log.warning("job run %s: logs not uploaded to S3 (%s)", run.job.id, error)
        cloudwatch = monitoring.get("cloudWatchLoggingConfiguration", {})
        if cloudwatch.get("enabled") and cloudwatch.get("logGroupName"):
            with run.process.log_path.open("rb") as handle:
                handle.seek(previous)
                lines = handle.read().decode(errors="replace").splitlines()
            path = f"applications/{run.application_id}/jobs/{run.job.id}/SPARK_DRIVER/stdout"
            stream = f"{cloudwatch.get('logStreamNamePrefix', '')}/{path}".lstrip("/")
            try:
                ship_logs(self.context.client("logs", credentials), cloudwatch["logGroupName"], stream, lines,
                          describe_group=True)  # fmt: skip
            except Exception as error:
                log.warning("job run %s: logs not written to CloudWatch (%s)", run.job.id, error)

    def processes(self) -> list[Process]:
        return [run.process for run in list(self.runs.values()) if run.process is not None]
