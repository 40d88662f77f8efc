"""What both runners share: supervised processes, the runner thread and its context, logs."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        self.stopped()

    def tick(self) -> None:
        raise NotImplementedError

    def stopped(self) -> None:
        """After the children are stopped, as the emulator stops: what they leave behind may go."""

    def shutdown(self) -> None:
        self.stopping.set()
        self.join(90)  # the round in progress, then the graceful stop of the children (run)

    def processes(self) -> list[Process]:
        raise NotImplementedError


def pyspark_file() -> str:
    import pyspark

    return str(pyspark.__file__)


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
