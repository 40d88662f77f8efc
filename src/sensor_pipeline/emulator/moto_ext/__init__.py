"""moto, extended in-process so that ``terraform apply`` of ``infra/`` works against a moto server.

Plain moto 5.2 lacks pieces this stack needs: MSK clusters never leave CREATING and have neither
bootstrap brokers nor configurations, the RDS backend refuses the DocumentDB engine, EMR Serverless
refuses ``emr-spark-*`` release labels and ends every job run at once. ``install`` patches moto's
backend and response classes in this process, before a ``moto.server.ThreadedMotoServer`` serves
requests. Each patch is small, says which gap it fills, and wraps moto's own method where it can;
``uninstall`` restores moto (for tests sharing a process).

    install(EmulatorConfig(kafka_bootstrap="127.0.0.1:9092"))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=4599)
    server.start()

What is emulated stops at the control plane: no broker, database or Spark job runs here. Job runs
stay SUBMITTED until a runner outside this module moves them on (``emr_job_runs`` finds them).
"""

from __future__ import annotations

from typing import Any

from moto.ecs import models as ecs_models
from moto.emrserverless import models as emr_models

from sensor_pipeline.emulator.moto_ext._base import EmulatorConfig as EmulatorConfig
from sensor_pipeline.emulator.moto_ext._base import _backends as _backends  # tests reach moto's backends
from sensor_pipeline.emulator.moto_ext._base import _lock, _undo, state
from sensor_pipeline.emulator.moto_ext._base import _set as _set  # and patch with undo
from sensor_pipeline.emulator.moto_ext.docdb import _patch_docdb
from sensor_pipeline.emulator.moto_ext.ec2 import _patch_ec2
from sensor_pipeline.emulator.moto_ext.ecs import _patch_ecs
from sensor_pipeline.emulator.moto_ext.emr_serverless import _patch_emr_serverless
from sensor_pipeline.emulator.moto_ext.msk import _patch_kafka
from sensor_pipeline.emulator.moto_ext.s3 import _patch_s3
from sensor_pipeline.emulator.moto_ext.service_discovery import _patch_service_discovery

__all__ = ["EmulatorConfig", "ecs_backends", "emr_job_runs", "install", "uninstall"]


def install(config: EmulatorConfig) -> None:
    """Patch moto in this process; idempotent (a second call only replaces the configuration)."""
    with _lock:
        state.config = config
        if _undo:
            return
        _patch_kafka()
        _patch_docdb()
        _patch_emr_serverless()
        _patch_ecs()
        _patch_ec2()
        _patch_s3()
        _patch_service_discovery()


def uninstall() -> None:
    """Undo every patch of ``install``, newest first."""
    with _lock:
        while _undo:
            _undo.pop()()


def emr_job_runs() -> list[tuple[str, Any]]:
    """(application id, moto ``JobRun``) of every EMR Serverless job run, in every account and region."""
    runs: list[tuple[str, Any]] = []
    for backend in _backends(emr_models.emrserverless_backends):
        for application_id, application_runs in list(backend.job_runs.items()):
            runs.extend((application_id, run) for run in list(application_runs))
    return runs


def ecs_backends() -> list[Any]:
    """Every moto ECS backend in use, in every account and region."""
    return _backends(ecs_models.ecs_backends)
