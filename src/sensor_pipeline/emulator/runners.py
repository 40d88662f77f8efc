"""Runners that make the emulator's ECS and EMR Serverless do what AWS does: run what was submitted.

moto records ECS services, ECS tasks and EMR Serverless job runs but runs nothing. For the deploy
rehearsal (``make deploy ENV=local``) these runners, threads of the emulator process, execute them on
the local stack, as local processes:

* :class:`EmrRunner` — each submitted job run: downloads the entry point, ``--jars`` and
  ``spark.archives`` from the emulator's S3, unpacks the archive as ``./environment`` in the run's
  working folder, applies the ``sparkSubmitParameters`` (``--conf``, ``driverEnv``/``executorEnv``) and
  the entry point's arguments, and runs ``spark-submit`` in local mode with the archive's Python. It
  moves the run through SUBMITTED -> SCHEDULED -> RUNNING -> SUCCESS | FAILED, restarts a failed
  STREAMING run within its retry policy, finishes a cancellation (CANCELLING -> CANCELLED), and uploads
  the driver's stdout/stderr where ``monitoringConfiguration`` says (``sensor-pipeline emr logs``).
* :class:`EcsRunner` — each ECS service with a desired count (one process) and each task started with
  RunTask: the container's command from the project's venv, with the task definition's environment
  and its ``secrets`` resolved from the emulator's Secrets Manager. A task's exit code is reported back
  (``DescribeTasks``), a deleted service's process is stopped.

What must change to run on one machine is translated in :mod:`.translate`, and logged. Processes run
in their own session and are stopped (TERM, then KILL) with the emulator, so nothing outlives it.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensor_pipeline.emulator import moto_ext, translate

log = logging.getLogger("sensor_pipeline.emulator")
POLL_SECONDS = 1.0
STOP_GRACE_SECONDS = 30.0
LOG_UPLOAD_SECONDS = 15.0


@dataclass
class Process:
    """A child process started by a runner, with its log file."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    #: TERM the whole process group (an ECS task) or its leader only: a Spark driver, whose JVM hands
    #: TERM to the job's graceful stop, as the driver's container alone is signalled on EMR; KILL
    #: after the grace period always goes to the whole group.
    term_group: bool = True

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path, term_group: bool = True) -> Process:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        _load_libc()
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped as a whole
                # Only an async-signal-safe libc call runs in the child (libc is loaded beforehand).
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        return cls(popen, log_path, term_group)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """TERM (see :attr:`term_group`), then KILL the whole process group after ``grace``."""
        stop_all([self], grace)
        return self.exit_code()

    def exit_code(self) -> int:
        """As ECS reports it: 128 + the signal for a process killed by one."""
        code = int(self.popen.returncode)
        return 128 - code if code < 0 else code

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


_LIBC: Any = None


def _die_with_parent() -> None:
    """In the child: be killed if the emulator dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG).

    The signal comes when the thread that started the child ends: runner threads stop their children
    gracefully before they end (:meth:`Runner.run`).
    """
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)


def _load_libc() -> None:
    global _LIBC
    if _LIBC is None:
        import ctypes

        with contextlib.suppress(OSError):
            _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def stop_all(processes: list[Process], grace: float = STOP_GRACE_SECONDS) -> None:
    """TERM every process group at once, wait against one deadline, then KILL what is left."""
    live = [p for p in processes if p.alive()]
    for process in live:
        if process.term_group:
            _signal_group(process.popen.pid, signal.SIGTERM)
        else:
            with contextlib.suppress(ProcessLookupError):
                process.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(max(0.1, deadline - time.monotonic()))
    for process in live:
        # The whole group, even when its leader has ended: a Spark driver stopped gracefully leaves
        # its Python daemon and workers behind (ECS and EMR stop the whole container).
        leader_alive = process.alive()
        _signal_group(process.popen.pid, signal.SIGKILL)
        if leader_alive:
            process.popen.wait(10)


@dataclass(frozen=True)
class RunnerContext:
    """What both runners need to know about the local stack and the emulator's enforcement."""

    state: Path  # .local-stack/
    venv_bin: Path  # the project's venv (sensor-pipeline, spark-submit)
    endpoint_url: str  # this emulator, for the processes' AWS calls
    root: Path | None = None  # the checkout (docker/Dockerfile: the image's configuration)
    credentials: Any = None  # credentials.CredentialsServer: a workload's role credentials
    msk: Any = None  # msk_sync.MskSync: a role's Kafka login, ACLs synced before a workload starts
    ca_file: Path | None = None  # the local CA (what TLS clients of the broker and DocumentDB trust)
    sandbox: bool = True  # run ECS containers under bwrap as Fargate would (needs bubblewrap)

    def client(self, service: str, credentials: dict[str, str] | None = None) -> Any:
        """A boto3 client of the emulator: as the account root, or with a role session's credentials."""
        import boto3

        keys = (
            {"aws_access_key_id": credentials["AccessKeyId"], "aws_secret_access_key": credentials["SecretAccessKey"],
             "aws_session_token": credentials["Token"]}
            if credentials
            else {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
        )  # fmt: skip
        # A session per call: boto3's default session is not safe to share between threads.
        return boto3.session.Session().client(  # type: ignore[call-overload]
            service, endpoint_url=self.endpoint_url, region_name="us-east-1", **keys
        )

    def base_env(self) -> dict[str, str]:
        """A clean environment: none of the emulator's own variables leak into a job run."""
        keep = ("HOME", "LANG", "LC_ALL", "JAVA_HOME", "TMPDIR", "SP_CACHE")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env["PATH"] = f"{self.venv_bin}:/usr/local/bin:/usr/bin:/bin"
        env["PYTHONUNBUFFERED"] = "1"
        env["SP_EMULATOR_STATE"] = str(self.state)  # `aws leftovers --processes` finds this emulator's children
        return env

    def kafka_login(self, role_arn: str) -> tuple[str, str] | None:
        """The SCRAM login of a role's Kafka principal, after the broker's ACLs were brought up to date."""
        if self.msk is None or not role_arn:
            return None
        self.msk.sync()
        user, password = self.msk.credentials(role_arn)
        return str(user), str(password)

    def event(self, kind: str, subject: str, detail: str) -> None:
        """What the rehearsal's final check reports: a task that could not start, exited or was unhealthy."""
        path = self.state / EVENTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(json.dumps({"time": time.time(), "kind": kind, "subject": subject, "detail": detail}) + "\n")


EVENTS_FILE = Path("logs") / "runner-events.jsonl"


class Runner(threading.Thread):
    """A polling loop that never dies of one bad request: errors are logged and the loop goes on."""

    def __init__(self, context: RunnerContext, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.context = context
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("%s: one round failed; trying again", self.name)
            self.stopping.wait(POLL_SECONDS)
        # Still in this thread: its children get TERM and time to stop before its end kills them.
        stop_all(self.processes(), grace=20)

    def tick(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        self.stopping.set()
        self.join(90)  # the round in progress, then the graceful stop of the children (run)

    def processes(self) -> list[Process]:
        raise NotImplementedError


def pyspark_file() -> str:
    import pyspark

    return str(pyspark.__file__)


# --- EMR Serverless --------------------------------------------------------------------------------


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


class EmrRunner(Runner):
    """Executes EMR Serverless job runs recorded by the emulator (see the module docstring)."""

    def __init__(self, context: RunnerContext) -> None:
        super().__init__(context, "emr-runner")
        self.runs: dict[str, EmrRun] = {}

    def tick(self) -> None:
        for application_id, job in moto_ext.emr_job_runs():
            try:
                self._step(application_id, job)
            except Exception as error:  # one bad run fails, the others go on
                log.exception("job run %s: failed in the runner", job.id)
                if job.state not in ("SUCCESS", "FAILED", "CANCELLED"):
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
        sized = translate.spark_conf(conf)
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


#: Settings whose values are credentials: a password, the credentials endpoint's token (and its URI).
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIALS_FULL_URI", re.IGNORECASE)


def _redacted(argv: list[str]) -> list[str]:
    """A command line for the log, without credentials: ``NAME=value`` words and bwrap's
    ``--setenv NAME value`` whose name says it holds one."""
    out = list(argv)
    for i, word in enumerate(out):
        name, equals, _value = word.partition("=")
        if equals and not name.startswith("-") and SECRET_NAME.search(name):
            out[i] = f"{name}=***"
        elif word == "--setenv" and i + 2 < len(out) and SECRET_NAME.search(out[i + 1]):
            out[i + 2] = "***"
    return out


def _write_private(path: Path, text: str) -> None:
    """A file only this machine's root reads (the tasks run as other users, on its file system)."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def ship_logs(logs: Any, group: str, stream: str, lines: list[str], describe_group: bool = False) -> None:
    """Lines to a CloudWatch Logs stream (created when missing), as the awslogs driver or EMR write them."""
    if describe_group:  # EMR Serverless looks the group up first
        logs.describe_log_groups(logGroupNamePrefix=group)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    for start in range(0, len(lines), 5000):
        events = [{"timestamp": now, "message": line or " "} for line in lines[start : start + 5000]]
        if events:
            logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


# --- ECS ----------------------------------------------------------------------------------------


@dataclass
class Health:
    """A container health check as ECS runs it: interval, timeout, retries, start period."""

    command: list[str]
    interval: float
    timeout: float
    retries: int
    start_period: float
    started: float = field(default_factory=time.monotonic)
    failures: int = 0
    passed_once: bool = False
    next_at: float = 0.0
    check: subprocess.Popen[bytes] | None = None
    check_started: float = 0.0
    status: str = "UNKNOWN"

    @classmethod
    def of(cls, spec: dict[str, Any] | None, sandbox_argv: list[str]) -> Health | None:
        if not spec:
            return None
        from sensor_pipeline.emulator.container import shell

        command = [*sandbox_argv, *shell(list(spec["command"]))]
        interval, start = float(spec.get("interval", 30)), float(spec.get("startPeriod", 0))
        return cls(command, interval, float(spec.get("timeout", 5)), int(spec.get("retries", 3)), start,
                   next_at=time.monotonic() + min(interval, max(start, 5.0)))  # fmt: skip

    def step(self) -> str | None:
        """Run or collect a check; returns "UNHEALTHY" once retries are exhausted after the start period."""
        now = time.monotonic()
        if self.check is not None:
            code = self.check.poll()
            if code is None and now - self.check_started < self.timeout:
                return None
            if code is None:
                self.check.kill()
                self.check.wait(5)
                code = -1
            self.check = None
            if code == 0:
                self.failures, self.passed_once, self.status = 0, True, "HEALTHY"
            elif self.passed_once or now - self.started > self.start_period:
                self.failures += 1  # failures in the start period count only once it has passed
            if self.failures >= self.retries:
                self.status = "UNHEALTHY"
                return self.status
            return None
        if now >= self.next_at:
            self.next_at = now + self.interval
            self.check_started = now
            self.check = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
        return None


@dataclass
class Task:
    """One running container: its process and what ECS does around it (health, logs, credentials)."""

    name: str
    process: Process
    folder: Path
    health: Health | None
    logs: tuple[str, str] | None  # (group, stream) of its awslogs configuration
    execution_role: str
    grant: dict[str, str]
    source_arn: str = ""  # the task's ARN: what ECS sends as aws:SourceArn when it assumes the roles
    grace_until: float = 0.0  # the service's health-check grace period ends
    shipped: int = 0
    log_client: Any = None
    log_client_at: float = 0.0


class EcsRunner(Runner):
    """Runs ECS services and RunTask tasks of the emulator as Fargate would (see the module docstring)."""

    def __init__(self, context: RunnerContext) -> None:
        super().__init__(context, "ecs-runner")
        self.services: dict[str, tuple[str, Task]] = {}  # service ARN -> (task definition ARN, task)
        self.tasks: dict[str, Task | None] = {}  # task ARN -> task (None: it could not start)
        self.failures: dict[str, int] = {}  # service ARN -> restarts after a crash
        self.not_before: dict[str, float] = {}  # service ARN -> earliest next start
        self.counter = 0

    def tick(self) -> None:
        wanted: dict[str, tuple[Any, Any]] = {}
        for backend in moto_ext.ecs_backends():
            for service in list(backend.services.values()):
                if service.status == "ACTIVE" and service.desired_count > 0:
                    wanted[service.arn] = (backend, service)
            for cluster_tasks in list(backend.tasks.values()):
                for arn, task in list(cluster_tasks.items()):
                    try:
                        self._task_step(backend, arn, task)
                    except Exception:  # one bad task fails, the others go on
                        log.exception("ECS task %s: failed in the runner", arn)
                        self.tasks.setdefault(arn, None)
                        self._stopped(task, 1, "runner error: see the emulator log")
        for arn in list(self.services):
            definition, task = self.services[arn]
            if arn not in wanted or wanted[arn][1].task_definition != definition:
                log.info("ECS service %s: stopping its task (service deleted or changed)", arn.split("/")[-1])
                self._end(task)
                del self.services[arn]
        now = time.monotonic()
        for arn, (backend, service) in wanted.items():
            current = self.services.get(arn)
            if current is not None:
                task = current[1]
                if task.process.alive():
                    # ECS ignores unhealthy container checks during the service's grace period.
                    if self._watch(task) != "UNHEALTHY" or time.monotonic() < task.grace_until:
                        continue
                    # ECS: "if the task reports as unhealthy, then the task is stopped and the service
                    # scheduler replaces it".
                    detail = f"health check failed {task.health.retries if task.health else 0} times in a row"
                    log.warning("ECS service %s: its task is UNHEALTHY (%s); replacing it", service.name, detail)
                    self.context.event("unhealthy", service.name, f"{detail}: task replaced")
                else:
                    self._ship_logs(task)
                    detail = f"exit {task.process.exit_code()}: {task.process.tail()}"
                    log.warning("ECS service %s: its task ended (%s); starting another", service.name, detail)
                    self.context.event("exited", service.name, detail)
                self._end(task)
                del self.services[arn]
                # Crash loops back off as ECS's do: 2 s, 4 s, ... up to 5 minutes between starts.
                self.failures[arn] = self.failures.get(arn, 0) + 1
                self.not_before[arn] = now + min(300.0, 2.0 ** self.failures[arn])
            if self.not_before.get(arn, 0.0) > now:
                continue
            try:
                task_arn = f"{service.arn.replace(':service/', ':task/').rsplit('/', 1)[0]}/{uuid.uuid4().hex}"
                started = self._start(backend, service.task_definition, f"ecs-{service.name}", task_arn)
                grace = float(getattr(service, "health_check_grace_period_seconds", 0) or 0)
                if started is not None:
                    started.grace_until = time.monotonic() + grace
            except Exception as error:
                log.exception("ECS service %s: could not start", service.name)
                self.context.event("cannot-start", service.name, str(error))
                self.failures[arn] = self.failures.get(arn, 0) + 1
                self.not_before[arn] = now + min(300.0, 2.0 ** self.failures[arn])
                continue
            if started is not None:
                self.services[arn] = (service.task_definition, started)

    def _watch(self, task: Task) -> str | None:
        self._ship_logs(task)
        return task.health.step() if task.health is not None else None

    def _task_step(self, backend: Any, arn: str, task: Any) -> None:
        if arn not in self.tasks:
            if task.last_status != "RUNNING" or task.desired_status != "RUNNING":
                return
            family = task.task_definition_arn.split("/")[-1].split(":")[0]
            try:
                started = self._start(backend, task.task_definition_arn, f"ecs-task-{family}-{task.id[:8]}", arn)
            except Exception as error:
                log.error("ECS task %s: %s", task.id, error)
                self.context.event("cannot-start", f"task {family}", str(error))
                self._stopped(task, 1, f"CannotStartContainerError: {error}")
                self.tasks[arn] = None
                return
            self.tasks[arn] = started
            return
        current = self.tasks[arn]
        if current is None:
            return
        if task.desired_status == "STOPPED" and current.process.alive():
            self._stopped(task, current.process.stop(), "Task stopped by user")
            self._end(current)
        elif not current.process.alive() and task.last_status == "RUNNING":
            self._ship_logs(current)
            code = current.process.exit_code()
            self._stopped(task, code, "Essential container in task exited")
            self._end(current)
        elif current.process.alive():
            self._watch(current)  # a task run by hand continues whatever its health (ECS)

    @staticmethod
    def _stopped(task: Any, code: int, reason: str) -> None:
        for container in task.containers:
            container.exitCode = code
            container.last_status = "STOPPED"
        task.status = "STOPPED"
        task.desired_status = "STOPPED"
        task.stopped_reason = reason
        log.info("ECS task %s: STOPPED, exit code %s (%s)", task.id, code, reason)

    def _execution_session(self, definition: Any, source_arn: str) -> dict[str, str] | None:
        from sensor_pipeline.emulator import iam

        role = getattr(definition, "execution_role_arn", None)
        if not role:
            return None
        return iam.assume_role_as_service(role, "ecs-tasks.amazonaws.com", "ecs-execution", source_arn)

    def _secret(self, value_from: str, credentials: dict[str, str] | None) -> str:
        """``valueFrom`` of a container secret: a secret ARN, optionally ``:json-key:version-stage:version-id``,
        read with the task execution role (as the ECS agent does)."""
        if credentials is None:
            raise RuntimeError("secrets need a task execution role")
        parts = value_from.split(":")
        arn, key = ":".join(parts[:7]), (parts[7] if len(parts) > 7 else "")
        options = {"VersionStage": parts[8]} if len(parts) > 8 and parts[8] else {}
        client = self.context.client("secretsmanager", credentials)
        text = client.get_secret_value(SecretId=arn, **options)["SecretString"]
        if not key:
            return str(text)
        value = json.loads(text)[key]
        return value if isinstance(value, str) else json.dumps(value)

    def _pull(self, image: str, credentials: dict[str, str] | None) -> None:
        """The image pull from ECR, with the execution role: its ecr: permissions and the image's presence."""
        if ".dkr.ecr." not in image:
            return
        if credentials is None:
            raise RuntimeError(f"CannotPullContainerError: {image} is in ECR and the task has no execution role")
        repository, _, tag = image.partition("/")[2].partition(":")
        ecr = self.context.client("ecr", credentials)
        ecr.get_authorization_token()
        images = ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": tag or "latest"}])
        if not images.get("images"):
            raise RuntimeError(f"CannotPullContainerError: {image} not found ({images.get('failures')})")
        # A pull also checks and downloads the layers (the registered stand-in image has none to download:
        # the calls are authorized, and an answer about the missing layer is expected).
        from botocore.exceptions import ClientError

        layer = "sha256:" + "0" * 64
        calls: list[tuple[str, dict[str, Any]]] = [
            ("batch_check_layer_availability", {"repositoryName": repository, "layerDigests": [layer]}),
            ("get_download_url_for_layer", {"repositoryName": repository, "layerDigest": layer}),
        ]
        for operation, arguments in calls:
            try:
                getattr(ecr, operation)(**arguments)
            except ClientError as error:
                if "AccessDenied" in str(error.response.get("Error", {}).get("Code", "")):
                    raise RuntimeError(f"CannotPullContainerError: {error}") from error

    def _start(self, backend: Any, definition_arn: str, name: str, source_arn: str) -> Task | None:
        from sensor_pipeline.emulator import container as runtime

        definition = backend.describe_task_definition(definition_arn)
        spec = definition.container_definitions[0]
        self.counter += 1
        folder = self.context.state / "ecs-tasks" / f"{name}-{self.counter}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        execution = self._execution_session(definition, source_arn)
        self._pull(str(spec.get("image", "")), execution)
        logs = None
        options = (spec.get("logConfiguration") or {}).get("options") or {}
        region = options.get("awslogs-region", "us-east-1")
        if (spec.get("logConfiguration") or {}).get("logDriver") == "awslogs":
            if execution is None:
                raise RuntimeError("the awslogs log driver needs a task execution role")
            logs = (
                options["awslogs-group"],
                f"{options.get('awslogs-stream-prefix', name)}/{spec['name']}/{folder.name}",
            )
            ship_logs(self.context.client("logs", execution), logs[0], logs[1], [])
        environment = {e["name"]: e["value"] for e in spec.get("environment") or []}
        for secret in spec.get("secrets") or []:
            environment[secret["name"]] = self._secret(secret["valueFrom"], execution)
        task_role = getattr(definition, "task_role_arn", None) or ""
        grant: dict[str, str] = {}
        if task_role and self.context.credentials is not None:
            grant = self.context.credentials.grant(task_role, "ecs-tasks.amazonaws.com", name[:64], source_arn)
        fargate = {"AWS_EXECUTION_ENV": "AWS_ECS_FARGATE", "AWS_REGION": region, "AWS_DEFAULT_REGION": region}
        login = self.context.kafka_login(task_role)
        env = translate.environment(environment, self.context.endpoint_url, login, runtime.KAFKA_CA_PATH)
        command, command_changes = translate.command(list(spec.get("command") or []))
        for change in env.changes + command_changes:
            log.info("%s: translated for the local stack: %s", name, change)
        if not self.context.sandbox:
            raise RuntimeError("bubblewrap (bwrap) is not installed: run `make sandbox` (scripts/install-sandbox.sh)")
        assert self.context.root is not None and self.context.ca_file is not None
        image = runtime.image_config(self.context.root / "docker" / "Dockerfile", "app")
        stand_ins = {"venv": self.context.venv_bin.parent, "ca": self.context.ca_file}
        container = dict(spec) | {"command": command}
        box = runtime.build(
            image, container, list(definition.volumes or []), fargate | grant | env.values, folder, stand_ins
        )
        for note in box.notes:
            log.info("%s: container runtime: %s", name, note)
        log_path = self.context.state / "logs" / f"{name}.log"
        log.info("%s: starting %s as user %s (log %s)", name, shlex.join(command), box.user, log_path)
        marker = {
            "SP_EMULATED_BY": f"ecs:{name}",
            "SP_EMULATOR_STATE": str(self.context.state),
            "PATH": "/usr/bin:/bin",
        }
        _write_private(folder / "sandbox.json", json.dumps({"argv": _redacted(box.argv), "notes": box.notes}, indent=2))
        process = Process.start(box.argv, marker, self.context.state, log_path)
        return Task(name, process, folder, Health.of(spec.get("healthCheck"), box.prefix), logs,
                    getattr(definition, "execution_role_arn", "") or "", grant, source_arn)  # fmt: skip

    def _ship_logs(self, task: Task) -> None:
        """The awslogs driver: new lines of the container's output to its stream, with the execution role."""
        if task.logs is None or not task.process.log_path.exists():
            return
        size = task.process.log_path.stat().st_size
        if size <= task.shipped:
            return
        from sensor_pipeline.emulator import iam

        try:
            if task.log_client is None or time.monotonic() - task.log_client_at > 1800:
                credentials = iam.assume_role_as_service(
                    task.execution_role, "ecs-tasks.amazonaws.com", "ecs-execution", task.source_arn
                )
                task.log_client, task.log_client_at = self.context.client("logs", credentials), time.monotonic()
            with task.process.log_path.open("rb") as handle:
                handle.seek(task.shipped)
                data = handle.read(size - task.shipped)
            ship_logs(task.log_client, task.logs[0], task.logs[1], data.decode(errors="replace").splitlines())
            task.shipped = size
        except Exception as error:
            log.warning("%s: logs not delivered to CloudWatch (%s)", task.name, error)

    def _end(self, task: Task) -> None:
        if task.process.alive():
            task.process.stop()
        if task.health is not None and task.health.check is not None:
            task.health.check.kill()
        if self.context.credentials is not None:
            self.context.credentials.revoke(task.grant)
        shutil.rmtree(task.folder, ignore_errors=True)  # a bind mount's data goes with its task (Fargate)

    def processes(self) -> list[Process]:
        services = [task.process for _, task in list(self.services.values())]
        return services + [t.process for t in list(self.tasks.values()) if t is not None]
