"""The fuzz suite: 100,000 hostile records through the real job (``tests/hostile.py`` lines, plus
records no line generator makes: invalid UTF-8, NUL bytes, tombstones without a value, binary keys,
values near Kafka's 1 MB limit). Every one must be dead-lettered with a reason code, none stored,
and the job must still store and publish valid readings right after.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaProducer

from sensor_pipeline.config import Settings
from sensor_pipeline.contract import rules
from sensor_pipeline.local.health import wait_until
from sensor_pipeline.source.simulator import SnowflakeIds
from tests.chaos.conftest import FULL
from tests.hostile import invalid_lines
from tests.integration.conftest import read_all
from tests.integration.harness import Job, stored_ids, valid_line

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.chaos]

COUNT = 100_000 if FULL else 10_000  # make chaos / make test-all: the full 100,000


def raw_records(count: int, seed: int = 5) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) pairs: mostly hostile lines, one in ten mangled at the byte level."""
    rng = random.Random(seed)
    records: list[tuple[bytes | None, bytes | None]] = []
    for line in invalid_lines(count, seed=seed):
        value: bytes | None = line.encode("utf-8", errors="surrogatepass")
        key: bytes | None = (rules.beach_key(line) or "").encode("utf-8", errors="surrogatepass") or None
        roll = rng.random()
        if roll < 0.02:
            value, key = None, b"tombstone"  # no value: Kafka needs a key then
        elif roll < 0.06:
            at = rng.randrange(len(value) + 1)
            value = (
                value[:at]
                + rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80"])
                + value[at:]
            )
        elif roll < 0.08:
            key = rng.randbytes(rng.randrange(1, 64))
        elif roll < 0.1:
            value = value.replace(b" ", b"\x00", 1)
        records.append((key, value))
    big = b"2020-01-01T00:00:00 1 1 1 X " + b"9" * 900_000
    records[rng.randrange(count)] = (None, big)
    records[rng.randrange(count)] = (b"\xff" * 1000, b"\xff" * 900_000)
    return records


def test_hostile_records_are_all_dead_lettered_and_the_job_stays_alive(settings: Settings, tmp_path: Path) -> None:
    records = raw_records(COUNT)
    producer = KafkaProducer(
        **settings.kafka_client_options(), acks="all", linger_ms=20, batch_size=256 * 1024, max_request_size=2**20
    )
    for key, value in records:
        producer.send(settings.raw_topic, key=key, value=value)
    producer.flush(300)
    started = time.monotonic()
    job = Job(settings, tmp_path / "job.log").start()
    try:
        # Then valid readings: the job must take them as if nothing happened.
        ids = SnowflakeIds(worker=99)
        rng = random.Random(3)
        valid = [valid_line(ids, rng, datetime.now(UTC)) for _ in range(200)]
        for line in valid:
            producer.send(settings.raw_topic, key=(rules.beach_key(line) or "").encode(), value=line.encode())
        producer.flush(60)
        producer.close()
        expected = {int(line.split()[5]) for line in valid}
        assert wait_until(lambda: set(stored_ids(settings)) >= expected, 600, interval=1), (
            f"valid readings not stored; {job.log}"
        )
        elapsed = time.monotonic() - started
        letters = read_all(settings, settings.invalid_topic, expect=COUNT, timeout=300)
        clean = read_all(settings, settings.clean_topic, expect=len(valid), timeout=120)
    finally:
        job.stop()

    assert job.restarts == 0, f"the job died on hostile input; log {job.log}"
    sources = Counter(
        (json.loads(r.value)["Source"]["partition"], json.loads(r.value)["Source"]["offset"]) for r in letters
    )
    assert len(sources) == COUNT and max(sources.values()) == 1
    reasons = Counter(json.loads(r.value)["Reason"] for r in letters)
    assert set(reasons) <= set(rules.CHECKS), reasons
    assert all(len(r.value) < 1_000_000 for r in letters)  # far below Kafka's 1 MB message limit
    assert set(stored_ids(settings)) == expected  # none of the hostile records stored
    assert {json.loads(r.value)["MeasurementID"] for r in clean} == expected
    print(
        f"\nfuzz: {COUNT} hostile records dead-lettered in {elapsed:.0f} s (job start included); reasons {dict(reasons)}"
    )
