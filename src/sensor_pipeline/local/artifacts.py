"""Fetch or build, once, what the native stack runs; everything lands in the project cache.

The cache is ``$SP_CACHE`` (default ``~/.cache/sensor-pipeline``): the Maven repository, the Kafka
broker's jars, the Spark Kafka connector jars, the FerretDB binary and its Go build cache. A second
run on the same machine finds them and starts in seconds; a new machine fetches them from the
package registries (Maven Central, the Go module proxy).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path


class ArtifactError(RuntimeError):
    """A download or build failed; the message says what to check."""


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sensor-pipeline"
    path = Path(os.environ.get("SP_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(what: str, command: list[str], cwd: Path | None = None) -> None:
    print(f"==> {what}", flush=True)
    try:
        subprocess.run(command, cwd=cwd, check=True)
    except FileNotFoundError as error:
        raise ArtifactError(f"{what}: {command[0]} is not installed ({error})") from error
    except subprocess.CalledProcessError as error:
        raise ArtifactError(f"{what} failed (exit {error.returncode}); see the output above") from error


def _maven_copy(root: Path, pom_folder: str, target: Path, what: str) -> Path:
    """``mvn dependency:copy-dependencies`` of one of the project's poms into ``target`` (once)."""
    marker = target / ".complete"
    if marker.is_file():
        return target
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    _run(
        what,
        [
            "mvn",
            "-B",
            "-q",
            "-ntp",
            f"-Dmaven.repo.local={cache_dir() / 'm2'}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
        ],
        cwd=root / "localstack" / "maven" / pom_folder,
    )
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def kafka_libs(root: Path, version: str) -> Path:
    """The Kafka broker's jars (``kafka_2.13`` + ``kafka-tools`` + logging) from Maven Central."""
    return _maven_copy(
        root,
        "kafka",
        cache_dir() / f"kafka-{version}" / "libs",
        f"fetching Apache Kafka {version} from Maven Central (about 54 MB, once)",
    )


def spark_jars(root: Path, spark_version: str) -> list[Path]:
    """The Spark Kafka connector jars for ``spark.jars`` (and for S3, for EMR Serverless)."""
    folder = _maven_copy(
        root,
        "spark-kafka",
        cache_dir() / f"spark-kafka-{spark_version}",
        f"fetching the Spark {spark_version} Kafka connector from Maven Central (once)",
    )
    return sorted(folder.glob("*.jar"))


def emr_jars(root: Path, spark_version: str) -> list[Path]:
    """What EMR Serverless job runs get as ``--jars``: the connector plus MSK IAM authentication."""
    extras = _maven_copy(
        root,
        "emr-extras",
        cache_dir() / "emr-extras",
        "fetching the MSK IAM authentication jar from Maven Central (once)",
    )
    return spark_jars(root, spark_version) + sorted(extras.glob("*.jar"))


def ferretdb(root: Path, version: str) -> Path:
    """The FerretDB binary, built once from the Go module proxy with the project's patches
    (``localstack/ferretdb/*.patch``), whose digest is in its name: a changed patch builds anew."""
    script = root / "localstack" / "scripts" / "build-ferretdb.sh"
    digest = hashlib.sha256(script.read_bytes())
    for patch in sorted((root / "localstack" / "ferretdb").glob("*.patch")):
        digest.update(patch.name.encode() + b"\0" + patch.read_bytes())
    binary = cache_dir() / "bin" / f"ferretdb-{version}-{digest.hexdigest()[:12]}"
    if not binary.is_file():
        binary.parent.mkdir(parents=True, exist_ok=True)
        _run(
            f"building FerretDB {version} from the Go module proxy (once)",
            ["bash", str(script), str(binary)],
        )
    return binary


#: Documents FerretDB writes per SQLite transaction (its default is 100). The job inserts chunks of
#: ``insert_chunk`` (1,000) documents, which FerretDB 1.24 splits into transactions of this size; one
#: transaction per chunk cut the store's CPU per document by 11-17 % and raised its insert rate by
#: half or more (``make bench-store``). The price: a transaction that meets a duplicate key is redone
#: one document at a time, so a chunk of new documents with one duplicate id from another record is
#: now redone whole (4,354 documents/s against 17,162). A retried batch cuts the same chunks, stored
#: whole or not at all, so they are all duplicates or all new; a replay from other boundaries (after a
#: deleted checkpoint) can mix them. The flag is marked experimental in ``--help``.
FERRETDB_INSERT_BATCH = 1000


def ferretdb_sqlite_args(folder: Path, insert_batch: int = FERRETDB_INSERT_BATCH) -> list[str]:
    """The backend options of every FerretDB the project starts (the stack's store, DocumentDB stand-ins;
    ``make bench-store`` compares insert batches)."""
    return [
        "--handler=sqlite",
        f"--sqlite-url=file:{folder}/",
        # Its state.json (instance UUID) beside the data, not in the working directory (the checkout).
        f"--state-dir={folder}",
        f"--test-batch-size={insert_batch}",
        "--telemetry=disable",
        "--log-level=warn",
    ]


def mongo_server(root: Path, ferretdb_version: str) -> tuple[str, Path]:
    """``("mongod", path)`` when a real mongod is on PATH, else ``("ferretdb", path)`` (built once)."""
    mongod = shutil.which("mongod")
    if mongod:
        return "mongod", Path(mongod)
    return "ferretdb", ferretdb(root, ferretdb_version)
