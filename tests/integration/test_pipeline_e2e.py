"""End to end on the real stack: raw lines -> the Spark job (spark-submit) -> store, clean topic, dead letters.

Then the job is killed hard (SIGKILL of its whole process group), restarted from its checkpoint, and
nothing is lost or stored twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bson.int64 import Int64

from sensor_pipeline import store
from sensor_pipeline.config import Settings
from sensor_pipeline.simulator import BEACHES, SnowflakeIds, format_line
from sensor_pipeline.stack import artifacts
from sensor_pipeline.stack.definition import StackDefinition, find_root, load
from sensor_pipeline.stack.runner import spark_submit_command
from tests.integration.conftest import read_all, settings_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.spark]
ROOT = find_root(Path(__file__))
Send = Callable[[str, list[tuple[str | None, str]]], None]

INVALID = {
    "bad_shape": "2020-02-17T11:12:58 26.04 540.1 Montrose_Beach 1",
    "bad_timestamp": "2020-02-30T11:12:58 26.04 540.1 13.12 Montrose_Beach 2",
    "future_timestamp": (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
    + " 20 1 11 Calumet_Beach 3",
    "bad_number": "2020-02-17T11:12:58 NaN 540.1 13.12 Montrose_Beach 4",
    "out_of_range": "2020-02-17T11:12:58 26.04 5000 13.12 Montrose_Beach 5",
    "bad_beach": "2020-02-17T11:12:58 26.04 540.1 13.12 Montrose-Beach 6",
    "bad_id": "2020-02-17T11:12:58 26.04 540.1 13.12 Montrose_Beach 0",
}


def valid_lines(count: int, ids: SnowflakeIds) -> list[str]:
    now = datetime.now(UTC)
    return [
        format_line(now - timedelta(seconds=i), 15 + i % 10, 1.5 + i % 7, 11.0, BEACHES[i % 6], ids.next())
        for i in range(count)
    ]


def keyed(lines: list[str]) -> list[tuple[str | None, str]]:
    return [(line.split()[4] if len(line.split()) == 6 else None, line) for line in lines]


@contextmanager
def spark_job(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The real job file under spark-submit, in its own process group so it can be killed whole."""
    jars = artifacts.spark_jars(ROOT, load(ROOT).versions["spark"])
    command = spark_submit_command(ROOT, jars, ("--trigger-seconds", "1"))
    env = {**os.environ, **settings_env(settings), "PYSPARK_PYTHON": sys.executable}
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def stored_count(settings: Settings) -> int:
    client = store.connect(settings)
    try:
        return store.readings(client, settings).count_documents({})
    finally:
        client.close()


def test_valid_invalid_and_duplicate_lines_survive_a_hard_kill(
    stack: StackDefinition, settings: Settings, produce: Send, tmp_path: Path
) -> None:
    ids = SnowflakeIds(worker=7)
    log = tmp_path / "job.log"
    wave1 = valid_lines(120, ids)
    duplicates = wave1[:15]
    produce(settings.raw_topic, keyed(wave1 + list(INVALID.values()) + duplicates))

    with spark_job(settings, log) as job:
        wait_for(lambda: stored_count(settings) >= 120, 240, f"120 documents (job log: {log})")
        wave2 = valid_lines(200, ids)
        produce(settings.raw_topic, keyed(wave2 + wave1[15:30]))  # more, and late duplicates of wave 1
        time.sleep(1.5)  # let a batch start, then crash the job without any chance to clean up
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(30)
        after_kill = stored_count(settings)

    wave3 = valid_lines(100, ids)
    produce(settings.raw_topic, keyed([*wave3, INVALID["bad_id"].replace(" 0", " -9")]))
    expected = {int(line.split()[5]) for line in wave1 + wave2 + wave3}
    with spark_job(settings, log):
        wait_for(lambda: stored_count(settings) >= len(expected), 240, f"{len(expected)} documents (log: {log})")
        clean = read_all(
            settings,
            settings.clean_topic,
            timeout=120,
            until=lambda records: {json.loads(r.value)["MeasurementID"] for r in records} >= expected,
        )
        dead = read_all(settings, settings.invalid_topic, expect=len(INVALID) + 1, timeout=60)

    # The store: exactly one document per reading, with the contract's BSON types.
    client = store.connect(settings)
    documents = list(store.readings(client, settings).find())
    client.close()
    assert len(documents) == len(expected) == 420, f"stored {after_kill} before the kill"
    assert {d["_id"] for d in documents} == expected
    for document in documents:
        assert set(document) == {
            "_id", "Beach", "MeasurementID", "BatteryLife", "RawData", "WaterTemperature", "Turbidity", "TimeStamp",
        }  # fmt: skip
        assert type(document["_id"]) is Int64 and type(document["MeasurementID"]) is Int64
        assert document["_id"] == document["MeasurementID"]
        assert isinstance(document["TimeStamp"], datetime) and document["TimeStamp"].tzinfo is not None
        assert all(isinstance(document[k], float) for k in ("BatteryLife", "WaterTemperature", "Turbidity"))
        assert " " in document["Beach"] and document["RawData"].split()[5] == str(document["_id"])

    # The clean topic: every stored reading, keyed by beach, in the contract's JSON; nothing is missing.
    # Only a batch in flight at the kill may be published twice (the at-least-once window, deduplicated
    # downstream by MeasurementID): nothing produced after the restart is repeated.
    messages = [(r.key.decode(), json.loads(r.value)) for r in clean]
    published = Counter(m["MeasurementID"] for _, m in messages)
    assert set(published) == expected
    repeated = {mid for mid, n in published.items() if n > 1}
    assert repeated <= {int(line.split()[5]) for line in wave1 + wave2}
    key, sample = messages[0]
    assert key == sample["Beach"].replace(" ", "_")
    assert sample["TimeStamp"].endswith("Z") and isinstance(sample["MeasurementID"], int)

    # Dead letters: every invalid line once (by source offset), each with its reason code.
    letters = {(d["Source"]["partition"], d["Source"]["offset"]): d for d in (json.loads(r.value) for r in dead)}
    reasons = Counter(d["Reason"] for d in letters.values())
    assert reasons == Counter({**dict.fromkeys(INVALID, 1), "bad_id": 2})
    assert all(d["RawData"] and d["Detail"] and d["RejectedAt"].endswith("Z") for d in letters.values())
