"""The one place where an AWS request is translated to run on the local stack (the deploy rehearsal).

Everything else of an ECS task definition or an EMR Serverless job run is run as written. What cannot
be, because the local stack is one machine with plain services, is changed here, and each change is
returned with its reason for the runner that applies it to log:

* Amazon MSK speaks SASL/IAM over TLS; the local broker is PLAINTEXT. The emulated MSK cluster's
  bootstrap brokers already are the local broker's address. MSK has a broker per zone (topics are
  replicated); the local broker is one (replication factor 1).
* DocumentDB requires TLS (CA bundle), is a replica set (``replicaSet=rs0``) and authenticates with
  SCRAM-SHA-1; the local MongoDB-wire server is a single node without TLS, and FerretDB 1.x accepts only
  ``PLAIN`` (a real ``mongod`` started without ``--auth`` accepts no credentials at all).
* AWS API calls go to AWS's endpoints there and to the emulator here (``SP_AWS_ENDPOINT_URL``).
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
#: URI options that only make sense against DocumentDB (besides every tls*/ssl* option).
DOCDB_ONLY_OPTIONS = {"replicaset", "authmechanism"}
#: A private DNS name of the VPC (Cloud Map), anywhere in a value: URLs, host lists, bare host:port.
CLOUD_MAP_NAME = re.compile(r"(?<![\w.-])(?:[a-z0-9-]+\.)+internal(?=[:/?,]|$)", re.IGNORECASE)
#: Spark properties sized for EMR workers, capped locally (the whole stack shares two cores).
LOCAL_CAPS = {"spark.driver.memory": "1g", "spark.executor.memory": "1g"}


@dataclass
class Translation:
    """Environment/arguments after translation, and what was changed (for the log)."""

    values: dict[str, str]
    changes: list[str] = field(default_factory=list)


def _mongo_uri(uri: str, auth: str) -> str:
    parts = urlsplit(uri)
    options = [
        (k, v)
        for k, v in parse_qsl(parts.query)
        if k.lower() not in DOCDB_ONLY_OPTIONS and not k.lower().startswith(("tls", "ssl"))
    ]
    if auth == "plain":
        options.append(("authMechanism", "PLAIN"))
    return urlunsplit(parts._replace(query=urlencode(options)))


def environment(values: dict[str, str], endpoint_url: str, mongo_auth: str) -> Translation:
    """An ECS container's or an EMR driver/executor's ``SP_*`` environment, for the local stack."""
    out = dict(values)
    changes: list[str] = []

    def change(key: str, new: str | None, why: str) -> None:
        old = out.get(key)
        if new is None:
            out.pop(key, None)
        else:
            out[key] = new
        changes.append(f"{key}: {old!r} -> {new!r} ({why})")

    if out.get("SP_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") != "PLAINTEXT":
        change("SP_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "MSK IAM/TLS -> the local broker's PLAINTEXT listener")
    if out.get("SP_KAFKA_SASL_MECHANISM"):
        change("SP_KAFKA_SASL_MECHANISM", None, "no SASL on the local broker")
    if out.get("SP_TOPIC_REPLICATION", "1") != "1":
        change("SP_TOPIC_REPLICATION", "1", "one local broker (MSK has one per zone)")
    if "SP_MONGO_URI" in out:
        new = _mongo_uri(out["SP_MONGO_URI"], mongo_auth)
        if new != out["SP_MONGO_URI"]:
            change("SP_MONGO_URI", new, "DocumentDB TLS/replica set -> the local single-node server")
    if out.get("SP_MONGO_TLS_CA_FILE"):
        change("SP_MONGO_TLS_CA_FILE", None, "the local server has no TLS")
    if out.get("SP_MONGO_SECRET_ARN") and mongo_auth == "none":
        change("SP_MONGO_SECRET_ARN", None, "the local mongod runs without authentication")
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


def command(argv: list[str], venv_bin: Path) -> tuple[list[str], list[str]]:
    """A container command (the program from the project's venv, wildcard binds on loopback), and the changes."""
    out = list(argv)
    changes = []
    if out and (venv_bin / out[0]).is_file():
        out[0] = str(venv_bin / out[0])
    for i, arg in enumerate(out):
        if arg == "0.0.0.0":
            out[i] = LOOPBACK
            flag = argv[i - 1] if i else "argument"
            changes.append(f"{flag} 0.0.0.0 -> {LOOPBACK} (one machine: listen on loopback only)")
    return out, changes


def spark_conf(conf: dict[str, str]) -> Translation:
    """EMR ``--conf`` pairs for local mode."""
    out = dict(conf)
    changes = []
    for key, cap in LOCAL_CAPS.items():
        if key in out and out[key] != cap:
            changes.append(f"{key}: {out[key]} -> {cap} (EMR worker size; one small machine here)")
            out[key] = cap
    return Translation(out, changes)


def s3_path(uri: str, state: Path) -> Translation:
    """An ``s3://`` path the job writes (its checkpoint) as a local folder mirroring bucket and key."""
    if not uri.startswith("s3://"):
        return Translation({"path": uri})
    local = state / "emr-s3" / uri.removeprefix("s3://")
    return Translation({"path": str(local)}, [f"{uri} -> {local} (no S3A connector locally)"])
