"""The project's AWS emulator: moto's server, extended in-process, with runners for ECS and EMR Serverless.

    sensor-pipeline emulator [--host 127.0.0.1] [--port 4566] [--ferretdb PATH]

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
    kafka_secure_bootstrap: str,
    mongo_host: str,
    mongo_port: int,
    ferretdb: Path | None,
    root: Path | None,
) -> None:
    """Serve until SIGTERM/SIGINT; then stop every process the runners started, and the server."""
    import shutil

    from moto.moto_api import state_manager
    from moto.server import ThreadedMotoServer

    from sensor_pipeline.emulator import iam
    from sensor_pipeline.emulator.credentials import CredentialsServer
    from sensor_pipeline.emulator.docdb import ADDRESSES, DocdbServers
    from sensor_pipeline.emulator.msk_sync import MskSync
    from sensor_pipeline.local import tls

    certificates = tls.ensure(state)
    docdb = DocdbServers(ferretdb, state, certificates.server_cert, certificates.server_key)
    for earlier in ("docdb", "ecs-tasks"):  # clusters and task volumes of an earlier emulator run: gone with it
        shutil.rmtree(state / earlier, ignore_errors=True)
    moto_ext.install(
        moto_ext.EmulatorConfig(kafka_bootstrap, kafka_secure_bootstrap, mongo_host, mongo_port, docdb=docdb)
    )
    # Every call is authenticated and authorized (iam): the dummy root key for the deploying user and
    # the local stack, each workload's role for what it does.
    iam.configure(state)
    iam.install()
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
    credentials = CredentialsServer(host)
    credentials.start()
    msk = MskSync(kafka_bootstrap, state)
    msk.start()
    context = RunnerContext(
        state, venv_bin, f"http://{host}:{port}", root, credentials, msk, certificates.ca,
        sandbox=shutil.which("bwrap") is not None and shutil.which("setpriv") is not None,
    )  # fmt: skip
    runners = [EmrRunner(context), EcsRunner(context)]
    for runner in runners:
        runner.start()
    log.info(
        "AWS emulator on http://%s:%s (MSK -> %s with IAM as ACLs, DocumentDB -> FerretDB over TLS on %s)",
        host, port, kafka_secure_bootstrap, ", ".join(ADDRESSES[:2]) + ", ...",
    )  # fmt: skip
    stop.wait()
    for runner in runners:
        runner.stopping.set()  # all at once: each stops its processes in parallel
    for runner in runners:
        runner.shutdown()
    msk.stopping.set()
    docdb.stop_all()
    credentials.stop()
    server.stop()
