"""Integration fixtures: the real local stack (Kafka, a MongoDB-wire server, moto), started if needed.

If the stack's services already answer (``make local-up`` or ``make local-infra-up`` ran), they are
reused and left running; otherwise the session starts them with ``sensor-pipeline stack up
--infra-only`` and stops them at the end. Every test works on its own topics and database; still, stop
``make local-up``'s pipeline first: the deploy rehearsal refuses to run beside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from sensor_pipeline.cloud import provision
from sensor_pipeline.config import Settings, settings_from_env_map
from sensor_pipeline.job import store
from sensor_pipeline.local import health
from sensor_pipeline.local.definition import StackDefinition, find_root, load

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "sensor-pipeline")


#: scripts/test.sh sets it: the stack is started and stopped there, for both of make test's sessions.
SHARED_STACK = os.environ.get("SP_TEST_SHARED_STACK") == "1"


@pytest.fixture(scope="session")
def stack() -> Iterator[StackDefinition]:
    root = find_root(Path(__file__))
    definition = load(root)
    infra = definition.tier("infra")
    started = False
    if SHARED_STACK:
        # Never started or stopped here: a health check slowed by the other session must not make this
        # one take the stack for its own and stop it under the other.
        for service in infra:
            assert health.wait_until(lambda s=service: health.check(s, lambda: True), 120, interval=1), (
                f"{service.name} of the shared stack is not ready"
            )
    elif not all(health.check(service, lambda: True) for service in infra):
        subprocess.run([CLI, "stack", "up", "--infra-only"], cwd=root, check=True)
        started = True
    yield definition
    if started:
        subprocess.run([CLI, "stack", "down"], cwd=root, check=True)


@pytest.fixture(scope="session")
def base_settings(stack: StackDefinition) -> Settings:
    return settings_from_env_map(stack.settings)


@contextmanager
def sandbox(base_settings: Settings, tag: str, folder: Path) -> Iterator[Settings]:
    """Settings with their own topics, database and checkpoint folder, created and removed after."""
    isolated = base_settings.sandboxed(tag, str(folder))
    provision.ensure_topics(isolated)
    provision.ensure_store(isolated)
    yield isolated
    client = store.connect(isolated)
    client.drop_database(isolated.mongo_database)
    client.close()
    admin = KafkaAdminClient(**isolated.kafka_client_options())
    admin.delete_topics(list(isolated.topics))
    admin.close()


@pytest.fixture
def settings(base_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings with this test's own topics, database and checkpoint folder."""
    with sandbox(base_settings, f"test-{uuid.uuid4().hex[:10]}", tmp_path) as isolated:
        yield isolated


def settings_env(settings: Settings) -> dict[str, str]:
    """The SP_* environment that gives a subprocess these settings."""
    return settings.to_env()


@pytest.fixture
def produce(settings: Settings) -> Iterator[Callable[[str, list[tuple[str | None, str]]], None]]:
    producer = KafkaProducer(**settings.kafka_client_options(), acks="all", linger_ms=5)

    def send(topic: str, messages: list[tuple[str | None, str]]) -> None:
        futures = [producer.send(topic, key=k.encode() if k else None, value=v.encode()) for k, v in messages]
        producer.flush()
        for future in futures:
            future.get(timeout=10)  # raises if a delivery failed

    yield send
    producer.close()


def read_all(
    settings: Settings,
    topic: str,
    expect: int | None = None,
    timeout: float = 60,
    until: Callable[[list[Any]], bool] | None = None,
) -> list[Any]:
    """Every committed record of a topic, from the start (``read_committed``, as every consumer of the job's
    output topics reads); wait until ``expect`` records arrived or ``until`` holds."""
    consumer = KafkaConsumer(
        **settings.kafka_client_options(), enable_auto_commit=False, isolation_level="read_committed"
    )
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=500)
        records.extend(r for rs in batch.values() for r in rs)
        ends = consumer.end_offsets(partitions)
        caught_up = all(consumer.position(tp) >= ends[tp] for tp in partitions)
        enough = (expect is None or len(records) >= expect) and (until is None or until(records))
        if caught_up and enough:
            break
    consumer.close()
    return records
