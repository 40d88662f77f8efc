"""A DocumentDB cluster of the emulator is a real server: FerretDB over TLS with the master user's password.

Amazon DocumentDB (with ``tls`` enabled in its parameter group, as ``infra/docdb.tf`` sets) accepts
only TLS connections and authenticates with SCRAM as the master user, whose password DocumentDB
generates and keeps in the managed Secrets Manager secret. When the emulator creates such a cluster
it starts a FerretDB v1.24 process that does the same (FerretDB's own flags; what it can and cannot
enforce is in infra/README.md):

* TLS only: ``--listen-tls`` with the local CA's server certificate, the plain listener off;
* SCRAM-SHA-1/-256 required for every command but the handshake (``--test-enable-new-auth``), with one
  user, the cluster's master user, whose password is the one the emulator put in the secret
  (``--setup-username``/``--setup-password``, database ``admin`` as DocumentDB's);
* a fresh SQLite folder per cluster, deleted with the cluster.

What it cannot do: roles (every authenticated user may do anything), replica-set discovery
(``replicaSet=rs0`` is dropped by the translation), DocumentDB's own limits and error messages.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sensor_pipeline.local.artifacts import ferretdb_sqlite_args

log = logging.getLogger("sensor_pipeline.emulator.docdb")
START_TIMEOUT = 30.0


#: Each cluster's server listens on a loopback address of its own (Linux routes all of 127/8 to the
#: loopback), on the cluster's own port: 127.0.0.2 for the first; the local CA's certificate names them.
ADDRESSES = [f"127.0.0.{n}" for n in range(2, 10)]


@dataclass
class DocdbServers:
    binary: Path | None  # FerretDB; None: clusters are records only (the endpoint answers nothing)
    state: Path
    cert: Path
    key: Path
    hosts: dict[str, str] = field(default_factory=dict)  # cluster -> loopback address
    processes: dict[str, tuple[int, subprocess.Popen[bytes]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    spawner: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="docdb"))

    def host(self, cluster: str) -> str:
        """The cluster's address, given once per cluster identifier."""
        with self.lock:
            if cluster not in self.hosts:
                free = [a for a in ADDRESSES if a not in self.hosts.values()]
                if not free:
                    raise RuntimeError(f"at most {len(ADDRESSES)} DocumentDB clusters run at once here")
                self.hosts[cluster] = free[0]
            return self.hosts[cluster]

    def port(self, cluster: str) -> int | None:
        with self.lock:
            entry = self.processes.get(cluster)
        return entry[0] if entry else None

    def folder(self, cluster: str) -> Path:
        return self.state / "docdb" / cluster

    def start(self, cluster: str, port: int, username: str, password: str) -> None:
        """Start the cluster's server and wait until it accepts TLS connections."""
        if self.binary is None:
            log.warning("DocumentDB %s: no FerretDB binary given to the emulator: nothing listens on %s", cluster, port)
            return
        folder = self.folder(cluster)
        shutil.rmtree(folder, ignore_errors=True)  # the master user is created only in an empty store
        folder.mkdir(parents=True)
        command = [
            str(self.binary),
            *ferretdb_sqlite_args(folder),
            "--listen-addr=",  # no plain listener: TLS only, as DocumentDB with tls=enabled
            f"--listen-tls={self.host(cluster)}:{port}",
            f"--listen-tls-cert-file={self.cert}",
            f"--listen-tls-key-file={self.key}",
            "--test-enable-new-auth",
            "--setup-database=admin",
            f"--setup-username={username}",
            f"--setup-password={password}",
            "--debug-addr=-",  # no metrics listener (the development store has 127.0.0.1:8088)
        ]
        logfile = (self.state / "logs" / f"docdb-{cluster}.log").open("ab")
        from sensor_pipeline.emulator.runners import _die_with_parent, _load_libc

        _load_libc()

        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                command,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (only an async-signal-safe prctl runs in the child)
            )

        # The server must die with the emulator, but the death signal comes when the *thread* that
        # started it ends: a request's thread ends at once, the spawner's lives as long as the emulator.
        process = self.spawner.submit(spawn).result()
        with self.lock:
            self.processes[cluster] = (port, process)
        deadline = time.monotonic() + START_TIMEOUT
        import socket

        address = self.host(cluster)
        while time.monotonic() < deadline and process.poll() is None:
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex((address, port)) == 0:
                    log.info("DocumentDB %s: FerretDB, TLS and SCRAM as %s, on %s:%s", cluster, username, address, port)
                    return
            time.sleep(0.2)
        log.error(
            "DocumentDB %s: FerretDB did not listen on %s:%s (exit %s); see its log",
            cluster,
            address,
            port,
            process.poll(),
        )

    def stop(self, cluster: str) -> None:
        with self.lock:
            entry = self.processes.pop(cluster, None)
        if entry is not None:
            entry[1].terminate()
            try:
                entry[1].wait(15)
            except subprocess.TimeoutExpired:
                entry[1].kill()
                entry[1].wait(5)
        shutil.rmtree(self.folder(cluster), ignore_errors=True)
        with self.lock:
            self.hosts.pop(cluster, None)
        log.info("DocumentDB %s: stopped and its data deleted", cluster)

    def stop_all(self) -> None:
        for cluster in list(self.processes):
            self.stop(cluster)
        self.spawner.shutdown()
