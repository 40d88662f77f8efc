"""The emulator's IAM enforcement (sensor_pipeline.emulator.iam) through a moto server in-process.

A workload's call is signed with its role's session and authorized against the role's policies with the
call's resource ARN; what S3 and Secrets Manager do with KMS for the caller is checked too; the
deploying user (the dummy root key) keeps every right; a denial names the role, action and resource.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from sensor_pipeline.emulator import iam, moto_ext
from sensor_pipeline.local.health import free_port

ACCOUNT = "123456789012"
ECS = "ecs-tasks.amazonaws.com"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    state = tmp_path_factory.mktemp("state")
    moto_ext.install(moto_ext.EmulatorConfig())
    iam.configure(state)
    iam.install()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        server.stop()
        iam.configure(None)
        moto_ext.uninstall()


def client(endpoint: str, service: str, credentials: dict[str, str] | None = None) -> Any:
    keys = (
        {"aws_access_key_id": credentials["AccessKeyId"], "aws_secret_access_key": credentials["SecretAccessKey"],
         "aws_session_token": credentials["Token"]}
        if credentials else {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    )  # fmt: skip
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", **keys)  # type: ignore[call-overload]


def role(endpoint: str, name: str, *statements: dict[str, Any], service: str = ECS) -> str:
    admin = client(endpoint, "iam")
    trust = {
        "Effect": "Allow",
        "Action": "sts:AssumeRole",
        "Principal": {"Service": service},
        "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
    }
    arn: str = admin.create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [trust]})
    )["Role"]["Arn"]
    if statements:
        document = json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
        admin.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=document)
    return arn


def denied(call: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["Error"]["Code"] in ("AccessDeniedException", "AccessDenied")
    return str(caught.value)


def test_the_deploying_user_may_do_anything(endpoint: tuple[str, Path]) -> None:
    url, _ = endpoint
    client(url, "s3").create_bucket(Bucket="root-bucket")
    assert client(url, "secretsmanager").create_secret(Name="root-secret", SecretString="x")["ARN"]


def test_a_role_may_do_what_its_policy_names_on_the_resources_it_names(endpoint: tuple[str, Path]) -> None:
    url, state = endpoint
    secrets = client(url, "secretsmanager")
    mine = secrets.create_secret(Name="mine", SecretString="ok")["ARN"]
    theirs = secrets.create_secret(Name="theirs", SecretString="no")["ARN"]
    arn = role(url, "reader", {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": mine})
    session = iam.assume_role_as_service(arn, ECS, "task-1")
    as_role = client(url, "secretsmanager", session)
    assert as_role.get_secret_value(SecretId="mine")["SecretString"] == "ok", "a name resolves to the secret's ARN"
    message = denied(lambda: as_role.get_secret_value(SecretId=theirs))
    assert "assumed-role/reader/task-1 is not authorized to perform: secretsmanager:GetSecretValue" in message
    assert f"on resource: {theirs}" in message
    (entry,) = [d for d in iam.denials(state) if d["resource"] == theirs]
    assert (entry["role"], entry["action"]) == ("reader", "secretsmanager:GetSecretValue")
    denied(as_role.list_secrets)  # not granted at all


def test_s3_with_a_customer_key_needs_the_key_through_s3_for_the_caller(endpoint: tuple[str, Path]) -> None:
    url, state = endpoint
    key = client(url, "kms").create_key()["KeyMetadata"]["Arn"]
    s3 = client(url, "s3")
    s3.create_bucket(Bucket="encrypted")
    s3.put_bucket_encryption(
        Bucket="encrypted",
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {
            "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}, "BucketKeyEnabled": True}]},
    )  # fmt: skip
    s3.put_object(Bucket="encrypted", Key="jobs/a", Body=b"x")
    objects = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::encrypted/jobs/*"}
    without_key = iam.assume_role_as_service(role(url, "no-key", objects), ECS, "t")
    message = denied(lambda: client(url, "s3", without_key).get_object(Bucket="encrypted", Key="jobs/a"))
    assert any(
        d["action"] == "kms:Decrypt" and d["resource"] == key and d["role"] == "no-key" for d in iam.denials(state)
    )
    through_s3 = {
        "Effect": "Allow",
        "Action": "kms:Decrypt",
        "Resource": key,
        "Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com",
                                       "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::encrypted"}},
    }  # fmt: skip
    with_key = iam.assume_role_as_service(role(url, "with-key", objects, through_s3), ECS, "t")
    assert client(url, "s3", with_key).get_object(Bucket="encrypted", Key="jobs/a")["Body"].read() == b"x"
    assert message


def test_a_role_whose_trust_does_not_admit_the_service_cannot_be_assumed(endpoint: tuple[str, Path]) -> None:
    url, _ = endpoint
    arn = role(url, "emr-only", service="emr-serverless.amazonaws.com")
    with pytest.raises(iam.TrustError, match="trust policy does not allow"):
        iam.assume_role_as_service(arn, ECS, "t")
    with pytest.raises(iam.TrustError, match="does not exist"):
        iam.assume_role_as_service(f"arn:aws:iam::{ACCOUNT}:role/missing", ECS, "t")


def test_an_unknown_key_is_refused(endpoint: tuple[str, Path]) -> None:
    url, _ = endpoint
    stranger = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="AKIAUNKNOWN", aws_secret_access_key="x"
    )
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        stranger.list_buckets()
