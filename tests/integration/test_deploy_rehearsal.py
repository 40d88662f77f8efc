"""The deploy rehearsal: `make deploy ENV=local` / `make destroy ENV=local`, end to end, as a user runs them.

The same scripts/deploy.sh as ENV=dev applies the whole infra/ to the project's AWS emulator, runs the
init task and the services through the emulator's ECS runner and submits the streaming job run, which
the emulator's EMR runner executes from what was uploaded to S3. The pipeline it leaves running must
store and publish readings; a second deploy must be harmless; destroy must leave nothing behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from sensor_pipeline import store
from sensor_pipeline.config import Settings
from sensor_pipeline.deploy import emulated_processes
from sensor_pipeline.stack.definition import find_root

pytestmark = pytest.mark.integration
ROOT = find_root(Path(__file__))


def make(target: str) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "deploy.sh"), target, "local"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    print(f"{target} ENV=local: exit {result.returncode} in {time.monotonic() - started:.0f} s")
    print(result.stdout[-6000:], result.stderr[-3000:])
    return result


def stored_count(settings: Settings) -> int:
    client = store.connect(settings)
    try:
        return int(client[settings.mongo_database][settings.mongo_collection].estimated_document_count())
    finally:
        client.close()


@pytest.mark.timeout(3600)
def test_deploy_runs_the_pipeline_through_ecs_and_emr_and_destroy_leaves_nothing(base_settings: Settings) -> None:
    before = stored_count(base_settings)
    deployed = make("deploy")
    try:
        assert deployed.returncode == 0, "make deploy ENV=local failed"
        assert "dashboard:" in deployed.stdout and "job run:" in deployed.stdout
        run_id = re.search(r"job run:\s+(\S+)", deployed.stdout).group(1)  # type: ignore[union-attr]
        request = json.loads((ROOT / ".local-stack" / "emr-runs" / run_id / "request.json").read_text())
        entry = next(a for a in request["command"] if a.endswith(".py"))
        assert entry.endswith("emr-runs/" + run_id + "/job/structure_validate_store.py"), "the job from S3 runs"
        assert any("SASL_SSL" in change for change in request["translations"]), "the translation is logged"
        running = emulated_processes()
        assert any(f"emr:{run_id}" in p for p in running), running
        assert {"ecs:ecs-api", "ecs:ecs-producer", "ecs:ecs-dashboard"} <= {
            p.split("(")[1].rstrip(")") for p in running
        }, running

        # The pipeline the deploy started: ECS API -> ECS producer -> Kafka -> the EMR run -> store + topic.
        clean = KafkaConsumer(
            base_settings.clean_topic, **base_settings.kafka_client_options(), auto_offset_reset="latest"
        )
        deadline = time.monotonic() + 300
        published: list[dict[str, object]] = []
        while time.monotonic() < deadline and not (published and stored_count(base_settings) > before):
            # poll, not iteration: an iterator with consumer_timeout_ms never ends while messages keep coming
            published += [json.loads(m.value) for ms in clean.poll(timeout_ms=1000).values() for m in ms]
        clean.close()
        assert stored_count(base_settings) > before, "the job run stored no reading"
        assert published and all("MeasurementID" in m for m in published), "nothing reached CleanSensorData"

        again = make("deploy")
        assert again.returncode == 0, "a second deploy must be harmless"
        assert "already in ECR: kept" in again.stdout and "kept the running job run" in again.stdout
    finally:
        destroyed = make("destroy")
    assert destroyed.returncode == 0, "make destroy ENV=local failed"
    assert emulated_processes() == [], "a process of the rehearsal outlived the destroy"
    assert not (ROOT / ".local-stack" / "rehearsal").exists()
