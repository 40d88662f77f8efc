"""The store alone, per FerretDB configuration: which backend and insert batch the local stack should use.

Each configuration runs in a server of its own, started here in a temporary folder on free ports:

* ``sqlite-100``: FerretDB 1.24 on SQLite with its default insert batch (100 documents per SQLite
  transaction), the stack's store before this benchmark;
* ``sqlite-1000``: the same with ``--test-batch-size`` = the job's insert chunk (the stack's store now);
* ``postgresql-1000``: FerretDB on Debian's PostgreSQL 15 (found on PATH or under
  ``/usr/lib/postgresql``; skipped when absent: Debian's ``postgresql`` package has it),
  same batch. PostgreSQL refuses to run as root: under root it runs in a user namespace of its own
  (``unshare --user``), as an ordinary user inside.

Per configuration and round, on the same documents the job writes (the load generator's readings,
as stored) into a collection with the pipeline's indexes, with majority write concern:

* **insert**: unordered ``insert_many`` in the job's chunk size from two threads (the job's two
  insert tasks), documents/s, and the server's CPU (every process of it) per 1,000 documents;
* **replay**: a fifth of the documents inserted again, every one a duplicate key (a replayed batch),
  documents/s;
* **mixed replay**: chunks in which one document in ten is already stored (a retried slice that its
  earlier attempt stored in part), documents/s: FerretDB redoes a SQLite transaction that meets a
  duplicate key one document at a time, so the batch size decides how many;
* **one duplicate per chunk**: chunks of new documents with one already stored in each: the case
  where the batch size costs most, documents/s;
* **lookup**: ``store.sources`` of 1,000 ids spread over the collection, the job's one read (who
  stored a refused document), ms (median of 5).

The configurations alternate within each round, so a machine that slows down slows all of them.

    .venv/bin/python benchmarks/store_backends.py [--count 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import BulkWriteError
from pymongo.write_concern import WriteConcern

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import RESULTS, ROOT, documents, machine, min_median_max, tree_cpu

from sensor_pipeline.config import settings_from_env_map
from sensor_pipeline.job import store
from sensor_pipeline.local import artifacts, health
from sensor_pipeline.local.definition import load

DEFAULT_BATCH = 100  # FerretDB 1.24's --test-batch-size default


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    pid: int


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (``initdb``, ``postgres``), or None."""
    found = shutil.which("postgres")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return versions[-1].parent if versions else None


def as_ordinary_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses root: under root, run it as uid 1000 of a user namespace of its own."""
    if os.geteuid() != 0:
        return command
    return ["unshare", "--user", "--map-user=1000", "--map-group=1000", *command]


def wait_for(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    if not health.wait_until(lambda: health.port_open(port), 30.0) or process.poll() is not None:
        raise SystemExit(f"{what} did not start; see {log}")


@contextmanager
def ferretdb(work: Path, name: str, backend_args: list[str]) -> Iterator[Server]:
    binary = artifacts.ferretdb(ROOT, load(ROOT).versions["ferretdb"])
    port = health.free_port()
    log = work / f"{name}.log"
    command = [str(binary), *backend_args, f"--listen-addr=127.0.0.1:{port}", "--debug-addr=-"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(port, process, f"FerretDB ({name})", log)
        yield Server(name, f"mongodb://127.0.0.1:{port}/", process.pid)
    finally:
        process.terminate()
        process.wait(30)


@contextmanager
def postgresql(work: Path, pg_bin: Path) -> Iterator[tuple[str, int]]:
    """A PostgreSQL server with a ``ferretdb`` database: (its URL, its postmaster's pid)."""
    data = work / "pgdata"
    log = work / "postgresql.log"
    subprocess.run(
        as_ordinary_user([str(pg_bin / "initdb"), "-D", str(data), "-U", "ferretdb", "-A", "trust"]),
        check=True, capture_output=True,
    )  # fmt: skip
    port = health.free_port()
    server = [str(pg_bin / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(work)]
    with log.open("wb") as out:
        process = subprocess.Popen(as_ordinary_user(server), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(port, process, "PostgreSQL", log)
        psql = shutil.which("psql") or str(pg_bin / "psql")
        for _ in range(50):  # the port opens a moment before connections are accepted
            created = subprocess.run(
                [psql, "-h", "127.0.0.1", "-p", str(port), "-U", "ferretdb", "-d", "postgres",
                 "-c", "CREATE DATABASE ferretdb"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if created.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"could not create the ferretdb database: {created.stderr}")
        yield f"postgres://ferretdb@127.0.0.1:{port}/ferretdb", process.pid
    finally:
        process.terminate()
        process.wait(30)


def cpu_seconds(pids: tuple[int, ...]) -> float:
    return sum(cpu for pid in pids for _, cpu in tree_cpu(pid).values())


def measure(server: Server, pids: tuple[int, ...], docs: list[dict[str, Any]], chunk: int) -> dict[str, float]:
    """``docs``: the stored documents, then a fifth more that only the mixed phase inserts."""
    count = len(docs) * 5 // 6
    stored_docs, fresh = docs[:count], docs[count:]
    client: MongoClient[dict[str, Any]] = MongoClient(server.url)
    target = client.get_database("bench", write_concern=WriteConcern("majority"))["readings"]
    target.drop()
    store.ensure_indexes(target)

    def insert(part: list[dict[str, Any]]) -> None:
        for i in range(0, len(part), chunk):
            try:
                target.insert_many(part[i : i + chunk], ordered=False)
            except BulkWriteError as error:  # the replays: duplicate keys, counted as stored
                if any(e.get("code") != store.DUPLICATE_KEY for e in error.details.get("writeErrors", [])):
                    raise

    def timed(batch: list[dict[str, Any]]) -> tuple[float, float]:
        """Seconds and server CPU seconds to insert ``batch`` from two threads (the job's two tasks)."""
        cpu, started = cpu_seconds(pids), time.perf_counter()
        half = len(batch) // 2  # contiguous halves: each keeps the batch's pattern of duplicates
        threads = [threading.Thread(target=insert, args=(part,)) for part in (batch[:half], batch[half:])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started, cpu_seconds(pids) - cpu

    elapsed, cpu = timed(stored_docs)
    # A replay: a fifth of the stored documents again, every one a duplicate key.
    replay = stored_docs[: count // 5]
    replay_elapsed, _ = timed(replay)
    # A partly stored replay: one document in ten already stored, nine new, in every chunk (what a
    # retried slice meets when its earlier attempt stored part of it). FerretDB redoes a transaction
    # that meets a duplicate one document at a time: the batch size sets how many.
    old = iter(stored_docs[count // 5 :])
    half = len(fresh) // 2
    mixed = [doc for i, new in enumerate(fresh[:half]) for doc in ([next(old)] if i % 9 == 0 else []) + [new]]
    mixed_elapsed, _ = timed(mixed)
    # One duplicate in each chunk of new documents: the case where FerretDB's batch size costs most
    # (it redoes the whole transaction one document at a time). An even number of whole chunks, so
    # that each thread's half keeps one duplicate per chunk.
    blocks = (len(fresh) - half) // (chunk - 1) // 2 * 2
    single = [
        doc for b in range(blocks) for doc in [next(old), *fresh[half + b * (chunk - 1) : half + (b + 1) * (chunk - 1)]]
    ]
    single_elapsed, _ = timed(single)
    stored_all = stored_docs + fresh[: half + blocks * (chunk - 1)]  # every document inserted, once
    expected = len(stored_all)
    stored = target.count_documents({})
    if stored != expected:
        raise SystemExit(f"{server.name}: {stored} documents stored of {expected}")
    # The job's one read: who stored 1,000 refused documents (store.sources), ids spread over the collection.
    lookups = []
    for k in range(5):
        ids = [doc["_id"] for doc in stored_all[k :: max(1, len(stored_all) // 1000)][:1000]]
        started = time.perf_counter()
        found = store.sources(target, ids)
        lookups.append(time.perf_counter() - started)
        if len(found) != len(ids):
            raise SystemExit(f"{server.name}: store.sources found {len(found)} of {len(ids)}")
    target.drop()
    client.close()
    return {
        "insert_per_s": count / elapsed,
        "cpu_ms_per_1k": cpu * 1e6 / count,
        "replay_per_s": len(replay) / replay_elapsed,
        "mixed_replay_per_s": len(mixed) / mixed_elapsed,
        "one_duplicate_per_chunk_per_s": len(single) / single_elapsed,
        "lookup_1000_ms": statistics.median(lookups) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="documents inserted per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.count < 1000 or args.rounds < 1:
        parser.error("--count takes 1000 or more documents and --rounds 1 or more")
    chunk = settings_from_env_map(load(ROOT).settings).insert_chunk
    docs = documents(args.count * 6 // 5)
    pg_bin = postgres_bin()
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="store-backends-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        servers: list[tuple[Server, tuple[int, ...]]] = []
        for batch in (DEFAULT_BATCH, artifacts.FERRETDB_INSERT_BATCH):
            name = f"sqlite-{batch}"
            (work / name).mkdir()
            server = stack.enter_context(ferretdb(work, name, artifacts.ferretdb_sqlite_args(work / name, batch)))
            servers.append((server, (server.pid,)))
        if pg_bin is None:
            print("PostgreSQL not found: postgresql-* skipped (Debian's postgresql package has it)")
        else:
            url, postmaster = stack.enter_context(postgresql(work, pg_bin))
            name = f"postgresql-{artifacts.FERRETDB_INSERT_BATCH}"
            backend = [
                "--handler=postgresql", f"--postgresql-url={url}", f"--state-dir={work}",
                f"--test-batch-size={artifacts.FERRETDB_INSERT_BATCH}", "--telemetry=disable", "--log-level=warn",
            ]  # fmt: skip
            server = stack.enter_context(ferretdb(work, name, backend))
            servers.append((server, (server.pid, postmaster)))
        print(f"machine: {machine()}\n{args.count:,} documents per configuration and round, chunks of {chunk:,}")
        for round_ in range(args.rounds):
            for server, pids in servers:
                figures = measure(server, pids, docs, chunk)
                results.setdefault(server.name, []).append(figures)
                shown = "  ".join(f"{k} {v:,.1f}" for k, v in figures.items())
                print(f"  round {round_ + 1} {server.name:<16} {shown}", flush=True)
    print("\nmin / median / max over rounds")
    headers = ("insert docs/s", "server CPU ms per 1,000", "replay docs/s", "mixed replay docs/s",
               "one duplicate per chunk docs/s", "lookup 1,000 ms")  # fmt: skip
    print(f"{'configuration':<16} " + " ".join(f"{h:>33}" for h in headers))
    for name, rounds in results.items():
        columns = [min_median_max([r[key] for r in rounds], 1) for key in rounds[0]]
        print(f"{name:<16} " + " ".join(f"{c:>33}" for c in columns))
    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, cwd=ROOT, capture_output=True, text=True, check=False)
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit.stdout.strip() or "unknown",
        "machine": machine(),
        "options": {"count": args.count, "rounds": args.rounds, "chunk": chunk},
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"store-backends-{report['commit']}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
