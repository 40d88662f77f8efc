"""``make bench``'s judgements (benchmarks/pipeline.py): what counts as keeping up, whose store delays
a phase reports, and how the sustained rate compares with the parts' ceilings. Figures only come from
a bench run; these cases check the rules that turn samples into them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from sensor_pipeline.config import Settings
from sensor_pipeline.job import delivery, writer
from tests.waiting import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import pipeline


def test_a_lag_that_keeps_growing_is_falling_behind_even_when_it_stays_small() -> None:
    # 2 % slower than offered at 15,000/s: 300 more readings behind each second, for 45 s.
    growing = [5_000 + 300 * second for second in range(45)]
    assert max(growing) < 15_000 * pipeline.DRAIN_LIMIT, "the fixed lag limit alone passes it"
    assert pipeline.lag_growing(growing, allowance=15_000 * 0.5)


def test_a_micro_batch_sawtooth_is_not_a_growing_lag() -> None:
    # A batch every 0.5 s at 15,000/s: the lag swings by a batch's worth and comes back.
    sawtooth = [4_000 + (7_500 if second % 2 else 0) for second in range(45)]
    assert not pipeline.lag_growing(sawtooth, allowance=15_000 * 0.5)


def test_batches_slower_than_the_trigger_are_a_sawtooth_not_a_trend() -> None:
    # Near capacity a batch takes 2.02 s: sampled once a second, the sawtooth aliases into slow waves.
    rate, period = 15_000, 2.02
    sawtooth = [int(rate * ((second % period) + 0.3)) for second in range(60)]
    assert not pipeline.lag_growing(sawtooth, allowance=rate * period)


def test_too_short_a_phase_shows_no_trend() -> None:
    assert not pipeline.lag_growing([0, 10_000, 20_000, 30_000, 40_000], allowance=0)


def histogram_line(batch: int, low: int, high: int, buckets: dict[str, int]) -> str:
    """The job's log line, as its writer formats it."""
    line = writer.STORE_DELAY_LOG % (batch, delivery.DELAY_BUCKET_MS, low, high, json.dumps(buckets))
    return f"2026-12-07 01:00:00,000 INFO sensor_pipeline.job: {line}"


def test_a_phase_takes_the_store_delays_of_its_own_readings_only() -> None:
    first = pipeline.FIRST_ID + pipeline.PHASE_IDS  # the second phase's block of ids
    log = "\n".join(
        [
            histogram_line(7, first - 50, first - 1, {"300": 50}),  # the previous phase's last batch, late
            histogram_line(8, first, first + 99, {"40": 100}),
            histogram_line(9, first + 100, first + 199, {"50": 100}),
        ]
    )
    stored = pipeline.store_delays(log, first, first + pipeline.PHASE_IDS)
    assert stored["n"] == 200
    assert stored["p50"] == pytest.approx(0.41) and stored["max"] == pytest.approx(0.51)


def test_the_sustained_rate_is_set_against_the_tightest_the_stages_in_series_and_the_sum() -> None:
    ceilings = {"broker": 100_000.0, "store": 50_000.0, "spark": 25_000.0}
    ratios: dict[str, Any] = pipeline.ceiling_ratios(10_000.0, ceilings)
    assert ratios["tightest"] == pytest.approx(0.4)
    # one reading costs 1/100,000 + 1/50,000 + 1/25,000 of a second of the machine: 14,286/s in series
    assert ratios["in_series"] == pytest.approx(10_000 * (1 / 100_000 + 1 / 50_000 + 1 / 25_000))
    assert ratios["sum"] == pytest.approx(10_000 / 175_000)


def test_the_lag_slope_is_what_a_shortfall_adds_each_second() -> None:
    seconds = [1.0 + 1.1 * i for i in range(45)]  # samples 1.1 s apart: a slow sampler is not a steeper lag
    assert pipeline.lag_slope(seconds, [5_000 + int(300 * t) for t in seconds]) == pytest.approx(300, rel=0.01)
    sawtooth = [4_000 + (7_500 if i % 2 else 0) for i in range(45)]
    assert abs(pipeline.lag_slope(seconds, sawtooth)) < 50  # a batch's worth up and down: no trend
    assert pipeline.lag_slope([1.0], [7]) == 0.0


def test_a_reading_read_twice_is_a_duplicate_not_a_reading_more() -> None:
    clean = pipeline.CleanDelays(cast(Settings, None))
    first = pipeline.FIRST_ID
    clean.add([(first, 0.1, 0.2), (first + 1, 0.1, 0.2)])
    clean.add([(first, 0.3, 0.4)])  # the first reading again, and the third never read
    assert clean.read(first) == 2, "a loss and a duplicate must not cancel out into 3 of 3"
    assert clean.duplicates[first] == 1


def test_a_phase_taken_still_counts_its_backlog_without_keeping_its_ids() -> None:
    clean = pipeline.CleanDelays(cast(Settings, None))
    first = pipeline.FIRST_ID
    clean.add([(first, 0.1, 0.2)])
    clean.take(first, first + pipeline.PHASE_IDS)  # a step that fell behind: its backlog is read later
    clean.add([(first + 1, 5.0, 9.0), (first + 2, 5.0, 9.0)])
    assert clean.read(first) == 3, "the drain after a step that fell behind waits for these"
    assert first not in clean.ids, "a long run would keep every backlog's ids"


def test_the_batches_period_and_size_come_from_the_jobs_log(tmp_path: Path) -> None:
    job_log = tmp_path / "job.log"
    counts = [dict.fromkeys(delivery.COUNTS, 0) | {"valid": 990, "invalid": 10}, dict.fromkeys(delivery.COUNTS, 0)]
    counts[1] |= {"valid": 1_500, "skipped": 500}  # a retried batch: what an earlier attempt delivered is skipped
    lines = [
        f"2026-12-07 01:00:00,000 INFO sensor_pipeline.job: {writer.BATCH_DONE_LOG % (batch, 0.41, json.dumps(c))}\n"
        for batch, c in enumerate(counts)
    ]
    job_log.write_text("".join(lines))
    first_line, end = len(lines[0].encode()), job_log.stat().st_size
    stream = pipeline.Stream(cast(Any, None), cast(Any, None), cast(Any, None), job_log, trigger_seconds=0.5)
    assert stream.batch_sizes(0, end) == [1_000, 2_000]
    assert stream.batch_sizes(first_line, end) == [2_000], "only the lines after the start"
    assert stream.batch_sizes(0, first_line) == [1_000], "only the lines before the end"


class Capacity:
    """A pipeline that keeps up to ``short`` readings/s over a step and to ``long`` over a longer one."""

    def __init__(self, short: float, long: float, seconds: float) -> None:
        self.short, self.long, self.seconds = short, long, seconds
        self.runs: list[tuple[float, float]] = []

    def run(self, rate: float, length: float) -> dict[str, Any]:
        self.runs.append((rate, length))
        longer = length > self.seconds
        kept = rate <= (self.long if longer else self.short)
        delays = {"n": 1, "p50": 0.5, "p95": 0.8, "p99": 0.9, "max": 1.0}
        # The load generator sends a little less than offered, less still over a longer step.
        sent = rate * (0.99 if longer else 0.999)
        return {"rate": rate, "sent_per_s": sent, "kept_up": kept, "elapsed_s": length,
                "clean_delay_s": delays, "visible_delay_s": delays, "stored_delay_s": delays, "max_lag": 0,
                "lag_growing": not kept, "lag_slope_per_s": 0.0 if kept else 300.0, "drain_s": 1.0,
                "jit_cores": 0.0, "steal_percent": 0.0, "cpu_ms_per_1k": {"pipeline": 80.0, "harness": 4.0}}  # fmt: skip

    def wait_drained(self, limit: float) -> float:
        return 0.0


def test_the_capacity_search_bisects_the_last_gap_then_confirms_its_best_rate_for_longer() -> None:
    pipeline_ = Capacity(short=18_000, long=18_000, seconds=45)
    best, steps = pipeline.max_sustained(cast(Any, pipeline_), [10_000, 15_000, 20_000], 45)
    assert pipeline_.runs == [(10_000, 45), (15_000, 45), (20_000, 45), (17_500, 45), (17_500, 135)]
    assert [s["stage"] for s in steps] == ["search", "search", "search", "bisect", "confirm"]
    assert best == pytest.approx(17_500 * 0.99), "the lower of the rates sent in the step and its confirmation"


def test_a_gap_of_5_percent_or_less_is_not_bisected() -> None:
    pipeline_ = Capacity(short=16_200, long=16_200, seconds=45)
    pipeline.max_sustained(cast(Any, pipeline_), [16_000, 16_800], 45)
    assert pipeline_.runs == [(16_000, 45), (16_800, 45), (16_000, 135)]


def test_a_rate_that_fails_its_longer_confirmation_gives_way_to_the_next_lower_one() -> None:
    # Keeps up over 45 s at 17,500/s, but falls behind over 135 s: a slow shortfall.
    pipeline_ = Capacity(short=18_000, long=16_000, seconds=45)
    best, _ = pipeline.max_sustained(cast(Any, pipeline_), [10_000, 15_000, 20_000], 45)
    assert pipeline_.runs[-2:] == [(17_500, 135), (15_000, 135)]
    assert best == pytest.approx(15_000 * 0.99)


def test_at_most_three_rates_are_confirmed_then_the_round_sustained_none() -> None:
    pipeline_ = Capacity(short=20_000, long=1_000, seconds=45)
    best, _ = pipeline.max_sustained(cast(Any, pipeline_), [5_000, 10_000, 12_500, 15_000, 17_500], 45)
    assert [rate for rate, length in pipeline_.runs if length == 135] == [17_500, 15_000, 12_500]
    assert best == 0.0, "no rate held over a longer step: none is reported as sustained"


def test_a_live_rate_that_kept_up_is_confirmed_when_no_search_step_did() -> None:
    pipeline_ = Capacity(short=6_000, long=6_000, seconds=45)
    live = pipeline_.run(5_000, 45)
    best, _ = pipeline.max_sustained(cast(Any, pipeline_), [10_000], 45, also=[live])
    assert pipeline_.runs[-1] == (5_000, 135), "a live rate counts only once confirmed like the others"
    assert best == pytest.approx(5_000 * 0.99)


CHILD = """
import os, sys
open(sys.argv[1] + "/child", "w").write(str(os.getpid()))
while not os.path.exists(sys.argv[1] + "/stop"):
    pass  # busy: CPU the role used
"""
MIDDLE = """
import os, signal, subprocess, sys, time
if sys.argv[3] == "ignore":  # as PySpark's daemon: the kernel reaps its children and discards their CPU
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1]])
if sys.argv[3] == "reap":  # waits for its child: its count of reaped children takes the child's CPU over
    child.wait()
while not os.path.exists(sys.argv[1] + "/release"):
    time.sleep(0.01)
"""  # exits without waiting for its child: the child is re-parented out of the role's tree
ROOT = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1], sys.argv[3], sys.argv[4]]).wait()
time.sleep(60)
"""


#: /proc's clock tick, in seconds (CPU times are whole ticks).
TICK = 0.01


def own_cpu(pid: int) -> float:
    stat = pipeline._stat(pid)
    return stat[1] if stat is not None else 0.0


@pytest.fixture
def tree(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """A role's tree root -> middle -> busy child; (root pid, child pid, folder)."""
    import subprocess

    mode = getattr(request, "param", "wait")
    root = subprocess.Popen([sys.executable, "-c", ROOT, str(tmp_path), MIDDLE, CHILD, mode])
    try:
        wait_for(
            lambda: (tmp_path / "child").exists() and (tmp_path / "child").read_text(),
            60,
            "the child started",
            interval=0.02,
        )
        child = int((tmp_path / "child").read_text())
        wait_for(lambda: own_cpu(child) >= 0.2, 60, "the child used CPU", interval=0.02)
        yield root.pid, child, tmp_path
    finally:
        (tmp_path / "release").touch()
        (tmp_path / "stop").touch()
        root.kill()
        root.wait()


def test_a_process_that_leaves_its_roles_tree_keeps_its_cpu_in_the_role(tree: Any) -> None:
    root, child, folder = tree
    meter = pipeline.CpuMeter(pids={"store": root})
    inside, at_inside = meter.snapshot()["store"], own_cpu(child)
    (folder / "release").touch()  # the middle process ends: the busy child is re-parented out of the tree
    reparented = lambda: (pipeline._stat(child) or (root,))[0] not in (root, 0)  # noqa: E731
    wait_for(
        lambda: reparented() and own_cpu(child) >= at_inside + 0.2, 60, "the child re-parented, busy", interval=0.02
    )
    used = own_cpu(child) - at_inside
    outside = meter.snapshot()["store"]
    # /proc counts in ticks of 10 ms, summed as floats: equal up to rounding, hence TICK/2.
    assert outside - inside >= used - TICK / 2, "the child's CPU outside the tree is the role's"
    (folder / "stop").touch()  # the child ends, reaped outside the tree
    wait_for(lambda: pipeline._stat(child) is None, 60, "the child ended", interval=0.02)
    assert meter.snapshot()["store"] >= outside - TICK / 2, "a child that ended outside the tree keeps its CPU counted"


@pytest.mark.parametrize("tree", ["ignore"], indirect=True)
def test_a_child_whose_parent_ignores_sigchld_keeps_its_cpu_when_it_ends(tree: Any) -> None:
    """PySpark's daemon ignores SIGCHLD, and Spark closes workers idle for 60 s: the kernel discards an
    ended worker's CPU instead of adding it to the daemon's reaped children. It once read minus 50 s."""
    root, child, folder = tree
    meter = pipeline.CpuMeter(pids={"spark_jvm": root})  # the JVM's tree: the worker counts as a worker
    before = meter.snapshot()["spark_py_workers"]
    assert before >= 0.2, "the busy child is in the tree"
    (folder / "stop").touch()
    wait_for(lambda: pipeline._stat(child) is None, 60, "the child ended, reaped by the kernel", interval=0.02)
    assert meter.snapshot()["spark_py_workers"] >= before - TICK / 2, "the ended child's CPU left the sum"


@pytest.mark.parametrize("tree", ["reap"], indirect=True)
def test_a_child_its_parent_reaps_is_counted_once(tree: Any) -> None:
    root, child, folder = tree
    meter = pipeline.CpuMeter(pids={"store": root})
    before, used_before = meter.snapshot()["store"], own_cpu(child)
    (folder / "stop").touch()
    wait_for(lambda: pipeline._stat(child) is None, 60, "the child ended, reaped by its parent", interval=0.02)
    grew = meter.snapshot()["store"] - before
    assert grew < used_before / 2, f"the child's {used_before:.2f} s counted again ({grew:.2f} s more)"


def test_each_round_says_where_its_limit_lies_or_that_no_step_reached_it() -> None:
    def step(number: int, rate: float, kept: bool, stage: str = "search") -> dict[str, Any]:
        return {"round": number, "rate": rate, "kept_up": kept, "stage": stage}

    results = {
        "live": [],
        "steps": [
            *(step(1, rate, rate < 17_500) for rate in (15_000, 16_000, 17_500)),
            step(1, 16_000, True, "confirm"),
            *(step(2, rate, True) for rate in (15_000, 16_000, 17_500)),  # the steps ended before the limit
        ],
    }
    assert pipeline.brackets(results) == [
        "  round 1: 16,000/s kept, 17,500/s missed",
        "  round 2: 17,500/s kept, no step missed: the limit is above the highest offered",
    ]
