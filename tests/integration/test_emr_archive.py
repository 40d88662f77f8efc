"""The EMR job's archive: a self-contained interpreter with exactly the job's packages, enough for the job.

The archive is built by scripts/build_emr_archive.py, as for AWS (there on Amazon Linux 2023) and for the
deploy rehearsal. On EMR, pyspark comes from the release and spark-submit puts it on the Python path; here
only pyspark and py4j are lent from the project's venv, nothing else, so a job module that imports a
package the archive lacks (kafka-python, flask, ...) fails this test as it would fail on EMR.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SP_CACHE", Path.home() / ".cache" / "sensor-pipeline"))


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive, built and unpacked as spark.archives=...#environment unpacks it."""
    folder = tmp_path_factory.mktemp("emr")
    archive = folder / "pyspark_venv.tar.gz"
    env = {**os.environ, "UV": str(CACHE / "tools" / "bin" / "uv"), "UV_CACHE_DIR": str(CACHE / "uv")}
    # As the deploy rehearsal builds it (with the local CA as the DocumentDB bundle, when there is one):
    # then the build the rehearsal kept in $SP_CACHE/emr-archives is reused.
    ca = ROOT / ".local-stack" / "tls" / "ca.pem"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_emr_archive.py"), "--out", str(archive),
         *(["--ca-bundle", str(ca)] if ca.is_file() else [])],
        env=env, check=True, timeout=600,
    )  # fmt: skip
    with tarfile.open(archive) as packed:
        packed.extractall(folder / "environment", filter="tar")
    return folder / "environment"


def run_in_archive(environment: Path, code: str) -> subprocess.CompletedProcess[str]:
    import py4j
    import pyspark

    lent = environment.parent / "emr-provides"
    lent.mkdir(exist_ok=True)
    for package in (pyspark, py4j):
        link = lent / Path(package.__file__ or "").parent.name
        if not link.exists():
            link.symlink_to(Path(package.__file__ or "").parent)
    clean = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(lent), "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(environment / "bin" / "python"), "-c", code], env=clean, capture_output=True, text=True, timeout=120,
        check=False, cwd=environment.parent,
    )  # fmt: skip


def test_the_interpreter_is_in_the_archive_not_a_link_to_this_machine(environment: Path) -> None:
    python = environment / "bin" / "python"
    assert python.is_file() and not python.is_symlink()
    for path in environment.rglob("*"):
        if path.is_symlink():
            assert path.resolve().is_relative_to(environment.resolve()), f"{path} points outside the archive"
    assert not (environment / "pyvenv.cfg").exists(), "no pyvenv.cfg: the interpreter's home is the archive"


def test_every_module_the_job_loads_imports_with_the_archives_packages_only(environment: Path) -> None:
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("job", {str(ROOT / "jobs" / "structure_validate_store.py")!r})
job = importlib.util.module_from_spec(spec); spec.loader.exec_module(job)
import sensor_pipeline.job.writer, sensor_pipeline.job.store, sensor_pipeline.job.transforms, sensor_pipeline.contract.rules
import sensor_pipeline.job.delivery
from confluent_kafka import Consumer, Producer, TopicPartition
from sensor_pipeline.aws import aws_client
from sensor_pipeline.config import Settings
aws_client(Settings(aws_endpoint_url="http://127.0.0.1:1"), "secretsmanager")  # the emulator's path
aws_client(Settings(aws_endpoint_url=""), "secretsmanager")  # AWS's path
# The DocumentDB secret is read at the first batch: the imports on that path must resolve too.
try:
    sensor_pipeline.job.store.connect(Settings(mongo_secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:x",
                                           aws_endpoint_url="http://127.0.0.1:9"))
except ImportError:
    raise
except Exception:
    pass  # nothing listens on port 9: only the imports are under test
# MSK IAM for the transactional producer: AWS's signer makes a token (signed here, offline).
import os
os.environ.update(AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="x", AWS_REGION="us-east-1")
options = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="AWS_MSK_IAM").librdkafka_options()
token, expires = options["oauth_cb"]("")
assert token and expires > 0, (token, expires)
assert sys.prefix == {str(environment)!r}, sys.prefix
print(sorted(m for m in sys.modules if m.split(".")[0] in ("kafka", "flask", "bokeh")))
"""
    result = run_in_archive(environment, code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


def test_the_archive_really_lacks_what_the_job_must_not_import(environment: Path) -> None:
    result = run_in_archive(environment, "import kafka")
    assert result.returncode != 0 and "No module named 'kafka'" in result.stderr
