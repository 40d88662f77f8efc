"""The sensor API -> producer -> RawSensorData path, with the real API server and broker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensor_pipeline.config import Settings
from sensor_pipeline.rules import validate_line
from sensor_pipeline.simulator import BEACHES
from sensor_pipeline.stack.health import http_ready
from tests.integration.conftest import read_all, settings_env, wait_for

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "sensor-pipeline")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The real sensor API (gunicorn) on a free port; yields settings that point at it."""
    port = free_port()
    # 300 readings/s, and no injected faults: these tests check that every reading arrives intact.
    env = {**os.environ, **settings_env(settings), "SP_SIM_SPEED": str(3600 * 50), "SP_SIM_FAULT_RATE": "0"}
    with (tmp_path / "api.log").open("wb") as log:
        process = subprocess.Popen([CLI, "api", "--port", str(port), "--seed", "4"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_ready(f"{url}/health"), 30, "the sensor API")
        yield settings.model_copy(update={"api_url": url})
    finally:
        process.terminate()
        process.wait(10)


def start_producer(settings: Settings, *args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings)}
    with log.open("ab") as out:
        return subprocess.Popen([CLI, "produce", *args], env=env, stdout=out, stderr=subprocess.STDOUT)


def test_readings_flow_from_the_api_into_the_raw_topic_keyed_by_beach(api: Settings, tmp_path: Path) -> None:
    producer = start_producer(api, "--count", "300", "--rate", "0", log=tmp_path / "producer.log")
    assert producer.wait(120) == 0, (tmp_path / "producer.log").read_text()
    records = read_all(api, api.raw_topic, expect=300)
    assert len(records) == 300
    for record in records:
        line = record.value.decode()
        verdict = validate_line(line)
        assert verdict.valid and verdict.record is not None
        assert record.key.decode() == line.split()[4]
    assert {r.key.decode().replace("_", " ") for r in records} == set(BEACHES)
    assert "delivered 300" in (tmp_path / "producer.log").read_text()


def test_sigterm_flushes_everything_read_before_exiting(api: Settings, tmp_path: Path) -> None:
    log = tmp_path / "producer.log"
    producer = start_producer(api, "--rate", "100", log=log)
    wait_for(lambda: "producing from" in log.read_text(), 60, "the producer to start")
    time.sleep(3)
    producer.send_signal(signal.SIGTERM)
    assert producer.wait(60) == 0, log.read_text()
    last = [line for line in log.read_text().splitlines() if "delivered" in line][-1]
    read = int(last.split("read ")[1].split(",")[0])
    assert read > 0 and f"delivered {read} " in last and "pending 0" in last
    assert len(read_all(api, api.raw_topic, expect=read)) == read


def test_the_producer_waits_for_the_api_and_recovers(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    target = settings.model_copy(update={"api_url": f"http://127.0.0.1:{port}"})
    log = tmp_path / "producer.log"
    producer = start_producer(target, "--count", "30", "--rate", "0", log=log)
    wait_for(lambda: "Retrying" in log.read_text() or "unreachable" in log.read_text(), 60, "a retry")
    env = {**os.environ, **settings_env(settings), "SP_SIM_SPEED": str(3600 * 50)}
    api = subprocess.Popen(
        [CLI, "api", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert producer.wait(120) == 0, log.read_text()
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(10)
    assert len(read_all(settings, settings.raw_topic, expect=30)) == 30
