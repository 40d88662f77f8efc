"""The local stack's single definition (``localstack/services.toml``) and what is derived from it.

Both the native stack (supervisord programs) and ``localstack/docker-compose.yml`` are rendered from
this one file, so services, ports and settings cannot drift between them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFINITION = Path("localstack") / "services.toml"
COMPOSE_FILE = Path("localstack") / "docker-compose.yml"


@dataclass(frozen=True)
class Service:
    name: str
    tier: str
    health: str
    describe: str
    port: int | None = None
    path: str = "/"
    image: str | None = None
    depends_on: tuple[str, ...] = ()

    @property
    def url(self) -> str | None:
        return f"http://127.0.0.1:{self.port}{self.path}" if self.health == "http" else None


@dataclass(frozen=True)
class StackDefinition:
    versions: dict[str, str]
    settings: dict[str, str]
    services: dict[str, Service] = field(default_factory=dict)

    def tier(self, name: str) -> list[Service]:
        return [s for s in self.services.values() if s.tier == name]


def find_root(start: Path | None = None) -> Path:
    """The project checkout: the nearest folder upwards that holds ``localstack/services.toml``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / DEFINITION).is_file():
            return folder
    raise FileNotFoundError(
        f"no {DEFINITION} found above {here}: run this from the project checkout (where the Makefile is)"
    )


def load(root: Path) -> StackDefinition:
    data = tomllib.loads((root / DEFINITION).read_text())
    services = {
        name: Service(
            name=name,
            tier=spec["tier"],
            health=spec["health"],
            describe=spec["describe"],
            port=spec.get("port"),
            path=spec.get("path", "/"),
            image=spec.get("image"),
            depends_on=tuple(spec.get("depends_on", ())),
        )
        for name, spec in data["services"].items()
    }
    return StackDefinition(versions=dict(data["versions"]), settings=dict(data["settings"]), services=services)


# --- docker compose -----------------------------------------------------------------------------

_APP_COMMANDS = {
    "sensor-api": ["sensor-pipeline", "api", "--host", "0.0.0.0"],
    "producer": ["sensor-pipeline", "produce"],
    "dashboard": ["sensor-pipeline", "dashboard", "--address", "0.0.0.0"],
}

# The `spark` target of docker/Dockerfile: where it puts the job, the connector jars and the checkpoint folder.
SPARK_IMAGE_JOB = "/app/jobs/structure_validate_store.py"
SPARK_IMAGE_JARS = "/opt/spark-jars/*.jar"  # a glob that spark-submit expands itself (no shell in between)
SPARK_IMAGE_CHECKPOINTS = "/var/lib/spark-job/checkpoints"
SPARK_CHECKPOINT_VOLUME = "spark-checkpoints"


def _spark_job_command(service: Service) -> list[str]:
    """The streaming job under ``spark-submit`` in the ``spark`` image, as the native stack runs it."""
    return [
        "spark-submit",
        "--master", "local[2]",
        "--jars", SPARK_IMAGE_JARS,
        "--conf", "spark.sql.session.timeZone=UTC",
        "--conf", f"spark.ui.port={service.port}",
        "--driver-memory", "1g",
        SPARK_IMAGE_JOB,
    ]  # fmt: skip


def _healthcheck(service: Service) -> dict[str, Any]:
    tests: dict[str, list[str]] = {
        "kafka": [
            "CMD-SHELL",
            "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server 127.0.0.1:9092 >/dev/null",
        ],
        "mongo": ["CMD", "mongosh", "--quiet", "--eval", "db.adminCommand('ping').ok"],
        "process": ["CMD-SHELL", "kill -0 1"],
    }
    test = tests.get(service.health) or [
        "CMD",
        "python",
        "-c",
        f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{service.port}{service.path}')",
    ]
    return {"test": test, "interval": "5s", "timeout": "5s", "retries": 30}


def compose(definition: StackDefinition) -> dict[str, Any]:
    """The docker-compose document for the same topology (ports on 127.0.0.1, health-gated start)."""
    inside = {
        "127.0.0.1:9092": "kafka:19092",
        "127.0.0.1:27017": "mongodb:27017",
        "127.0.0.1:4566": "aws:4566",
    }
    inside |= {"127.0.0.1:3030": "sensor-api:3030"}

    def rewrite(value: str) -> str:
        for host, container in inside.items():
            value = value.replace(host, container)
        return value

    services: dict[str, Any] = {}
    kafka, spark = definition.versions["kafka"], definition.versions["spark"]
    for service in definition.services.values():
        spec: dict[str, Any] = {}
        if service.tier == "infra":
            spec["image"] = service.image
        elif service.name == "spark-job":
            # Its own image (pyspark, Java 17, the connector jars); the checkpoint in a named volume, so a
            # re-created container resumes where the last one stopped.
            spec["build"] = {
                "context": "..",
                "dockerfile": "docker/Dockerfile",
                "target": "spark",
                "args": {"SPARK_VERSION": spark},
            }
            spec["image"] = f"sensor-pipeline-spark:{spark}"
            spec["command"] = _spark_job_command(service)
            spec["environment"] = {k: rewrite(v) for k, v in definition.settings.items()} | {
                "SP_CHECKPOINT_LOCATION": f"{SPARK_IMAGE_CHECKPOINTS}/structure_validate_store"
            }
            spec["volumes"] = [{"type": "volume", "source": SPARK_CHECKPOINT_VOLUME, "target": SPARK_IMAGE_CHECKPOINTS}]
            spec["depends_on"] = {dep: {"condition": "service_healthy"} for dep in service.depends_on}
        else:
            spec["build"] = {"context": "..", "dockerfile": "docker/Dockerfile", "target": "app"}
            spec["image"] = f"sensor-pipeline:{spark}"
            spec["command"] = _APP_COMMANDS[service.name]
            spec["environment"] = {k: rewrite(v) for k, v in definition.settings.items()}
            spec["depends_on"] = {dep: {"condition": "service_healthy"} for dep in service.depends_on}
        if service.port:
            spec["ports"] = [f"127.0.0.1:{service.port}:{service.port}"]
        spec["healthcheck"] = _healthcheck(service)
        services[service.name] = spec
    services["kafka"]["environment"] = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "HOST://0.0.0.0:9092,DOCKER://0.0.0.0:19092,CONTROLLER://0.0.0.0:9093",
        "KAFKA_ADVERTISED_LISTENERS": "HOST://127.0.0.1:9092,DOCKER://kafka:19092",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "HOST:PLAINTEXT,DOCKER:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "DOCKER",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }
    assert kafka in services["kafka"]["image"], "services.toml: kafka image and version disagree"
    services["aws"]["environment"] = {"MOTO_PORT": "4566"}
    services["init"] = {
        "image": f"sensor-pipeline:{spark}",
        "command": ["sensor-pipeline", "init"],
        "environment": {k: rewrite(v) for k, v in definition.settings.items()},
        "depends_on": {n: {"condition": "service_healthy"} for n in ("kafka", "mongodb", "aws")},
        "restart": "on-failure",
    }
    # Topic auto-creation is off: what reads or writes topics starts after init created them.
    for name in ("producer", "spark-job", "dashboard"):
        services[name]["depends_on"]["init"] = {"condition": "service_completed_successfully"}
    return {"name": "sensor-pipeline", "services": services, "volumes": {SPARK_CHECKPOINT_VOLUME: {}}}


def render_compose(definition: StackDefinition) -> str:
    import json

    header = (
        "# GENERATED from localstack/services.toml by `sensor-pipeline stack compose`: do not edit by hand.\n"
        "# The same topology as `make local-up`, for machines with Docker: `docker compose -f "
        "localstack/docker-compose.yml up`.\n"
    )
    # JSON is valid YAML; emitting it avoids a YAML dependency and keeps the output deterministic.
    return header + json.dumps(compose(definition), indent=2) + "\n"
