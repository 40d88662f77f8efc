"""End to end on the real stack: raw lines -> the Spark job (spark-submit) -> store, clean topic, dead letters.

The job is killed hard (SIGKILL of the whole job) at a fault point of the delivery: after a slice's
readings are stored and before its transaction begins. Restarted from its checkpoint, it loses
nothing, stores nothing twice and publishes nothing twice, as a read_committed consumer sees the
output topics. (The fault suite, tests/chaos, strikes every other point.)
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bson.int64 import Int64

from sensor_pipeline.config import Settings
from sensor_pipeline.dashboard.meter import KafkaOffsets, PipelineMeter
from sensor_pipeline.job import store
from sensor_pipeline.local.definition import StackDefinition
from sensor_pipeline.source.simulator import BEACHES, SnowflakeIds, format_line
from tests.integration.conftest import read_all
from tests.integration.harness import Job, raw_end_offsets, stored_count
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.spark]
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


def test_valid_invalid_and_duplicate_lines_survive_a_hard_kill(
    stack: StackDefinition, settings: Settings, produce: Send, tmp_path: Path
) -> None:
    ids = SnowflakeIds(worker=7)
    log = tmp_path / "job.log"
    wave1 = valid_lines(120, ids)
    duplicates = wave1[:15]
    produce(settings.raw_topic, keyed(wave1 + list(INVALID.values()) + duplicates))

    marker = tmp_path / "fault.fired"
    job = Job(settings, log, env={"SP_FAULT": "stored:kill", "SP_FAULT_MARKER": str(marker)})
    job.supervise = False
    job.start()
    try:
        wait_for(marker.exists, 240, f"the fault point (job log: {log})")
        assert job.process is not None and job.process.wait(30) == -signal.SIGKILL
        after_kill = stored_count(settings)
        wave2 = valid_lines(200, ids)
        produce(settings.raw_topic, keyed(wave2 + wave1[15:30]))  # more, and late duplicates of wave 1
    finally:
        job.stop()

    wave3 = valid_lines(100, ids)
    produce(settings.raw_topic, keyed([*wave3, INVALID["bad_id"].replace(" 0", " -9")]))
    expected = {int(line.split()[5]) for line in wave1 + wave2 + wave3}
    job = Job(settings, log).start()
    try:
        wait_for(lambda: stored_count(settings) >= len(expected), 240, f"{len(expected)} documents (log: {log})")
        clean = read_all(
            settings,
            settings.clean_topic,
            timeout=120,
            until=lambda records: {json.loads(r.value)["MeasurementID"] for r in records} >= expected,
        )
        dead = read_all(settings, settings.invalid_topic, expect=len(INVALID) + 1, timeout=60)
        # Its progress, committed with its output: every raw offset, in the job's consumer group.
        offsets = KafkaOffsets(settings)
        ends = {p: end for p, end in raw_end_offsets(settings).items() if end > 0}
        try:
            wait_for(
                lambda: offsets.committed(settings.job_group, settings.raw_topic) == ends,
                60,
                f"the job's committed offsets to reach {ends}",
            )
            assert PipelineMeter(settings).sample(offsets).lag == 0
        finally:
            offsets.close()
    finally:
        job.stop()

    # The store: exactly one document per reading, with the contract's BSON types.
    client = store.connect(settings)
    documents = list(store.readings(client, settings).find())
    client.close()
    assert len(documents) == len(expected) == 420, f"stored {after_kill} before the kill"
    assert {d["_id"] for d in documents} == expected
    raw = {(r.partition, r.offset): r.value.decode() for r in read_all(settings, settings.raw_topic, timeout=60)}
    for document in documents:
        assert set(document) == {
            "_id", "Beach", "MeasurementID", "BatteryLife", "RawData", "WaterTemperature", "Turbidity", "TimeStamp",
            "Source",
        }  # fmt: skip
        source = document["Source"]  # the raw record it was stored from (the first copy of its reading)
        assert source["topic"] == settings.raw_topic
        assert raw[(source["partition"], source["offset"])] == document["RawData"]
        assert type(document["_id"]) is Int64 and type(document["MeasurementID"]) is Int64
        assert document["_id"] == document["MeasurementID"]
        assert isinstance(document["TimeStamp"], datetime) and document["TimeStamp"].tzinfo is not None
        assert all(isinstance(document[k], float) for k in ("BatteryLife", "WaterTemperature", "Turbidity"))
        assert " " in document["Beach"] and document["RawData"].split()[5] == str(document["_id"])

    # The clean topic: every stored reading once, keyed by beach, in the contract's JSON. The kill
    # came after a chunk was stored and before it was published: the restart publishes it, once.
    messages = [(r.key.decode(), json.loads(r.value)) for r in clean]
    published = Counter(m["MeasurementID"] for _, m in messages)
    assert after_kill > 0
    assert published == Counter(expected)
    key, sample = messages[0]
    assert key == sample["Beach"].replace(" ", "_")
    assert sample["TimeStamp"].endswith("Z") and isinstance(sample["MeasurementID"], int)

    # Dead letters: every invalid line once (by source offset), each with its reason code.
    letters = [json.loads(r.value) for r in dead]
    by_source = Counter((d["Source"]["partition"], d["Source"]["offset"]) for d in letters)
    assert set(by_source.values()) == {1}, f"a dead letter repeated: {by_source}"
    assert Counter(d["Reason"] for d in letters) == Counter({**dict.fromkeys(INVALID, 1), "bad_id": 2})
    assert all(d["RawData"] and d["Detail"] and d["RejectedAt"].endswith("Z") for d in letters)
