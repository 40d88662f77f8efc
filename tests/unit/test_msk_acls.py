"""MSK IAM -> Kafka ACLs (sensor_pipeline.emulator.msk_acls): what the local broker's enforcing listener allows.

Every case follows MSK's table of kafka-cluster actions ("equivalent to Apache Kafka's <OP> <RESOURCE>
ACL") and ARN formats, https://docs.aws.amazon.com/msk/latest/developerguide/kafka-actions.html.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sensor_pipeline.emulator.msk_acls import Acl, Cluster, explain_denial, generate, name_patterns

CLUSTER = Cluster("arn:aws:kafka:us-east-1:123:cluster/pipe/uuid-1")
TOPIC = "arn:aws:kafka:us-east-1:123:topic/pipe/uuid-1"
GROUP = "arn:aws:kafka:us-east-1:123:group/pipe/uuid-1"
TXN = "arn:aws:kafka:us-east-1:123:transactional-id/pipe/uuid-1"


def policy(*statements: dict[str, object]) -> dict[str, object]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(actions: list[str], resources: list[str], effect: str = "Allow") -> dict[str, object]:
    return {"Effect": effect, "Action": actions, "Resource": resources}


def acls_of(role: str, *statements: dict[str, object]) -> set[tuple[str, str, str, str, str]]:
    generated = generate({role: [policy(*statements)]}, CLUSTER)
    return {(a.resource_type, a.pattern_type, a.name, a.operation, a.permission) for a in generated.acls}


def test_each_action_is_the_kafka_operation_msk_names_on_its_resource() -> None:
    found = acls_of(
        "producer",
        allow(["kafka-cluster:Connect", "kafka-cluster:WriteDataIdempotently"], [CLUSTER.arn]),
        allow(["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"], [f"{TOPIC}/Raw"]),
        allow(["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"], [f"{GROUP}/g"]),
        allow(["kafka-cluster:AlterTransactionalId", "kafka-cluster:DescribeTransactionalId"], [f"{TXN}/t"]),
    )
    assert found == {
        ("CLUSTER", "LITERAL", "kafka-cluster", "IDEMPOTENT_WRITE", "ALLOW"),
        ("TOPIC", "LITERAL", "Raw", "DESCRIBE", "ALLOW"),
        ("TOPIC", "LITERAL", "Raw", "WRITE", "ALLOW"),
        ("GROUP", "LITERAL", "g", "READ", "ALLOW"),  # AlterGroup = READ GROUP (join, commit)
        ("GROUP", "LITERAL", "g", "DESCRIBE", "ALLOW"),
        ("TRANSACTIONAL_ID", "LITERAL", "t", "WRITE", "ALLOW"),
        ("TRANSACTIONAL_ID", "LITERAL", "t", "DESCRIBE", "ALLOW"),
    }


def test_connect_decides_who_may_log_in_and_a_deny_takes_it_away() -> None:
    connect = allow(["kafka-cluster:Connect"], [CLUSTER.arn])
    assert generate({"a": [policy(connect)], "b": [policy()]}, CLUSTER).principals == {"User:a"}
    denied = allow(["kafka-cluster:Connect"], ["*"], effect="Deny")
    assert generate({"a": [policy(connect, denied)]}, CLUSTER).principals == set()


def test_statements_for_another_cluster_grant_nothing_here() -> None:
    other = "arn:aws:kafka:us-east-1:123:cluster/other/uuid-9"
    assert generate({"a": [policy(allow(["kafka-cluster:Connect"], [other]))]}, CLUSTER).principals == set()
    assert acls_of("a", allow(["kafka-cluster:ReadData"], ["arn:aws:kafka:us-east-1:123:topic/other/*/Raw"])) == set()


@pytest.mark.parametrize(
    ("resource", "patterns"),
    [
        (f"{TOPIC}/Raw", {("LITERAL", "Raw")}),
        (f"{TOPIC}/*", {("LITERAL", "*")}),
        ("arn:aws:kafka:us-east-1:123:topic/pipe/*", {("LITERAL", "*")}),  # any incarnation of the cluster
        ("arn:aws:kafka:*:*:topic/*", {("LITERAL", "*")}),
        ("*", {("LITERAL", "*")}),
        (f"{TOPIC}/spark-kafka-source-*", {("PREFIXED", "spark-kafka-source-")}),
        ("arn:aws:kafka:us-east-1:123:topic/pipe/*/Raw", {("LITERAL", "Raw")}),
    ],
)
def test_arn_patterns_become_literal_prefixed_or_all(resource: str, patterns: set[tuple[str, str]]) -> None:
    found, unsupported = name_patterns(resource, CLUSTER.prefix("topic"))
    assert (found, unsupported) == (patterns, [])


def test_a_pattern_kafka_cannot_express_is_reported_and_grants_nothing() -> None:
    generated = generate({"a": [policy(allow(["kafka-cluster:ReadData"], [f"{TOPIC}/Raw*Data"]))]}, CLUSTER)
    assert generated.acls == set()
    assert any("'Raw*Data' has no Kafka ACL form" in w for w in generated.warnings)


def test_action_wildcards_expand_over_msks_actions() -> None:
    found = acls_of("admin", allow(["kafka-cluster:*Topic"], [f"{TOPIC}/*"]))
    assert {op for (_, _, _, op, _) in found} == {"CREATE", "DESCRIBE", "ALTER", "DELETE"}
    assert ("TOPIC", "LITERAL", "*", "DESCRIBE_CONFIGS", "ALLOW") not in found  # *Topic is not *TopicDynamic...


def test_what_kafka_implies_but_msk_does_not_is_denied() -> None:
    # Kafka grants DESCRIBE with WRITE; MSK only with DescribeTopic: a role without it must be refused.
    found = acls_of("writer", allow(["kafka-cluster:WriteData"], [f"{TOPIC}/Raw"]))
    assert ("TOPIC", "LITERAL", "Raw", "DESCRIBE", "DENY") in found
    covered = acls_of(
        "writer",
        allow(["kafka-cluster:WriteData"], [f"{TOPIC}/Raw"]),
        allow(["kafka-cluster:DescribeTopic"], [f"{TOPIC}/*"]),
    )
    assert not any(permission == "DENY" for (*_, permission) in covered)


def test_deny_statements_become_deny_acls() -> None:
    found = acls_of(
        "r",
        allow(["kafka-cluster:ReadData", "kafka-cluster:DescribeTopic"], [f"{TOPIC}/*"]),
        allow(["kafka-cluster:ReadData"], [f"{TOPIC}/secret"], effect="Deny"),
    )
    assert ("TOPIC", "LITERAL", "secret", "READ", "DENY") in found


def test_conditions_are_not_translated_an_allow_grants_nothing_and_a_deny_denies_everywhere() -> None:
    condition = {"Condition": {"Bool": {"aws:SecureTransport": "true"}}}
    generated = generate({"r": [policy(allow(["kafka-cluster:ReadData"], [f"{TOPIC}/Raw"]) | condition)]}, CLUSTER)
    assert generated.acls == set() and "grants nothing here" in generated.warnings[0]
    denied = allow(["kafka-cluster:ReadData"], [f"{TOPIC}/Raw"], effect="Deny") | condition
    found = acls_of("r", allow(["kafka-cluster:ReadData", "kafka-cluster:DescribeTopic"], [f"{TOPIC}/*"]), denied)
    assert ("TOPIC", "LITERAL", "*", "READ", "DENY") in found


def test_missing_required_actions_are_warned_about() -> None:
    generated = generate(
        {"c": [policy(allow(["kafka-cluster:ReadData", "kafka-cluster:DescribeTopic"], [f"{TOPIC}/Raw"]))]}, CLUSTER
    )
    assert any("kafka-cluster:ReadData without its required kafka-cluster:AlterGroup" in w for w in generated.warnings)


def test_a_writer_without_write_data_idempotently_is_refused_as_msk_would() -> None:
    """Kafka lets anyone who may WRITE a topic start an idempotent producer; MSK does not. Every writer of
    the project is idempotent, so the rehearsal fails where MSK would, not at the broker."""
    write = allow(["kafka-cluster:Connect", "kafka-cluster:WriteData"], [CLUSTER.arn, f"{TOPIC}/Raw"])
    refused = generate({"producer": [policy(write)]}, CLUSTER).refusals
    assert len(refused) == 1 and "User:producer" in refused[0] and "WriteDataIdempotently" in refused[0]
    idempotent = allow(["kafka-cluster:WriteDataIdempotently"], [CLUSTER.arn])
    assert generate({"producer": [policy(write, idempotent)]}, CLUSTER).refusals == []


def test_a_broker_denial_reads_back_as_the_iam_action_and_arn() -> None:
    line = (
        "[2026-12-06T04:52:28,319] INFO Principal = User:sensor-pipeline-local-producer is Denied operation = WRITE "
        "from host = 127.0.0.1 on resource = Topic:LITERAL:RawSensorData for request = Produce with resourceRefCount = 1"
    )
    assert explain_denial(line, CLUSTER) == (
        f"role sensor-pipeline-local-producer: kafka-cluster:WriteData denied on {TOPIC}/RawSensorData "
        "(Kafka WRITE Topic RawSensorData)"
    )
    assert explain_denial("[x] INFO something else", CLUSTER) is None


def test_the_projects_roles_get_what_their_statements_say(tmp_path: Path) -> None:
    """The rehearsal's roles, as Terraform writes them (infra/iam.tf): every grant is a narrow literal."""
    producer = policy(
        allow(["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"], [CLUSTER.arn]),
        allow(["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"], [f"{TOPIC}/RawSensorData"]),
        allow(["kafka-cluster:WriteDataIdempotently"], [CLUSTER.arn]),
    )
    generated = generate({"sensor-pipeline-local-producer": [producer]}, CLUSTER)
    assert generated.principals == {"User:sensor-pipeline-local-producer"}
    assert (
        Acl("User:sensor-pipeline-local-producer", "TOPIC", "LITERAL", "RawSensorData", "WRITE", "ALLOW")
        in generated.acls
    )
    assert all(a.name in ("RawSensorData", "kafka-cluster") for a in generated.acls)
