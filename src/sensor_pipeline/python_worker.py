"""Per-task costs of a reused PySpark Python worker, paid once per worker instead.

Spark reuses each Python worker for many tasks (``spark.python.worker.reuse``, the default), and before
every task it calls ``importlib.invalidate_caches()`` (``pyspark/worker_util.py``); after every task its
daemon runs a full ``gc.collect()`` (``pyspark/daemon.py``). On Python 3.10 and 3.11,
``zipimporter.invalidate_caches`` re-reads the whole directory of its archive (CPython issue 103200,
lazy again from 3.12; Spark stopped calling it unconditionally in SPARK-54744, after 4.0), and the
workers' ``PYTHONPATH`` holds ``pyspark.zip``, ``py4j-*.zip`` and the ``spark-core`` jar, with one
importer per package imported from them. A ``make bench``-style probe (a no-op ``mapInArrow`` task per
Kafka partition, 100 readings/s, 0.5 s trigger) measured those two at about 0.6 cores: 0.97 cores for
the stack without this, 0.33 with it, and the micro-batch 328 ms -> 206 ms.

What this changes in a worker, from its first task on:

- the importers of archives already on ``sys.path`` keep the directory they read: Spark's own archives
  do not change while a worker lives (``--py-files`` added later get new importers, read fresh);
- everything imported so far (modules, the task's cached clients) is moved out of the garbage
  collector's view with ``gc.freeze()``, the documented way for long-lived processes to stop scanning
  objects that live as long as they do; what each task allocates is still collected.
"""

from __future__ import annotations

import gc
import sys
import zipimport

_frozen = False


def _keep() -> None:
    """An archive importer's ``invalidate_caches`` that keeps the directory it has read."""


def prepare() -> None:
    """Call at the start of every task (cheap after the first): see the module docstring."""
    global _frozen  # once per worker process
    for finder in list(sys.path_importer_cache.values()):
        if isinstance(finder, zipimport.zipimporter) and "invalidate_caches" not in vars(finder):
            finder.invalidate_caches = _keep  # type: ignore[method-assign]
    if not _frozen:
        gc.freeze()
        _frozen = True
