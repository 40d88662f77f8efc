"""The sensor API -> producer -> RawSensorData path, with the real API server and broker."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensor_pipeline.config import Settings
from sensor_pipeline.contract.rules import validate_line
from sensor_pipeline.local.health import free_port, http_ready
from sensor_pipeline.source.simulator import BEACHES
from tests.integration.conftest import read_all, settings_env
from tests.integration.harness import raw_end_offsets
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "sensor-pipeline")


class BrokerDoor:
    """A TCP forwarder to the broker, closed until :meth:`open`: a broker down at start-up.

    Only the bootstrap goes through it (the broker then advertises its own address), which is all a
    start-up needs; the shared broker itself is never stopped.
    """

    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.split(",", maxsplit=1)[0].rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self._server: socket.socket | None = None

    def open(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


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
    # Mid-stream: readings delivered and more being read when the signal comes.
    wait_for(lambda: sum(raw_end_offsets(api).values()) >= 50, 60, "50 readings in the raw topic")
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


def test_a_broker_down_at_start_up_is_waited_for_then_everything_is_delivered(api: Settings, tmp_path: Path) -> None:
    door = BrokerDoor(api.kafka_bootstrap)
    target = api.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{door.port}"})
    log = tmp_path / "producer.log"
    producer = start_producer(target, "--count", "30", "--rate", "0", log=log)
    try:
        wait_for(lambda: "unreachable" in log.read_text(), 60, "the producer to retry the broker")
        assert producer.poll() is None, log.read_text()  # still waiting, not exited
        door.open()
        assert producer.wait(120) == 0, log.read_text()
    finally:
        door.close()
        if producer.poll() is None:
            producer.kill()
    records = read_all(api, api.raw_topic, expect=30)
    assert len(records) == 30 and "delivered 30" in log.read_text()


def test_sigterm_while_the_broker_is_down_exits_promptly(settings: Settings, tmp_path: Path) -> None:
    down = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "api_url": f"http://127.0.0.1:{free_port()}"}
    )
    log = tmp_path / "producer.log"
    producer = start_producer(down, log=log)
    try:
        wait_for(lambda: "unreachable" in log.read_text(), 60, "the producer to retry the broker")
        producer.send_signal(signal.SIGTERM)
        # One start-up attempt (5 s) at most, not the backoff: a hang fails the wait.
        assert producer.wait(15) == 0, log.read_text()  # nothing was read, so nothing was lost
    finally:
        if producer.poll() is None:
            producer.kill()
    assert "nothing was read" in log.read_text()
