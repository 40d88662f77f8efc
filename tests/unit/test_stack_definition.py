"""The local stack's single definition, and what is derived from it."""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest

from sensor_pipeline.config import Settings
from sensor_pipeline.local import artifacts
from sensor_pipeline.local.definition import (
    COMPOSE_FILE,
    SPARK_IMAGE_CHECKPOINTS,
    SPARK_IMAGE_JARS,
    SPARK_IMAGE_JOB,
    find_root,
    load,
    render_compose,
)
from sensor_pipeline.local.runner import Paths, clear_scratch, kafka_properties, program_commands, supervisord_conf
from tests.waiting import wait_for

ROOT = find_root(Path(__file__))
CONTRACT_PORTS = {"sensor-api": 3030, "kafka": 9092, "mongodb": 27017, "aws": 4566, "dashboard": 5006}
# The official Compose Specification schema (compose-spec/compose-spec, schema/compose-spec.json) as
# vendored by the check-jsonschema package (a pinned dev dependency, Apache-2.0 like the schema).
COMPOSE_SPEC = ("check_jsonschema.builtin_schemas.vendor", "compose-spec.json")


def _rendered_compose() -> dict[str, Any]:
    """The compose document exactly as `sensor-pipeline stack compose` writes it (two comment lines, then JSON)."""
    document: dict[str, Any] = json.loads(render_compose(load(ROOT)).split("\n", 2)[2])
    return document


@pytest.fixture(scope="module")
def compose_spec() -> jsonschema.protocols.Validator:
    package, name = COMPOSE_SPEC
    schema = json.loads(importlib.resources.files(package).joinpath(name).read_text(encoding="utf-8"))
    assert schema.get("title") == "Compose Specification", schema.get("title")
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def _violations(validator: jsonschema.protocols.Validator, document: dict[str, Any]) -> list[tuple[str, str]]:
    """Each schema violation as (JSON path, message), e.g. ``("$.services.producer.depends_on", "...")``."""
    errors = sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    return [(error.json_path, error.message[:300]) for error in errors]


def test_ports_are_the_contract_defaults() -> None:
    services = load(ROOT).services
    assert {name: services[name].port for name in CONTRACT_PORTS} == CONTRACT_PORTS


def test_the_committed_compose_file_is_generated_from_the_definition() -> None:
    assert (ROOT / COMPOSE_FILE).read_text() == render_compose(load(ROOT)), (
        "run `sensor-pipeline stack compose` and commit localstack/docker-compose.yml"
    )


def test_compose_binds_loopback_only_and_gates_on_health() -> None:
    document = json.loads(render_compose(load(ROOT)).split("\n", 2)[2])
    for name, service in document["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
        for dependency, condition in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency == "init" else "service_healthy"
            assert condition == {"condition": expected}, (name, dependency)
    for name in ("producer", "spark-job", "dashboard"):
        assert "init" in document["services"][name]["depends_on"], f"{name} must wait for the topics"
    assert document["services"]["kafka"]["image"] == f"apache/kafka:{load(ROOT).versions['kafka']}"


def test_the_compose_file_follows_the_compose_specification(compose_spec: jsonschema.protocols.Validator) -> None:
    assert _violations(compose_spec, _rendered_compose()) == []


@pytest.mark.parametrize(
    ("service", "change", "where"),
    [
        # a condition Compose does not know: `docker compose up` refuses the file
        ("producer", {"depends_on": {"kafka": {"condition": "service_ready"}}}, ("depends_on",)),
        # a mount type that does not exist
        ("spark-job", {"volumes": [{"type": "named", "source": "x", "target": "/x"}]}, ("volumes", 0)),
        # a duration as a bare number
        ("dashboard", {"healthcheck": {"test": ["CMD", "true"], "interval": 5}}, ("healthcheck", "interval")),
        # a misspelt key
        ("producer", {"comand": ["sensor-pipeline", "produce"]}, ()),
    ],
)
def test_the_compose_specification_check_catches_a_violation(
    compose_spec: jsonschema.protocols.Validator, service: str, change: dict[str, Any], where: tuple[Any, ...]
) -> None:
    document = copy.deepcopy(_rendered_compose())
    document["services"][service] |= change
    assert _violations(compose_spec, _rendered_compose()) == []
    errors = list(compose_spec.iter_errors(document))
    assert ("services", service, *where) in {tuple(error.absolute_path) for error in errors}, [
        (error.json_path, error.message[:200]) for error in errors
    ]


def test_compose_runs_the_spark_job_with_spark_submit_in_the_spark_image() -> None:
    definition = load(ROOT)
    spark = definition.versions["spark"]
    job = _rendered_compose()["services"]["spark-job"]
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())

    # the `spark` target exists and installs the pyspark that the project pins and services.toml names
    assert job["build"] == {
        "context": "..",
        "dockerfile": "docker/Dockerfile",
        "target": "spark",
        "args": {"SPARK_VERSION": spark},
    }
    assert re.search(r"^FROM \S+ AS spark$", dockerfile, re.MULTILINE)
    assert f"ARG SPARK_VERSION={spark}\n" in dockerfile
    assert f"pyspark=={spark}" in pyproject["project"]["dependencies"]
    assert "openjdk-17-jre-headless" in dockerfile
    assert job["image"] != _rendered_compose()["services"]["sensor-api"]["image"], "two targets, one tag"

    # spark-submit of the real job file with the connector jars, where the image puts them
    command = job["command"]
    assert command[0] == "spark-submit"
    assert command[command.index("--master") + 1] == "local[2]"
    assert "spark.sql.session.timeZone=UTC" in command
    assert command[command.index("--jars") + 1] == SPARK_IMAGE_JARS
    assert command[-1] == SPARK_IMAGE_JOB
    assert (ROOT / "jobs" / PurePosixPath(SPARK_IMAGE_JOB).name).is_file()
    assert f"COPY jobs {PurePosixPath(SPARK_IMAGE_JOB).parent}\n" in dockerfile
    jars = PurePosixPath(SPARK_IMAGE_JARS).parent
    assert "COPY localstack/maven/spark-kafka/pom.xml " in dockerfile
    assert f"dependency:copy-dependencies -DoutputDirectory={jars} " in dockerfile
    assert f"COPY --from=spark-jars {jars} {jars}\n" in dockerfile

    # the checkpoint lives in a named volume, mounted on a folder the image created for the job's user
    checkpoint = job["environment"]["SP_CHECKPOINT_LOCATION"]
    [mount] = job["volumes"]
    assert mount == {"type": "volume", "source": mount["source"], "target": SPARK_IMAGE_CHECKPOINTS}
    assert mount["source"] in _rendered_compose()["volumes"]
    assert checkpoint.startswith(SPARK_IMAGE_CHECKPOINTS + "/")
    assert f"mkdir -p {SPARK_IMAGE_CHECKPOINTS}" in dockerfile


@pytest.fixture
def commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The native stack's command lines, with tmp_path as its state folder and no download."""
    monkeypatch.setattr(artifacts, "kafka_libs", lambda root, version: tmp_path / "kafka-libs")
    monkeypatch.setattr(artifacts, "spark_jars", lambda root, version: [tmp_path / "connector.jar"])
    return program_commands(Paths(ROOT, tmp_path), load(ROOT), ("ferretdb", Path("/opt/ferretdb")))


def test_ferretdb_keeps_its_state_file_in_the_stack_state_folder(
    tmp_path: Path, commands: dict[str, list[str]]
) -> None:
    # without it FerretDB writes state.json into its working directory: the checkout
    assert f"--state-dir={tmp_path / 'ferretdb'}" in commands["mongodb"]
    # one SQLite transaction per insert chunk of the job, not ten (benchmarks/store_backends.py)
    assert f"--test-batch-size={artifacts.FERRETDB_INSERT_BATCH}" in commands["mongodb"]
    assert Settings.model_fields["insert_chunk"].default == artifacts.FERRETDB_INSERT_BATCH


def test_the_spark_jobs_scratch_files_stay_in_the_stack_state_not_tmp(
    tmp_path: Path, commands: dict[str, list[str]]
) -> None:
    job = commands["spark-job"]
    scratch = tmp_path / "spark-scratch"
    assert f"spark.local.dir={scratch}" in job
    assert job[job.index("--driver-java-options") + 1] == f"-Djava.io.tmpdir={scratch}"
    assert scratch.is_dir(), "the JVM does not create its java.io.tmpdir"


def test_stack_down_empties_the_scratch_folder_only_when_no_job_uses_it(tmp_path: Path) -> None:
    paths = Paths(ROOT, tmp_path)
    (paths.scratch / "blockmgr-left-by-a-killed-job").mkdir(parents=True)
    # A job outside supervisord (a test harness's, the bench's) still running with that folder:
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"-Djava.io.tmpdir={paths.scratch}"])
    try:
        # Popen returns when the exec closes the child's close-on-exec pipe, before the kernel has set up
        # the new command line: for a moment /proc shows none.
        cmdline = Path(f"/proc/{job.pid}/cmdline")
        wait_for(lambda: f"-Djava.io.tmpdir={paths.scratch}".encode() in cmdline.read_bytes(), 30, "its exec",
                 interval=0.01)  # fmt: skip
        assert clear_scratch(paths) is False and paths.scratch.is_dir()
    finally:
        job.kill()
        job.wait()
    assert clear_scratch(paths) is True and not paths.scratch.exists()


def test_supervisor_programs_cover_every_service_and_stop_whole_process_groups(tmp_path: Path) -> None:
    definition = load(ROOT)
    commands = {name: ["/bin/true", name] for name in definition.services}
    conf = supervisord_conf(Paths(ROOT, tmp_path), definition, commands)
    for name in definition.services:
        assert f"[program:{name}]" in conf
    assert conf.count("killasgroup=true") == len(definition.services)
    assert conf.count("autostart=false") == len(definition.services)
    assert 'SP_RAW_TOPIC="RawSensorData"' in conf


def test_kafka_runs_single_node_kraft_on_loopback(tmp_path: Path) -> None:
    properties = dict(
        line.split("=", 1)
        for line in kafka_properties(tmp_path, 9092).splitlines()
        if line and not line.startswith("#")
    )
    assert properties["process.roles"] == "broker,controller"
    assert properties["listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9098,CONTROLLER://127.0.0.1:9093"
    )
    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["auto.create.topics.enable"] == "false"


def test_the_msk_iam_listener_is_tls_and_scram_with_kafkas_own_authorizer(tmp_path: Path) -> None:
    """What the rehearsal's workloads reach (MSK's IAM port): TLS with the local CA, SCRAM logins, and every
    request decided by StandardAuthorizer's ACLs; only the plain listener's ANONYMOUS is a super user."""
    properties = dict(
        line.split("=", 1)
        for line in kafka_properties(tmp_path, 9092).splitlines()
        if line and not line.startswith("#")
    )
    assert properties["listener.security.protocol.map"].split(",")[1] == "SASL_SSL:SASL_SSL"
    assert properties["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert properties["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert properties["super.users"] == "User:ANONYMOUS"
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert Path(properties["listener.name.sasl_ssl.ssl.keystore.location"]).read_text().startswith("-----BEGIN")


def test_a_port_taken_by_another_process_is_named_in_the_error(tmp_path: Path) -> None:
    import socket

    import pytest

    from sensor_pipeline.local.definition import Service
    from sensor_pipeline.local.runner import StackError, _start_service

    class NothingRunning:  # a supervisor that has started nothing
        def state(self, name: str) -> str:
            return "STOPPED"

        def start(self, name: str) -> None:
            raise AssertionError("must not start a service whose port is taken")

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        service = Service(name="kafka", tier="infra", health="kafka", describe="broker", port=port)
        with pytest.raises(StackError, match=f"port {port} .*already in use"):
            _start_service(NothingRunning(), service, Paths(ROOT, tmp_path))  # type: ignore[arg-type]


def test_stack_status_exits_non_zero_when_a_started_service_failed_or_is_not_ready() -> None:
    from sensor_pipeline.local.runner import status_code

    up = ["READY", "READY", "READY", "RUNNING"]
    assert status_code(True, up) == 0
    assert status_code(True, ["READY", "STOPPED", "STOPPED"]) == 0, "up --infra-only: the rest not started"
    for broken in ("FATAL", "BACKOFF", "EXITED", "STARTING"):
        assert status_code(True, [*up, broken]) == 4, broken
    assert status_code(False, ["STOPPED"] * 4) == 3
