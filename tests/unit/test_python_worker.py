"""A reused Spark Python worker stops paying, per task, for re-reading archives and scanning old objects."""

from __future__ import annotations

import gc
import importlib
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensor_pipeline import python_worker


@pytest.fixture
def archive_on_path(tmp_path: Path) -> Iterator[Path]:
    archive = tmp_path / "lib.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("first_module_in_zip.py", "VALUE = 1\n")
    sys.path.insert(0, str(archive))
    try:
        yield archive
    finally:
        sys.path.remove(str(archive))
        sys.path_importer_cache.pop(str(archive), None)
        for name in ("first_module_in_zip", "second_module_in_zip"):
            sys.modules.pop(name, None)


@pytest.fixture
def fresh_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(python_worker, "_frozen", False)
    yield
    gc.unfreeze()


def test_an_archive_read_before_prepare_is_not_read_again_when_spark_invalidates_caches(
    archive_on_path: Path, fresh_worker: None
) -> None:
    importlib.import_module("first_module_in_zip")
    python_worker.prepare()
    with zipfile.ZipFile(archive_on_path, "a") as z:  # had its directory been re-read, this would import
        z.writestr("second_module_in_zip.py", "VALUE = 2\n")
    importlib.invalidate_caches()  # what Spark's worker calls before every task
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("second_module_in_zip")


def test_without_prepare_python_re_reads_the_archive(archive_on_path: Path) -> None:
    """The cost ``prepare`` removes (CPython 3.10-3.11): the whole directory, again, on every call."""
    importlib.import_module("first_module_in_zip")
    with zipfile.ZipFile(archive_on_path, "a") as z:
        z.writestr("second_module_in_zip.py", "VALUE = 2\n")
    importlib.invalidate_caches()
    assert importlib.import_module("second_module_in_zip").VALUE == 2


def test_the_objects_alive_at_the_first_task_leave_the_collectors_view_once(fresh_worker: None) -> None:
    gc.unfreeze()
    python_worker.prepare()
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # the interpreter's modules, at least
    a_tasks_objects = [[i] for i in range(100)]
    python_worker.prepare()  # a later task: nothing frozen again (its garbage must stay collectable)
    assert gc.get_freeze_count() == frozen
    assert gc.is_tracked(a_tasks_objects)
