"""The command line: the `validate` contract and argument errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sensor_pipeline import rules

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
