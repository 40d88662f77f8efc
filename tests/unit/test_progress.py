"""The job's progress commits, against a fake of the driver's JVM (py4j) and its Kafka Admin client:
offsets only grow, a commit never blocks a batch for long, a failure pauses commits."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sensor_pipeline.config import Settings
from sensor_pipeline.ledger import OffsetRange
from sensor_pipeline.progress import PAUSE_AFTER_FAILURE, ProgressCommitter

TOPIC = "RawSensorData"


class Future:
    def __init__(self, offsets: dict[tuple[str, int], int], outcome: str) -> None:
        self.offsets, self.outcome = offsets, outcome

    def isDone(self) -> bool:  # noqa: N802 - the Java name
        return self.outcome != "running"

    def get(self, *timeout: Any) -> None:
        if self.outcome == "running":
            raise TimeoutError("java.util.concurrent.TimeoutException")
        if self.outcome == "failed":
            raise RuntimeError("org.apache.kafka.common.errors.GroupAuthorizationException")


class Admin:
    def __init__(self, jvm: Jvm) -> None:
        self.jvm = jvm
        self.closed_with: object = None

    def alterConsumerGroupOffsets(self, group: str, offsets: dict[Any, int], options: Any) -> Any:  # noqa: N802
        future = Future(dict(offsets), self.jvm.outcome)
        self.jvm.calls.append((group, future))
        return SimpleNamespace(all=lambda: future)

    def close(self, timeout: object = None) -> None:
        self.closed_with = timeout


class JavaMap(dict[Any, Any]):
    def put(self, key: Any, value: Any) -> None:
        self[key] = value


class Jvm:
    """What progress.py reaches through ``spark.sparkContext._jvm``."""

    def __init__(self) -> None:
        self.outcome = "done"
        self.calls: list[tuple[str, Future]] = []
        self.admins: list[Admin] = []
        self.java = SimpleNamespace(
            util=SimpleNamespace(
                Properties=JavaMap,
                HashMap=JavaMap,
                concurrent=SimpleNamespace(TimeUnit=SimpleNamespace(MILLISECONDS="ms", SECONDS="s")),
            ),
            time=SimpleNamespace(Duration=SimpleNamespace(ZERO="Duration.ZERO")),
        )
        self.org = SimpleNamespace(
            apache=SimpleNamespace(
                kafka=SimpleNamespace(
                    common=SimpleNamespace(TopicPartition=lambda topic, partition: (topic, partition)),
                    clients=SimpleNamespace(
                        consumer=SimpleNamespace(OffsetAndMetadata=lambda offset: offset),
                        admin=SimpleNamespace(
                            Admin=SimpleNamespace(create=self.create),
                            AlterConsumerGroupOffsetsOptions=lambda: SimpleNamespace(timeoutMs=lambda ms: ms),
                        ),
                    ),
                )
            )
        )

    def create(self, properties: dict[str, str]) -> Admin:
        admin = Admin(self)
        self.admins.append(admin)
        return admin


def committer() -> tuple[ProgressCommitter, Jvm, list[float]]:
    jvm, now = Jvm(), [0.0]
    spark: Any = SimpleNamespace(sparkContext=SimpleNamespace(_jvm=jvm))
    return ProgressCommitter(spark, Settings(), clock=lambda: now[0]), jvm, now


def last_commit(jvm: Jvm) -> dict[tuple[str, int], int]:
    return jvm.calls[-1][1].offsets


def test_the_committed_offsets_only_grow_from_the_ledgers() -> None:
    progress, jvm, _ = committer()
    progress.seed(TOPIC, {0: 50, 1: 7})
    assert progress.commit([OffsetRange(TOPIC, 0, 0, 9)])  # a replay of an old batch: nothing moves back
    assert last_commit(jvm) == {(TOPIC, 0): 50, (TOPIC, 1): 7}
    assert progress.commit([OffsetRange(TOPIC, 0, 50, 99)])
    assert last_commit(jvm) == {(TOPIC, 0): 100, (TOPIC, 1): 7}  # every partition, every time
    assert jvm.calls[-1][0] == "structure_validate_store" and progress.commits == 1


def test_a_batch_skips_its_commit_while_the_previous_one_runs_and_the_next_carries_it() -> None:
    progress, jvm, _ = committer()
    jvm.outcome = "running"
    assert progress.commit([OffsetRange(TOPIC, 0, 0, 9)])
    assert not progress.commit([OffsetRange(TOPIC, 0, 10, 19)])  # in flight: skipped, not waited for
    assert len(jvm.calls) == 1
    jvm.calls[-1][1].outcome = "done"
    jvm.outcome = "done"
    assert progress.commit([OffsetRange(TOPIC, 0, 20, 29)])
    assert last_commit(jvm) == {(TOPIC, 0): 30} and progress.failures == 0


def test_a_failed_commit_pauses_commits_and_closes_the_client_at_once() -> None:
    progress, jvm, now = committer()
    jvm.outcome = "failed"
    assert progress.commit([OffsetRange(TOPIC, 0, 0, 9)])  # started; it fails in the client
    assert not progress.commit([OffsetRange(TOPIC, 0, 10, 19)])  # its failure is seen: pause
    assert progress.failures == 1 and jvm.admins[0].closed_with == "Duration.ZERO"
    jvm.outcome = "done"
    now[0] = PAUSE_AFTER_FAILURE - 1
    assert not progress.commit([OffsetRange(TOPIC, 0, 20, 29)]) and len(jvm.calls) == 1
    now[0] = PAUSE_AFTER_FAILURE + 1
    assert progress.commit([])  # after the pause, a new client commits what has been finished
    assert last_commit(jvm) == {(TOPIC, 0): 30} and len(jvm.admins) == 2


def test_terraform_grants_the_group_the_job_commits_to_by_default() -> None:
    """The job run gets SP_JOB_GROUP from settings, the IAM grants and the ECS tasks from Terraform."""
    locals_tf = (Path(__file__).resolve().parents[2] / "infra" / "locals.tf").read_text()
    match = re.search(r'^\s*job_group\s*=\s*"([^"]+)"', locals_tf, re.MULTILINE)
    assert match is not None and match.group(1) == Settings().job_group
