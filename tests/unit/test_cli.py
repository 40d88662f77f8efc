"""The command line: the `validate` contract and argument errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sensor_pipeline.cli import main
from sensor_pipeline.contract import rules

CLI = str(Path(sys.executable).parent / "sensor-pipeline")
GOOD = "2020-02-17T11:12:58.765969 26.04 540.1 13.12 Montrose_Beach 758028"


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], check=False, input=stdin, capture_output=True, text=True, timeout=60)


def test_validate_prints_one_json_verdict_per_line() -> None:
    result = run("validate", stdin=f"{GOOD}\nnot a reading\n2020-02-17T11:12:58 99 1 1 X 1\n")
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(v["valid"], v["reason"]) for v in verdicts] == [
        (True, None),
        (False, "bad_shape"),
        (False, "out_of_range"),
    ]
    assert verdicts[0]["record"] == {
        "Beach": "Montrose Beach",
        "MeasurementID": 758028,
        "BatteryLife": 13.12,
        "RawData": GOOD,
        "WaterTemperature": 26.04,
        "Turbidity": 540.1,
        "TimeStamp": "2020-02-17T11:12:58.765Z",
    }
    assert verdicts[1]["record"] is None
    assert result.returncode == 1, "some lines were invalid"


def test_validate_exits_zero_when_all_lines_are_valid() -> None:
    assert run("validate", stdin=GOOD + "\n").returncode == 0


def test_validate_takes_hostile_input_without_a_traceback() -> None:
    from tests.hostile import hostile_lines

    lines = [line.replace("\n", " ").replace("\r", " ") for line in hostile_lines(3000)]
    text = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    hostile = b"\xff\xfe\x00 bad\n\xc0\xaf\n" + b"9" * 2_000_000 + b"\n" + text + b"\n" + GOOD.encode()
    result = subprocess.run([CLI, "validate"], check=False, input=hostile, capture_output=True, timeout=120)
    assert result.returncode == 1 and b"Traceback" not in result.stderr, result.stderr[-2000:]
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert verdicts[-1]["valid"] and all(v["reason"] in (None, *rules.CHECKS) for v in verdicts)
    assert verdicts[2]["reason"] == "too_long"


def test_bad_arguments_exit_2_with_a_message() -> None:
    result = run("validate", "--future-tolerance", "-1")
    assert result.returncode == 2 and "future-tolerance" in result.stderr
    result = run("produce", "--rate", "fast")
    assert result.returncode == 2 and "--rate" in result.stderr


def test_invalid_settings_in_the_environment_are_named(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "SP_API_PORT": "99999"}
    result = subprocess.run([CLI, "init"], check=False, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2 and "SP_API_PORT" in result.stderr


def test_a_sandboxed_copy_names_its_own_topics_even_after_the_original_was_read() -> None:
    from sensor_pipeline.config import Settings

    live = Settings()
    assert live.topics == ("RawSensorData", "CleanSensorData", "InvalidSensorData")  # read first
    sandbox = live.sandboxed("test-x", "/tmp")
    assert sandbox.topics == ("test-x-RawSensorData", "test-x-CleanSensorData", "test-x-InvalidSensorData")


def test_version_prints_the_installed_distributions_version() -> None:
    from importlib.metadata import version

    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"sensor-pipeline {version('sensor-pipeline')}"


def test_validate_reads_its_future_tolerance_from_the_setting_unless_the_flag_overrides_it() -> None:
    import os
    from datetime import UTC, datetime, timedelta

    ahead = (datetime.now(UTC) + timedelta(seconds=120)).strftime("%Y-%m-%dT%H:%M:%S")
    line = f"{ahead} 20.1 1.2 9.8 Montrose_Beach 1\n"
    env = {**os.environ, "SP_FUTURE_TOLERANCE_SECONDS": "10"}
    by_setting = subprocess.run([CLI, "validate"], check=False, input=line, capture_output=True, text=True, env=env)
    assert json.loads(by_setting.stdout)["reason"] == "future_timestamp"
    by_flag = subprocess.run(
        [CLI, "validate", "--future-tolerance", "600"], check=False, input=line, capture_output=True, text=True, env=env
    )
    assert json.loads(by_flag.stdout)["valid"] is True


def test_help_names_each_settings_env_var_and_default_from_settings() -> None:
    from sensor_pipeline.config import Settings

    help_text = " ".join(run("api", "--help").stdout.split())
    assert f"[env: SP_API_PORT; default: {Settings.model_fields['api_port'].default}]" in help_text
    assert Settings.model_fields["sim_speed"].description in help_text


def test_plumbing_is_hidden_from_the_help_but_still_runs() -> None:
    listed = run("--help").stdout
    assert "stack" in listed and "emr" in listed
    assert " aws " not in listed and "emulator" not in listed
    assert run("aws", "--help").returncode == 0 and run("emulator", "--help").returncode == 0


def unreachable_aws(*args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "SP_AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "AWS_MAX_ATTEMPTS": "1"}  # fmt: skip
    command = [CLI, *args, "emr", "status", "--application-id", "app"]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=120)


def test_a_failed_step_exits_1_with_error_and_no_traceback() -> None:
    result = unreachable_aws()
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("arguments", "step"),
    [
        (["job", "progress"], "sensor_pipeline.job.progress.committed"),
        (["job", "reset-progress", "--keep-checkpoint", "--yes"], "sensor_pipeline.job.progress.reset"),
        (["init"], "sensor_pipeline.cloud.provision.ensure_all"),
    ],
)
def test_a_service_that_is_down_is_an_error_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, arguments: list[str], step: str
) -> None:
    from click.testing import CliRunner
    from confluent_kafka import KafkaError, KafkaException
    from pymongo.errors import ServerSelectionTimeoutError

    down = (
        KafkaException(KafkaError(KafkaError._TRANSPORT)) if "job" in step else ServerSelectionTimeoutError("no store")
    )

    def fail(*_args: object, **_kwargs: object) -> None:
        raise down

    monkeypatch.setattr(step, fail)
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 1 and result.output.startswith("Error: "), (result.output, result.exception)


def test_log_level_applies_to_every_command() -> None:
    assert " DEBUG botocore" not in unreachable_aws().stderr
    assert " DEBUG botocore" in unreachable_aws("--log-level", "debug").stderr
    assert run("--log-level", "loud", "simulate").returncode == 2
