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

import http.client
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from sensor_pipeline.config import Settings
from sensor_pipeline.local.browser import CHROMIUM_ARGS, chromium_path
from sensor_pipeline.local.health import free_port, http_ready
from sensor_pipeline.source.simulator import BEACHES, SnowflakeIds, format_line
from tests.integration.conftest import sandbox as isolated
from tests.integration.harness import ROOT, Job
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CLI = str(Path(sys.executable).parent / "sensor-pipeline")
BAD_LINES = {
    "bad_shape": "not a reading at all",
    "out_of_range": "{now} 99.9 1.0 11.0 Montrose_Beach {id}",
    "bad_timestamp": "yesterday 20.0 1.0 11.0 Calumet_Beach {id}",
}


def chromium() -> str:
    try:
        return chromium_path()
    except FileNotFoundError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def sandbox(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """This module's own topics, database and checkpoint."""
    with isolated(base_settings, f"browser-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("browser")) as settings:
        yield settings


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


def readings(ids: SnowflakeIds, per_beach: int, ago: float = 0.0) -> list[str]:
    """Valid lines, ``per_beach`` for each of the six beaches, one a second up to ``ago`` seconds ago."""
    now = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=ago)
    return [
        format_line(now - timedelta(seconds=i), 18.0 + i % 5, 1.0 + i % 3, 11.5, beach.replace(" ", "_"), ids.next())
        for beach in BEACHES
        for i in range(per_beach)
    ]


class Feeder(threading.Thread):
    """Six readings a second, one per beach, for as long as the module's tests run (a live feed)."""

    def __init__(self, send: Callable[[list[str]], None], ids: SnowflakeIds) -> None:
        super().__init__(daemon=True)
        self.send, self.ids = send, ids
        self.done = threading.Event()
        #: Set by a test that needs the feed silent for a while.
        self.paused = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        while not self.done.wait(1.0):
            if self.paused.is_set():
                continue
            try:
                self.send(readings(self.ids, per_beach=1))
            except BaseException as error:  # reported by the fixture, never lost in a thread
                self.error = error
                return


@pytest.fixture(scope="module")
def feeder(send: Callable[[list[str]], None], ids: SnowflakeIds) -> Feeder:
    """The live feed (started by ``dashboard``, once the job runs)."""
    return Feeder(send, ids)


@pytest.fixture(scope="module")
def dashboard(
    sandbox: Settings,
    send: Callable[[list[str]], None],
    ids: SnowflakeIds,
    feeder: Feeder,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The job and the dashboard server on the sandbox, a first wave of readings and a live feed;
    the page URL."""
    logs = tmp_path_factory.mktemp("logs")
    send(readings(ids, per_beach=10, ago=180))  # three minutes before the live feed: a gap to draw
    job = Job(sandbox, logs / "job.log").start()
    port = free_port()
    origin = {"SP_DASHBOARD_PORT": str(port), "SP_DASHBOARD_ALLOW_ORIGIN": f"127.0.0.1:{port}"}
    with (logs / "dashboard.log").open("ab") as out:
        server = subprocess.Popen([CLI, "dashboard"], env={**os.environ, **sandbox.to_env(), **origin}, stdout=out,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    feeder.start()
    url = f"http://127.0.0.1:{port}/dashboard"
    try:
        wait_for(lambda: http_ready(url), 60, f"the dashboard at {url} (log: {logs / 'dashboard.log'})")
        yield url
    finally:
        feeder.done.set()
        feeder.join(10)
        server.terminate()
        server.wait(30)
        job.stop()
    assert feeder.error is None, f"the feeder failed: {feeder.error!r}"


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


def badge_texts(page: Any, beach: str) -> list[str]:
    return [t.strip() for t in page.locator(f'[data-beach="{beach}"] .badge').all_text_contents()]


def test_the_page_loads_without_errors_and_shows_the_six_beaches_with_data(page: Any) -> None:
    for beach in BEACHES:
        page.locator(f'[data-beach="{beach}"]').wait_for(timeout=30_000)
    # Every reading sent has turbidity 1-3 NTU: each beach's turbidity badge says "clear" once its
    # readings arrived (before that: "no data"), and each beach's series has buckets.
    wait_for(
        lambda: all(any(t.startswith("clear (") for t in badge_texts(page, b)) for b in BEACHES),
        what="every beach's turbidity badge to read clear",
    )
    wait_for(lambda: all(series_length(page, b) > 0 for b in BEACHES), what="buckets in every beach's series")
    assert page.problems == []


def test_its_counters_grow_as_readings_arrive(page: Any) -> None:
    wait_for(lambda: (number(page, "dashboard") or 0) >= 60, what="the first wave (60 readings) counted")
    before = number(page, "dashboard") or 0
    wait_for(lambda: (number(page, "dashboard") or 0) >= before + 30, what="30 more readings counted")
    wait_for(lambda: (number(page, "in") or 0) > 0, what="a rate of readings in")
    wait_for(lambda: (number(page, "clean") or 0) > 0, what="a rate of clean readings")
    wait_for(lambda: number(page, "lag") is not None, what="the job's lag (its committed offsets)")
    wait_for(lambda: number(page, "delay") is not None, what="the end-to-end delay")
    row = page.locator('[data-latest="Montrose Beach"]')
    shown = row.text_content()
    wait_for(lambda: row.text_content() != shown, what="the latest-reading table to show a newer reading")
    assert page.problems == []


def test_the_health_row_shows_dead_letters_by_reason_after_bad_lines(
    page: Any, send: Callable[[list[str]], None], ids: SnowflakeIds
) -> None:
    assert page.locator('[data-metric="dead"] [data-reason]').count() == 0
    now = datetime.now(UTC).replace(tzinfo=None).isoformat()
    send([line.format(now=now, id=ids.next()) for line in BAD_LINES.values()])
    for reason in BAD_LINES:
        page.locator(f'[data-metric="dead"] [data-reason="{reason}"]').wait_for(timeout=120_000)
    assert page.locator('[data-metric="dead"] [data-reason="bad_shape"]').text_content() == "bad_shape 1"
    assert page.problems == []


def test_the_time_range_selector_sets_the_span_the_plots_show(page: Any) -> None:
    for label, seconds in (("5 min", 300), ("6 h", 21_600), ("1 h", 3_600)):
        page.get_by_role("button", name=label, exact=True).click()
        wait_for(lambda s=seconds: abs(x_span(page) - s) < 1, timeout=30, what=f"a {label} x range")
    assert page.problems == []


def test_three_silent_minutes_are_drawn_as_a_gap_and_the_range_ends_at_the_present(page: Any, feeder: Feeder) -> None:
    """The first wave of readings is three minutes older than the live feed: each beach's line breaks
    there instead of running straight across; and the x range of a live feed ends at the present, not
    at its newest reading (told apart while the feed is silent for 12 s)."""
    page.get_by_role("button", name="1 h", exact=True).click()
    wait_for(lambda: all(has_gap(page, beach) for beach in BEACHES), timeout=60, what="a gap in every beach's line")
    feeder.paused.set()
    silent_since = time.monotonic()
    try:
        wait_for(
            lambda: time.monotonic() - silent_since > 12 and abs(x_end_behind(page)) < 3,
            timeout=60,
            what="the x range ending at the present, 12 s after the newest reading",
        )
    finally:
        feeder.paused.clear()
    assert page.problems == []


def test_the_websocket_accepts_only_the_configured_origin(dashboard: str) -> None:
    """Behind the ALB, SP_DASHBOARD_ALLOW_ORIGIN names the host[:port] whose pages may open the
    websocket (here 127.0.0.1:<port>); a page from anywhere else gets no live document."""
    port = int(dashboard.split(":")[2].split("/", maxsplit=1)[0])

    def handshake(origin: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/dashboard/ws", headers={
                "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": origin,
            })  # fmt: skip
            return connection.getresponse().status
        finally:
            connection.close()

    assert handshake(f"http://127.0.0.1:{port}") == 101  # upgraded (the session token is checked after)
    assert handshake(f"http://localhost:{port}") == 403
    assert handshake("https://elsewhere.example") == 403


def series_length(page: Any, beach: str) -> int:
    """Buckets in a beach's series as the browser's copy of the document holds them."""
    script = "name => Bokeh.documents[0].get_model_by_name(name).data.time.length"
    return int(page.evaluate(script, f"series-{beach}"))


def has_gap(page: Any, beach: str) -> bool:
    script = "name => Bokeh.documents[0].get_model_by_name(name).data.Turbidity.some(Number.isNaN)"
    return bool(page.evaluate(script, f"series-{beach}"))


def x_end_behind(page: Any) -> float:
    """Seconds between now and where the plots' x range ends, in the browser."""
    script = "() => (Date.now() - Bokeh.documents[0].get_model_by_name('plot-WaterTemperature').x_range.end) / 1000"
    return float(page.evaluate(script))


def x_span(page: Any) -> float:
    """Seconds the plots' shared x range spans in the browser."""
    script = "() => { const r = Bokeh.documents[0].get_model_by_name('plot-WaterTemperature').x_range; return (r.end - r.start) / 1000; }"
    return float(page.evaluate(script))
