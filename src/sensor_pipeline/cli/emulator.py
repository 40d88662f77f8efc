"""Plumbing: the AWS emulator's server (the local stack and the deploy rehearsal start it)."""

from __future__ import annotations

from pathlib import Path

import click

from sensor_pipeline.cli.common import service_logging, settings


@click.command(hidden=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=4566, show_default=True)
@click.option(
    "--kafka-secure-bootstrap",
    default="127.0.0.1:9098",
    show_default=True,
    help="the broker's SASL_SSL listener: what MSK's bootstrap brokers answer (ACLs from IAM enforced there)",
)
@click.option(
    "--ferretdb",
    type=click.Path(dir_okay=False, path_type=Path),
    help="FerretDB binary run for each DocumentDB cluster (TLS, SCRAM); without it clusters are records only",
)
def emulator(host: str, port: int, kafka_secure_bootstrap: str, ferretdb: Path | None) -> None:
    """Serve the AWS emulator (moto, extended) with its ECS and EMR Serverless runners."""
    from urllib.parse import urlsplit

    from sensor_pipeline.emulator.server import serve
    from sensor_pipeline.local.definition import find_root
    from sensor_pipeline.local.runner import Paths

    service_logging()
    current = settings()
    mongo = urlsplit(current.mongo_uri)
    root = find_root()
    paths = Paths.of(root)
    serve(
        host, port, paths.state, paths.venv_bin, current.kafka_bootstrap, kafka_secure_bootstrap,
        mongo.hostname or "127.0.0.1", mongo.port or 27017, ferretdb, root,
    )  # fmt: skip
