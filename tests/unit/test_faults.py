"""Fault points: off by default, fire once per marker, refuse a misspelt setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensor_pipeline.job import faults


def test_fault_points_do_nothing_unless_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SP_FAULT", raising=False)
    for point in faults.POINTS:
        faults.hit(point)


def test_an_armed_fail_point_raises_once_per_marker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SP_FAULT", "stored:fail")
    monkeypatch.setenv("SP_FAULT_MARKER", str(tmp_path / "fired"))
    faults.hit("committed")  # another point: nothing
    with pytest.raises(faults.InjectedFault, match="stored"):
        faults.hit("stored")
    faults.hit("stored")  # the marker exists: a restarted job goes on
    assert (tmp_path / "fired").exists()


@pytest.mark.parametrize("spec", ["stored", "stored:explode", "nowhere:kill"])
def test_a_misspelt_fault_is_an_error_not_a_silent_no_op(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.setenv("SP_FAULT", spec)
    with pytest.raises(ValueError, match="SP_FAULT"):
        faults.hit("stored")
