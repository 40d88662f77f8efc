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
import shlex
import signal
import subprocess
import tarfile
import threading
import time
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

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> Process:
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
        return cls(popen, log_path)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """TERM the whole process group (spark-submit starts a JVM and Python workers), then KILL."""
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
        _signal_group(process.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(max(0.1, deadline - time.monotonic()))
    for process in processes:
        if process.alive():
            _signal_group(process.popen.pid, signal.SIGKILL)
            process.popen.wait(10)


@dataclass(frozen=True)
class RunnerContext:
    """What both runners need to know about the local stack."""

    state: Path  # .local-stack/
    venv_bin: Path  # the project's venv (sensor-pipeline, spark-submit)
    endpoint_url: str  # this emulator, for the processes' AWS calls
    mongo_auth: str  # "plain" (FerretDB) or "none" (mongod without --auth)

    def client(self, service: str) -> Any:
        import boto3

        # A session per call: boto3's default session is not safe to share between threads.
        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def base_env(self) -> dict[str, str]:
        """A clean environment: none of the emulator's own variables leak into a task or job run."""
        keep = ("HOME", "LANG", "LC_ALL", "JAVA_HOME", "TMPDIR", "SP_CACHE")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env["PATH"] = f"{self.venv_bin}:/usr/local/bin:/usr/bin:/bin"
        env["PYTHONUNBUFFERED"] = "1"
        env["SP_EMULATOR_STATE"] = str(self.state)  # `aws leftovers --processes` finds this emulator's children
        return env


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

    def _download(self, uri: str, target: Path) -> Path:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.context.client("s3").download_file(bucket, key, str(target))
        return target

    def _start(self, run: EmrRun) -> None:
        driver = run.job.job_driver["sparkSubmit"]
        run.folder.mkdir(parents=True, exist_ok=True)
        conf, jar_uris = parse_spark_submit_parameters(driver.get("sparkSubmitParameters", ""))
        entry = self._download(driver["entryPoint"], run.folder / "job" / Path(driver["entryPoint"]).name)
        jars = [self._download(uri, run.folder / "jars" / Path(uri).name) for uri in jar_uris]
        archives = conf.pop("spark.archives", "")
        for spec in filter(None, archives.split(",")):
            uri, _, alias = spec.partition("#")
            packed = self._download(uri, run.folder / "archives" / Path(uri).name)
            with tarfile.open(packed) as archive:
                archive.extractall(run.folder / (alias or Path(uri).name), filter="tar")
        changes: list[str] = []
        driver_env = {
            k.removeprefix("spark.emr-serverless.driverEnv."): v for k, v in conf.items() if ".driverEnv." in k
        }
        conf = {k: v for k, v in conf.items() if ".driverEnv." not in k}
        env = translate.environment(driver_env, self.context.endpoint_url, self.context.mongo_auth)
        changes += env.changes
        executor = {
            k.removeprefix("spark.executorEnv."): v for k, v in conf.items() if k.startswith("spark.executorEnv.")
        }
        executor_env = translate.environment(executor, self.context.endpoint_url, self.context.mongo_auth).values
        conf = {k: v for k, v in conf.items() if not k.startswith("spark.executorEnv.")}
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
        run.environment = self.context.base_env() | spark_home | env.values | {"SP_EMULATED_BY": f"emr:{run.job.id}"}
        for change in changes:
            log.info("job run %s: translated for the local stack: %s", run.job.id, change)
        (run.folder / "request.json").write_text(
            json.dumps({"jobDriver": run.job.job_driver, "command": argv, "translations": changes}, indent=2)
        )
        self._launch(run)

    def _launch(self, run: EmrRun) -> None:
        run.process = Process.start(
            run.command,
            run.environment,
            cwd=run.folder,
            log_path=run.folder / "driver.log",
        )

    def _upload_logs(self, run: EmrRun) -> None:
        """Where the run's monitoring configuration sends logs: S3 (``emr logs``) as AWS lays them out."""
        run.last_upload = time.monotonic()
        size = run.process.log_path.stat().st_size if run.process and run.process.log_path.exists() else 0
        if size == run.uploaded_size:
            return
        run.uploaded_size = size
        monitoring = (run.job.configuration_overrides or {}).get("monitoringConfiguration", {})
        uri = monitoring.get("s3MonitoringConfiguration", {}).get("logUri")
        if not uri or run.process is None:
            return
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        body = gzip.compress(run.process.log_path.read_bytes())
        key = f"{prefix.rstrip('/')}/applications/{run.application_id}/jobs/{run.job.id}/SPARK_DRIVER/stderr.gz"
        try:
            s3 = self.context.client("s3")
            s3.put_object(Bucket=bucket, Key=key.lstrip("/"), Body=body)
            s3.put_object(Bucket=bucket, Key=key.lstrip("/").replace("stderr.gz", "stdout.gz"), Body=body)
        except Exception as error:  # the bucket may be gone during a destroy
            log.warning("job run %s: logs not uploaded (%s)", run.job.id, error)

    def processes(self) -> list[Process]:
        return [run.process for run in list(self.runs.values()) if run.process is not None]


# --- ECS ----------------------------------------------------------------------------------------


class EcsRunner(Runner):
    """Runs ECS services and RunTask tasks of the emulator as local processes (see the module docstring)."""

    def __init__(self, context: RunnerContext) -> None:
        super().__init__(context, "ecs-runner")
        self.services: dict[str, tuple[str, Process]] = {}  # service ARN -> (task definition ARN, process)
        self.tasks: dict[str, Process | None] = {}  # task ARN -> process (None: it could not start)
        self.failures: dict[str, int] = {}  # service ARN -> restarts after a crash
        self.not_before: dict[str, float] = {}  # service ARN -> earliest next start

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
            definition, process = self.services[arn]
            if arn not in wanted or wanted[arn][1].task_definition != definition:
                log.info("ECS service %s: stopping its process (service deleted or changed)", arn.split("/")[-1])
                process.stop()
                del self.services[arn]
        now = time.monotonic()
        for arn, (backend, service) in wanted.items():
            current = self.services.get(arn)
            if (current is not None and current[1].alive()) or self.not_before.get(arn, 0.0) > now:
                continue
            if current is not None:
                log.warning("ECS service %s: its process exited (%s); restarting", service.name, current[1].tail())
            # Crash loops back off as ECS's do: 2 s, 4 s, ... up to 5 minutes between starts.
            self.failures[arn] = self.failures.get(arn, 0) + (1 if current is not None else 0)
            self.not_before[arn] = now + min(300.0, 2.0 ** self.failures[arn])
            try:
                started = self._start(backend, service.task_definition, f"ecs-{service.name}")
            except Exception:
                log.exception("ECS service %s: could not start", service.name)
                started = None
            if started is not None:
                self.services[arn] = (service.task_definition, started)

    def _task_step(self, backend: Any, arn: str, task: Any) -> None:
        process = self.tasks.get(arn)
        if process is None:
            if task.last_status != "RUNNING" or task.desired_status != "RUNNING":
                return
            family = task.task_definition_arn.split("/")[-1].split(":")[0]
            started = self._start(backend, task.task_definition_arn, f"ecs-task-{family}-{task.id[:8]}")
            if started is None:
                self._stopped(task, 1, "CannotStartContainerError: see the emulator log")
                self.tasks[arn] = None
                return
            self.tasks[arn] = started
            return
        if process is not None and task.desired_status == "STOPPED" and process.alive():
            self._stopped(task, process.stop(), "Task stopped by user")
        elif process is not None and not process.alive() and task.last_status == "RUNNING":
            code = process.exit_code()
            self._stopped(task, code, "Essential container in task exited")

    @staticmethod
    def _stopped(task: Any, code: int, reason: str) -> None:
        for container in task.containers:
            container.exitCode = code
            container.last_status = "STOPPED"
        task.status = "STOPPED"
        task.desired_status = "STOPPED"
        task.stopped_reason = reason
        log.info("ECS task %s: STOPPED, exit code %s (%s)", task.id, code, reason)

    def _secret(self, value_from: str) -> str:
        """``valueFrom`` of a container secret: a secret ARN, optionally ``:json-key:version-stage:version-id``."""
        parts = value_from.split(":")
        arn, key = ":".join(parts[:7]), (parts[7] if len(parts) > 7 else "")
        options = {"VersionStage": parts[8]} if len(parts) > 8 and parts[8] else {}
        text = self.context.client("secretsmanager").get_secret_value(SecretId=arn, **options)["SecretString"]
        if not key:
            return str(text)
        value = json.loads(text)[key]
        return value if isinstance(value, str) else json.dumps(value)

    def _start(self, backend: Any, definition_arn: str, name: str) -> Process | None:
        definition = backend.describe_task_definition(definition_arn)
        container = definition.container_definitions[0]
        environment = {e["name"]: e["value"] for e in container.get("environment") or []}
        try:
            for secret in container.get("secrets") or []:
                environment[secret["name"]] = self._secret(secret["valueFrom"])
        except Exception as error:  # as on Fargate: a secret that cannot be read stops the task
            log.error("%s: ResourceInitializationError: unable to retrieve secrets: %s", name, error)
            return None
        env = translate.environment(environment, self.context.endpoint_url, self.context.mongo_auth)
        command, command_changes = translate.command(list(container.get("command") or []), self.context.venv_bin)
        for change in env.changes + command_changes:
            log.info("%s: translated for the local stack: %s", name, change)
        log_path = self.context.state / "logs" / f"{name}.log"
        log.info("%s: starting %s (log %s)", name, shlex.join(command), log_path)
        try:
            if not command:
                raise OSError("the container definition has no command")
            marker = {"SP_EMULATED_BY": f"ecs:{name}"}  # `sensor-pipeline aws leftovers --processes` finds it
            return Process.start(command, self.context.base_env() | env.values | marker, self.context.state, log_path)
        except OSError as error:  # a wrong command fails the task, as it would on Fargate
            log.error("%s: CannotStartContainerError: %s", name, error)
            return None

    def processes(self) -> list[Process]:
        services = [process for _, process in list(self.services.values())]
        return services + [p for p in list(self.tasks.values()) if p is not None]
