"""Runners that make the emulator's ECS and EMR Serverless do what AWS does: run what was submitted.

moto records ECS services, ECS tasks and EMR Serverless job runs but runs nothing. For the deploy
rehearsal (``make deploy ENV=local``) these runners, threads of the emulator process, execute them on
the local stack, as local processes:

* :class:`EmrRunner` — each submitted job run: downloads the entry point, ``--jars`` and
  ``spark.archives`` from the emulator's S3, unpacks the archive as ``./environment`` in the run's
  working folder, applies the ``sparkSubmitParameters`` (``--conf``, ``driverEnv``/``executorEnv``) and
  the entry point's arguments, and runs ``spark-submit`` in local mode with the archive's Python. It
  moves the run through SUBMITTED -> SCHEDULED -> RUNNING -> SUCCESS | FAILED, restarts a failed
  STREAMING run within its retry policy, finishes a cancellation (CANCELLING -> CANCELLED), and uploads
  the driver's stdout/stderr where ``monitoringConfiguration`` says (``sensor-pipeline emr logs``).
* :class:`EcsRunner` — each ECS service with a desired count (one process) and each task started with
  RunTask: the container's command from the project's venv, with the task definition's environment
  and its ``secrets`` resolved from the emulator's Secrets Manager. A task's exit code is reported back
  (``DescribeTasks``), a deleted service's process is stopped.

What must change to run on one machine is translated in :mod:`.translate`, and logged. Processes run
in their own session and are stopped (TERM, then KILL) with the emulator, so nothing outlives it.
"""

from __future__ import annotations

from sensor_pipeline.emulator.runners.base import (
    EVENTS_FILE,
    Process,
    RunnerContext,
    _die_with_parent,
    _load_libc,
    _redacted,
)
from sensor_pipeline.emulator.runners.ecs import EcsRunner, Health
from sensor_pipeline.emulator.runners.emr import EmrRunner, parse_spark_submit_parameters

__all__ = [
    "EVENTS_FILE",
    "EcsRunner",
    "EmrRunner",
    "Health",
    "Process",
    "RunnerContext",
    "_die_with_parent",
    "_load_libc",
    "_redacted",
    "parse_spark_submit_parameters",
]
