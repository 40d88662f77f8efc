"""What the rehearsal's enforcement refused, read back for ``make deploy ENV=local``'s last check.

Three records, each written where the refusal happened, each entry timed:

* ``logs/aws-denied.jsonl`` — AWS calls the emulator's IAM denied (role, action, resource, why);
* ``logs/kafka-authorizer.log`` — Kafka requests the broker's authorizer denied on the enforcing
  listener, and failed logins there, turned back into the ``kafka-cluster:*`` action and ARN MSK
  would have checked;
* ``logs/runner-events.jsonl`` — ECS tasks that could not start (a pull, a secret, a log stream, a
  role that cannot be assumed, a missing command), service tasks that exited or were found unhealthy.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from sensor_pipeline.emulator import iam, msk_acls
from sensor_pipeline.emulator.runners import EVENTS_FILE

AUTHORIZER_LOG = Path("logs") / "kafka-authorizer.log"


def _log_time(line: str) -> float | None:
    """``[2026-12-06T04:52:28,319] ...`` (the broker's ISO8601 layout, local time) as epoch seconds."""
    if not line.startswith("["):
        return None
    try:
        stamp = datetime.datetime.strptime(line[1 : line.index("]")], "%Y-%m-%dT%H:%M:%S,%f")
    except ValueError:
        return None
    return stamp.timestamp()


def kafka_refusals(state: Path, since: float, clusters: list[str]) -> list[str]:
    path = state / AUTHORIZER_LOG
    if not path.is_file():
        return []
    cluster = msk_acls.Cluster(clusters[0]) if len(clusters) == 1 else None
    found: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        at = _log_time(line)
        if at is None or at < since:
            continue
        explained = msk_acls.explain_denial(line, cluster)
        if explained:
            found.append(f"Kafka: {explained}")
        elif "Failed authentication" in line:
            found.append(f"Kafka: a login failed on the enforcing listener: {line.split('] ', 1)[-1][:300]}")
    return sorted(set(found), key=found.index)


def aws_refusals(state: Path, since: float) -> list[str]:
    return [
        f"AWS: role {d['role']}: {d['action']} denied on {d['resource']} ({d['reason']})"
        for d in iam.denials(state, since)
    ]


def task_events(state: Path, since: float) -> list[str]:
    path = state / EVENTS_FILE
    if not path.is_file():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [f"ECS: {e['subject']}: {e['kind']}: {e['detail']}" for e in entries if e["time"] >= since]


def translation_notes(state: Path) -> list[str]:
    """What the MSK IAM -> ACL translation could not express (kafka-acls.json's warnings)."""
    path = state / "logs" / "kafka-acls.json"
    return list(json.loads(path.read_text()).get("warnings", [])) if path.is_file() else []


def msk_only_refusals(state: Path) -> list[str]:
    """What MSK would refuse that the broker's ACLs cannot (kafka-acls.json's refusals, as applied now)."""
    path = state / "logs" / "kafka-acls.json"
    refusals = json.loads(path.read_text()).get("refusals", []) if path.is_file() else []
    return [f"Kafka (MSK only): {r}" for r in refusals]


def findings(state: Path, since: float, clusters: list[str]) -> list[str]:
    return (
        aws_refusals(state, since)
        + kafka_refusals(state, since, clusters)
        + msk_only_refusals(state)
        + task_events(state, since)
    )
