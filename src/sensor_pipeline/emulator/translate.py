"""The one place where an AWS request is translated to run on the local stack (the deploy rehearsal).

Everything else of an ECS task definition or an EMR Serverless job run is run as written, and
enforced as AWS enforces it (IAM for every AWS call, MSK IAM as Kafka ACLs, TLS and the master
user's password at DocumentDB, the container runtime: infra/README.md, "What the rehearsal
enforces"). What cannot be, because the local stack is one machine, is changed here, and each change
is returned with its reason for the runner that applies it to log:

* Amazon MSK authenticates a client by a SigV4 signature with its role's credentials
  (``AWS_MSK_IAM``); the local broker's enforcing listener (SASL_SSL, the port MSK uses for IAM,
  9098) authenticates the role's principal by SCRAM-SHA-512 with a password the emulator derived for
  that role, and verifies TLS against the local CA instead of Amazon's. The ACLs it enforces come
  from the role's ``kafka-cluster:*`` statements. MSK has a broker per zone (topics are replicated);
  the local broker is one (replication factor 1).
* DocumentDB is a replica set (``replicaSet=rs0``); its local stand-in is a single TLS server that
  announces no set, so the option is dropped. TLS, the CA file and the secret's credentials stay.
* AWS API calls go to AWS's endpoints there and to the emulator here (``SP_AWS_ENDPOINT_URL``).
* A Kafka, store or API address the workload is not given defaults to this machine's development
  stack; on AWS it reaches nothing, and here it is made unreachable too (port 1).
* Every Fargate task has its own address; locally they share 127.0.0.1 (their ports differ), so
  Cloud Map names (``*.internal``) and wildcard binds become 127.0.0.1.
* The dashboard's websocket origin is the load balancer's name there; here the browser comes
  from 127.0.0.1.
* EMR Serverless: ``--master`` is local mode, ``s3://`` checkpoints go to a local folder (no S3A
  connector locally), and worker sizes meant for EMR workers are capped for one small machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

LOOPBACK = "127.0.0.1"
#: URI options of DocumentDB that its single local stand-in cannot honour.
DOCDB_ONLY_OPTIONS = {"replicaset"}
#: A private DNS name of the VPC (Cloud Map), anywhere in a value: URLs, host lists, bare host:port.
CLOUD_MAP_NAME = re.compile(r"(?<![\w.-])(?:[a-z0-9-]+\.)+internal(?=[:/?,]|$)", re.IGNORECASE)
#: Endpoints whose defaults (``config.Settings``) are this machine's development stack. On AWS, a
#: workload that is not given one reaches nothing at 127.0.0.1; here it would reach the development
#: stack (and Kafka's plain listener, where every client is a super user): an unset one is made
#: unreachable, so that a task definition that lost it fails here as it fails on Fargate.
UNREACHABLE_WHEN_UNSET = {
    "SP_KAFKA_BOOTSTRAP": f"{LOOPBACK}:1",
    "SP_MONGO_URI": f"mongodb://{LOOPBACK}:1/",
    "SP_API_URL": f"http://{LOOPBACK}:1",
}
#: Spark properties sized for EMR workers, capped locally (the whole stack shares two cores).
LOCAL_CAPS = {"spark.driver.memory": "1g", "spark.executor.memory": "1g"}


@dataclass
class Translation:
    """Environment/arguments after translation, and what was changed (for the log)."""

    values: dict[str, str]
    changes: list[str] = field(default_factory=list)


def _mongo_uri(uri: str) -> str:
    parts = urlsplit(uri)
    options = [(k, v) for k, v in parse_qsl(parts.query) if k.lower() not in DOCDB_ONLY_OPTIONS]
    return urlunsplit(parts._replace(query=urlencode(options)))


def environment(
    values: dict[str, str], endpoint_url: str, kafka_login: tuple[str, str] | None = None, kafka_ca: str = ""
) -> Translation:
    """An ECS container's or an EMR driver/executor's ``SP_*`` environment, for the local stack.

    ``kafka_login``: the SCRAM user and password of the workload role's principal; ``kafka_ca``: where
    the workload finds the local CA.
    """
    out = dict(values)
    changes: list[str] = []

    def change(key: str, new: str | None, why: str) -> None:
        old = out.get(key)
        if new is None:
            out.pop(key, None)
        else:
            out[key] = new

        def shown(value: str | None) -> str | None:
            return "***" if value and "PASSWORD" in key else value

        changes.append(f"{key}: {shown(old)!r} -> {shown(new)!r} ({why})")

    for key, nowhere in UNREACHABLE_WHEN_UNSET.items():
        if key not in out:
            change(key, nowhere, "not set: the default is this machine's development stack, on AWS nothing")
    if out.get("SP_KAFKA_SASL_MECHANISM") == "AWS_MSK_IAM":
        if kafka_login is None:
            change("SP_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "MSK IAM -> SCRAM, but this workload has no role")
        else:
            user, password = kafka_login
            why = "MSK IAM (SigV4 as the role) -> SCRAM as the role's principal on the enforcing listener"
            change("SP_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", why)
            change("SP_KAFKA_SASL_USERNAME", user, why)
            change("SP_KAFKA_SASL_PASSWORD", password, why)
    if out.get("SP_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") != "PLAINTEXT" and kafka_ca:
        change("SP_KAFKA_SSL_CAFILE", kafka_ca, "the broker's certificate chains to the local CA, not Amazon's")
    if out.get("SP_TOPIC_REPLICATION", "1") != "1":
        change("SP_TOPIC_REPLICATION", "1", "one local broker (MSK has one per zone)")
    if "SP_MONGO_URI" in out:
        new = _mongo_uri(out["SP_MONGO_URI"])
        if new != out["SP_MONGO_URI"]:
            change("SP_MONGO_URI", new, "DocumentDB's replica set -> its single-server stand-in (TLS kept)")
    if out.get("SP_AWS_ENDPOINT_URL") != endpoint_url:
        change("SP_AWS_ENDPOINT_URL", endpoint_url, "AWS APIs -> the emulator")
    for key, value in list(out.items()):
        hosts = CLOUD_MAP_NAME.sub(LOOPBACK, value)
        if hosts != value:
            change(key, hosts, "Cloud Map name -> loopback (all tasks share 127.0.0.1)")
    origin = out.get("SP_DASHBOARD_ALLOW_ORIGIN")
    if origin and origin != "*":
        port = out.get("SP_DASHBOARD_PORT", "5006")
        change("SP_DASHBOARD_ALLOW_ORIGIN", f"{origin},{LOOPBACK}:{port}", "the browser is on this machine")
    return Translation(out, changes)


def command(argv: list[str]) -> tuple[list[str], list[str]]:
    """A container command with wildcard binds on loopback, and the changes."""
    out = list(argv)
    changes = []
    for i, arg in enumerate(out):
        if arg == "0.0.0.0":
            out[i] = LOOPBACK
            flag = argv[i - 1] if i else "argument"
            changes.append(f"{flag} 0.0.0.0 -> {LOOPBACK} (one machine: listen on loopback only)")
    return out, changes


def spark_conf(conf: dict[str, str], scratch: Path | None = None) -> Translation:
    """EMR ``--conf`` pairs for local mode; Spark's scratch files in ``scratch`` when given."""
    placed = _scratch(conf, scratch) if scratch else Translation(dict(conf))
    out = placed.values
    changes = list(placed.changes)
    for key, cap in LOCAL_CAPS.items():
        if key in out and out[key] != cap:
            changes.append(f"{key}: {out[key]} -> {cap} (EMR worker size; one small machine here)")
            out[key] = cap
    return Translation(out, changes)


def _scratch(conf: dict[str, str], folder: Path) -> Translation:
    """Spark's scratch files (block manager, artifacts, lz4's native library) in the run's workspace,
    which goes when the run finishes, as a worker's disk does; under /tmp a killed run leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    # The job's own java options, then the scratch folder, in one property: spark-submit takes
    # --driver-java-options instead of spark.driver.extraJavaOptions when both are given.
    flag = "spark-submit--driver-java-options"
    own = conf[flag] if flag in conf else conf.get("spark.driver.extraJavaOptions", "")
    out = {k: v for k, v in conf.items() if k != flag}
    java = " ".join(filter(None, [own, f"-Djava.io.tmpdir={folder}"]))
    out |= {"spark.local.dir": str(folder), "spark.driver.extraJavaOptions": java}
    return Translation(out, [f"spark.local.dir and java.io.tmpdir -> {folder} (the run's workspace)"])


def s3_path(uri: str, state: Path) -> Translation:
    """An ``s3://`` path the job writes (its checkpoint) as a local folder mirroring bucket and key."""
    if not uri.startswith("s3://"):
        return Translation({"path": uri})
    local = state / "emr-s3" / uri.removeprefix("s3://")
    return Translation({"path": str(local)}, [f"{uri} -> {local} (no S3A connector locally)"])
