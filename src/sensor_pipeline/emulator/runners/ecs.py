"""The ECS runner: each service with a desired count, and each RunTask, as a local process."""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensor_pipeline.emulator import moto_ext, translate
from sensor_pipeline.emulator.runners.base import Process, Runner, RunnerContext, _redacted, _write_private, ship_logs

log = logging.getLogger("sensor_pipeline.emulator")


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
