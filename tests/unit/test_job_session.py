"""The job's Spark session: what it configures, by where the checkpoint lives."""

from __future__ import annotations

import functools
import importlib.util
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pyspark
import pytest

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def job_module() -> ModuleType:
    """The job's entry script, loaded once (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("job_entry", ROOT / "jobs" / "structure_validate_store.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeBuilder:
    """Records what the job asks of ``SparkSession.builder``."""

    def __init__(self) -> None:
        self.conf: dict[str, str] = {}

    def appName(self, _name: str) -> FakeBuilder:  # noqa: N802 - Spark's name
        return self

    def config(self, key: str, value: str) -> FakeBuilder:
        self.conf[key] = value
        return self

    def getOrCreate(self) -> Any:  # noqa: N802 - Spark's name
        class Context:
            def setLogLevel(self, _level: str) -> None:  # noqa: N802
                pass

        return type("Session", (), {"sparkContext": Context()})()


def session_conf(checkpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    job = job_module()
    builder = FakeBuilder()
    monkeypatch.setattr(job, "SparkSession", type("FakeSparkSession", (), {"builder": builder}))
    job.session(checkpoint)
    return builder.conf


KEY = "spark.sql.streaming.checkpointFileManagerClass"


@pytest.mark.parametrize(
    "checkpoint", ["/var/lib/job/checkpoint", "relative/checkpoint", "file:///tmp/checkpoint", "FILE:/tmp/c", r"C:\c"]
)
def test_a_checkpoint_on_local_disk_is_written_through_the_filesystem_api(
    checkpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default manager runs `readlink` per file status without Hadoop's native library (12 forks/s).
    assert session_conf(checkpoint, monkeypatch)[KEY] == job_module().LOCAL_CHECKPOINT_MANAGER


@pytest.mark.parametrize("checkpoint", ["s3://bucket/checkpoints/job/", "hdfs://nn/checkpoints", "hdfs:/c", "s3a:/b/k"])
def test_a_checkpoint_elsewhere_keeps_the_platform_default(checkpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert KEY not in session_conf(checkpoint, monkeypatch)


def test_the_local_checkpoint_manager_exists_in_the_pinned_spark() -> None:
    # An internal class of Spark's: an upgrade that renames it must fail here, not at the job's start.
    jars = list((Path(pyspark.__file__).parent / "jars").glob("spark-sql_*.jar"))
    assert jars, "pyspark's spark-sql jar"
    entry = job_module().LOCAL_CHECKPOINT_MANAGER.replace(".", "/") + ".class"
    with zipfile.ZipFile(jars[0]) as jar:
        assert entry in jar.namelist()
