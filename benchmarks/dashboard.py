"""``make bench-dashboard``: does the dashboard stay responsive at 20,000 readings/s?

    make bench-dashboard             (options: .venv/bin/python benchmarks/dashboard.py --help)

For each rate (default 1,000 and 20,000 readings/s) and each design, on fresh topics of its own:
the real dashboard server (``sensor-pipeline dashboard``) runs, headless Debian chromium (Playwright)
opens its page, and a load generator (``loadgen.py --clean``, librdkafka) sends clean readings as the
job publishes them, one in 100 a dead letter, for ``--seconds``. Measured:

- **kept up**: readings the page reports received when the load stops, vs sent; how long until
  it has them all (drain; capped at 60 s);
- **server CPU** (``/proc``: the dashboard process) and **browser CPU** (chromium and Playwright's
  driver) in cores while the load runs;
- **websocket bytes/s** the page received, **frames/s** the page painted (``requestAnimationFrame``
  over 3 s) and the **round trip** of a tiny script into the page (p50/p95 of 20): a busy main thread
  shows as few frames and slow round trips.

The designs: ``aggregated`` is this tree's dashboard; ``per-reading`` (the baseline) is the dashboard
as it was before server-side aggregation (commit ``BASELINE_COMMIT``: every reading streamed to each
session as a glyph, 500 kept per beach), run from a git worktree of that commit with the same load.

Prints a table; writes ``benchmarks/results/dashboard.json``. Figures only: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka.admin import KafkaAdminClient
from pipeline import finish_loadgen, local_infra, percentile, tree_cpu

from sensor_pipeline.cloud import provision
from sensor_pipeline.config import Settings, settings_from_env_map
from sensor_pipeline.local.browser import CHROMIUM_ARGS, chromium_path
from sensor_pipeline.local.definition import find_root, load
from sensor_pipeline.local.health import free_port, http_ready

ROOT = find_root(Path(__file__))
BIN = Path(sys.executable).parent
RESULTS = ROOT / "benchmarks" / "results"
#: The dashboard before server-side aggregation (one glyph per reading).
BASELINE_COMMIT = "248abc0"
RECEIVED = re.compile(r"([\d,]+) clean readings received")
FPS_SCRIPT = """() => new Promise(done => {
  let frames = 0; const start = performance.now();
  const tick = () => { frames++; if (performance.now() - start < 3000) requestAnimationFrame(tick);
                       else done(frames * 1000 / (performance.now() - start)); };
  requestAnimationFrame(tick);
})"""


@contextmanager
def baseline_tree() -> Iterator[Path]:
    """A git worktree of BASELINE_COMMIT (removed after)."""
    path = Path(tempfile.mkdtemp(prefix="sp-dashboard-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), BASELINE_COMMIT],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)


@contextmanager
def sandbox(base: Settings, work: Path) -> Iterator[Settings]:
    settings = base.sandboxed(f"bench-dash-{uuid.uuid4().hex[:6]}", str(work))
    provision.ensure_topics(settings)
    try:
        yield settings
    finally:
        admin = KafkaAdminClient(**settings.kafka_client_options())
        admin.delete_topics(list(settings.topics))
        admin.close()


@contextmanager
def server(settings: Settings, design: str, baseline: Path | None, log: Path) -> Iterator[tuple[str, int]]:
    """A dashboard server of ``design`` on the sandbox: (page URL, pid)."""
    port = free_port()
    env = {**os.environ, **settings.to_env(), "SP_DASHBOARD_PORT": str(port), "SP_DASHBOARD_HISTORY": "0"}
    if design == "aggregated":
        command = [str(BIN / "sensor-pipeline"), "dashboard"]
    else:
        assert baseline is not None
        env["PYTHONPATH"] = str(baseline / "src")  # ahead of this tree's editable install
        app = str(baseline / "src/sensor_pipeline/dashboard")
        command = [sys.executable, "-m", "bokeh", "serve", app, "--address", "127.0.0.1", "--port", str(port),
                   "--allow-websocket-origin", f"127.0.0.1:{port}"]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/dashboard"
    try:
        deadline = time.monotonic() + 60
        while not http_ready(url):
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"the {design} dashboard did not start (log: {log})")
            time.sleep(0.3)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


def received(page: Any) -> int:
    """The readings the page says it received (both designs print "N clean readings received")."""
    status = page.get_by_text(RECEIVED)  # Playwright's locators pierce Bokeh's shadow roots
    match = RECEIVED.search(status.first.text_content() or "") if status.count() else None
    return int(match.group(1).replace(",", "")) if match else 0


def cpu_of(pid: int) -> float:
    return sum(cpu for _, cpu in tree_cpu(pid).values())


def browser_cpu(exclude: set[int]) -> float:
    """CPU seconds of this process's descendants but the excluded trees: chromium and Playwright's driver."""
    total = 0.0
    skip = {p for root in exclude for p in tree_cpu(root)}
    for pid, (_, cpu) in tree_cpu(os.getpid()).items():
        if pid != os.getpid() and pid not in skip:
            total += cpu
    return total


def phase(playwright: Any, base: Settings, work: Path, design: str, rate: float, seconds: float,
          baseline: Path | None, first_id: int) -> dict[str, Any]:  # fmt: skip
    """One design at one rate, on fresh topics."""
    with (
        sandbox(base, work) as settings,
        server(settings, design, baseline, work / f"{design}-{rate:.0f}.log") as (url, pid),
    ):
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        ws_bytes: list[tuple[float, int]] = []

        def on_socket(socket: Any) -> None:
            socket.on("framereceived", lambda payload: ws_bytes.append((time.monotonic(), len(payload))))

        page.on("websocket", on_socket)
        page.goto(url)
        page.wait_for_timeout(3000)
        command = [sys.executable, str(ROOT / "benchmarks" / "loadgen.py"), "--bootstrap", settings.kafka_bootstrap,
                   "--topic", settings.clean_topic, "--clean", "--dead-topic", settings.invalid_topic,
                   "--dead-every", "100", "--rate", str(rate), "--seconds", str(seconds),
                   "--first-id", str(first_id)]  # fmt: skip
        cpu_server, cpu_browser = cpu_of(pid), 0.0
        loadgen = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        cpu_browser = browser_cpu({pid, loadgen.pid})
        started = time.monotonic()
        page.wait_for_timeout(seconds * 500)
        fps = float(page.evaluate(FPS_SCRIPT))
        trips = []
        for _ in range(20):
            before = time.monotonic()
            page.evaluate("() => 1")
            trips.append((time.monotonic() - before) * 1000)
        load = finish_loadgen(loadgen)
        ended = time.monotonic()
        cpu_server = cpu_of(pid) - cpu_server
        cpu_browser = browser_cpu({pid}) - cpu_browser
        sent = int(load["sent"])
        clean_sent = sent - (sent + 99) // 100  # every 100th (from 0) was a dead letter
        shown_at_end = received(page)
        deadline = time.monotonic() + 60
        while received(page) < clean_sent and time.monotonic() < deadline:
            page.wait_for_timeout(500)
        drained = received(page) >= clean_sent
        drain = time.monotonic() - ended
        window = [n for at, n in ws_bytes if started <= at <= ended]
        browser.close()
    elapsed = ended - started
    return {
        "design": design,
        "rate": rate,
        "sent": clean_sent,
        "shown_when_load_stopped": shown_at_end,
        "behind_s": max(clean_sent - shown_at_end, 0) / rate,
        "drained": drained,
        "drain_s": drain if drained else None,
        "server_cores": cpu_server / elapsed,
        "browser_cores": cpu_browser / elapsed,
        "ws_kib_per_s": sum(window) / 1024 / elapsed,
        "fps": fps,
        "round_trip_ms": {"p50": percentile(trips, 0.5), "p95": percentile(trips, 0.95)},
    }


def chromium() -> str:
    try:
        return chromium_path()
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "design",
        "rate/s",
        "behind s",
        "drain s",
        "server cores",
        "browser cores",
        "ws KiB/s",
        "fps",
        "trip p95 ms",
    )
    rows = [head]
    for r in results:
        rows.append((r["design"], f"{r['rate']:,.0f}", fmt(r["behind_s"]), fmt(r["drain_s"]) if r["drained"] else ">60",
                     fmt(r["server_cores"], 2), fmt(r["browser_cores"], 2), fmt(r["ws_kib_per_s"]),
                     fmt(r["fps"], 0), fmt(r["round_trip_ms"]["p95"], 0)))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,20000", help="comma-separated readings/s")
    parser.add_argument("--seconds", type=float, default=30.0, help="load per phase")
    parser.add_argument("--designs", default="per-reading,aggregated")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    designs = args.designs.split(",")
    if not rates or min(rates) <= 0 or args.seconds <= 0 or not set(designs) <= {"per-reading", "aggregated"}:
        parser.error("rates and seconds must be positive; designs: per-reading, aggregated")
    from playwright.sync_api import sync_playwright

    base = settings_from_env_map(load(ROOT).settings)
    results = []
    work = tempfile.TemporaryDirectory(prefix="sp-bench-dashboard-")
    with local_infra(base), work as tmp, baseline_tree() as old, sync_playwright() as playwright:
        for n, rate in enumerate(rates):
            for m, design in enumerate(designs):
                first_id = 1 + (n * len(designs) + m) * 10**9
                result = phase(playwright, base, Path(tmp), design, rate, args.seconds, old, first_id)
                results.append(result)
                print(json.dumps(result), flush=True)
    print()
    print(table(results))
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip(),
        "baseline_commit": BASELINE_COMMIT,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "seconds": args.seconds,
        "results": results,
    }
    (RESULTS / "dashboard.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwritten: {RESULTS / 'dashboard.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
