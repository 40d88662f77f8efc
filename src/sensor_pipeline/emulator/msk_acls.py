"""Amazon MSK's IAM access control, as Kafka ACLs for the local broker's enforcing listener (pure).

On MSK each client's Kafka requests are authorized by the ``kafka-cluster:*`` statements of its IAM
role. Locally, each workload role is a SCRAM principal ``User:<role name>`` on the broker's SASL_SSL
listener, and this module turns the roles' statements, as the emulator's IAM holds them (what
Terraform applied), into the ACLs Kafka's ``StandardAuthorizer`` enforces there, by MSK's table of
actions ("Semantics of IAM authorization policy actions and resources",
https://docs.aws.amazon.com/msk/latest/developerguide/kafka-actions.html): each action is "equivalent
to Apache Kafka's <OPERATION> <RESOURCE> ACL".

* Resources: the statement's ARN patterns are matched against this cluster's ARN and its
  ``topic/``, ``group/``, ``transactional-id/`` ARNs (``<type>/<cluster name>/<cluster uuid>/<name>``);
  what a pattern leaves for the name becomes a LITERAL name, ``*`` (all), or a PREFIXED name (a
  trailing ``*``). MSK allows ``*`` anywhere in the name; a pattern Kafka ACLs cannot express (a
  ``*`` inside the name, ``?``) is reported and grants nothing here.
* ``Deny`` statements become DENY ACLs; ``kafka-cluster:Connect`` decides whether the principal can
  log in at all (its SCRAM credentials exist only then).
* Kafka grants DESCRIBE with READ/WRITE/DELETE/ALTER and DESCRIBE_CONFIGS with ALTER_CONFIGS; MSK's
  IAM does not (each action is its own). Where a role has the stronger action without the weaker
  one, a DENY ACL for the weaker one restores MSK's answer.
* Conditions, ``NotResource`` and policy variables are not translated: an Allow using one is reported
  and grants nothing, a Deny using one is reported and denies everywhere (never more permissive than
  MSK). MSK's "Required actions" column is a rule for policy authors: a missing one is reported as a
  warning, not enforced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sensor_pipeline.emulator.policy import _as_list, _glob, action_matches

#: kafka-cluster action -> (MSK resource type, the Kafka operation it equals; None: log in only).
ACTIONS: dict[str, tuple[str, str | None]] = {
    "Connect": ("cluster", None),
    "DescribeCluster": ("cluster", "DESCRIBE"),
    "AlterCluster": ("cluster", "ALTER"),
    "DescribeClusterDynamicConfiguration": ("cluster", "DESCRIBE_CONFIGS"),
    "AlterClusterDynamicConfiguration": ("cluster", "ALTER_CONFIGS"),
    "WriteDataIdempotently": ("cluster", "IDEMPOTENT_WRITE"),
    "CreateTopic": ("topic", "CREATE"),
    "DescribeTopic": ("topic", "DESCRIBE"),
    "AlterTopic": ("topic", "ALTER"),
    "DeleteTopic": ("topic", "DELETE"),
    "DescribeTopicDynamicConfiguration": ("topic", "DESCRIBE_CONFIGS"),
    "AlterTopicDynamicConfiguration": ("topic", "ALTER_CONFIGS"),
    "ReadData": ("topic", "READ"),
    "WriteData": ("topic", "WRITE"),
    "DescribeGroup": ("group", "DESCRIBE"),
    "AlterGroup": ("group", "READ"),
    "DeleteGroup": ("group", "DELETE"),
    "DescribeTransactionalId": ("transactional-id", "DESCRIBE"),
    "AlterTransactionalId": ("transactional-id", "WRITE"),
}
#: MSK's "Required actions" column (besides Connect, which every action requires).
REQUIRED: dict[str, tuple[str, ...]] = {
    "AlterCluster": ("DescribeCluster",),
    "AlterClusterDynamicConfiguration": ("DescribeClusterDynamicConfiguration",),
    "WriteDataIdempotently": ("WriteData",),
    "AlterTopic": ("DescribeTopic",),
    "DeleteTopic": ("DescribeTopic",),
    "AlterTopicDynamicConfiguration": ("DescribeTopicDynamicConfiguration",),
    "ReadData": ("DescribeTopic", "AlterGroup"),
    "WriteData": ("DescribeTopic",),
    "AlterGroup": ("DescribeGroup",),
    "DeleteGroup": ("DescribeGroup",),
    "AlterTransactionalId": ("DescribeTransactionalId", "WriteData"),
}
KAFKA_TYPES = {"cluster": "CLUSTER", "topic": "TOPIC", "group": "GROUP", "transactional-id": "TRANSACTIONAL_ID"}
CLUSTER_RESOURCE = "kafka-cluster"
#: Kafka's implications among ALLOW ACLs: operation -> the operations that grant it too.
IMPLIED_BY = {"DESCRIBE": ("READ", "WRITE", "DELETE", "ALTER"), "DESCRIBE_CONFIGS": ("ALTER_CONFIGS",)}


@dataclass(frozen=True, order=True)
class Acl:
    principal: str  # User:<role name>
    resource_type: str  # TOPIC, GROUP, TRANSACTIONAL_ID, CLUSTER
    pattern_type: str  # LITERAL or PREFIXED
    name: str
    operation: str
    permission: str  # ALLOW or DENY
    source: str = field(default="", compare=False)  # role, statement, action and resource it comes from

    def covers(self, other: Acl) -> bool:
        """Every resource ``other``'s pattern names is named by this one's (same type)."""
        if self.resource_type != other.resource_type:
            return False
        if self.pattern_type == "LITERAL":
            return self.name == "*" or (other.pattern_type == "LITERAL" and other.name == self.name)
        return other.name.startswith(self.name) and (other.pattern_type == "PREFIXED" or other.name != "*")

    def describe(self) -> str:
        return f"{self.permission} {self.operation} on {self.resource_type}:{self.pattern_type}:{self.name}"


@dataclass(frozen=True)
class Cluster:
    """An MSK cluster as its ARN names it: arn:<p>:kafka:<region>:<account>:cluster/<name>/<uuid>."""

    arn: str

    @property
    def parts(self) -> tuple[str, str, str, str, str]:
        prefix, _, resource = self.arn.partition(":cluster/")
        _, partition, _, region, account = prefix.split(":")
        name, uuid = resource.split("/", 1)
        return partition, region, account, name, uuid

    def prefix(self, kind: str) -> str:
        """The ARN of every ``kind`` resource of this cluster, up to its name."""
        partition, region, account, name, uuid = self.parts
        return f"arn:{partition}:kafka:{region}:{account}:{kind}/{name}/{uuid}/"


@dataclass
class Generated:
    acls: set[Acl] = field(default_factory=set)
    principals: set[str] = field(default_factory=set)  # User:<role> that may log in (Connect)
    warnings: list[str] = field(default_factory=list)
    #: What MSK would refuse that Kafka's ACLs cannot: failures of the rehearsal, not warnings.
    refusals: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "principals": sorted(self.principals),
            "acls": [{"acl": f"{a.principal} {a.describe()}", "from": a.source} for a in sorted(self.acls)],
            "warnings": self.warnings,
            "refusals": self.refusals,
        }


def _residuals(pattern: str, text: str) -> set[str]:
    """What of glob ``pattern`` is left to match after it has matched all of ``text``."""

    def closure(positions: set[int]) -> set[int]:
        out, todo = set(positions), list(positions)
        while todo:
            p = todo.pop()
            if p < len(pattern) and pattern[p] == "*" and p + 1 not in out:
                out.add(p + 1)
                todo.append(p + 1)
        return out

    positions = closure({0})
    for char in text:
        step = set()
        for p in positions:
            if p < len(pattern) and pattern[p] == "*":
                step.add(p)
            elif p < len(pattern) and pattern[p] in ("?", char):
                step.add(p + 1)
        positions = closure(step)
    return {pattern[p:] for p in positions}


def name_patterns(resource: str, prefix: str) -> tuple[set[tuple[str, str]], list[str]]:
    """Kafka patterns (pattern type, name) for the names an ARN pattern admits after ``prefix``."""
    patterns: set[tuple[str, str]] = set()
    unsupported = []
    for rest in _residuals(resource, prefix):
        if rest == "" or "/" in rest.strip("*"):
            continue  # no name, or only names holding a "/" (no topic's; the project's groups have none)
        stars = rest.count("*")
        if "?" in rest or (stars and rest.rstrip("*").count("*")):
            unsupported.append(rest)
        elif rest.strip("*") == "":
            patterns.add(("LITERAL", "*"))
        elif stars:
            patterns.add(("PREFIXED", rest.rstrip("*")))
        else:
            patterns.add(("LITERAL", rest))
    if ("LITERAL", "*") in patterns:
        return {("LITERAL", "*")}, unsupported
    return patterns, unsupported


def _actions(statement: Mapping[str, Any]) -> list[str]:
    if "NotAction" in statement:
        excluded = _as_list(statement["NotAction"])
        return [a for a in ACTIONS if not any(action_matches(p, f"kafka-cluster:{a}") for p in excluded)]
    return [
        a for a in ACTIONS if any(action_matches(p, f"kafka-cluster:{a}") for p in _as_list(statement.get("Action")))
    ]


def generate(roles: Mapping[str, Iterable[str | Mapping[str, Any]]], cluster: Cluster) -> Generated:
    """ACLs and login principals from ``{role name: [policy documents]}`` for one MSK cluster."""
    out = Generated()
    denied_login: set[str] = set()
    granted: dict[str, set[str]] = {}  # principal -> actions allowed anywhere (for the required-actions check)
    for role, documents in sorted(roles.items()):
        principal = f"User:{role}"
        for number, document in enumerate(documents):
            parsed = json.loads(document) if isinstance(document, str) else document
            for index, statement in enumerate(_as_list(parsed.get("Statement"))):
                actions = _actions(statement)
                if not actions:
                    continue
                label = f"role {role}, statement {statement.get('Sid') or f'{number}.{index}'}"
                deny = str(statement.get("Effect", "")).lower() == "deny"
                if "Condition" in statement or "NotResource" in statement:
                    if not deny:
                        out.warnings.append(
                            f"{label}: Condition/NotResource has no Kafka ACL form: grants nothing here"
                        )
                        continue
                    # Never more permissive than MSK: the Deny applies everywhere, unconditionally.
                    out.warnings.append(f"{label}: Condition/NotResource has no Kafka ACL form: denies everywhere here")
                    statement = {"Effect": "Deny", "Resource": ["*"]}  # noqa: PLW2901 (the Deny, widened)
                for action in actions:
                    kind, operation = ACTIONS[action]
                    for resource in _as_list(statement.get("Resource")):
                        source = f"{label}: kafka-cluster:{action} on {resource}"
                        if kind == "cluster":
                            if not _glob(resource, cluster.arn):
                                continue
                            if operation is None:
                                (denied_login if deny else out.principals).add(principal)
                            else:
                                out.acls.add(Acl(principal, "CLUSTER", "LITERAL", CLUSTER_RESOURCE, operation,
                                                 "DENY" if deny else "ALLOW", source))  # fmt: skip
                            if not deny:
                                granted.setdefault(principal, set()).add(action)
                            continue
                        patterns, unsupported = name_patterns(resource, cluster.prefix(kind))
                        for rest in unsupported:
                            out.warnings.append(
                                f"{source}: the name pattern {rest!r} has no Kafka ACL form: not granted"
                            )
                        for pattern_type, name in patterns:
                            assert operation is not None
                            out.acls.add(Acl(principal, KAFKA_TYPES[kind], pattern_type, name, operation,
                                             "DENY" if deny else "ALLOW", source))  # fmt: skip
                        if patterns and not deny:
                            granted.setdefault(principal, set()).add(action)
    out.principals -= denied_login
    _deny_implied(out)
    for principal, allowed in sorted(granted.items()):
        # Kafka lets whoever may WRITE a topic start an idempotent producer; MSK asks for
        # WriteDataIdempotently. Every writer of this project is idempotent (kafka-python's producer,
        # the job's transactional producer), so a writer without it fails on MSK: it fails here too.
        if "WriteData" in allowed and "WriteDataIdempotently" not in allowed:
            out.refusals.append(
                f"{principal}: kafka-cluster:WriteData without kafka-cluster:WriteDataIdempotently on the cluster: "
                "MSK refuses its idempotent producer (InitProducerId), which Kafka's ACLs cannot express"
            )
        for action in sorted(allowed):
            missing = [r for r in REQUIRED.get(action, ()) if r not in allowed]
            if missing:
                out.warnings.append(
                    f"{principal}: kafka-cluster:{action} without its required "
                    + ", ".join(f"kafka-cluster:{m}" for m in missing)
                    + " (MSK's table; a client that needs them fails on MSK and here)"
                )
    return out


def _deny_implied(out: Generated) -> None:
    """DENY what Kafka would grant by implication but MSK's IAM does not (see the module docstring)."""
    allows = [a for a in out.acls if a.permission == "ALLOW"]
    for acl in allows:
        for implied, by in IMPLIED_BY.items():
            if acl.operation not in by:
                continue
            same = [
                a for a in allows
                if a.principal == acl.principal and a.operation == implied and a.resource_type == acl.resource_type
            ]  # fmt: skip
            if any(a.covers(acl) for a in same):
                continue
            if any(acl.covers(a) for a in same):
                out.warnings.append(
                    f"{acl.principal}: {implied} is granted on part of {acl.resource_type}:{acl.name} only; "
                    f"Kafka also grants it with {acl.operation} on the rest (MSK does not): not enforced there"
                )
                continue
            out.acls.add(
                Acl(acl.principal, acl.resource_type, acl.pattern_type, acl.name, implied, "DENY",
                    f"MSK grants {implied} only by its own action ({acl.source} does not imply it)")
            )  # fmt: skip


# --- reading the broker's denials back as IAM --------------------------------------------------------

#: (Kafka resource type, operation) -> the kafka-cluster action MSK would have checked.
ACTION_OF = {(KAFKA_TYPES[kind], operation): action for action, (kind, operation) in ACTIONS.items() if operation}


def explain_denial(line: str, cluster: Cluster | None) -> str | None:
    """A broker authorizer log line ("Principal = User:x is Denied operation = WRITE ... on resource =
    Topic:LITERAL:RawSensorData ...") as the IAM action and ARN it stands for; None for other lines."""
    if "is Denied operation" not in line:
        return None
    try:
        principal = line.split("Principal = ", 1)[1].split(" ", 1)[0]
        operation = line.split("operation = ", 1)[1].split(" ", 1)[0]
        resource = line.split("on resource = ", 1)[1].split(" ", 1)[0]
        kind, _, name = resource.split(":", 2)
    except (IndexError, ValueError):
        return line.strip()
    kafka_type = {"Topic": "TOPIC", "Group": "GROUP", "TransactionalId": "TRANSACTIONAL_ID", "Cluster": "CLUSTER"}.get(
        kind, kind.upper()
    )
    action = ACTION_OF.get((kafka_type, operation), f"(no MSK action for {operation} {kind})")
    msk_kind = {v: k for k, v in KAFKA_TYPES.items()}.get(kafka_type, kind.lower())
    if cluster is None:
        arn = f"{msk_kind} {name}"
    elif msk_kind == "cluster":
        arn = cluster.arn
    else:
        arn = cluster.prefix(msk_kind) + name
    role = principal.removeprefix("User:")
    return f"role {role}: kafka-cluster:{action} denied on {arn} (Kafka {operation} {kind} {name})"
