"""The job's progress: its Kafka consumer group's offsets, committed in each slice's transaction.

They are the truth about what the job has delivered (committed atomically with the output), so:

* a job without a checkpoint starts from them (:func:`starting_offsets`);
* Kafka's tools (``kafka-consumer-groups.sh --describe --group structure_validate_store``), Amazon
  MSK's consumer-lag metrics and the dashboard show the job's lag from them;
* records deleted by retention before the job read them are reported, by partition and count, and the
  job starts after them (never skipped silently);
* a raw topic that was deleted and created again stops the job with what to do: ``sensor-pipeline job
  reset-progress`` (:func:`reset`), then start it again. Kafka deletes a topic's committed offsets with
  the topic, and a new topic may outgrow the checkpoint's offsets before the job restarts, so neither
  tells: the raw topic's id (Kafka's topic UUID) is kept beside the readings (:func:`check_topic`).

Kafka expires a member-less group's offsets ``offsets.retention.minutes`` after their last commit:
the brokers keep them 30 days, the raw records 7 (``infra/msk.tf``), so an offset only expires once
every record below it is gone.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from sensor_pipeline.config import Settings
from sensor_pipeline.job import delivery

log = logging.getLogger("sensor_pipeline.job")
TIMEOUT = 30.0
#: Spark's code for "earliest" in a JSON offsets map.
EARLIEST = -2


class TopicRecreated(RuntimeError):
    """The raw topic holds fewer records than the job has committed: it was recreated."""


def _admin(settings: Settings) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(settings.librdkafka_options())


def committed(settings: Settings) -> dict[int, int]:
    """{partition: next offset} the job's group has committed on the raw topic.

    Read as the job's own tasks read them (``delivery.committed_positions``): offsets a transaction has
    pending are waited for, not skipped, and an error for a partition is raised, never read as
    "nothing committed"."""
    from confluent_kafka import KafkaException, TopicPartition

    consumer = delivery.group_consumer(settings, cached=False)  # the driver and the CLI use it once
    try:
        topic = consumer.list_topics(settings.raw_topic, timeout=TIMEOUT).topics[settings.raw_topic]
        if topic.error is not None:
            raise KafkaException(topic.error)
        asked = [TopicPartition(settings.raw_topic, p) for p in sorted(topic.partitions)]
        positions = delivery.committed_positions(settings, asked, consumer)
    finally:
        consumer.close()
    return {int(tp.partition): int(tp.offset) for tp in positions if tp.offset >= 0}


def topic_id(settings: Settings) -> str:
    """The raw topic's id: a new one each time the topic is created."""
    from confluent_kafka import TopicCollection

    admin = _admin(settings)  # held until the answer: a collected client fails its futures with _DESTROY
    futures = admin.describe_topics(TopicCollection([settings.raw_topic]), request_timeout=TIMEOUT)
    return str(futures[settings.raw_topic].result(TIMEOUT).topic_id)


def _state(settings: Settings) -> Any:
    from sensor_pipeline.job import store

    client = store.connect(settings)
    return client, store.durable_readings(client, settings).database[f"{settings.mongo_collection}_job"]


def check_topic(settings: Settings) -> None:
    """Remember the raw topic's id on the first run; refuse to start on another topic of that name."""
    current = topic_id(settings)
    client, state = _state(settings)
    try:
        known = state.find_one({"_id": "raw_topic"})
        if known is None:
            state.insert_one({"_id": "raw_topic", "name": settings.raw_topic, "topic_id": current})
        elif known["topic_id"] != current:
            raise TopicRecreated(
                f"{settings.raw_topic} is not the topic the job delivered from (topic id {current}, was "
                f"{known['topic_id']}): it was deleted and created again, and Kafka deleted the job's offsets "
                "with it. To process the new topic from its start, run `sensor-pipeline job reset-progress "
                "--checkpoint <the job's checkpoint> --yes` (it forgets the job's offsets, checkpoint and the "
                "old topic's id), then start the job."
            )
    finally:
        client.close()


def watermarks(settings: Settings) -> dict[int, tuple[int, int]]:
    """{partition: (first offset, end offset)} of the raw topic now."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    admin = _admin(settings)
    metadata = admin.list_topics(settings.raw_topic, timeout=TIMEOUT).topics[settings.raw_topic]
    if metadata.error is not None:
        raise RuntimeError(f"{settings.raw_topic}: {metadata.error}")
    partitions = [TopicPartition(settings.raw_topic, p) for p in metadata.partitions]
    low = admin.list_offsets({tp: OffsetSpec.earliest() for tp in partitions}, request_timeout=TIMEOUT)
    high = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions}, request_timeout=TIMEOUT)
    return {
        tp.partition: (int(low[tp].result(TIMEOUT).offset), int(high[tp].result(TIMEOUT).offset)) for tp in partitions
    }


def starting_offsets(settings: Settings) -> dict[str, dict[str, int]] | None:
    """Spark's ``startingOffsets`` from the group (None: it has committed nothing: ``SP_STARTING_OFFSETS``;
    a partition it has not committed starts at the earliest offset)."""
    check_topic(settings)
    done = committed(settings)
    if not done:
        return None
    bounds = watermarks(settings)
    recreated = {p: (c, bounds[p][1]) for p, c in done.items() if p in bounds and c > bounds[p][1]}
    if recreated or set(done) - set(bounds):
        raise TopicRecreated(
            f"{settings.raw_topic} ends below what the job committed ({recreated or 'partitions gone'}): the topic was "
            "deleted and created again. To process it from its start, run `sensor-pipeline job reset-progress "
            f"--checkpoint {settings.checkpoint_location} --yes` (it deletes the job's group offsets and the "
            "checkpoint, whose offsets are the old topic's: kept, they would hide the new topic's first records), "
            "then start the job."
        )
    offsets: dict[str, int] = {}
    for partition, (first, _end) in sorted(bounds.items()):
        position = done.get(partition, EARLIEST)
        if 0 <= position < first:
            log.error(
                "%s partition %d: offsets %d-%d (%d records) were deleted by retention before the job read them; "
                "starting at %d",
                settings.raw_topic, partition, position, first - 1, first - position, first,
            )  # fmt: skip
            position = first
        offsets[str(partition)] = position
    log.info("starting offsets from the job's group (used only without a checkpoint): %s", offsets)
    return {settings.raw_topic: offsets}


class NothingReset(RuntimeError):
    """``reset`` refused before deleting anything."""


#: An ``s3://`` checkpoint: (s3 client, bucket, prefix ending in "/", the keys under it).
S3Objects = tuple[Any, str, str, list[str]]


def _checkpoint_objects(settings: Settings, checkpoint: str) -> S3Objects:
    """(s3 client, bucket, prefix, keys) of an ``s3://`` checkpoint: the objects under ``<prefix>/`` only."""
    from sensor_pipeline.aws import aws_client

    bucket, _, prefix = checkpoint.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/"  # s3://b/ckpt must not also take s3://b/ckpt-old/
    s3 = aws_client(settings, "s3")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]  # fmt: skip
    return s3, bucket, prefix, keys


def _checked_checkpoint(settings: Settings, checkpoint: str, missing_ok: bool) -> tuple[bool, S3Objects | None]:
    """Whether ``checkpoint`` is a Structured Streaming checkpoint (its ``metadata`` file at the top), and
    its S3 objects; refused (:class:`NothingReset`) unless it is one or, with ``missing_ok``, holds nothing."""
    s3_objects: S3Objects | None = None
    if checkpoint.startswith("s3://"):
        s3_objects = _checkpoint_objects(settings, checkpoint)
        _, _, prefix, keys = s3_objects
        is_checkpoint, empty = f"{prefix}metadata" in keys, not keys
    else:
        folder = Path(checkpoint)
        is_checkpoint = folder.is_dir() and (folder / "metadata").is_file()
        empty = not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))
    if not is_checkpoint and not (empty and missing_ok):
        what = "nothing there" if empty else "something else is there, left as it is"
        raise NothingReset(
            f"no checkpoint at {checkpoint} ({what}): nothing was reset. Check the path; if the job's checkpoint "
            "is already gone, pass --missing-ok"
        )
    return is_checkpoint, s3_objects


def _refuse_keeping_for_a_recreated_topic(settings: Settings) -> None:
    client, state = _state(settings)
    try:
        known = state.find_one({"_id": "raw_topic"})
    finally:
        client.close()
    if known is None:
        return
    try:
        current = topic_id(settings)
    except Exception as error:  # no such topic, or the broker does not answer
        raise NothingReset(f"cannot read {settings.raw_topic}'s id ({error}): nothing was reset") from error
    if known["topic_id"] != current:
        raise NothingReset(
            f"{settings.raw_topic} was deleted and created again since the job last ran: its checkpoint holds "
            "the old topic's offsets and must go with them; pass --checkpoint <the job's checkpoint> (with "
            "--missing-ok if it is already gone)"
        )


def _delete_checkpoint(checkpoint: str, s3_objects: S3Objects | None) -> str:
    if s3_objects is None:
        shutil.rmtree(Path(checkpoint))
        return f"deleted checkpoint {checkpoint}"
    s3, bucket, _, keys = s3_objects
    for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1,000 keys
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]})
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise RuntimeError(
                f"{checkpoint}: {len(answer['Errors'])} objects not deleted ({first.get('Key')}: "
                f"{first.get('Code')} {first.get('Message')}); run the command again"
            )
    return f"deleted checkpoint {checkpoint} ({len(keys)} objects)"


def reset(settings: Settings, checkpoint: str | None = None, missing_ok: bool = False) -> list[str]:
    """Forget the job's progress: its group (offsets), and the checkpoint when given. What was done.

    Checked before anything is deleted: ``checkpoint`` must be a Structured Streaming checkpoint (a
    mistyped path would leave the real one, whose offsets hide a new topic's first records), or, with
    ``missing_ok``, hold nothing at all; and a checkpoint kept (``checkpoint`` None) must not belong to a
    raw topic that was deleted and created again."""
    is_checkpoint, s3_objects = _checked_checkpoint(settings, checkpoint, missing_ok) if checkpoint else (False, None)
    if not checkpoint:
        _refuse_keeping_for_a_recreated_topic(settings)
    done: list[str] = []
    admin = _admin(settings)
    try:
        admin.delete_consumer_groups([settings.job_group], request_timeout=TIMEOUT)[settings.job_group].result(TIMEOUT)
        done.append(f"deleted consumer group {settings.job_group}")
    except Exception as error:  # a group that does not exist is already reset
        if "GROUP_ID_NOT_FOUND" not in str(error):
            raise
    client, state = _state(settings)
    try:
        if state.delete_one({"_id": "raw_topic"}).deleted_count:
            done.append(f"forgot the raw topic's id (the next start records {settings.raw_topic}'s)")
    finally:
        client.close()
    if checkpoint:
        done.append(
            _delete_checkpoint(checkpoint, s3_objects)
            if is_checkpoint
            else f"no checkpoint at {checkpoint} (--missing-ok)"
        )
    return done
