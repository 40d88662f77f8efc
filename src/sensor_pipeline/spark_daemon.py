"""Spark's Python worker daemon (``pyspark.daemon``), without re-reading zip files for every task.

Spark's worker calls ``importlib.invalidate_caches()`` before each task. On Python 3.10+ that makes
every ``zipimporter`` on ``sys.path`` re-read its archive's directory, in pure Python, and Spark's
workers import from ``pyspark.zip`` and the py4j zip: profiled at 1,000 readings/s (py-spy), that
was over half of the job's Python worker CPU. Those archives do not change while a worker lives
(an archive added later gets a new importer), so their importers keep their directory here.

Selected with ``spark.python.daemon.module=sensor_pipeline.spark_daemon`` (``jobs/`` sets it).
"""

from __future__ import annotations

import zipimport


def _keep_directory(self: zipimport.zipimporter) -> None:
    """A zip on sys.path does not change while the worker runs: nothing to invalidate."""


zipimport.zipimporter.invalidate_caches = _keep_directory  # type: ignore[method-assign]

if __name__ == "__main__":
    from pyspark.daemon import manager  # after the patch: the workers it forks inherit it

    manager()  # type: ignore[no-untyped-call]
