"""What the deploy rehearsal changes in an AWS request to run it on the local stack, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensor_pipeline.emulator import translate
from sensor_pipeline.emulator.runners import parse_spark_submit_parameters

EMULATOR = "http://127.0.0.1:4566"
DOCDB_URI = (
    "mongodb://sensor-pipeline-dev.cluster-abc.us-east-1.docdb.amazonaws.com:27017/"
    "?tls=true&replicaSet=rs0&readPreference=secondaryPreferred&retryWrites=false"
)


def aws_environment() -> dict[str, str]:
    """The SP_* environment ECS and EMR get on AWS (infra/ecs.tf, emr.job_environment)."""
    return {
        "SP_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
        "SP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SP_KAFKA_SASL_MECHANISM": "AWS_MSK_IAM",
        "SP_MONGO_URI": DOCDB_URI,
        "SP_MONGO_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!cluster-abc",
        "SP_MONGO_TLS_CA_FILE": "./environment/rds-global-bundle.pem",
        "SP_API_URL": "http://api.dev.sensor-pipeline.internal:3030",
        "SP_RAW_TOPIC": "RawSensorData",
        "SP_TOPIC_REPLICATION": "2",
        "SP_AWS_REGION": "us-east-1",
    }


def test_msk_iam_and_tls_become_the_local_plaintext_listener() -> None:
    out = translate.environment(aws_environment(), EMULATOR, "plain").values
    assert out["SP_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert "SP_KAFKA_SASL_MECHANISM" not in out
    assert out["SP_KAFKA_BOOTSTRAP"] == "127.0.0.1:9092"  # the emulated MSK already answers the local broker
    assert out["SP_TOPIC_REPLICATION"] == "1", "one local broker"


def test_documentdb_options_are_dropped_and_credentials_go_as_plain_for_ferretdb() -> None:
    out = translate.environment(aws_environment(), EMULATOR, "plain").values
    uri = out["SP_MONGO_URI"]
    assert "tls" not in uri and "replicaSet" not in uri
    assert "readPreference=secondaryPreferred" in uri and "retryWrites=false" in uri
    assert uri.endswith("authMechanism=PLAIN")
    assert "SP_MONGO_TLS_CA_FILE" not in out
    assert out["SP_MONGO_SECRET_ARN"].startswith("arn:aws:secretsmanager"), "the secret is still read, by ARN"


def test_a_mongod_without_auth_gets_no_credentials() -> None:
    out = translate.environment(aws_environment(), EMULATOR, "none").values
    assert "SP_MONGO_SECRET_ARN" not in out and "authMechanism" not in out["SP_MONGO_URI"]


def test_aws_calls_and_cloud_map_names_go_to_this_machine() -> None:
    result = translate.environment(aws_environment(), EMULATOR, "plain")
    assert result.values["SP_AWS_ENDPOINT_URL"] == EMULATOR
    assert result.values["SP_API_URL"] == "http://127.0.0.1:3030"
    hosts = translate.environment({"SP_X": "mongodb://a.internal:1,b.internal:2/?x=1"}, EMULATOR, "none").values
    assert hosts["SP_X"] == "mongodb://127.0.0.1:1,127.0.0.1:2/?x=1"
    assert result.values["SP_RAW_TOPIC"] == "RawSensorData", "what needs no translation is kept as written"
    changed = {key for key, value in aws_environment().items() if result.values.get(key) != value}
    changed |= {"SP_AWS_ENDPOINT_URL"}
    assert {change.split(":")[0] for change in result.changes} == changed, "every change, and only those, is logged"


def test_the_dashboard_origin_keeps_the_load_balancer_and_adds_the_local_browser() -> None:
    out = translate.environment({"SP_DASHBOARD_ALLOW_ORIGIN": "dash.elb.amazonaws.com:80"}, EMULATOR, "plain").values
    assert out["SP_DASHBOARD_ALLOW_ORIGIN"] == "dash.elb.amazonaws.com:80,127.0.0.1:5006"


def test_container_commands_come_from_the_venv_and_bind_to_loopback(tmp_path: Path) -> None:
    (tmp_path / "sensor-pipeline").write_text("")
    argv, _ = translate.command(["sensor-pipeline", "api", "--host", "0.0.0.0"], tmp_path)
    assert argv == [str(tmp_path / "sensor-pipeline"), "api", "--host", "127.0.0.1"]


def test_spark_sizes_are_capped_and_s3_checkpoints_become_local_folders(tmp_path: Path) -> None:
    sized = translate.spark_conf({"spark.driver.memory": "4g", "spark.sql.session.timeZone": "UTC"})
    assert sized.values == {"spark.driver.memory": "1g", "spark.sql.session.timeZone": "UTC"}
    local = translate.s3_path("s3://bucket/checkpoints/job/", tmp_path).values["path"]
    assert local == str(tmp_path / "emr-s3" / "bucket" / "checkpoints" / "job/")


def test_spark_submit_parameters_are_parsed_as_emr_reads_them() -> None:
    conf, jars = parse_spark_submit_parameters(
        "--conf spark.sql.session.timeZone=UTC --jars s3://b/jobs/jars/a.jar,s3://b/jobs/jars/b.jar "
        "--conf spark.archives=s3://b/jobs/pyspark_venv.tar.gz#environment "
        "--conf spark.emr-serverless.driverEnv.SP_MONGO_URI=mongodb://h:27017/?tls=true&replicaSet=rs0"
    )
    assert jars == ["s3://b/jobs/jars/a.jar", "s3://b/jobs/jars/b.jar"]
    assert conf["spark.archives"] == "s3://b/jobs/pyspark_venv.tar.gz#environment"
    assert conf["spark.emr-serverless.driverEnv.SP_MONGO_URI"] == "mongodb://h:27017/?tls=true&replicaSet=rs0"
    with pytest.raises(ValueError, match="unsupported"):
        parse_spark_submit_parameters("stray-word")
