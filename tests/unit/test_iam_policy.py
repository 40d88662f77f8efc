"""IAM policy evaluation as AWS documents it (sensor_pipeline.emulator.policy): what the rehearsal enforces.

Each case is a rule of AWS's evaluation logic that moto's own evaluator gets wrong or lacks (resource
ARNs, condition operators, an Allow whose condition does not hold, NotAction/NotResource, trust policies).
"""

from __future__ import annotations

import pytest

from sensor_pipeline.emulator.policy import condition_holds, evaluate, evaluate_resource_policy

BUCKET = "arn:aws:s3:::artifacts"


def doc(*statements: dict[str, object]) -> dict[str, object]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action: str | list[str], resource: str | list[str], **extra: object) -> dict[str, object]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def test_an_allow_scoped_to_an_arn_grants_that_arn_only() -> None:
    policy = doc(allow("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:1:secret:db-*"))
    assert evaluate(
        [policy], "secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:1:secret:db-AbC"
    ).allowed
    assert not evaluate(
        [policy], "secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:1:secret:x"
    ).allowed


def test_nothing_allowed_is_denied_and_an_explicit_deny_wins() -> None:
    assert evaluate([doc()], "s3:GetObject", f"{BUCKET}/a").reason == "no identity-based policy allows it"
    both = doc(allow("s3:*", "*"), {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"{BUCKET}/secret/*"})
    assert evaluate([both], "s3:PutObject", f"{BUCKET}/secret/a").allowed
    decision = evaluate([both], "s3:GetObject", f"{BUCKET}/secret/a")
    assert not decision.allowed and decision.reason.startswith("explicitly denied")


def test_actions_match_case_insensitively_with_wildcards_and_not_action() -> None:
    assert evaluate([doc(allow("S3:get*", "*"))], "s3:GetObject", "x").allowed
    assert not evaluate([doc(allow("s3:Get?", "*"))], "s3:GetObject", "x").allowed
    not_action = doc({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})
    assert evaluate([not_action], "s3:GetObject", "x").allowed
    assert not evaluate([not_action], "iam:CreateUser", "x").allowed


def test_not_resource_excludes_what_it_names() -> None:
    policy = doc({"Effect": "Allow", "Action": "s3:GetObject", "NotResource": f"{BUCKET}/private/*"})
    assert evaluate([policy], "s3:GetObject", f"{BUCKET}/public/a").allowed
    assert not evaluate([policy], "s3:GetObject", f"{BUCKET}/private/a").allowed


def test_an_allow_whose_condition_does_not_hold_does_not_apply_but_denies_nothing() -> None:
    # moto answers such a request DENIED; AWS treats the statement as not applying.
    listing = allow("s3:ListBucket", BUCKET, Condition={"StringLike": {"s3:prefix": ["checkpoints/*"]}})
    other = allow("s3:ListBucket", BUCKET, Condition={"StringLike": {"s3:prefix": ["jobs/*"]}})
    assert evaluate([doc(listing, other)], "s3:ListBucket", BUCKET, {"s3:prefix": "jobs/a"}).allowed
    assert not evaluate([doc(listing)], "s3:ListBucket", BUCKET, {"s3:prefix": "logs/"}).allowed
    assert not evaluate([doc(listing)], "s3:ListBucket", BUCKET, {}).allowed, "a missing key fails a positive test"


@pytest.mark.parametrize(
    ("condition", "context", "holds"),
    [
        (
            {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}},
            {"kms:ViaService": "s3.us-east-1.amazonaws.com"},
            True,
        ),
        ({"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}, {}, False),
        ({"StringNotEquals": {"aws:SourceAccount": "1"}}, {}, True),  # negated operators hold for a missing key
        ({"StringNotEquals": {"aws:SourceAccount": "1"}}, {"aws:SourceAccount": "1"}, False),
        ({"StringEqualsIfExists": {"aws:SourceAccount": "1"}}, {}, True),
        (
            {"ArnLike": {"aws:SourceArn": "arn:aws:ec2:*:1:vpc-flow-log/*"}},
            {"aws:SourceArn": "arn:aws:ec2:us-east-1:1:vpc-flow-log/fl-1"},
            True,
        ),
        ({"Bool": {"aws:SecureTransport": "false"}}, {"aws:SecureTransport": "true"}, False),
        ({"Null": {"aws:SourceArn": "true"}}, {}, True),
        ({"Null": {"aws:SourceArn": "true"}}, {"aws:SourceArn": "x"}, False),
        ({"StringEquals": {"a": "1"}, "StringLike": {"b": "x*"}}, {"a": "1", "b": "y"}, False),  # blocks are ANDed
        ({"StringEquals": {"a": ["1", "2"]}}, {"a": "2"}, True),  # values are ORed
        ({"ForAnyValue:StringNotEquals": {"a": ["x"]}}, {"a": ["x", "y"]}, True),  # y is not x
        ({"ForAllValues:StringNotEquals": {"a": ["x"]}}, {"a": ["x", "y"]}, False),
        ({"StringEqualsIgnoreCase": {"A": "X"}}, {"a": "x"}, True),  # keys are case-insensitive
    ],
)
def test_condition_operators(condition: dict[str, dict[str, object]], context: dict[str, str], holds: bool) -> None:
    assert condition_holds(condition, context) is holds


def test_an_operator_the_evaluator_cannot_read_never_grants_and_always_denies() -> None:
    numeric = {"Condition": {"NumericLessThan": {"s3:max-keys": "10"}}}
    assert not evaluate([doc(allow("s3:ListBucket", BUCKET, **numeric))], "s3:ListBucket", BUCKET).allowed
    deny = {"Effect": "Deny", "Action": "s3:*", "Resource": "*", **numeric}
    assert not evaluate(
        [doc(allow("s3:ListBucket", BUCKET), deny)], "s3:ListBucket", BUCKET, {"s3:max-keys": "50"}
    ).allowed


def test_a_trust_policy_admits_only_the_service_it_names_from_its_account() -> None:
    trust = doc(
        {
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Condition": {"StringEquals": {"aws:SourceAccount": "123"}},
        }
    )
    role = "arn:aws:iam::123:role/r"
    ecs = {"Service": "ecs-tasks.amazonaws.com"}
    assert evaluate_resource_policy(trust, ecs, "sts:AssumeRole", role, {"aws:SourceAccount": "123"}).allowed
    assert not evaluate_resource_policy(trust, ecs, "sts:AssumeRole", role, {"aws:SourceAccount": "999"}).allowed
    emr = {"Service": "emr-serverless.amazonaws.com"}
    assert not evaluate_resource_policy(trust, emr, "sts:AssumeRole", role, {"aws:SourceAccount": "123"}).allowed
