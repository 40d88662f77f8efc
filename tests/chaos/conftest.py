"""The fault and fuzz suites: the integration stack's fixtures, sizes, and the table they print.

``make test`` runs a CI-sized part: the transaction cases (kill -9 mid-publish and right after the
commit, a task failure mid-publish), the two clocks and 10,000 hostile records; the other cases are marked ``slow`` and listed as skipped. ``make chaos`` and
``make test-all`` (``SP_TEST_ALL=1 SP_CHAOS=full``) run every case at full size.
"""

from __future__ import annotations

import os

import pytest

from tests.integration.conftest import base_settings, produce, settings, stack  # noqa: F401 - fixtures
from tests.integration.harness import Audit

FULL = os.environ.get("SP_CHAOS", "ci") == "full"
#: case -> audit, in the order run; printed as one table at the end of the session.
RESULTS: dict[str, Audit] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    write = terminalreporter.write_line
    write("")
    write(f"Fault suite ({'full' if FULL else 'CI-sized'}): lost/duplicated readings per output, against RawSensorData")
    header = f"{'case':<52} {'valid':>6} {'invalid':>7} {'store':>8} {'clean':>8} {'invalid':>8}  notes"
    write(header)
    write("-" * len(header))
    for case, result in RESULTS.items():
        write(
            f"{case:<52} {result.valid:>6} {result.invalid:>7} {result.store!s:>8} {result.clean!s:>8} "
            f"{result.dead!s:>8}  {'; '.join(result.notes)}"
        )
