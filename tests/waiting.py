"""Tests await conditions, never sleep for them: the one way to wait, with a message when it times out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sensor_pipeline.local import health


def wait_for(
    condition: Callable[[], Any], timeout: float = 120, what: str = "the condition", interval: float = 0.5
) -> None:
    """Return as soon as ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    if not health.wait_until(lambda: bool(condition()), timeout, interval=interval):
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
