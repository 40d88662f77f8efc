"""The deploy script's AWS steps (sensor_pipeline.cloud.deploy), against moto in-process: idempotent and safe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sensor_pipeline.cloud import deploy
from sensor_pipeline.config import Settings


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # not us-east-1: the bucket name carries it
    yield Settings(aws_endpoint_url="", aws_region="eu-west-1")


@pytest.fixture(autouse=True)
def _aws(settings: Settings, mocked_aws: None) -> None:
    """moto in-process for every test here (the region is set before the mock starts)."""


def test_bootstrap_state_creates_a_private_versioned_encrypted_bucket_once(settings: Settings, tmp_path: Path) -> None:
    backend = tmp_path / "dev.s3.tfbackend"
    bucket = deploy.bootstrap_state(settings, "dev", backend)
    assert bucket == "sensor-pipeline-tfstate-123456789012-eu-west-1", "named from account id and region"
    assert deploy.bootstrap_state(settings, "dev", backend) == bucket, "a second run changes nothing"
    import boto3

    s3 = boto3.client("s3", region_name="eu-west-1")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    assert "aws:SecureTransport" in s3.get_bucket_policy(Bucket=bucket)["Policy"]
    text = backend.read_text()
    assert f'bucket       = "{bucket}"' in text and 'key          = "sensor-pipeline/dev/terraform.tfstate"' in text
    assert "use_lockfile = true" in text and 'region       = "eu-west-1"' in text


def test_the_ecs_service_linked_role_is_created_only_when_missing(settings: Settings) -> None:
    assert deploy.ensure_service_linked_role(settings) is True
    assert deploy.ensure_service_linked_role(settings) is False


def test_a_pushed_tag_is_found_so_a_redeploy_does_not_push_it_again(settings: Settings) -> None:
    import boto3

    ecr = boto3.client("ecr", region_name="eu-west-1")
    url = ecr.create_repository(repositoryName="sensor-pipeline-dev/app", imageTagMutability="IMMUTABLE")["repository"][
        "repositoryUri"
    ]
    assert deploy.image_exists(settings, url, "abc123") is False
    deploy.register_local_image(settings, url, "abc123", "0" * 64)
    assert deploy.image_exists(settings, url, "abc123") is True


@pytest.mark.parametrize("action", ["bootstrap-state", "plan", "deploy"])
def test_the_first_command_refuses_a_tfvars_without_who_may_open_the_dashboard(action: str) -> None:
    """infra/env/dev.tfvars ships without dashboard_allowed_cidrs (no open default): the very first command
    stops before touching AWS and says what to set."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        ["bash", "scripts/deploy.sh", action, "dev"], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "set dashboard_allowed_cidrs in infra/env/dev.tfvars" in result.stderr
    assert 'dashboard_allowed_cidrs = ["203.0.113.0/24"]' in result.stderr
