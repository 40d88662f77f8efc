"""``make bench``: what users live with, measured on the local stack in one run.

    make bench                       (options: .venv/bin/python benchmarks/pipeline.py --help)

On this machine, with the real job (spark-submit, local[2]) and the running Kafka broker and
MongoDB-wire server (started for the run when they are not up; the rest of the stack should be
down: its load would be counted), this measures:

1. **Live-rate delay** at 100, 1,000 and 5,000 readings/s: a load generator (``loadgen.py``,
   librdkafka) sends readings stamped with the current time; the delay is from that stamp to the
   moment the bench's ``read_committed`` reader got it (after the commit: what "kept up" is judged
   on), to the broker's append time on CleanSensorData (the bench's clean topic uses
   ``LogAppendTime``; the append happens inside the job's open transaction), and to the store's
   acknowledgement of its insert (the job's per-batch histograms, each naming the ids it holds).
   Each phase's figures are those of its own readings (by MeasurementID), never the previous
   phase's tail.
2. **Maximum sustained rate**: offered rates stepped up, one step halfway into the last gap, and
   the highest rate kept confirmed over a step ``CONFIRM_TIMES`` as long (:func:`max_sustained`); a
   rate is kept up with when every reading was read, once, within 5 s of the last send, the lag
   (sampled each second) never exceeded 5 s of input and did not grow over the step (its last
   third's mean within one micro-batch's worth of input of its first third's), and the 99th
   percentile reading -> read was within 2 s.
3. **CPU ms per 1,000 readings for each process**, from ``/proc/<pid>/stat`` (user + system,
   children included), per phase: broker, store, Spark JVM, the job's Python driver, Spark's Python
   workers, dashboard, load generator, and the bench's own process (``harness``: its reader of
   CleanSensorData), which is reported apart from the pipeline's sum; with the machine's steal time
   (``/proc/stat``) per phase and its CPU model.
4. **Ceilings**, each part alone, in every round after its capacity search (the job and dashboard
   idle beside them): the broker (its raw and clean legs, :func:`broker_ceiling`), the store
   (``insert_many`` of the same documents as the job writes them, into the readings' own collection),
   Spark (the job's ``foreachBatch`` plan and its Python task without I/O, on micro-batches of the
   median size the job logged at the round's confirmed rate); and the sustained rate over
   the tightest, over the stages one after the other on the same cores (1 / sum(1 / ceiling)) and
   over their sum.
5. **Baseline**, the original design's per-reading path (HTTP GET, synchronous send, consume,
   validate, ``insert_one``, synchronous send), timed start to end like the pipeline, once.

Before anything is measured, the job runs at 1,000 readings/s until the JVMs (the job's and the
broker's) have compiled their hot code: their JIT compiler threads' CPU is measured per phase, and
the warm-up ends when it falls under ``JIT_SETTLED`` (or after ``--warmup-seconds``). Each phase
reports what the compilers still used, which its CPU figures include. ``--repeat`` runs the live
rates, the capacity search and the ceilings again, one round after the other on the same warm job.

Prints a table; writes ``benchmarks/results/bench-<commit>.json`` and ``.png`` (``-dirty`` when the
work tree differs from the commit), with the machine, the versions and the stack's settings. Every
topic and database it creates is removed afterwards. Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pymongo.uri_parser import parse_uri

from sensor_pipeline.cloud import provision
from sensor_pipeline.config import Settings, settings_from_env_map
from sensor_pipeline.job import store, writer
from sensor_pipeline.local import artifacts
from sensor_pipeline.local.definition import find_root, load
from sensor_pipeline.local.runner import spark_submit_command

ROOT = find_root(Path(__file__))
BIN = Path(sys.executable).parent
RESULTS = ROOT / "benchmarks" / "results"
TICKS = os.sysconf("SC_CLK_TCK")
DRAIN_LIMIT = 5.0  # seconds after the last send within which a kept-up rate has drained
P99_LIMIT = 2.0  # seconds, reading -> read from CleanSensorData: a kept-up rate's 99th percentile is within it
FIRST_ID = 1_000_000_001  # the stream's first MeasurementID; each phase numbers its readings from its own
PHASE_IDS = 1_000_000_000  # block of this many ids
CEILING_IDS = 10**18  # the store ceiling's documents: far above any phase's ids, a block per round
#: The bench's own process ("harness": its CleanSensorData reader and monitoring) is measured and
#: reported apart; the pipeline's figure is PIPELINE_ROLES alone.
ROLES = ("broker", "store", "spark_jvm", "spark_py_driver", "spark_py_workers", "dashboard", "loadgen", "harness")
PIPELINE_ROLES = ("broker", "store", "spark_jvm", "spark_py_driver", "spark_py_workers")
#: The JVMs whose just-in-time compiler threads are measured: their CPU is part of the role's, and
#: falls to near nothing once the hot code is compiled, which takes minutes at a few batches a second.
JIT_ROLES = ("spark_jvm", "broker")
JIT_SETTLED = 0.05  # cores: the warm-up ends when both JVMs' compiler threads used less than this together
METER_EVERY = 5  # lag samples (seconds) between two readings of the CPU meter within a phase
CONFIRM_TIMES = 3  # a sustained rate holds for this many times a step's length
CONFIRMATIONS = 3  # rates tried, highest kept first, before a round's sustained rate is 0
WARMUP_PHASE = 15.0  # seconds per warm-up phase at 1,000 readings/s


# --- CPU from /proc --------------------------------------------------------------------------------


def _stat_fields(path: str) -> tuple[str, list[str]] | None:
    """(comm, the fields after it) of a process's or thread's ``/proc`` stat file; None when it is gone."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()  # comm may hold spaces


class Proc(NamedTuple):
    """One read of a process's stat file."""

    ppid: int
    own: float  # CPU seconds
    reaped: float  # CPU seconds of its reaped children
    started: int  # clock ticks after boot: with its pid, who it is (pids are reused)


def _proc(pid: int) -> Proc | None:
    """A process's :class:`Proc`, or None when it is gone."""
    stat = _stat_fields(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat[1]
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return Proc(int(fields[1]), (utime + stime) / TICKS, (cutime + cstime) / TICKS, int(fields[19]))


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU s, reaped children's CPU s) of a process, or None when it is gone."""
    proc = _proc(pid)
    return None if proc is None else (proc.ppid, proc.own, proc.reaped)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def find_process(*needles: str) -> int | None:
    """The oldest process whose command line holds every needle."""
    found = [p for p in _pids() if p != os.getpid() and all(n in _cmdline(p) for n in needles)]
    return min(found) if found else None


def process_table() -> dict[int, Proc]:
    """Every process's :class:`Proc`, from one pass over ``/proc``."""
    table = {}
    for pid in _pids():
        proc = _proc(pid)
        if proc is not None:
            table[pid] = proc
    return table


def descendants(root: int, table: dict[int, Proc]) -> set[int]:
    """``root`` and every process under it in ``table`` (empty when ``root`` is not there)."""
    members = {root} if root in table else set()
    grew = True
    while grew:
        new = {p for p, proc in table.items() if proc.ppid in members and p not in members}
        members |= new
        grew = bool(new)
    return members


def tree_cpu(root: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (own + reaped children) of ``root`` and each descendant, with its command line."""
    table = process_table()
    return {p: (_cmdline(p), table[p].own + table[p].reaped) for p in descendants(root, table)}


def jit_threads(pid: int) -> dict[str, float]:
    """CPU seconds of each of a JVM's just-in-time compiler threads ("C1/C2 CompilerThread<n>"), by
    thread id: a thread the JVM retires takes its seconds with it, so deltas are summed per thread."""
    seconds: dict[str, float] = {}
    with suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            stat = _stat_fields(f"/proc/{pid}/task/{task}/stat")
            if stat is not None and "CompilerThre" in stat[0]:
                seconds[task] = (int(stat[1][11]) + int(stat[1][12])) / TICKS
    return seconds


def jit_delta(before: dict[str, float], after: dict[str, float], role: str) -> float:
    """CPU seconds a role's JIT compiler threads used between two snapshots."""
    prefix = f"{role}_jit:"
    return sum(max(0.0, v - before.get(k, 0.0)) for k, v in after.items() if k.startswith(prefix))


@dataclass
class CpuMeter:
    """Cumulative CPU seconds per role; a role's processes are found by pid: the process tree under it.

    A role's CPU is the sum, over its tree, of each process's own CPU and its reaped children's. Every
    process seen is followed by pid and start time, because two things take CPU out of that sum:

    - a child that ends under a parent ignoring SIGCHLD is reaped by the kernel, which discards its CPU
      (the parent's count of reaped children does not grow): PySpark's daemon does this, and Spark
      closes Python workers idle for 60 s. In one ``make bench`` phase the workers read minus 50 s;
    - a process whose parent ends first is re-parented out of the tree.

    So a process that ended keeps its last seen CPU counted, except for what its parent's count of
    reaped children grew by since; one alive outside the tree is still counted as its role's."""

    pids: dict[str, int] = field(default_factory=dict)
    #: Each process of a role but its root seen so far: pid -> (start time, parent, counted as, CPU seconds).
    known: dict[int, tuple[int, int, str, float]] = field(default_factory=dict)
    #: CPU seconds of the reaped children of each process seen, at the last snapshot.
    reaped: dict[int, float] = field(default_factory=dict)
    #: CPU seconds of processes that ended where no process of their role counted them, per role.
    departed: dict[str, float] = field(default_factory=dict)

    def snapshot(self) -> dict[str, float]:
        out = dict.fromkeys(ROLES, 0.0)
        own = os.times()
        out["harness"] = own.user + own.system  # every thread of this process
        for role in JIT_ROLES:
            if role in self.pids:
                out |= {f"{role}_jit:{tid}": cpu for tid, cpu in jit_threads(self.pids[role]).items()}
        members: dict[int, tuple[int, int, str, float]] = {}  # pid -> (start time, parent, counted as, CPU)
        reaped: dict[int, float] = {}
        table = process_table()  # one pass over /proc for every role
        for role, pid in self.pids.items():
            root = table.get(pid)
            if root is None:
                continue
            reaped[pid] = root.reaped
            if role == "spark_jvm":  # the JVM alone; its children are the job's Python driver and Spark's workers
                out["spark_jvm"] += root.own
                out["spark_py_workers"] += root.reaped  # reaped workers
            else:
                out[role] += root.own + root.reaped
            for child in descendants(pid, table) - {pid}:
                proc = table[child]
                kind = role
                if role == "spark_jvm":
                    driver = "structure_validate_store" in _cmdline(child)
                    kind = "spark_py_driver" if driver else "spark_py_workers"
                members[child] = (proc.started, proc.ppid, kind, proc.own + proc.reaped)
                reaped[child] = proc.reaped
        ended: dict[int, list[tuple[str, float]]] = {}  # parent -> (counted as, last CPU) of its children that ended
        for child, (started, parent, kind, cpu) in self.known.items():
            if child in members and members[child][0] == started:
                continue
            alive = table.get(child)
            if child not in members and alive is not None and alive.started == started:
                members[child] = (started, alive.ppid, kind, alive.own + alive.reaped)  # alive outside the tree
                reaped[child] = alive.reaped
            else:  # ended (its pid may be another process's now)
                ended.setdefault(parent, []).append((kind, cpu))
        for parent, children in ended.items():
            last = sum(cpu for _, cpu in children)
            # What the parent's count of reaped children grew by holds them; the kernel discarded the rest.
            grew = reaped[parent] - self.reaped.get(parent, reaped[parent]) if parent in reaped else 0.0
            held = min(last, max(0.0, grew))
            for kind, cpu in children:
                self.departed[kind] = self.departed.get(kind, 0.0) + cpu * (1 - held / last if last else 0.0)
        for _started_at, _parent, kind, cpu in members.values():
            out[kind] += cpu
        self.known, self.reaped = members, reaped
        for kind, cpu in self.departed.items():
            out[kind] += cpu
        return out


def steal_ticks() -> tuple[int, int]:
    """(steal, total) CPU ticks of the machine so far (/proc/stat): a hypervisor taking CPU from this VM."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])  # guest time is already in user


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    return 100 * (after[0] - before[0]) / max(after[1] - before[1], 1)


def per_thousand(before: dict[str, float], after: dict[str, float], readings: int) -> dict[str, float]:
    """CPU ms per 1,000 readings per role between two snapshots, plus the pipeline's sum (and, apart,
    the JVMs' JIT compiler threads, already counted in their roles)."""
    out = {role: (after[role] - before[role]) * 1e6 / max(readings, 1) for role in ROLES}
    out["pipeline"] = sum(out[r] for r in PIPELINE_ROLES)
    for role in JIT_ROLES:
        out[f"{role}_jit"] = jit_delta(before, after, role) * 1e6 / max(readings, 1)
    return out


# --- the bench's own topics, store and clients -----------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 0.5), "p95": percentile(values, 0.95),
            "p99": percentile(values, 0.99), "max": max(values, default=float("nan"))}  # fmt: skip


class Bench:
    def __init__(self, base: Settings, work: Path) -> None:
        tag = f"bench-{uuid.uuid4().hex[:6]}"
        self.settings = base.sandboxed(tag, str(work)).model_copy(update={"sim_fault_rate": 0.0})
        self.work = work
        self.admin = AdminClient({"bootstrap.servers": base.kafka_bootstrap})
        self.extra_topics: list[str] = []
        # The clean topic stamps each record with the broker's append time: "arrived on CleanSensorData".
        self.create_topic(self.settings.clean_topic, {"message.timestamp.type": "LogAppendTime"})
        provision.ensure_topics(self.settings)
        provision.ensure_store(self.settings)
        # One client for the end offsets, asked every 50 ms while a phase drains.
        self.offsets = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": "bench-offsets"})
        self.mongo = store.connect(self.settings)
        self.readings = store.readings(self.mongo, self.settings)

    def create_topic(self, name: str, config: dict[str, str] | None = None) -> None:
        topic = NewTopic(name, self.settings.topic_partitions, self.settings.topic_replication, config=config or {})
        self.admin.create_topics([topic])[name].result(30)
        if name not in self.settings.topics:
            self.extra_topics.append(name)

    def end_offsets(self, topic: str) -> int:
        """Sum of the topic's end offsets (every record ever appended)."""
        partitions = range(self.settings.topic_partitions)
        return sum(self.offsets.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)

    def cleanup(self) -> None:
        self.offsets.close()
        with suppress(Exception):
            self.mongo.drop_database(self.settings.mongo_database)
            self.mongo.close()
        with suppress(Exception):
            topics = [*self.settings.topics, *self.extra_topics]
            for future in self.admin.delete_topics(topics).values():
                future.result(30)
        del self.admin  # its client closes now, not with reconnect attempts after the stack stops
        shutil.rmtree(self.settings.checkpoint_location, ignore_errors=True)

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.settings.to_env(), "PYSPARK_PYTHON": sys.executable}

    def loadgen(self, rate: float, seconds: float, first_id: int, count: int = 0,
                topic: str | None = None, extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:  # fmt: skip
        command = [
            sys.executable, str(ROOT / "benchmarks" / "loadgen.py"),
            "--bootstrap", self.settings.kafka_bootstrap, "--topic", topic or self.settings.raw_topic,
            "--rate", str(rate), "--seconds", str(seconds), "--first-id", str(first_id), "--count", str(count),
            *extra,
        ]  # fmt: skip
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def finish_loadgen(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate(timeout=900)
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed ({process.returncode}): {out}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# --- delay collectors --------------------------------------------------------------------------------


class CleanDelays(threading.Thread):
    """Reads CleanSensorData; for each record, its MeasurementID and the broker's append time minus the
    reading's timestamp. A phase takes the delays of its own ids (the load generator numbers each
    phase's readings from its own first id), so a previous phase's tail never counts in the next."""

    MARK = b'"TimeStamp":"'
    ID = b'"MeasurementID":'

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        #: (MeasurementID, append delay, visible delay): to the broker's append time (inside the open
        #: transaction) and to the moment this read_committed reader got it (after the commit).
        self.delays: list[tuple[int, float, float]] = []
        self.seen: dict[int, int] = {}  # phase's first id -> distinct readings of that phase read so far
        #: The ids read of each phase not yet taken (a read twice is a duplicate, never a reading more).
        self.ids: dict[int, set[int]] = {}
        #: Phases taken: what a reader still gets of them (a backlog after a step fell behind) is counted,
        #: not kept by id (memory), and no longer told from a copy.
        self.taken: set[int] = set()
        self.duplicates: dict[int, int] = {}  # phase's first id -> readings read more than once
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def read(self, first: int) -> int:
        """How many distinct readings of the phase numbered from ``first`` were read so far."""
        with self.lock:
            return self.seen.get(first, 0)

    def take(self, first: int, end: int) -> tuple[list[float], list[float]]:
        """(append, visible) delays of ids in [first, end); what is older is dropped, what is newer kept.
        The phase's ids are forgotten (memory): a copy read after this is no longer told from a first read."""
        with self.lock:
            mine = [(append, visible) for mid, append, visible in self.delays if first <= mid < end]
            self.delays = [row for row in self.delays if row[0] >= end]
            self.ids.pop(first, None)
            self.taken.add(first)
        return [a for a, _ in mine], [v for _, v in mine]

    def run(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": f"bench-{uuid.uuid4()}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "isolation.level": "read_committed", "fetch.wait.max.ms": 20})  # fmt: skip
        consumer.assign(
            [TopicPartition(self.settings.clean_topic, p, 0) for p in range(self.settings.topic_partitions)]
        )
        try:
            while not self.stop.is_set():
                batch = consumer.consume(5000, 0.02)  # returns at its timeout: a later stamp, a longer delay
                now = time.time()
                delays = []
                for message in batch:
                    if message.error():
                        continue
                    value = message.value() or b""
                    start = value.find(self.MARK) + len(self.MARK)
                    stamp = datetime.fromisoformat(value[start : value.index(b'"', start)].decode())
                    at = value.find(self.ID) + len(self.ID)
                    mid = int(value[at : value.index(b",", at)])
                    delays.append((mid, message.timestamp()[1] / 1000 - stamp.timestamp(), now - stamp.timestamp()))
                self.add(delays)
        finally:
            consumer.close()

    def add(self, delays: list[tuple[int, float, float]]) -> None:
        """Count readings read, by phase and id: a copy of one already read is a duplicate, not a reading."""
        with self.lock:
            self.delays.extend(delays)
            for mid, _, _ in delays:
                phase = FIRST_ID + (mid - FIRST_ID) // PHASE_IDS * PHASE_IDS
                if phase in self.taken:
                    self.seen[phase] = self.seen.get(phase, 0) + 1
                    continue
                ids = self.ids.setdefault(phase, set())
                if mid in ids:
                    self.duplicates[phase] = self.duplicates.get(phase, 0) + 1
                else:
                    ids.add(mid)
                    self.seen[phase] = self.seen.get(phase, 0) + 1


STORE_DELAY = re.compile(r"store delay \((\d+) ms buckets, MeasurementIDs (\d+)-(\d+)\): (\{.*\})")


def store_delays(log_text: str, first: int, end: int) -> dict[str, float]:
    """Reading timestamp -> stored of the readings with ids in [first, end), from the job's per-batch
    histograms (the moment the store acknowledged each insert; 10 ms buckets), each of which names the
    lowest and highest id it holds: a query per reading would cost FerretDB a scan."""
    histogram: dict[int, int] = {}
    width = 10
    for match in STORE_DELAY.finditer(log_text):
        if not first <= int(match.group(2)) <= int(match.group(3)) < end:
            continue  # another phase's batch, or one holding two phases' readings (one that fell behind)
        width = int(match.group(1))
        for bucket, count in json.loads(match.group(4)).items():
            histogram[int(bucket)] = histogram.get(int(bucket), 0) + count
    total = sum(histogram.values())
    out: dict[str, float] = {"n": total}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
        seen, value = 0, float("nan")
        for bucket in sorted(histogram):
            seen += histogram[bucket]
            if total and seen >= q * total:
                value = (bucket + 1) * width / 1000  # the bucket's upper edge
                break
        out[name] = value
    return out


# --- phases --------------------------------------------------------------------------------------------


@dataclass
class Stream:
    bench: Bench
    meter: CpuMeter
    clean: CleanDelays
    job_log: Path
    #: The job's trigger: the shortest micro-batch period, which the lag allowance of a step starts from.
    trigger_seconds: float
    next_id: int = FIRST_ID
    #: Readings each phase sent, by its first id.
    sent: dict[int, int] = field(default_factory=dict)

    def wait_drained(self, limit: float) -> float | None:
        """Seconds until the reader has read every reading sent so far (stored, then published and
        committed): counted by id, not by end offsets, which transaction markers inflate."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            if all(self.clean.read(first) >= sent for first, sent in self.sent.items()):
                return time.monotonic() - started
            time.sleep(0.05)
        return None

    def run(self, rate: float, seconds: float) -> dict[str, Any]:
        """Offer ``rate`` readings/s for ``seconds``; delays, lag, drain time and CPU of the phase."""
        first = self.next_id
        self.next_id += PHASE_IDS
        raw_start = self.bench.end_offsets(self.bench.settings.raw_topic)
        log_start = self.job_log.stat().st_size
        before, steal_before, started = self.meter.snapshot(), steal_ticks(), time.monotonic()
        process = self.bench.loadgen(rate, seconds, first)
        lags: list[int] = []  # readings sent but not yet read, once a second
        times: list[float] = []  # when each was taken (monotonic seconds)
        try:
            while process.poll() is None:
                time.sleep(1.0)
                raw = self.bench.end_offsets(self.bench.settings.raw_topic) - raw_start  # no markers: not transactional
                lags.append(raw - self.clean.read(first))
                times.append(time.monotonic())
                if len(lags) % METER_EVERY == 0:
                    # Between the phase's edges too: a process that ends mid-phase keeps the CPU last seen of
                    # it. Not every second: a snapshot reads every process's /proc files once per role.
                    self.meter.snapshot()
        finally:
            if process.poll() is None:  # the bench is stopping (Ctrl-C, SIGTERM): no load left behind
                process.kill()
        sent = finish_loadgen(process)
        log_sent = self.job_log.stat().st_size  # the job's batches while the load ran: its period, its sizes
        self.sent[first] = sent["sent"]
        drained = self.wait_drained(60.0 if rate <= 5000 else 30.0)
        drain = time.time() - sent["ended"] if drained is not None else None
        after, steal_after, elapsed = self.meter.snapshot(), steal_ticks(), time.monotonic() - started
        after["loadgen"] = before["loadgen"] + sent["cpu"]  # its own figure: it has exited
        stored = self.stored_delays(log_start, first, sent["sent"])
        offered = sent["sent"] / max(sent["ended"] - sent["started"], 1e-9)
        appended, visible = self.clean.take(first, self.next_id)
        clean, seen = summary(appended), summary(visible)
        # A micro-batch's worth of input: the lag's sawtooth. Batches come every trigger, or slower near
        # capacity, when each takes longer than the trigger: the period is measured while the load ran.
        sizes = self.batch_sizes(log_start, log_sent)
        period = max(self.trigger_seconds, (sent["ended"] - sent["started"]) / max(len(sizes), 1))
        allowance = rate * period
        trend, trend_times = lags[1:-1], times[1:-1]  # the first and last samples: before and after sending
        growing = lag_growing(trend, allowance)
        duplicates = self.clean.duplicates.get(first, 0)
        if duplicates:
            print(f"  {duplicates:,} readings of the {rate:,.0f}/s phase read twice from the clean topic", flush=True)
        kept_up = (
            drain is not None
            and drain <= DRAIN_LIMIT
            and max(lags, default=0) <= rate * DRAIN_LIMIT
            and not growing
            and self.clean.read(first) == sent["sent"]  # every reading of the phase read, none lost to a late take
            and duplicates == 0
            and seen["p99"] <= P99_LIMIT
        )
        jit = sum(jit_delta(before, after, role) for role in JIT_ROLES) / max(elapsed, 1e-9)
        return {
            "rate": rate,
            "sent": sent["sent"],
            "sent_per_s": offered,
            "jit_cores": jit,
            "steal_percent": steal_percent(steal_before, steal_after),
            "clean_delay_s": clean,
            "visible_delay_s": seen,
            "stored_delay_s": stored,
            "first_id": first,
            "max_lag": max(lags, default=0),
            "lag_growing": growing,
            "lag_samples": lags,
            # The trend test's inputs: the lag's least-squares slope (readings/s; what a shortfall adds
            # each second), the allowance it is held to over the step, and the micro-batches' period and
            # median size while the load ran.
            "lag_slope_per_s": lag_slope(trend_times, trend),
            "lag_allowance": allowance,
            "batch_period_s": period,
            "batch_rows_median": statistics.median(sizes) if sizes else None,
            "duplicates": duplicates,
            "elapsed_s": elapsed,
            "drain_s": drain,
            "kept_up": kept_up,
            "cpu_ms_per_1k": per_thousand(before, after, sent["sent"]),
        }

    def batch_sizes(self, log_start: int, log_end: int) -> list[int]:
        """Raw records in each micro-batch the job completed between two positions of its log."""
        with self.job_log.open("rb") as log:
            log.seek(log_start)
            text = log.read(max(0, log_end - log_start)).decode(errors="replace")
        counted = ("valid", "invalid", "skipped")
        return [sum(int(counts.get(key, 0)) for key in counted) for counts in writer.logged_batch_counts(text)]

    def stored_delays(self, log_start: int, first: int, sent: int) -> dict[str, float]:
        """The phase's store delays; the job logs a batch's histogram after its transactions commit, so
        the reader may have read the phase's last readings first: waits up to 5 s for all of them."""
        deadline = time.monotonic() + 5.0
        while True:
            with self.job_log.open("rb") as log:
                log.seek(log_start)
                stored = store_delays(log.read().decode(errors="replace"), first, first + PHASE_IDS)
            if stored["n"] >= sent or time.monotonic() > deadline:
                return stored
            time.sleep(0.1)


def lag_growing(lags: list[int], allowance: float) -> bool:
    """Whether the lag grew over the phase: its mean over the last third of the samples (one a second)
    above the first third's by more than ``allowance`` (one micro-batch's worth of input: the height of
    the lag's sawtooth, which sampling once a second can catch at any point of its cycle). A pipeline
    2 % slower than the offered rate stays within the other limits for a 45 s step, but not this one:
    it detects a shortfall of about ``allowance`` / (2/3 of the step) readings a second."""
    third = len(lags) // 3
    if third < 2:  # too short a phase to tell a trend from a micro-batch's sawtooth
        return False
    return statistics.mean(lags[-third:]) > statistics.mean(lags[:third]) + allowance


def lag_slope(times: list[float], lags: list[int]) -> float:
    """The least-squares slope of lag samples against the times they were taken (seconds): readings/s
    by which the pipeline fell behind (negative: caught up), 0 with fewer than two samples."""
    if len(lags) < 2 or len(set(times)) < 2:
        return 0.0
    return float(statistics.linear_regression(times, lags).slope)


def warm_up(stream: Stream, limit: float) -> dict[str, Any]:
    """1,000 readings/s in phases of WARMUP_PHASE seconds until the job's JVM and the broker have compiled
    their hot code (their JIT compiler threads used under JIT_SETTLED cores in two phases in a row: the
    JIT works in bursts), for at most ``limit`` seconds. Measured phases before that would charge
    compilation to the pipeline: with 20 s, the JIT took 0.12 of the job JVM's 0.36 cores at 100/s."""
    started = time.monotonic()
    phases: list[float] = []
    while True:
        step = stream.run(1000.0, min(WARMUP_PHASE, max(limit, 1.0)))
        gone = [role for role in JIT_ROLES if _stat(stream.meter.pids[role]) is None]
        if gone:
            raise SystemExit(f"{', '.join(gone)} exited during the warm-up; see {stream.job_log}")
        phases.append(round(step["jit_cores"], 3))
        print(f"  warm-up phase {len(phases)}: JIT compilers {step['jit_cores']:.3f} cores", flush=True)
        settled = len(phases) >= 2 and max(phases[-2:]) < JIT_SETTLED
        if settled or time.monotonic() - started >= limit:
            return {"seconds": round(time.monotonic() - started, 1), "jit_cores": phases, "settled": settled}


def max_sustained(
    stream: Stream, rates: list[float], seconds: float, also: list[dict[str, Any]] | None = None
) -> tuple[float, list[dict[str, Any]]]:
    """The highest rate the pipeline keeps up with, and every step run to find it:

    1. step the offered rate up (``rates``, ``seconds`` each) until the pipeline falls behind;
    2. one step halfway between the last rate kept and the first missed (rounded to 100/s; only when
       they are over 5 % apart): the steps are coarse where the limit is not known in advance;
    3. confirm: the highest rate kept, again for ``CONFIRM_TIMES`` times as long. Over one step, the
       trend test sees a shortfall of about 2 % of the rate; over three, of about 0.6 %. A rate that
       fails its confirmation gives way to the next lower rate kept, confirmed the same way (at most
       ``CONFIRMATIONS`` of them; if none holds, the round's sustained rate is 0). ``also``: steps run
       before (the live rates), candidates for the confirmation too when they kept up.

    Each step is marked ``search``, ``bisect`` or ``confirm`` (``stage``)."""
    steps: list[dict[str, Any]] = []

    def run(rate: float, length: float, stage: str) -> dict[str, Any]:
        step = stream.run(rate, length) | {"stage": stage}
        steps.append(step)
        report_step(stage, step)
        if not step["kept_up"]:
            stream.wait_drained(600.0)  # let the backlog drain before anything else is measured
        return step

    kept: list[dict[str, Any]] = []
    missed: float | None = None
    for rate in rates:
        step = run(rate, seconds, "search")
        if not step["kept_up"]:
            missed = rate
            break
        kept.append(step)
    if kept and missed is not None and missed > kept[-1]["rate"] * 1.05:
        middle = round((kept[-1]["rate"] + missed) / 2, -2)
        if kept[-1]["rate"] < middle < missed:
            step = run(middle, seconds, "bisect")
            if step["kept_up"]:
                kept.append(step)
    kept += [s for s in also or [] if s["kept_up"] and s["rate"] not in {k["rate"] for k in kept}]
    for candidate in sorted(kept, key=lambda s: s["rate"], reverse=True)[:CONFIRMATIONS]:
        step = run(candidate["rate"], seconds * CONFIRM_TIMES, "confirm")
        if step["kept_up"]:
            return min(candidate["sent_per_s"], step["sent_per_s"]), steps
    return 0.0, steps


# --- ceilings ---------------------------------------------------------------------------------------


#: Cores of the load generator's sending above which a leg is taken as bound by it (one Python thread).
LOADGEN_BOUND = 0.8
#: The clean leg of the broker's work: clean messages (JSON, uncompressed) in transactions of about a
#: micro-batch's slice, as the job publishes them, read by two read_committed consumers (the bench's
#: reader and the dashboard read the clean topic).
CLEAN_LEG = ("--clean", "--transaction-size", "5000")


def broker_ceiling(bench: Bench, count: int, broker: int | None, legs: dict[str, Any]) -> float:
    """The broker's two legs of the pipeline's work, each librdkafka produce -> consume of ``count``
    readings through a fresh topic: raw lines (lz4, as the load generator sends them) read once, and
    clean messages in transactions read by two ``read_committed`` consumers; each after an unmeasured
    pass of a quarter of that (the broker's JIT and page cache warm). The broker does both for every
    reading: readings/s = 1 / (1 / raw + 1 / clean). ``legs`` gets each leg's rate, the broker's CPU
    per 1,000 readings (pid ``broker``; topic creation and the load generator's start-up included) and
    the cores the load generator's sending took: a leg whose load generator used a whole core was
    bound by it, not by the broker, and its rate is a floor."""
    for name, extra, readers in (("raw", (), 1), ("clean", CLEAN_LEG, 2)):
        topic = f"{bench.settings.raw_topic}-ceiling-{name}"
        produce_consume(bench, count // 4, f"{topic}-warm-{uuid.uuid4().hex[:6]}", extra, readers)
        before = _stat(broker) if broker is not None else None
        rate, loadgen_cores = produce_consume(bench, count, f"{topic}-{uuid.uuid4().hex[:6]}", extra, readers)
        after = _stat(broker) if broker is not None else None
        used = after[1] + after[2] - before[1] - before[2] if before and after else math.nan
        leg = legs[name] = {
            "rate": rate,
            "broker_ms_per_1k": used / count * 1e6,
            "loadgen_cores": loadgen_cores,
            "bound_by_loadgen": loadgen_cores >= LOADGEN_BOUND,
        }
        bound = ": the load generator's bound, a floor for the broker's" if leg["bound_by_loadgen"] else ""
        print(f"  broker, {name} leg: {rate:,.0f}/s (broker {leg['broker_ms_per_1k']:.1f} ms per 1,000, load "
              f"generator {loadgen_cores:.2f} cores{bound})", flush=True)  # fmt: skip
    per_1k = sum(leg["broker_ms_per_1k"] for leg in legs.values())
    # What the broker's own CPU would allow with the machine's cores to itself: a reference, not a ceiling.
    legs["cpu_bound_per_s"] = (os.cpu_count() or 1) * 1e6 / per_1k if per_1k > 0 else math.nan
    return float(1 / sum(1 / legs[name]["rate"] for name in ("raw", "clean")))


def produce_consume(bench: Bench, count: int, topic: str, extra: tuple[str, ...] = (),
                    readers: int = 1) -> tuple[float, float]:  # fmt: skip
    """(readings/s, the cores the load generator's sending took) of ``count`` readings sent to a new
    topic and read by ``readers`` consumers (``read_committed`` when there are transactions)."""
    bench.create_topic(topic)
    consumers = []
    for _ in range(readers):
        consumer = Consumer({"bootstrap.servers": bench.settings.kafka_bootstrap, "group.id": f"bench-{uuid.uuid4()}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "isolation.level": "read_committed" if extra else "read_uncommitted"})  # fmt: skip
        consumer.assign([TopicPartition(topic, p, 0) for p in range(bench.settings.topic_partitions)])
        consumers.append(consumer)
    started = time.time()
    process = bench.loadgen(0, 1, 1, count=count, topic=topic, extra=extra)
    received = [0] * readers
    done = [math.inf] * readers  # when each reader had read every record
    try:
        while min(received) < count and time.time() - started < 300:
            for i, consumer in enumerate(consumers):
                if received[i] < count:
                    # A short wait: a reader polled in turn with another must not sit idle at the end.
                    received[i] += sum(1 for m in consumer.consume(10_000, 0.02) if not m.error())
                    if received[i] >= count:
                        done[i] = time.time()
    finally:
        if process.poll() is None and min(received) < count:
            process.kill()
    last = max(done) if min(received) >= count else time.time()
    # Timed from the load generator's first send (its process start-up is not the broker's) to the
    # last record read by the last reader.
    sent = finish_loadgen(process)
    for consumer in consumers:
        consumer.close()
    sending = max(sent["flushed"] - sent["started"], 1e-9)
    return float(min(received) / max(last - sent["started"], 1e-9)), float(sent["send_cpu"] / sending)


def documents(count: int, first_id: int = 1) -> list[dict[str, Any]]:
    """The stored documents of ``count`` load-generator readings, as the job writes them, numbered from
    ``first_id``."""
    from sensor_pipeline.contract import rules, schema

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from loadgen import bodies

    pool = bodies()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    out = []
    for seq in range(count):
        record = rules.validate_line(f"{stamp} {pool[seq % len(pool)][1]} {first_id + seq}").record
        assert record is not None
        millis = int(record["TimeStamp"].timestamp() * 1000)
        document = schema.to_document({**record, "_id": record["MeasurementID"], "TimeStamp": millis})
        # with the raw record's position, as the job stores it (sensor_pipeline.job.delivery)
        out.append(document | {"Source": {"topic": "RawSensorData", "partition": seq % 2, "offset": seq // 2}})
    return out


def store_ceiling(bench: Bench, count: int, first_id: int) -> float:
    """Unordered ``insert_many`` in the job's chunk size, majority write concern, from as many threads
    as the job has insert tasks (Spark's parallelism), into the readings' own collection (its indexes,
    and the millions of documents the pipeline stored before) with ids the pipeline never uses (from
    ``first_id``): documents/s. They stay: deleting them would cost FerretDB a scan, and the bench's
    database goes at the end of the run."""
    docs = documents(count, first_id)
    target = store.durable_readings(bench.mongo, bench.settings)
    chunk = bench.settings.insert_chunk
    parts = [docs[i::2] for i in range(2)]

    def insert(part: list[dict[str, Any]]) -> None:
        for i in range(0, len(part), chunk):
            target.insert_many(part[i : i + chunk], ordered=False)

    started = time.perf_counter()
    threads = [threading.Thread(target=insert, args=(part,)) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count / (time.perf_counter() - started)


SPARK_CEILING = """
import json, sys, time
from datetime import UTC, datetime
sys.path[:0] = [sys.argv[3], sys.argv[4]]
import structure_validate_store as job
from loadgen import bodies
from sensor_pipeline.config import load_settings
from sensor_pipeline.job.writer import BatchWriter
count, batch = int(sys.argv[1]), int(sys.argv[2])
spark = job.session()  # the job's session settings
spark.sparkContext.setLogLevel("ERROR")
settings = load_settings()
writer = BatchWriter(settings)
pool = bodies()
stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")

def task(batches):
    # The job's Python task without its I/O: rows out of Arrow, the stored documents built.
    import pyarrow as pa
    from sensor_pipeline.contract import schema
    from sensor_pipeline.job import python_worker
    python_worker.prepare()
    rows = [r for b in batches for r in b.to_pylist()]
    documents = [schema.to_document(r) for r in rows if r["reason"] is None]
    yield pa.RecordBatch.from_pydict({"counts": [json.dumps({"n": len(rows), "documents": len(documents)})]})

def micro_batch(k):
    # Raw records as the Kafka source gives them: one Spark partition per Kafka partition (2), in order.
    half = batch // 2
    records = [(f"{stamp} {pool[(2 * i + p) % len(pool)][1]} {k * batch + 2 * i + p + 1}".encode(),
                settings.raw_topic, p, k * half + i) for p in (0, 1) for i in range(half)]
    schema = "value binary, topic string, partition int, offset long"
    frame = spark.createDataFrame(spark.sparkContext.parallelize(records, 2), schema).cache()
    frame.count()
    return frame

def run(frames):
    rows = 0
    for frame in frames:
        out = writer.routed(frame, datetime.now(UTC)).mapInArrow(task, "counts string").collect()
        tasks = [json.loads(r.counts)["n"] for r in out]
        assert len(tasks) == 2 and all(tasks), f"rows per task {tasks}: the job runs two"
        rows += sum(tasks)
    return rows

frames = [micro_batch(k) for k in range(max(count // batch, 1))]
rates = []
# Warm: at least 4 passes, until the last two agree within 2 % (at most 12).
while len(rates) < 4 or abs(rates[-1] - rates[-2]) > 0.02 * rates[-1]:
    if len(rates) == 12:
        break
    started = time.perf_counter()
    rows = run(frames)
    rates.append(rows / (time.perf_counter() - started))
print(json.dumps({"rate": rates[-1], "passes": rates}))
"""


#: The job's master and driver memory, no UI.
SPARK_SUBMIT = "--master local[2] --driver-memory 2g --conf spark.ui.enabled=false pyspark-shell"


def spark_ceiling(count: int, batch: int, passes: list[float]) -> float:
    """Spark alone: the job's ``foreachBatch`` plan (validation against the batch's time, the stored
    document and Kafka record of each row) and its Python task without I/O (rows out of Arrow, documents
    built), on micro-batches of ``batch`` raw records held in memory, one after the other: readings/s
    of the last pass (``passes`` gets every pass's)."""
    out = subprocess.run([sys.executable, "-c", SPARK_CEILING, str(count), str(batch), str(ROOT / "benchmarks"),
                          str(ROOT / "jobs")],
                         env={**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_SUBMIT_ARGS": SPARK_SUBMIT},
                         capture_output=True, text=True, check=True, timeout=900)  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  Spark: {', '.join(f'{r:,.0f}' for r in result['passes'])} readings/s per pass", flush=True)
    passes += result["passes"]
    return float(result["rate"])


def round_ceilings(
    bench: Bench, meter: CpuMeter, count: int, number: int, searched: list[dict[str, Any]]
) -> dict[str, Any]:
    """Each part alone, after round ``number``'s capacity search, beside the idle job and dashboard;
    Spark on micro-batches of the median size the job logged in the round's confirmation (none
    confirmed: no batch size the job met, and no Spark ceiling for the round)."""
    confirmed = [s for s in searched if s["stage"] == "confirm" and s["kept_up"]]
    batch = max(1000, round(confirmed[-1]["batch_rows_median"] or 0)) if confirmed else 0
    print(f"ceilings (each part alone; Spark in batches of {batch:,}) ...", flush=True)
    legs: dict[str, Any] = {}
    passes: list[float] = []
    steal_before = steal_ticks()
    ceilings = {
        "broker": measured(lambda: broker_ceiling(bench, 5 * count, meter.pids.get("broker"), legs)),
        "store": measured(lambda: store_ceiling(bench, count // 2, CEILING_IDS + number * PHASE_IDS)),
        "spark": measured(lambda: spark_ceiling(count, batch, passes)) if batch else math.nan,
    }
    print(f"  {json.dumps({k: None if math.isnan(v) else round(v) for k, v in ceilings.items()})}", flush=True)
    return ceilings | {
        "round": number,
        "spark_batch": batch,
        "spark_passes": passes,
        "broker_legs": legs,
        "steal_percent": steal_percent(steal_before, steal_ticks()),
    }


# --- the original design's path ---------------------------------------------------------------------


def baseline(bench: Bench, count: int) -> float:
    """The original style, end to end, per reading, over the whole span: readings/s."""
    from kafka import KafkaConsumer, KafkaProducer

    from sensor_pipeline.contract.rules import validate_line
    from sensor_pipeline.contract.schema import clean_message
    from sensor_pipeline.source.api import create_app

    settings = bench.settings.model_copy(update={"raw_topic": f"{bench.settings.raw_topic}-baseline",
                                                 "clean_topic": f"{bench.settings.clean_topic}-baseline"})  # fmt: skip
    for topic in (settings.raw_topic, settings.clean_topic):
        bench.create_topic(topic)
    client_http = create_app(settings).test_client()  # in-process HTTP flatters the baseline
    producer = KafkaProducer(**settings.kafka_client_options())
    consumer = KafkaConsumer(settings.raw_topic, **settings.kafka_client_options(), auto_offset_reset="earliest",
                             group_id=f"bench-baseline-{uuid.uuid4()}")  # fmt: skip
    collection = bench.mongo[settings.mongo_database]["baseline"]
    started = time.perf_counter()
    for _ in range(count):
        line = client_http.get("/sensordata").get_data(as_text=True).strip()
        producer.send(settings.raw_topic, value=line.encode()).get(timeout=10)
    done = 0
    while done < count:
        for records in consumer.poll(timeout_ms=1000).values():
            for record in records:
                verdict = validate_line(record.value.decode())
                if verdict.record is not None:
                    collection.insert_one({"_id": verdict.record["MeasurementID"], **verdict.record})
                    message = json.dumps(clean_message(verdict.record)).encode()
                    producer.send(settings.clean_topic, value=message).get(timeout=10)
                done += 1
    elapsed = time.perf_counter() - started
    producer.close()
    consumer.close()
    return count / elapsed


# --- processes ----------------------------------------------------------------------------------------


def reachable(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


@contextmanager
def local_infra(base: Settings) -> Iterator[None]:
    """The stack's broker and store: used when running, else started for the run and stopped after."""
    started = False
    if not reachable(base.kafka_bootstrap):
        subprocess.run([str(BIN / "sensor-pipeline"), "stack", "up", "--infra-only"], check=True)
        started = True
    try:
        yield
    finally:
        if started:
            subprocess.run([str(BIN / "sensor-pipeline"), "stack", "down"], check=False)


@contextmanager
def job_and_dashboard(bench: Bench, meter: CpuMeter, port: int, job_args: tuple[str, ...]) -> Iterator[None]:
    """The real job (spark-submit, local[2], its defaults) and a dashboard on the bench's topics."""
    jars = artifacts.spark_jars(ROOT, load(ROOT).versions["spark"])
    command = spark_submit_command(ROOT, jars, ("--starting-offsets", "earliest", *job_args), driver_memory="2g")
    log = bench.work / "job.log"
    with log.open("wb") as out:
        job = subprocess.Popen(command, env=bench.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    dashboard = subprocess.Popen(
        [str(BIN / "sensor-pipeline"), "dashboard", "--port", str(port)],
        env=bench.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "batch 0 " not in log.read_text(errors="replace") and "Batch: 0" not in log.read_text(errors="replace"):
            if job.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the job did not start; see {log}")
            time.sleep(0.5)
        meter.pids["spark_jvm"] = job.pid
        meter.pids["dashboard"] = dashboard.pid
        yield
    finally:
        for process in (job, dashboard):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in (job, dashboard):
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def infra_pids(meter: CpuMeter, settings: Settings) -> None:
    broker = find_process("java", "kafka.Kafka")
    # By its listener: the emulator's command line names the FerretDB binary too (--ferretdb).
    port = parse_uri(settings.mongo_uri)["nodelist"][0][1]
    mongo = find_process("ferretdb", f"--listen-addr=127.0.0.1:{port}") or find_process("mongod")
    if broker is None or mongo is None:
        raise SystemExit("cannot find the broker's or the store's process: is this the local stack?")
    meter.pids.update(broker=broker, store=mongo)


# --- output ---------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def report_step(kind: str, step: dict[str, Any]) -> None:
    cpu = step["cpu_ms_per_1k"]
    clean = step["clean_delay_s"]
    read = step["visible_delay_s"]
    print(f"  {kind} {step['rate']:>8,.0f}/s  sent {step['sent_per_s']:>9,.0f}/s  clean p50 {fmt(clean['p50'])} "
          f"p99 {fmt(clean['p99'])} max {fmt(clean['max'])} s (read p99 {fmt(read['p99'])}, {read['n']:,} read)  "
          f"stored p50 {fmt(step['stored_delay_s']['p50'])} s  "
          f"lag max {step['max_lag']:,}{' GROWING' if step['lag_growing'] else ''}  "
          f"drained {fmt(step['drain_s'], 1)} s  "
          f"{'kept up' if step['kept_up'] else 'FELL BEHIND'}  pipeline CPU {fmt(cpu['pipeline'], 0)} ms/1k "
          f"(harness {fmt(cpu['harness'], 0)}, JIT {step['jit_cores']:.3f} cores)  steal {step['steal_percent']:.1f}%",
          flush=True)  # fmt: skip


def table(results: dict[str, Any]) -> str:
    lines = ["", "Delay, reading timestamp -> read by a read_committed consumer, -> CleanSensorData (broker append "
             "time, inside the transaction) and -> acknowledged by the store (s)",
             f"{'rate/s':>8} {'sent/s':>9} | {'read p50':>8} {'p99':>6} | {'clean p50':>9} {'p95':>6} {'p99':>6} "
             f"{'max':>6} | {'stored p50':>10} {'p95':>6} {'p99':>6} {'max':>6}"]  # fmt: skip
    if not results["live"]:  # --capacity-only: the steps' delays were printed as they ran
        lines = []
    for step in results["live"]:
        c, s, r = step["clean_delay_s"], step["stored_delay_s"], step["visible_delay_s"]
        lines.append(f"{step['rate']:>8,.0f} {step['sent_per_s']:>9,.0f} | {fmt(r['p50']):>8} {fmt(r['p99']):>6} | "
                     f"{fmt(c['p50']):>9} {fmt(c['p95']):>6} "
                     f"{fmt(c['p99']):>6} {fmt(c['max']):>6} | {fmt(s['p50']):>10} {fmt(s['p95']):>6} "
                     f"{fmt(s['p99']):>6} {fmt(s['max']):>6}")  # fmt: skip
    warmup = results.get("warmup", {})
    lines += [
        "",
        f"Warm-up: {warmup.get('seconds', 0):.0f} s, the JIT compilers "
        f"{'settled' if warmup.get('settled') else 'NOT settled (the CPU figures include their work)'}",
    ]
    lines += ["", "CPU ms per 1,000 readings, per process (from /proc)",
              f"{'rate/s':>8} " + " ".join(f"{r:>16}" for r in (*ROLES, "pipeline"))]  # fmt: skip
    for step in results["live"] + results["steps"]:
        cpu = step["cpu_ms_per_1k"]
        mark = {"bisect": "b", "confirm": "c"}.get(step.get("stage", ""), " ")
        lines.append(f"{step['rate']:>8,.0f}{mark}" + " ".join(f"{fmt(cpu[r], 1):>16}" for r in (*ROLES, "pipeline")))
    lines.append(f"  b: the step halfway into the search's last gap; c: a confirmation, {CONFIRM_TIMES} steps long")
    lines += spread(results)
    best = results["max_sustained_per_s"]
    lines += ["", "Throughput (readings/s)" + (", the median of the rounds" if len(rounds(results)) > 1 else "")]
    if "ceilings" not in results:  # --capacity-only
        lines.append(f"  pipeline, max sustained    {best:>12,.0f}")
        return "\n".join(lines)
    ceilings = ceiling_medians(results)
    floor = broker_floor(results)
    for name, value in ceilings.items():
        spread_ = min_median_max([c[name] for c in results["ceilings"]], 0)
        at_least = ">=" if name == "broker" and floor else "  "
        lines.append(f"  ceiling, {name} alone{'':<{8 - len(name)}}{at_least} {value:>12,.0f}   "
                     f"(min / median / max {spread_})")  # fmt: skip
    if floor:
        cpu_bound = min_median_max([c["broker_legs"].get("cpu_bound_per_s", math.nan) for c in results["ceilings"]
                                    if "broker_legs" in c], 0)  # fmt: skip
        lines.append(f"    the broker's: a floor, the load generator bound a leg; its own CPU alone would allow "
                     f"{cpu_bound}/s on these cores")  # fmt: skip
    ratios = ceiling_ratios(best, ceilings)
    lines.append(
        f"  pipeline, max sustained    {best:>12,.0f}   = {ratios['tightest']:.0%} of the tightest ceiling "
        f"({min(ceilings, key=ceilings.__getitem__)})"
    )
    in_series, total = 1 / sum(1 / c for c in ceilings.values()), sum(ceilings.values())
    lines.append(
        f"  the stages one after the other on these cores, 1 / sum(1 / ceiling): {in_series:,.0f}/s; "
        f"pipeline = {'at most ' if floor else ''}{ratios['in_series']:.0%} of it"
    )
    lines.append(f"  the sum of the ceilings: {total:,.0f}/s; pipeline = {ratios['sum']:.1%} of it")  # fmt: skip
    base = results["baseline_per_s"]
    lines.append(f"  baseline (original style)  {base:>12,.0f}   pipeline = {best / base:,.0f}x baseline")
    return "\n".join(lines)


def measured(ceiling: Callable[[], float]) -> float:
    """A ceiling, or NaN when measuring it failed (reported; the run goes on: the pipeline's figures stand)."""
    try:
        return ceiling()
    except Exception as error:
        print(f"  a ceiling failed: {type(error).__name__}: {str(error)[-500:]}", flush=True)
        return math.nan


def ceiling_medians(results: dict[str, Any]) -> dict[str, float]:
    """Each part's ceiling, the median over the rounds that measured it (NaN when none did)."""
    medians = {}
    for name in ("broker", "store", "spark"):
        values = [c[name] for c in results["ceilings"] if not math.isnan(c[name])]
        medians[name] = statistics.median(values) if values else math.nan
    return medians


def ceiling_ratios(best: float, ceilings: dict[str, float]) -> dict[str, float]:
    """The sustained rate over: the tightest ceiling; the rate of the stages run one after the other on
    the same cores, 1 / sum(1 / ceiling) (each reading costs every stage its share of the machine:
    the bound for stages that share the cores); and the plain sum of the ceilings."""
    return {
        "tightest": best / min(ceilings.values()),
        "in_series": best * sum(1 / c for c in ceilings.values()),
        "sum": best / sum(ceilings.values()),
    }


def min_median_max(values: list[float], digits: int) -> str:
    """``min / median / max`` of the values that are numbers, or ``-`` when none is."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    return " / ".join(fmt(v, digits) for v in (min(values), statistics.median(values), max(values)))


def rounds(results: dict[str, Any]) -> list[int]:
    return sorted({s.get("round", 1) for s in results["live"] + results["steps"]})


def spread(results: dict[str, Any]) -> list[str]:
    """With several rounds (``--repeat``): min / median / max per rate, over every round that ran it (kept
    up or not), of the delay to the reader (what "kept up" judges: after the commit) at p50 and p99,
    the clean delay's p99 (to the broker's append, inside the transaction) and the pipeline's CPU per
    1,000 readings; and of the sustained rate."""
    if len(rounds(results)) < 2:
        return []
    lines = ["", f"Spread over {len(rounds(results))} rounds: min / median / max, every round that ran the rate",
             f"{'rate/s':>8} {'kept up':>16} | {'read p50 (s)':>20} | {'read p99 (s)':>20} | "
             f"{'clean p99 (s)':>20} | {'pipeline CPU ms/1k':>22}"]  # fmt: skip

    by_rate: dict[float, list[dict[str, Any]]] = {}
    for step in results["live"] + results["steps"]:
        if step.get("stage") not in ("confirm", "bisect"):  # listed below: their rates differ by round
            by_rate.setdefault(step["rate"], []).append(step)
    total = len(rounds(results))
    for rate, steps in sorted(by_rate.items()):
        kept = [s for s in steps if s["kept_up"]]
        p50 = min_median_max([s["visible_delay_s"]["p50"] for s in steps], 2)
        p99 = min_median_max([s["visible_delay_s"]["p99"] for s in steps], 2)
        clean = min_median_max([s["clean_delay_s"]["p99"] for s in steps], 2)
        cpu = min_median_max([s["cpu_ms_per_1k"]["pipeline"] for s in steps], 0)
        ran = len({s.get("round", 1) for s in steps})
        # A round that fell behind below this rate never ran it: "of" counts only the rounds that did.
        kept_up = f"{len(kept)} of {len(steps)}" + (f", {total - ran} not run" if ran < total else "")
        lines.append(f"{rate:>8,.0f} {kept_up:>16} | {p50:>20} | {p99:>20} | {clean:>20} | {cpu:>22}")
    for step in results["steps"]:
        if step.get("stage") in ("confirm", "bisect"):
            held = "held" if step["kept_up"] else "FELL BEHIND"
            kind = "confirmation" if step["stage"] == "confirm" else "halfway step"
            lines.append(f"  {kind}, round {step.get('round', 1)}: {step['rate']:,.0f}/s for "
                         f"{step['elapsed_s']:.0f} s {held} (lag slope {step['lag_slope_per_s']:+,.0f} readings/s, "
                         f"read p99 {fmt(step['visible_delay_s']['p99'])} s)")  # fmt: skip
    sustained = results["sustained_per_round"]
    lines.append(f"  max sustained per round: {', '.join(f'{v:,.0f}' for v in sustained)} "
                 f"(min / median / max {min_median_max(sustained, 0)})")  # fmt: skip
    lines += brackets(results)
    if results.get("ceilings"):
        # Each round's sustained rate against its own ceilings, not medians against medians.
        per_round = []
        for number, best in zip(rounds(results), sustained, strict=False):
            ceilings = next((c for c in results["ceilings"] if c["round"] == number), None)
            values = {k: ceilings[k] for k in ("broker", "store", "spark")} if ceilings else {}
            if best and values and not any(math.isnan(v) for v in values.values()):
                per_round.append(f"{ceiling_ratios(best, values)['in_series']:.0%} (round {number})")
        bounds = " (upper bounds: the broker's ceiling is a floor)" if broker_floor(results) else ""
        lines.append(f"  pipeline / the stages in series, per round{bounds}: {', '.join(per_round) or '-'}")
    return lines


def broker_floor(results: dict[str, Any]) -> bool:
    """Whether the load generator bound a leg of a broker ceiling: the broker's figure is then a floor,
    and the ratios to the ceilings upper bounds."""
    return any(
        leg.get("bound_by_loadgen")
        for c in results.get("ceilings", [])
        for leg in c.get("broker_legs", {}).values()
        if isinstance(leg, dict)
    )


def brackets(results: dict[str, Any]) -> list[str]:
    """Per round, the highest rate kept and the lowest missed in the search (where the limit lies), or
    that no step fell behind (the limit is above the highest step offered)."""
    lines = []
    for number in rounds(results):
        steps = [s for s in results["steps"] if s.get("round", 1) == number and s.get("stage") != "confirm"]
        kept = [s["rate"] for s in steps if s["kept_up"]]
        missed = [s["rate"] for s in steps if not s["kept_up"]]
        top = f"{max(kept):,.0f}/s kept" if kept else "no step kept"
        limit = f"{min(missed):,.0f}/s missed" if missed else "no step missed: the limit is above the highest offered"
        lines.append(f"  round {number}: {top}, {limit}")
    return lines


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    live = [s for s in results["live"] if s.get("round", 1) == 1]  # the first round (the table has the spread)
    rates = [s["rate"] for s in live]
    for key, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^-")):
        left.plot(rates, [s["clean_delay_s"][key] for s in live], style, label=f"clean {key}")
    left.plot(rates, [s["stored_delay_s"]["p50"] for s in live], "x:", label="stored p50")
    left.set_xscale("log")
    left.set_xlabel("offered readings/s")
    left.set_ylabel("delay from reading timestamp (s)")
    left.set_title("Delay vs rate")
    left.grid(alpha=0.3)
    left.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    steps = live + [s for s in results["steps"] if s.get("round", 1) == 1]
    marks = {"bisect": " (halfway)", "confirm": " (confirm)"}
    labels = [f"{s['rate']:,.0f}/s{marks.get(s.get('stage', ''), '')}" for s in steps]
    bottom = [0.0] * len(steps)
    for role in ROLES:
        values = [s["cpu_ms_per_1k"][role] for s in steps]
        right.bar(labels, values, bottom=bottom, label=role)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    right.set_ylabel("CPU ms per 1,000 readings")
    right.set_title("CPU per stage")
    right.tick_params(axis="x", rotation=45)
    right.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"sensor-pipeline bench, commit {results['commit']}, {results['date']}, "
                 f"{results['machine']['cores']} cores (round 1)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def machine() -> dict[str, Any]:
    """The machine: cores, CPU (model name, family, model, stepping, clock), memory, kernel."""
    cpu: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "cpu family", "model", "stepping", "cpu MHz") and key.strip() not in cpu:
            cpu[key.strip()] = value.strip()
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    return {
        "cores": os.cpu_count(),
        "cpu": cpu.get("model name", platform.processor()),
        "cpu_id": {key: cpu.get(key) for key in ("cpu family", "model", "stepping", "cpu MHz")},
        "memory_gib": memory,
        "kernel": platform.release(),
    }


def source_state() -> tuple[str, bool]:
    """The commit measured and whether the work tree differs from it, untracked files included (then its
    figures are not the commit's); the bench's own results do not count."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=False)
    changed = [line for line in status.stdout.splitlines() if "benchmarks/results/" not in line]
    return commit.stdout.strip() or "unknown", bool(changed)


def software(meter: CpuMeter) -> dict[str, str]:
    """What ran, beyond the stack's pinned versions: Python, Java, the Python clients, the store server."""
    from importlib.metadata import version

    import confluent_kafka

    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr.splitlines()
    return {
        "python": platform.python_version(),
        "java": java[0] if java else "unknown",
        "pyspark": version("pyspark"),
        "confluent-kafka": version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "pymongo": version("pymongo"),
        "store_server": _cmdline(meter.pids["store"]).split(" ", 1)[0],
    }


def main(argv: list[str]) -> int:  # noqa: PLR0915 - one run, in the order it prints
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="100,1000,5000", help="live rates for the delay figures")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each live-rate phase")
    parser.add_argument(
        "--steps", default="6000,7000,8000,9000,10000,12500,15000,20000", help="offered rates, stepped up"
    )
    parser.add_argument("--step-seconds", type=float, default=60.0)
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=300.0,
        help="at most this long at 1,000 readings/s before anything is measured: until the JVMs' JIT settles",
    )
    parser.add_argument(
        "--repeat", type=int,
        help="rounds of the live rates, the capacity search and the ceilings, one after the other on the warm "
        "pipeline: the table adds min / median / max per rate (default 3; 1 with --capacity-only)",
    )  # fmt: skip
    parser.add_argument(
        "--ceiling-count", type=int, default=200_000,
        help="readings per ceiling: Spark's; half for the store; five times for each of the broker's legs",
    )  # fmt: skip
    parser.add_argument("--baseline-count", type=int, default=500)
    parser.add_argument("--dashboard-port", type=int, default=5106)
    parser.add_argument("--trigger-seconds", type=float, help="the job's trigger (default: the job's default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--capacity-only", action="store_true",
        help="only the warm-up and the capacity search over --steps (no ceilings, baseline or live rates); "
        "writes capacity-<commit>.json",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        rates = [float(r) for r in args.rates.split(",") if r]
        steps = [float(r) for r in args.steps.split(",") if r]
        if args.capacity_only:
            rates = []
    except ValueError:
        parser.error("--rates and --steps take comma-separated numbers, e.g. 100,1000")
    if any(r <= 0 for r in rates + steps) or args.seconds <= 0 or args.step_seconds <= 0:
        parser.error("rates and durations must be positive")
    if args.repeat is None:
        args.repeat = 1 if args.capacity_only else 3
    if args.repeat < 1:
        parser.error("--repeat takes 1 or more rounds")
    # SIGTERM (a CI timeout, kill) ends the run as Ctrl-C does: the job, dashboard and topics are cleaned up.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    definition = load(ROOT)
    base = settings_from_env_map(definition.settings)
    trigger = args.trigger_seconds if args.trigger_seconds is not None else base.trigger_seconds
    work = ROOT / ".local-stack" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    commit, dirty = source_state()
    results: dict[str, Any] = {
        "options": {key: str(value) for key, value in vars(args).items()},
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "dirty": dirty,
        "machine": machine(),
        "versions": definition.versions,
        "stack": {  # what the local stack ran with
            "trigger_seconds": trigger,
            "topic_partitions": base.topic_partitions,
            "insert_chunk": base.insert_chunk,
            "max_offsets_per_trigger": base.max_offsets_per_trigger,
            "ferretdb_insert_batch": artifacts.FERRETDB_INSERT_BATCH,
            "spark_master": "local[2]",
        },
    }
    print(f"machine: {results['machine']}", flush=True)
    with local_infra(base):
        bench = Bench(base, work)
        try:
            meter = CpuMeter()
            infra_pids(meter, base)
            results["software"] = software(meter)
            if not args.capacity_only:
                print(f"baseline, original style, {args.baseline_count} readings ...", flush=True)
                results["baseline_per_s"] = baseline(bench, args.baseline_count)
            clean = CleanDelays(bench.settings)
            job_args = ("--trigger-seconds", str(args.trigger_seconds)) if args.trigger_seconds is not None else ()
            with job_and_dashboard(bench, meter, args.dashboard_port, job_args):
                clean.start()
                stream = Stream(bench, meter, clean, work / "job.log", trigger)
                print(
                    f"warming up at 1,000 readings/s until the JIT settles (< {JIT_SETTLED} cores, at most "
                    f"{args.warmup_seconds:.0f} s; not reported) ...",
                    flush=True,
                )
                results["warmup"] = warm_up(stream, args.warmup_seconds)
                results["live"], results["steps"], results["sustained_per_round"] = [], [], []
                if not args.capacity_only:
                    results["ceilings"] = []
                for number in range(1, args.repeat + 1):
                    if args.repeat > 1:
                        print(f"round {number} of {args.repeat}", flush=True)
                    live = []
                    for rate in rates:
                        live.append(stream.run(rate, args.seconds) | {"round": number})
                        report_step("live", live[-1])
                    best, searched = max_sustained(stream, steps, args.step_seconds, also=live)
                    results["live"] += live
                    results["steps"] += [step | {"round": number} for step in searched]
                    results["sustained_per_round"].append(best)  # confirmed, or 0
                    if not args.capacity_only:
                        results["ceilings"].append(round_ceilings(bench, meter, args.ceiling_count, number, searched))
                        # Unmeasured: the job sat idle through the ceilings, and Spark closes Python workers
                        # idle for 60 s; the next round would start with new ones (a 1.4 s p99 at 100/s).
                        stream.run(1000.0, WARMUP_PHASE)
                results["max_sustained_per_s"] = statistics.median(results["sustained_per_round"])
                clean.stop.set()
        finally:
            bench.cleanup()
    if "ceilings" in results:
        results["ceiling_ratios"] = ceiling_ratios(results["max_sustained_per_s"], ceiling_medians(results))
    print(table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{'capacity' if args.capacity_only else 'bench'}-{commit}{'-dirty' if dirty else ''}"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.capacity_only:
        print(f"\nwrote {args.out / f'{name}.json'}")
        return 0
    chart(results, args.out / f"{name}.png")
    print(f"\nwrote {args.out / f'{name}.json'} and {args.out / f'{name}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
