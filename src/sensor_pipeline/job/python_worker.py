"""Per-task costs of a reused PySpark Python worker, paid once per worker instead.

Spark reuses each Python worker for many tasks (``spark.python.worker.reuse``, the default), and before
every task it calls ``importlib.invalidate_caches()`` (``pyspark/worker_util.py``); after every task its
daemon runs a full ``gc.collect()`` (``pyspark/daemon.py``). On Python 3.10 to 3.12,
``zipimporter.invalidate_caches`` re-reads the whole directory of its archive at once (CPython issue
103200; 3.13 only drops it, to be read when next needed; Spark stopped calling it unconditionally in
SPARK-54744, after 4.0), and the workers' ``PYTHONPATH`` holds ``pyspark.zip``, ``py4j-*.zip`` and the
``spark-core`` jar, with one importer per package imported from them. A ``make bench``-style probe (a
no-op ``mapInArrow`` task per Kafka partition, 100 readings/s, 0.5 s trigger) measured those two at
about 0.6 cores: 0.97 cores for the stack without this, 0.33 with it, and the micro-batch
328 ms -> 206 ms.

What this changes in a worker:

- from its first task on, every archive importer the worker holds keeps the directory it has read.
  Spark's archives do not change while a worker lives, nor do ``--py-files`` (Spark never overwrites an
  added file); an archive added later gets a new importer, read fresh, and is kept from then on;
- at its second task, once the first has imported the modules and created the clients the worker keeps
  (the job group's consumer, the store's client), and after a collection (so no garbage is kept),
  everything alive is moved out of the collector's view with ``gc.freeze()``; what each later task
  allocates is still collected.
"""

from __future__ import annotations

import gc
import sys
import zipimport

_tasks = 0


def _keep() -> None:
    """An archive importer's ``invalidate_caches`` that keeps the directory it has read."""


def prepare() -> None:
    """Call at the start of every task (cheap after the second): see the module docstring."""
    global _tasks  # once per worker process
    _tasks += 1
    for finder in list(sys.path_importer_cache.values()):
        if isinstance(finder, zipimport.zipimporter) and "invalidate_caches" not in vars(finder):
            finder.invalidate_caches = _keep  # type: ignore[method-assign]
    if _tasks == 2:
        gc.collect()
        gc.freeze()
