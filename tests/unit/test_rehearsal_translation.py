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


LOGIN = ("sensor-pipeline-dev-producer", "derived-password")
CA = "/etc/ssl/certs/sensor-pipeline-local-ca.pem"


def test_msk_iam_becomes_scram_as_the_roles_principal_over_tls() -> None:
    out = translate.environment(aws_environment(), EMULATOR, LOGIN, CA).values
    assert out["SP_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", "TLS is kept"
    assert (out["SP_KAFKA_SASL_MECHANISM"], out["SP_KAFKA_SASL_USERNAME"]) == ("SCRAM-SHA-512", LOGIN[0])
    assert out["SP_KAFKA_SASL_PASSWORD"] == LOGIN[1] and out["SP_KAFKA_SSL_CAFILE"] == CA
    assert out["SP_KAFKA_BOOTSTRAP"] == "127.0.0.1:9092", "the emulated MSK already answers the enforcing listener"
    assert out["SP_TOPIC_REPLICATION"] == "1", "one local broker"


def test_the_password_is_never_logged() -> None:
    changes = translate.environment(aws_environment(), EMULATOR, LOGIN, CA).changes
    assert not any(LOGIN[1] in change for change in changes)
    assert any(change.startswith("SP_KAFKA_SASL_PASSWORD: None -> '***'") for change in changes)


def test_documentdb_keeps_tls_and_its_secret_and_loses_only_the_replica_set() -> None:
    out = translate.environment(aws_environment(), EMULATOR, LOGIN, CA).values
    uri = out["SP_MONGO_URI"]
    assert "replicaSet" not in uri
    assert "tls=true" in uri and "readPreference=secondaryPreferred" in uri and "retryWrites=false" in uri
    assert out["SP_MONGO_TLS_CA_FILE"] == "./environment/rds-global-bundle.pem", "the CA path stays the task's"
    assert out["SP_MONGO_SECRET_ARN"].startswith("arn:aws:secretsmanager"), "the secret is still read, by ARN"


def test_aws_calls_and_cloud_map_names_go_to_this_machine() -> None:
    result = translate.environment(aws_environment(), EMULATOR, LOGIN, CA)
    assert result.values["SP_AWS_ENDPOINT_URL"] == EMULATOR
    assert result.values["SP_API_URL"] == "http://127.0.0.1:3030"
    hosts = translate.environment({"SP_X": "mongodb://a.internal:1,b.internal:2/?x=1"}, EMULATOR).values
    assert hosts["SP_X"] == "mongodb://127.0.0.1:1,127.0.0.1:2/?x=1"
    assert result.values["SP_RAW_TOPIC"] == "RawSensorData", "what needs no translation is kept as written"
    changed = {key for key, value in aws_environment().items() if result.values.get(key) != value}
    changed |= {"SP_AWS_ENDPOINT_URL", "SP_KAFKA_SASL_USERNAME", "SP_KAFKA_SASL_PASSWORD", "SP_KAFKA_SSL_CAFILE"}
    assert {change.split(":")[0] for change in result.changes} == changed, "every change, and only those, is logged"


def test_an_address_the_task_is_not_given_reaches_nothing_as_on_fargate() -> None:
    """The settings default to this machine's development stack; a task definition that lost its Kafka,
    store or API address must fail here as on Fargate, not reach the super user's plain listener."""
    given = aws_environment()
    lost = {"SP_KAFKA_BOOTSTRAP", "SP_API_URL"}
    out = translate.environment({k: v for k, v in given.items() if k not in lost}, "http://e").values
    assert out["SP_KAFKA_BOOTSTRAP"] == "127.0.0.1:1" and out["SP_API_URL"] == "http://127.0.0.1:1"
    assert translate.environment(given, "http://e").values["SP_KAFKA_BOOTSTRAP"] == given["SP_KAFKA_BOOTSTRAP"]


def test_the_dashboard_origin_keeps_the_load_balancer_and_adds_the_local_browser() -> None:
    out = translate.environment({"SP_DASHBOARD_ALLOW_ORIGIN": "dash.elb.amazonaws.com:80"}, EMULATOR).values
    assert out["SP_DASHBOARD_ALLOW_ORIGIN"] == "dash.elb.amazonaws.com:80,127.0.0.1:5006"


def test_container_commands_bind_to_loopback() -> None:
    argv, changes = translate.command(["sensor-pipeline", "api", "--host", "0.0.0.0"])
    assert argv == ["sensor-pipeline", "api", "--host", "127.0.0.1"] and len(changes) == 1


def test_spark_sizes_are_capped_and_s3_checkpoints_become_local_folders(tmp_path: Path) -> None:
    sized = translate.spark_conf({"spark.driver.memory": "4g", "spark.sql.session.timeZone": "UTC"})
    assert sized.values == {"spark.driver.memory": "1g", "spark.sql.session.timeZone": "UTC"}
    local = translate.s3_path("s3://bucket/checkpoints/job/", tmp_path).values["path"]
    assert local == str(tmp_path / "emr-s3" / "bucket" / "checkpoints" / "job/")


def test_spark_scratch_files_go_to_the_runs_workspace_keeping_the_jobs_java_options(tmp_path: Path) -> None:
    options = {"spark.driver.extraJavaOptions": "-Dlog4j2.level=warn"}
    placed = translate.spark_conf(options, scratch=tmp_path / "scratch")
    assert placed.values["spark.local.dir"] == str(tmp_path / "scratch")
    java = placed.values["spark.driver.extraJavaOptions"]
    assert java == f"-Dlog4j2.level=warn -Djava.io.tmpdir={tmp_path / 'scratch'}"
    assert (tmp_path / "scratch").is_dir(), "the JVM does not create its java.io.tmpdir"
    alone = translate.spark_conf({}, scratch=tmp_path / "other").values
    assert alone["spark.driver.extraJavaOptions"] == f"-Djava.io.tmpdir={tmp_path / 'other'}"
    # spark-submit takes --driver-java-options instead of the --conf key: so does the translation.
    flagged = {"spark-submit--driver-java-options": "-Da=1", "spark.driver.extraJavaOptions": "-Db=2"}
    both = translate.spark_conf(flagged, scratch=tmp_path / "third").values
    assert both["spark.driver.extraJavaOptions"] == f"-Da=1 -Djava.io.tmpdir={tmp_path / 'third'}"
    assert "spark-submit--driver-java-options" not in both


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
