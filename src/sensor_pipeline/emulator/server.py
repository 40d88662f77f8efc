"""The project's AWS emulator: moto's server, extended in-process, with runners for ECS and EMR Serverless.

    sensor-pipeline emulator [--host 127.0.0.1] [--port 4566] [--mongo-auth plain|none]

``make local-up`` and the deploy rehearsal run it as the stack's ``aws`` service. Plain moto records
MSK clusters, DocumentDB clusters and EMR Serverless job runs incompletely and runs nothing;
:mod:`.moto_ext` fills the gaps the project's Terraform meets, and :mod:`.runners` execute job runs and
ECS tasks on the local stack. Its state lives in memory: a restarted emulator starts empty, so it
writes a boot id (``<state>/emulator.boot``) that the rehearsal compares with the one its Terraform
state was made against.
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from pathlib import Path
from types import FrameType

from sensor_pipeline.emulator import moto_ext
from sensor_pipeline.emulator.runners import EcsRunner, EmrRunner, RunnerContext

log = logging.getLogger("sensor_pipeline.emulator")


def serve(
    host: str,
    port: int,
    state: Path,
    venv_bin: Path,
    kafka_bootstrap: str,
    mongo_host: str,
    mongo_port: int,
    mongo_auth: str,
) -> None:
    """Serve until SIGTERM/SIGINT; then stop every process the runners started, and the server."""
    from moto.moto_api import state_manager
    from moto.server import ThreadedMotoServer

    moto_ext.install(moto_ext.EmulatorConfig(kafka_bootstrap, mongo_host, mongo_port))
    # ECS tasks stay RUNNING until the runner reports their exit (moto would advance them to STOPPED).
    state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**9})
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping the runners' processes and the emulator", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # A new boot id before the first request: Terraform state made against an earlier emulator is stale.
    state.mkdir(parents=True, exist_ok=True)
    boot = state / "emulator.boot"
    boot.with_suffix(".tmp").write_text(uuid.uuid4().hex + "\n")
    boot.with_suffix(".tmp").replace(boot)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    context = RunnerContext(state, venv_bin, f"http://{host}:{port}", mongo_auth)
    runners = [EmrRunner(context), EcsRunner(context)]
    for runner in runners:
        runner.start()
    log.info(
        "AWS emulator on http://%s:%s (MSK -> %s, DocumentDB -> %s:%s)",
        host,
        port,
        kafka_bootstrap,
        mongo_host,
        mongo_port,
    )
    stop.wait()
    for runner in runners:
        runner.stopping.set()  # all at once: each stops its processes in parallel
    for runner in runners:
        runner.shutdown()
    server.stop()
