"""Stopping an emulated task or job run stops its whole process group, as ECS and EMR stop a container."""

from __future__ import annotations

import sys
from pathlib import Path

from sensor_pipeline.emulator.runners import Process
from sensor_pipeline.local.health import wait_until

# A leader that ends on TERM (as a Spark driver's graceful stop does) and a child that ignores TERM
# (as pyspark's daemon outlives its JVM for a while); the leader writes the child's pid first.
LEADER = """
import signal, subprocess, sys, time
child = subprocess.Popen(["sleep", "300"], preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
print(child.pid, flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(300)
"""


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_a_leader_stopped_gracefully_leaves_nothing_of_its_group_behind(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    process = Process.start([sys.executable, "-c", LEADER], {}, tmp_path, log, term_group=False)
    wait_until(lambda: log.read_text().strip() != "", 10, interval=0.05)
    child = int(log.read_text().split()[0])
    assert process.stop(grace=5) == 0, "the leader ends on TERM, alone"
    assert wait_until(lambda: gone(child), 5, interval=0.05), "the group's other process outlived the stop"


def test_an_earlier_emulators_run_workspaces_go_unless_a_process_still_works_in_one(tmp_path: Path) -> None:
    import subprocess

    from sensor_pipeline.emulator.runners.base import RunnerContext
    from sensor_pipeline.emulator.runners.emr import EmrRunner

    runs = tmp_path / "emr-runs"
    for name in ("finished", "busy"):
        (runs / name / "archives" / "env").mkdir(parents=True)
        (runs / name / "request.json").write_text("{}")
        (runs / name / "driver.log").write_text("the run's output")
    survivor = subprocess.Popen(["sleep", "60"], cwd=runs / "busy" / "archives" / "env")  # outlived a crash
    try:
        EmrRunner(RunnerContext(state=tmp_path, venv_bin=Path(sys.executable).parent, endpoint_url="http://x"))
        assert sorted(p.name for p in (runs / "finished").iterdir()) == ["driver.log", "request.json"]
        assert (runs / "busy" / "archives" / "env").is_dir(), "a process still works there"
    finally:
        survivor.kill()
        survivor.wait()
