"""What the end-to-end, fault and fuzz tests share: the real job as a supervised process, a feeder of
readings, and an audit of the three outputs against the raw topic.

The audit's ground truth is RawSensorData itself: every valid line's MeasurementID must be stored
once and published on CleanSensorData; every invalid line (by its offset) must be dead-lettered on
InvalidSensorData. It counts, per output, what is lost and what is duplicated.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaTimeoutError

from sensor_pipeline.config import Settings
from sensor_pipeline.contract import rules
from sensor_pipeline.job import progress, store
from sensor_pipeline.local import artifacts
from sensor_pipeline.local.definition import find_root, load
from sensor_pipeline.local.health import wait_until
from sensor_pipeline.local.runner import spark_submit_command
from sensor_pipeline.source.simulator import BEACHES, SnowflakeIds, format_line
from tests.hostile import invalid_lines
from tests.integration.conftest import read_all

ROOT = find_root(Path(__file__))
CLI = str(Path(sys.executable).parent / "sensor-pipeline")


class Job:
    """The real job file under spark-submit, in its own process group (so it can be killed whole),
    restarted when it exits unexpectedly, as supervisord or EMR's retry policy would."""

    def __init__(self, settings: Settings, log: Path, master: str = "local[2]", env: dict[str, str] | None = None):
        jars = artifacts.spark_jars(ROOT, load(ROOT).versions["spark"])
        self.command = spark_submit_command(ROOT, jars, ("--trigger-seconds", "1"), master=master)
        self.env = {**os.environ, **settings.to_env(), "PYSPARK_PYTHON": sys.executable, **(env or {})}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.supervise = True
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> Job:
        self._stop.clear()
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        return self

    def _spawn(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            if self.supervise and self.process is not None and self.process.poll() is not None:
                time.sleep(1)  # supervisord's backoff, shortened
                if not self._stop.is_set():
                    self.restarts += 1
                    self._spawn()

    def kill(self) -> None:
        """SIGKILL to the whole job (driver JVM, Python driver and workers) and no restart."""
        self._stop.set()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def crash(self) -> None:
        """SIGKILL to the whole job, which its supervision then restarts (a crash, a lost node)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self, grace: float = 60) -> int | None:
        """SIGTERM (a graceful stop: the running batch finishes), SIGKILL after ``grace`` s; the exit code."""
        self._stop.set()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        return self.process.returncode if self.process is not None else None


def valid_line(ids: SnowflakeIds, rng: random.Random, now: datetime) -> str:
    return format_line(
        now - timedelta(seconds=rng.randrange(3600)),
        rng.uniform(5, 30),
        rng.uniform(0.5, 50),
        rng.uniform(9, 13),
        rng.choice(BEACHES),
        ids.next(),
    )


#: How long a :class:`Feeder` goes on past its ``seconds`` at most, waiting for its ``until`` event.
HOLD_SECONDS = 600.0


class Feeder(threading.Thread):
    """Streams readings into the raw topic at a steady rate: valid lines, hostile invalid lines, and
    redeliveries of earlier valid lines (the same reading twice, as a producer retry would).

    It stops after ``seconds``; with ``until``, not before that event is set either (at most
    :data:`HOLD_SECONDS` more: three kills in a row, each waited for up to 180 s): a case that waits for the job to store again after a fault keeps readings
    coming however late the fault strikes."""

    def __init__(
        self,
        settings: Settings,
        rate: float,
        seconds: float,
        invalid_share: float = 0.05,
        repeat_share: float = 0.03,
        until: threading.Event | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.settings, self.rate, self.seconds, self.until = settings, rate, seconds, until
        self.invalid_share, self.repeat_share = invalid_share, repeat_share
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(11)
        ids = SnowflakeIds(worker=rng.randrange(1024))
        hostile = invalid_lines(2000, seed=rng.randrange(1000))
        # Retries outlast a broker restart: the feeder must not be what loses readings.
        producer = KafkaProducer(
            **self.settings.kafka_client_options(), acks="all", linger_ms=5, retries=10_000, retry_backoff_ms=500
        )
        sent_lines: list[str] = []
        started = time.monotonic()
        try:
            while (elapsed := time.monotonic() - started) < self.seconds or (
                self.until is not None and not self.until.is_set() and elapsed < self.seconds + HOLD_SECONDS
            ):
                roll = rng.random()
                if roll < self.invalid_share:
                    line = rng.choice(hostile)
                elif roll < self.invalid_share + self.repeat_share and sent_lines:
                    line = rng.choice(sent_lines)
                else:
                    line = valid_line(ids, rng, datetime.now(UTC))
                    sent_lines.append(line)
                key = (rules.beach_key(line) or "").encode() or None
                while True:
                    try:  # blocks while the broker is down (metadata), and gives up after max_block_ms
                        producer.send(self.settings.raw_topic, key=key, value=line.encode())
                        break
                    except KafkaTimeoutError:
                        continue
                self.sent += 1
                ahead = self.sent / self.rate - elapsed
                if ahead > 0:
                    time.sleep(ahead)
            producer.flush(300)
        except BaseException as error:
            self.error = error
        finally:
            producer.close(30)


@dataclass
class Tally:
    lost: int = 0
    duplicated: int = 0
    #: What was duplicated (MeasurementIDs, or source offsets for dead letters).
    repeated: set[Any] = field(default_factory=set)

    def __str__(self) -> str:
        return f"{self.lost}/{self.duplicated}"


def tally(seen: Counter[Any], expected: set[Any]) -> Tally:
    """What an output lost and repeated: ``seen`` counts what it holds, ``expected`` what it should."""
    repeated = {k for k, n in seen.items() if n > 1}
    return Tally(len(expected - set(seen)), sum(seen[k] - 1 for k in repeated), repeated)


@dataclass
class Audit:
    """Lost and duplicated readings per output, against what RawSensorData holds."""

    valid: int
    invalid: int
    store: Tally
    clean: Tally
    dead: Tally
    #: Stored or published readings that are not valid lines of the raw topic (or, stored, whose Source
    #: is not a raw record with their RawData), and dead letters of records that are not invalid lines
    #: (a valid reading dead-lettered, e.g. store_rejected). The store's ``duplicated`` is 0 by its key.
    unexpected: int = 0
    unexpected_clean: int = 0
    unexpected_dead: int = 0
    notes: list[str] = field(default_factory=list)


def _expected(settings: Settings) -> tuple[set[int], set[tuple[int, int]], dict[tuple[int, int], str]]:
    valid: set[int] = set()
    invalid: set[tuple[int, int]] = set()
    lines: dict[tuple[int, int], str] = {}
    now = datetime.now(UTC)
    for record in read_all(settings, settings.raw_topic, timeout=60):
        line = (record.value or b"").decode("utf-8", errors="replace")
        lines[record.partition, record.offset] = line
        verdict = rules.validate_line(line, now=now)
        if verdict.record is not None:
            valid.add(verdict.record["MeasurementID"])
        else:
            invalid.add((record.partition, record.offset))
    return valid, invalid, lines


def raw_end_offsets(settings: Settings) -> dict[int, int]:
    """Partition -> end offset of the raw topic (how many records each holds)."""
    consumer = KafkaConsumer(**settings.kafka_client_options())
    try:
        partitions = [
            TopicPartition(settings.raw_topic, p) for p in consumer.partitions_for_topic(settings.raw_topic) or []
        ]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def stored_ids(settings: Settings) -> list[int]:
    """The ``_id`` of every stored reading."""
    client = store.connect(settings)
    try:
        return [d["_id"] for d in store.readings(client, settings).find({}, {"_id": 1})]
    finally:
        client.close()


def stored_count(settings: Settings) -> int:
    client = store.connect(settings)
    try:
        return store.readings(client, settings).count_documents({})
    finally:
        client.close()


def idle(settings: Settings) -> bool:
    """The job has delivered everything in the raw topic: its group's committed offsets (committed with
    the output, in each slice's transaction) are the topic's end offsets."""
    ends = raw_end_offsets(settings)
    done = progress.committed(settings)
    return all(done.get(p, 0) >= end for p, end in ends.items() if end > 0)


def audit(settings: Settings, timeout: float = 180) -> Audit:
    """Wait until the job is idle (or ``timeout``), then count what each output holds, in full."""
    assert wait_until(lambda: idle(settings), timeout, interval=1), "the job never caught up with the raw topic"
    valid, invalid, lines = _expected(settings)
    wait_until(lambda: len(stored_ids(settings)) >= len(valid), timeout, interval=1)
    stored = Counter(stored_ids(settings))  # one per _id by the key: what can fail is where each came from
    client = store.connect(settings)
    try:
        documents = list(store.readings(client, settings).find({}, {"Source": 1, "RawData": 1}))
    finally:
        client.close()
    astray = sum(1 for d in documents if lines.get((d["Source"]["partition"], d["Source"]["offset"])) != d["RawData"])

    def clean_ids(records: list[Any]) -> Counter[int]:
        return Counter(json.loads(r.value)["MeasurementID"] for r in records)

    def sources(records: list[Any]) -> Counter[tuple[int, int]]:
        return Counter((s["partition"], s["offset"]) for s in (json.loads(r.value)["Source"] for r in records))

    clean = clean_ids(read_all(settings, settings.clean_topic, timeout=timeout / 2,
                               until=lambda rs: set(clean_ids(rs)) >= valid))  # fmt: skip
    dead = sources(read_all(settings, settings.invalid_topic, timeout=timeout / 2,
                            until=lambda rs: set(sources(rs)) >= invalid))  # fmt: skip

    return Audit(
        valid=len(valid),
        invalid=len(invalid),
        store=tally(stored, valid),
        clean=tally(clean, valid),
        dead=tally(dead, invalid),
        unexpected=len(set(stored) - valid) + astray,
        unexpected_clean=len(set(clean) - valid),
        unexpected_dead=len(set(dead) - invalid),
    )
