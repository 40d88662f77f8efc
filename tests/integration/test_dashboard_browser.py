"""The dashboard in a real browser: Debian's chromium driven by Playwright, against the real dashboard
server fed by the real job on the local stack's Kafka and store.

Readings go into this module's own RawSensorData; the job validates and stores them and publishes
clean readings and dead letters; the page must load without console errors, show the six beaches
with data, count more readings when more arrive, and show dead letters by reason after bad lines.
A screenshot of the page is saved to ``$SP_TEST_ARTIFACTS`` (default ``test-artifacts/``).

Bokeh draws each widget inside a shadow root: Playwright's CSS locators pierce open shadow roots, and
the health row and badges carry ``data-*`` attributes (sensor_pipeline.dashboard.panels) to find.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from sensor_pipeline import provision, store
from sensor_pipeline.config import Settings
from sensor_pipeline.simulator import BEACHES, SnowflakeIds, format_line
from tests.integration.conftest import wait_for
from tests.integration.harness import ROOT, Job, free_port

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CLI = str(Path(sys.executable).parent / "sensor-pipeline")
# What this machine's closed network needs (no background connections to Google's hosts), headless.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BAD_LINES = {
    "bad_shape": "not a reading at all",
    "out_of_range": "{now} 99.9 1.0 11.0 Montrose_Beach {id}",
    "bad_timestamp": "yesterday 20.0 1.0 11.0 Calumet_Beach {id}",
}


def chromium() -> str:
    path = os.environ.get("SP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("no chromium: `make browser` installs Debian's package (or set SP_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def sandbox(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """This module's own topics, database and checkpoint."""
    settings = base_settings.sandboxed(f"browser-{uuid.uuid4().hex[:8]}", str(tmp_path_factory.mktemp("browser")))
    provision.ensure_topics(settings)
    provision.ensure_store(settings)
    yield settings
    client = store.connect(settings)
    client.drop_database(settings.mongo_database)
    client.close()
    admin = KafkaAdminClient(**settings.kafka_client_options())
    admin.delete_topics(list(settings.topics))
    admin.close()


@pytest.fixture(scope="module")
def send(sandbox: Settings) -> Iterator[Callable[[list[str]], None]]:
    producer = KafkaProducer(**sandbox.kafka_client_options(), acks="all", linger_ms=5)

    def send_lines(lines: list[str]) -> None:
        for future in [producer.send(sandbox.raw_topic, value=line.encode()) for line in lines]:
            future.get(timeout=10)

    yield send_lines
    producer.close()


@pytest.fixture(scope="module")
def ids() -> SnowflakeIds:
    return SnowflakeIds(worker=11)


def readings(ids: SnowflakeIds, per_beach: int) -> list[str]:
    """Valid lines of the last minute, ``per_beach`` for each of the six beaches."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return [
        format_line(now - timedelta(seconds=i), 18.0 + i % 5, 1.0 + i % 3, 11.5, beach.replace(" ", "_"), ids.next())
        for beach in BEACHES
        for i in range(per_beach)
    ]


@pytest.fixture(scope="module")
def dashboard(
    sandbox: Settings, send: Callable[[list[str]], None], ids: SnowflakeIds, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The job and the dashboard server on the sandbox, with a first wave of readings; the page URL."""
    logs = tmp_path_factory.mktemp("logs")
    send(readings(ids, per_beach=10))
    job = Job(sandbox, logs / "job.log").start()
    port = free_port()
    env = {
        **os.environ,
        **sandbox.to_env(),
        "SP_DASHBOARD_PORT": str(port),
        "SP_DASHBOARD_ALLOW_ORIGIN": f"127.0.0.1:{port}",
    }
    with (logs / "dashboard.log").open("ab") as out:
        server = subprocess.Popen([CLI, "dashboard"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/dashboard"
    try:
        wait_for(lambda: _answers(url), 60, f"the dashboard at {url} (log: {logs / 'dashboard.log'})")
        yield url
    finally:
        server.terminate()
        server.wait(30)
        job.stop()


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def page(dashboard: str) -> Iterator[Any]:
    """One page for the module's tests; ``page.problems`` collects console errors and page errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1200})
        problems: list[str] = []
        tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        tab.problems = problems
        tab.goto(dashboard)
        yield tab
        artifacts = Path(os.environ.get("SP_TEST_ARTIFACTS", ROOT / "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
        browser.close()


def number(page: Any, metric: str) -> float | None:
    """The value of a health-row card, or None while it shows a dash."""
    text = page.locator(f'[data-metric="{metric}"] .value').first.text_content() or ""
    try:
        return float(text.replace(",", "").split()[0])
    except (ValueError, IndexError):
        return None


def eventually(condition: Callable[[], Any], timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s: {what}"
        time.sleep(0.5)


def test_the_page_loads_without_errors_and_shows_the_six_beaches_with_data(page: Any) -> None:
    for beach in BEACHES:
        page.locator(f'[data-beach="{beach}"]').wait_for(timeout=30_000)
    eventually(
        lambda: all(page.locator(f'[data-beach="{b}"]').get_attribute("data-level") == "ok" for b in BEACHES),
        what="every beach's badge to show its clear water (level ok) from the first wave",
    )
    assert page.locator(".bk-Canvas, canvas").count() >= 3  # the three time-series plots were drawn
    assert page.problems == []


def test_its_counters_grow_as_readings_arrive(page: Any, send: Callable[[list[str]], None], ids: SnowflakeIds) -> None:
    eventually(lambda: (number(page, "dashboard") or 0) >= 60, what="the first wave (60 readings) counted")
    before = number(page, "dashboard") or 0
    send(readings(ids, per_beach=5))
    eventually(lambda: (number(page, "dashboard") or 0) >= before + 30, what="30 more readings counted")
    eventually(lambda: (number(page, "in") or 0) > 0, what="a rate of readings in")
    eventually(lambda: number(page, "lag") is not None, what="the job's lag (its committed offsets)")
    assert page.problems == []


def test_the_health_row_shows_dead_letters_by_reason_after_bad_lines(
    page: Any, send: Callable[[list[str]], None], ids: SnowflakeIds
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None).isoformat()
    send([line.format(now=now, id=ids.next()) for line in BAD_LINES.values()])
    for reason in BAD_LINES:
        page.locator(f'[data-metric="dead"] [data-reason="{reason}"]').wait_for(timeout=120_000)
    eventually(lambda: (number(page, "dead") or 0) > 0, what="a rate of dead letters")
    assert page.problems == []


def test_the_time_range_selector_redraws_without_errors(page: Any) -> None:
    for label in ("5 min", "all", "1 h"):
        page.get_by_role("button", name=label, exact=True).click()
        page.wait_for_timeout(1500)
    assert page.problems == []
