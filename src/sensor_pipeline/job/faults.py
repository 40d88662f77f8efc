"""Deterministic fault points in the batch writer, for the fault suite (``make chaos``).

Off unless ``SP_FAULT=<point>:<action>`` is set in the job's environment (executors inherit it in
local mode). The first time the writer reaches ``<point>`` it either kills the whole job at once
(``kill``: SIGKILL to the job's session and process group, as a crash or a lost node would; start
the job in a session of its own) or fails the Spark
task or batch there (``fail``: an exception, which Spark retries with ``local[N,F]``). A marker file
(``SP_FAULT_MARKER``) makes the fault fire once, across processes and restarts; with
``SP_FAULT_AFTER=N`` a process passes the point N times before it fires (so a fault can strike a
later batch, with earlier readings stored). ``SP_FAULT_CLOCK_SECONDS=N`` sets the driver's batch
time N s off the host's clock: a second driver or a new build on a host whose clock differs.
"""

from __future__ import annotations

import logging
import os
import signal
from datetime import timedelta

log = logging.getLogger("sensor_pipeline.job.faults")

#: Every point, in the order the writer reaches them within a batch.
POINTS: tuple[str, ...] = (
    "stored",  # executor: a slice's readings inserted, its transaction not begun
    "publishing",  # executor: some of the slice's messages sent in its transaction, none committed
    "committed",  # executor: the slice's transaction committed, the task not yet reported done to Spark
    "delivered",  # driver: every slice of the batch committed, Spark's batch commit not yet written
)
ACTIONS = ("kill", "fail")


class InjectedFault(RuntimeError):
    """The ``fail`` action: an error the writer did not expect, at a known place."""


def armed() -> tuple[str, str] | None:
    spec = os.environ.get("SP_FAULT", "")
    if not spec:
        return None
    point, _, action = spec.partition(":")
    if point not in POINTS or action not in ACTIONS:
        raise ValueError(f"SP_FAULT={spec!r}: expected <point>:<action>, point in {POINTS}, action in {ACTIONS}")
    return point, action


def clock_offset() -> timedelta:
    """How far the batch time is set off the host's clock (``SP_FAULT_CLOCK_SECONDS``; 0 unless a test sets it)."""
    spec = os.environ.get("SP_FAULT_CLOCK_SECONDS", "")
    try:
        return timedelta(seconds=float(spec or 0))
    except ValueError:
        raise ValueError(f"SP_FAULT_CLOCK_SECONDS={spec!r}: expected a number of seconds") from None


_passes: dict[str, int] = {}


def hit(point: str) -> None:
    """Called by the writer at ``point``; does nothing unless the fault suite armed this point."""
    spec = armed()
    if spec is None or spec[0] != point:
        return
    _passes[point] = _passes.get(point, 0) + 1
    if _passes[point] <= int(os.environ.get("SP_FAULT_AFTER", "0")):
        return
    marker = os.environ.get("SP_FAULT_MARKER", "")
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # fired already
    log.warning("fault point %s: %s", point, spec[1])
    if spec[1] == "kill":
        # The job's session is spark-submit's (start it in a session of its own): the JVM and the
        # Python driver. PySpark's worker daemon has a process group of its own: that one next.
        os.killpg(os.getsid(0), signal.SIGKILL)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    raise InjectedFault(f"injected fault at {point}")
