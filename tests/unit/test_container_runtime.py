"""The rehearsal's container runtime (sensor_pipeline.emulator.container): a task's process as Fargate runs it.

The image's configuration comes from docker/Dockerfile, the container's from its task definition; the
process runs under bubblewrap as the container's user, on a read-only root, with only its volumes
writable, owned as Fargate makes them (root 0755 unless the image declares a VOLUME there:
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/bind-mounts.html).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sensor_pipeline.emulator import container
from sensor_pipeline.local.definition import find_root

ROOT = find_root(Path(__file__))
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="make sandbox installs bubblewrap")


def test_the_app_image_is_read_from_the_dockerfile() -> None:
    image = container.image_config(ROOT / "docker" / "Dockerfile", "app")
    assert image.user == "10001"
    assert image.env["PATH"].startswith("/opt/venv/bin:")
    assert image.env["SP_MONGO_TLS_CA_FILE"] == "/etc/ssl/certs/rds-global-bundle.pem"
    assert image.cmd == ["sensor-pipeline", "api", "--host", "0.0.0.0"] and image.entrypoint == []
    assert image.home("10001") == "/home/app"  # useradd --uid 10001 ... app (its home is not created)
    assert image.added["/opt/venv"] == "/opt/venv"


def write_dockerfile(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "Dockerfile"
    path.write_text(f"FROM python:3.11-slim AS base\nENV A=1\nFROM base AS app\nENV B=$A-2\nUSER 10001\n{extra}\n")
    return path


def test_a_stage_inherits_its_base_stage_and_expands_variables(tmp_path: Path) -> None:
    image = container.image_config(write_dockerfile(tmp_path, 'CMD ["run"]'), "app")
    assert (image.env["A"], image.env["B"], image.cmd) == ("1", "1-2", ["run"])
    with pytest.raises(ValueError, match="no stage named 'nope'"):
        container.image_config(write_dockerfile(tmp_path, ""), "nope")


def sandbox(tmp_path: Path, extra: str, script: str, **definition: object) -> subprocess.CompletedProcess[str]:
    image = container.image_config(write_dockerfile(tmp_path, extra), "app")
    spec = {
        "name": "c",
        "user": "10001",
        "readonlyRootFilesystem": True,
        "command": ["/bin/sh", "-c", script],
        "mountPoints": [{"sourceVolume": "tmp", "containerPath": "/tmp"}],
        **definition,
    }
    box = container.build(image, spec, [{"name": "tmp"}], {"GIVEN": "yes"}, tmp_path / "task", {})
    return subprocess.run(box.argv, capture_output=True, text=True, timeout=30, check=False)


@needs_bwrap
def test_a_volume_without_a_volume_in_the_image_is_roots_and_not_writable(tmp_path: Path) -> None:
    result = sandbox(tmp_path, "", "id -u; touch /tmp/x")
    assert result.stdout.split()[0] == "10001"
    assert result.returncode != 0 and "Permission denied" in result.stderr


@needs_bwrap
def test_a_volume_the_image_declares_takes_the_images_directory_mode(tmp_path: Path) -> None:
    # The image's /tmp is this machine's: mode 1777, writable by anyone.
    assert sandbox(tmp_path, 'VOLUME ["/tmp"]', "touch /tmp/x && echo ok").stdout.strip() == "ok"


@needs_bwrap
def test_the_root_is_read_only_and_nothing_of_the_host_environment_leaks(tmp_path: Path) -> None:
    result = sandbox(tmp_path, 'VOLUME ["/tmp"]', "touch /var/x 2>&1; env | sort")
    assert "Read-only file system" in result.stdout
    names = {line.split("=", 1)[0] for line in result.stdout.splitlines() if "=" in line}
    shell_own = {"PWD", "SHLVL", "_"}  # what /bin/sh sets itself
    assert names - shell_own == {"A", "B", "GIVEN", "HOME", "HOSTNAME", "PATH"}


@needs_bwrap
def test_without_readonly_root_the_root_is_still_not_the_users(tmp_path: Path) -> None:
    result = sandbox(tmp_path, 'VOLUME ["/tmp"]', "touch /var/x", readonlyRootFilesystem=False)
    assert result.returncode != 0 and "Permission denied" in result.stderr


def test_only_numeric_users_and_bind_mount_volumes_are_reproduced(tmp_path: Path) -> None:
    image = container.image_config(write_dockerfile(tmp_path, ""), "app")
    with pytest.raises(ValueError, match="numeric"):
        container.build(image, {"user": "app", "command": ["x"]}, [], {}, tmp_path / "t", {})
    efs = [{"name": "data", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}]
    spec = {"command": ["/bin/true"], "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}]}
    with pytest.raises(ValueError, match="only Fargate bind-mount volumes"):
        container.build(image, spec, efs, {}, tmp_path / "t", {})


def test_health_check_commands_run_as_ecs_runs_them() -> None:
    assert container.shell(["CMD-SHELL", "curl -f localhost || exit 1"]) == [
        "/bin/sh",
        "-c",
        "curl -f localhost || exit 1",
    ]
    assert container.shell(["CMD", "python", "-c", "1"]) == ["python", "-c", "1"]


VENV = Path(sys.executable).parent.parent


@needs_bwrap
@pytest.mark.parametrize("volume_at", ["/tmp", str(VENV.parent.parent)], ids=["tmp", "the-checkouts-folder"])
def test_the_app_image_runs_its_command_with_the_stand_ins_where_the_image_has_them(
    tmp_path: Path, volume_at: str
) -> None:
    """The venv at /opt/venv (its interpreter reachable by the container's user wherever this machine keeps
    it) and the DocumentDB CA bundle at the path the Dockerfile ADDs it to; a volume mounted over the
    folder that holds this checkout (a clone in /tmp, the API's /tmp volume) does not hide them."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nlocal\n")
    image = container.image_config(ROOT / "docker" / "Dockerfile", "app")
    spec = {
        "user": "10001",
        "readonlyRootFilesystem": True,
        "command": [
            "/bin/sh",
            "-c",
            "cat $SP_MONGO_TLS_CA_FILE && python -c 'import sensor_pipeline; print(\"venv ok\")'",
        ],
        "mountPoints": [{"sourceVolume": "tmp", "containerPath": volume_at}],
    }
    box = container.build(image, spec, [{"name": "tmp"}], {}, tmp_path / "task", {"venv": VENV, "ca": ca})
    result = subprocess.run(box.argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["-----BEGIN CERTIFICATE-----", "local", "venv ok"]


def run_checks(health: object, until: float = 20.0) -> list[str | None]:
    """Step a health check until it reports or ``until`` seconds pass (a condition awaited, no fixed sleep)."""
    import time

    from sensor_pipeline.emulator.runners import Health

    assert isinstance(health, Health)
    seen: list[str | None] = []
    deadline = time.monotonic() + until
    while time.monotonic() < deadline and "UNHEALTHY" not in seen:
        seen.append(health.step())
        time.sleep(0.02)
    return seen


def test_a_failing_health_check_makes_the_container_unhealthy_after_its_retries() -> None:
    from sensor_pipeline.emulator.runners import Health

    spec = {"command": ["CMD-SHELL", "exit 1"], "interval": 0.1, "timeout": 2, "retries": 2, "startPeriod": 0}
    health = Health.of(spec, [])
    assert health is not None and health.command == ["/bin/sh", "-c", "exit 1"]
    assert "UNHEALTHY" in run_checks(health) and health.failures == 2


def test_failures_in_the_start_period_do_not_count_and_a_pass_resets_them() -> None:
    from sensor_pipeline.emulator.runners import Health

    spec = {"command": ["CMD-SHELL", "exit 1"], "interval": 0.1, "timeout": 2, "retries": 1, "startPeriod": 60}
    health = Health.of(spec, [])
    assert health is not None
    assert "UNHEALTHY" not in run_checks(health, until=1.0), "failures in the start period do not count"
    passing = Health.of(spec | {"command": ["CMD-SHELL", "true"], "startPeriod": 0}, [])
    assert passing is not None and "UNHEALTHY" not in run_checks(passing, until=1.0) and passing.status == "HEALTHY"


def test_the_recorded_command_line_holds_no_credentials() -> None:
    """sandbox.json and request.json record the command; a task that read another's token could act as its role."""
    from sensor_pipeline.emulator.runners import _redacted

    argv = ["bwrap", "--setenv", "AWS_CONTAINER_AUTHORIZATION_TOKEN", "tok", "--setenv", "HOME", "/home/app"]
    argv += ["--setenv", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/v2/credentials/tok"]
    argv += ["--conf", "spark.executorEnv.SP_KAFKA_SASL_PASSWORD=pw", "--", "app"]
    shown = _redacted(argv)
    assert "tok" not in " ".join(shown) and "pw" not in " ".join(shown)
    assert shown[:7] == [
        "bwrap",
        "--setenv",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "***",
        "--setenv",
        "HOME",
        "/home/app",
    ]
    assert shown[-3:] == ["spark.executorEnv.SP_KAFKA_SASL_PASSWORD=***", "--", "app"]
