"""Idempotent set-up of what the pipeline needs: topics, indexes, the artifacts bucket.

Run by ``sensor-pipeline init`` (``make local-up`` calls it; on AWS a one-off ECS task of the producer
image runs it before the services start), and safe to run any number of times.
"""

from __future__ import annotations

from typing import Any

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from sensor_pipeline.aws import aws_client
from sensor_pipeline.config import Settings
from sensor_pipeline.job import store


def ensure_topics(settings: Settings, topics: tuple[str, ...] | None = None) -> list[str]:
    """Create the raw, clean and dead-letter topics when missing; returns the ones created."""
    wanted = topics or settings.topics
    admin = KafkaAdminClient(**settings.kafka_client_options(), client_id="sensor-pipeline-init")
    try:
        missing = [t for t in wanted if t not in set(admin.list_topics())]
        created = []
        for topic in missing:  # one by one: a topic created concurrently elsewhere is not an error
            try:
                admin.create_topics(
                    [NewTopic(topic, settings.topic_partitions, settings.topic_replication)],
                    timeout_ms=30_000,
                )
                created.append(topic)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def ensure_store(settings: Settings) -> None:
    client = store.connect(settings)
    try:
        store.ensure_indexes(store.readings(client, settings))
    finally:
        client.close()


def ensure_bucket(settings: Settings, bucket: str) -> None:
    s3 = aws_client(settings, "s3")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)


def ensure_all(settings: Settings, bucket: str | None = None) -> dict[str, Any]:
    created = ensure_topics(settings)
    ensure_store(settings)
    if bucket:
        ensure_bucket(settings, bucket)
    return {"topics_created": created, "bucket": bucket}
