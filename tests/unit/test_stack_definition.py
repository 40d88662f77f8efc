"""The local stack's single definition, and what is derived from it."""

from __future__ import annotations

import json
from pathlib import Path

from sensor_pipeline.stack.definition import COMPOSE_FILE, find_root, load, render_compose
from sensor_pipeline.stack.runner import Paths, kafka_properties, supervisord_conf

ROOT = find_root(Path(__file__))
CONTRACT_PORTS = {"sensor-api": 3030, "kafka": 9092, "mongodb": 27017, "aws": 4566, "dashboard": 5006}


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
        for condition in service.get("depends_on", {}).values():
            assert condition == {"condition": "service_healthy"}
    assert document["services"]["kafka"]["image"] == f"apache/kafka:{load(ROOT).versions['kafka']}"


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
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["auto.create.topics.enable"] == "false"


def test_a_port_taken_by_another_process_is_named_in_the_error(tmp_path: Path) -> None:
    import socket

    import pytest

    from sensor_pipeline.stack.definition import Service
    from sensor_pipeline.stack.runner import StackError, _start_service

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
