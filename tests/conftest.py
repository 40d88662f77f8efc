"""Shared fixtures: a session-scoped local SparkSession (unit tests of transformations), AWS in-process."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

#: ``make test-all`` and ``make chaos`` set it: the cases marked ``slow`` run too.
ALL = os.environ.get("SP_TEST_ALL") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``make test`` keeps to its time budget: slow cases are reported as skipped, saying where they
    run, never filtered out of sight."""
    # A case named on the command line (a node id, or -k) runs: checking a fix must not pass by skipping.
    explicit = bool(config.option.keyword) or any("::" in arg for arg in config.args)
    if ALL or explicit:
        return
    for item in items:
        if item.get_closest_marker("slow"):
            where = "make chaos or make test-all" if item.get_closest_marker("chaos") else "make test-all"
            item.add_marker(pytest.mark.skip(reason=f"slow: {where} runs it"))


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    from pyspark.sql import SparkSession

    from sensor_pipeline.job.transforms import utc_session_conf

    builder = SparkSession.builder.master("local[2]").appName("tests")
    for key, value in {
        **utc_session_conf,
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "2",
        "spark.driver.memory": "1g",
    }.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def mocked_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """AWS replaced by moto in this process (unit tests only), with dummy credentials, us-east-1 by default."""
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    monkeypatch.delenv("SP_AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield
