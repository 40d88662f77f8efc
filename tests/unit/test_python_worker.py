"""A reused Spark Python worker stops paying, per task, for re-reading archives and scanning old objects."""

from __future__ import annotations

import gc
import importlib
import sys
import weakref
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensor_pipeline.job import python_worker


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
    """A worker before its first task; the test process's importers and collector restored after."""
    monkeypatch.setattr(python_worker, "_tasks", 0)
    patched_before = {
        id(f) for f in sys.path_importer_cache.values() if "invalidate_caches" in getattr(f, "__dict__", {})
    }
    yield
    gc.unfreeze()
    for finder in sys.path_importer_cache.values():
        if isinstance(finder, python_worker.zipimport.zipimporter) and id(finder) not in patched_before:
            vars(finder).pop("invalidate_caches", None)


def test_an_archive_read_before_a_task_is_not_read_again_when_spark_invalidates_caches(
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
    """The cost ``prepare`` removes (CPython 3.10-3.12): the whole directory, again, on every call."""
    importlib.import_module("first_module_in_zip")
    with zipfile.ZipFile(archive_on_path, "a") as z:
        z.writestr("second_module_in_zip.py", "VALUE = 2\n")
    importlib.invalidate_caches()
    assert importlib.import_module("second_module_in_zip").VALUE == 2


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_what_the_first_task_kept_leaves_the_collectors_view_at_the_second_and_garbage_stays_collectable(
    fresh_worker: None,
) -> None:
    gc.unfreeze()
    python_worker.prepare()  # first task: its imports and clients are not created yet
    assert gc.get_freeze_count() == 0
    kept_by_first_task = _Cycle()
    garbage_of_first_task = weakref.ref(_Cycle())  # unreachable at once: collectable cyclic garbage
    python_worker.prepare()  # second task
    assert gc.get_freeze_count() > 1000  # the interpreter's modules, at least
    assert garbage_of_first_task() is None, "garbage was frozen instead of collected"
    frozen = gc.get_freeze_count()
    later_garbage = _Cycle()
    dead = weakref.ref(later_garbage)
    del later_garbage
    python_worker.prepare()  # a later task: nothing frozen again
    gc.collect()
    assert dead() is None, "a later task's garbage is not collected"
    assert gc.get_freeze_count() <= frozen
    assert kept_by_first_task.me is kept_by_first_task
