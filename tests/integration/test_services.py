"""Each local service over its real protocol (issue: local stack)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from bson.int64 import Int64
from pymongo.errors import DuplicateKeyError

from sensor_pipeline.aws import aws_client
from sensor_pipeline.cloud import provision
from sensor_pipeline.config import Settings
from sensor_pipeline.job import store
from tests.integration.conftest import read_all

pytestmark = pytest.mark.integration


def test_the_three_contract_topics_exist(base_settings: Settings) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(**base_settings.kafka_client_options())
    topics = set(admin.list_topics())
    admin.close()
    assert {"RawSensorData", "CleanSensorData", "InvalidSensorData"} <= topics


def test_topic_creation_is_idempotent(settings: Settings) -> None:
    assert provision.ensure_topics(settings) == []  # the fixture created them already


@pytest.mark.parametrize("which", ["raw_topic", "clean_topic", "invalid_topic"])
def test_produce_and_consume_on_each_topic(
    settings: Settings, produce: Callable[[str, list[tuple[str | None, str]]], None], which: str
) -> None:
    topic = getattr(settings, which)
    sent = [("Montrose_Beach", f"message {i} {uuid.uuid4()}") for i in range(50)]
    produce(topic, sent)
    received = read_all(settings, topic, expect=50)
    assert sorted((r.key.decode(), r.value.decode()) for r in received) == sorted(sent)


def test_store_enforces_the_unique_index_and_answers_queries(settings: Settings) -> None:
    client = store.connect(settings)
    collection = store.readings(client, settings)
    document = {
        "_id": Int64(42),
        "Beach": "Calumet Beach",
        "MeasurementID": Int64(42),
        "BatteryLife": 11.0,
        "RawData": "2020-02-17T11:12:58 20 1 11 Calumet_Beach 42",
        "WaterTemperature": 20.0,
        "Turbidity": 1.0,
        "TimeStamp": datetime(2020, 2, 17, 11, 12, 58, tzinfo=UTC),
    }
    assert store.insert_new(collection, [document]) == store.WriteResult(1)
    again = store.insert_new(collection, [document, {**document, "_id": Int64(43), "MeasurementID": Int64(43)}])
    assert again == store.WriteResult(1, duplicate_ids=(42,))
    with pytest.raises(DuplicateKeyError):  # a different _id but the same MeasurementID
        collection.insert_one({**document, "_id": Int64(44)})
    indexes = {i["name"]: i for i in collection.list_indexes()}
    assert indexes["MeasurementID_unique"]["unique"] is True
    assert "Beach_TimeStamp" in indexes
    found = collection.find_one({"_id": 42})
    assert found is not None and found["TimeStamp"] == document["TimeStamp"]
    assert isinstance(found["MeasurementID"], Int64)
    client.close()


def test_the_jobs_lookup_by_id_reads_the_id_index_not_the_collection(settings: Settings) -> None:
    """Who stored a refused document (``store.sources``) is read from the _id index: on FerretDB's
    SQLite backend only with the project's patch (localstack/ferretdb/), else a scan of every document."""
    client = store.connect(settings)
    collection = store.readings(client, settings)
    edges = [1, 758028, 2**31, 2**53 + 1, 2**63 - 1]
    collection.insert_many(
        [{"_id": Int64(i), "MeasurementID": Int64(i), "Source": {"offset": n}} for n, i in enumerate(edges)]
    )
    found = store.sources(collection, [*edges, 424242])
    assert found == {i: {"offset": n} for n, i in enumerate(edges)}, "every stored id, none invented"
    # A double equal to a long is the same _id to MongoDB; above 2^53 its text differs from the long's.
    collection.insert_one({"_id": float(2**60), "MeasurementID": Int64(7), "Source": {"offset": "double"}})
    assert store.sources(collection, [Int64(2**60), Int64(2**60 + 1)]) == {2**60: {"offset": "double"}}
    plan = str(collection.database.command("explain", {"find": collection.name, "filter": {"_id": {"$in": edges}}}))
    if "ferretdbVersion" in plan:  # FerretDB reports SQLite's query plan
        assert "USING INDEX" in plan and "_id_" in plan, plan
    else:  # mongod: the _id index
        assert "IXSCAN" in plan or "IDHACK" in plan or "EXPRESS" in plan, plan
    client.close()


@pytest.mark.aws_emulator
def test_emulator_s3_stores_objects(base_settings: Settings) -> None:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    provision.ensure_bucket(base_settings, bucket)
    provision.ensure_bucket(base_settings, bucket)  # idempotent
    s3 = aws_client(base_settings, "s3")
    s3.put_object(Bucket=bucket, Key="jobs/hello.txt", Body=b"hello")
    assert s3.get_object(Bucket=bucket, Key="jobs/hello.txt")["Body"].read() == b"hello"
    assert base_settings.artifacts_bucket in {b["Name"] for b in s3.list_buckets()["Buckets"]}
