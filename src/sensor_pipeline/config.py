"""One typed settings object for every component, read from the environment (prefix ``SP_``).

Local defaults match the contract ports (Kafka 9092, MongoDB 27017, API 3030, dashboard 5006, AWS
emulator 4566). On AWS the ECS task definitions and the EMR job run set the same variables; secrets
arrive as environment variables injected by ECS from Secrets Manager, never baked into images.

Nothing is read at import time: call :func:`load_settings` (or build ``Settings(...)`` in tests).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: MSK IAM tokens by region: (token, expiry in epoch milliseconds).
_MSK_TOKENS: dict[str, tuple[str, int]] = {}

KafkaSecurity = Literal["PLAINTEXT", "SSL", "SASL_SSL"]


class Settings(BaseSettings):
    """Pipeline settings. Every field maps to ``SP_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SP_", extra="ignore", frozen=True)

    # --- Kafka / MSK -----------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="comma-separated host:port list")
    kafka_security_protocol: KafkaSecurity = Field(
        "PLAINTEXT", description="PLAINTEXT locally; SASL_SSL with AWS_MSK_IAM on Amazon MSK"
    )
    kafka_sasl_mechanism: Literal["AWS_MSK_IAM", "SCRAM-SHA-512", ""] = Field(
        "", description="AWS_MSK_IAM on Amazon MSK; SCRAM-SHA-512 for a broker with SCRAM users (the rehearsal's)"
    )
    kafka_sasl_username: str = Field("", description="SCRAM user name")
    kafka_sasl_password: str = Field("", description="SCRAM password")
    kafka_ssl_cafile: str = Field("", description="PEM CA bundle that verifies the brokers (default: the system's)")
    raw_topic: str = Field("RawSensorData", description="topic the producer writes raw lines to")
    clean_topic: str = Field("CleanSensorData", description="topic of valid readings as JSON (read it read_committed)")
    invalid_topic: str = Field(
        "InvalidSensorData", description="dead-letter topic: invalid lines with their reason (read it read_committed)"
    )
    topic_partitions: int = Field(3, ge=1, le=1000, description="partitions of each topic `init` creates")
    topic_replication: int = Field(1, ge=1, le=5, description="replication factor of each topic `init` creates")

    # --- MongoDB / DocumentDB ----------------------------------------------------------------------
    mongo_uri: str = Field(
        "mongodb://127.0.0.1:27017/", description="MongoDB connection string (without SP_MONGO_SECRET_ARN)"
    )
    mongo_database: str = Field("water_quality", description="database of the stored readings")
    mongo_collection: str = Field("sensor_readings", description="collection of the stored readings")
    mongo_secret_arn: str = Field("", description="DocumentDB secret (JSON username/password/host/port)")
    mongo_tls_ca_file: str = Field(
        "", description="PEM CA bundle that verifies the store (DocumentDB: AWS's RDS bundle)"
    )

    # --- sensor API / producer -------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="address the sensor API binds")
    api_port: int = Field(3030, ge=1, le=65535, description="port the sensor API listens on")
    api_url: str = Field("http://127.0.0.1:3030", description="sensor API base URL the producer reads")
    sim_mode: Literal["simulate", "replay"] = Field(
        "simulate", description="simulate: six beaches learnt from the real data; replay: the real readings"
    )
    sim_seed: int | None = Field(None, description="random seed for a repeatable simulation")
    sim_speed: float = Field(
        3600.0, gt=0, description="simulated seconds per real second (3600: one hourly reading per second)"
    )
    sim_fault_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of readings replaced by a faulty line (malformed, out of range, bad time, duplicate)",
    )
    producer_batch: int = Field(60, ge=1, le=10_000, description="readings fetched per API request")
    producer_rate: float = Field(6.0, ge=0, description="max readings/s sent; 0 = unlimited")
    producer_log_every: float = Field(10.0, gt=0, description="seconds between progress log lines")
    producer_shutdown_timeout: float = Field(
        10.0, gt=0, description="seconds a stopping producer flushes in-flight readings before it reports the rest"
    )

    # --- Spark job --------------------------------------------------------------------------------
    checkpoint_location: str = Field(
        ".local-stack/checkpoints/structure_validate_store",
        description="the job's checkpoint (a folder or s3:// prefix)",
    )
    # make bench: writing a micro-batch costs ~0.2 s of wall time on 2 cores at low rates (a producer
    # and a transaction per partition) and ~0.2 s of CPU in Spark's JVM; 0.5 s avoids running batches
    # back to back when idle (0 costs a core); under load a batch takes all that arrived meanwhile, so
    # throughput is not capped.
    trigger_seconds: float = Field(0.5, ge=0, description="micro-batch trigger; 0 = as fast as possible")
    max_offsets_per_trigger: int = Field(200_000, ge=1, description="most raw records one micro-batch reads")
    starting_offsets: Literal["earliest", "latest"] = Field(
        "earliest", description="where a job without checkpoint or committed offsets starts reading"
    )
    future_tolerance_seconds: int = Field(
        300, ge=0, description="seconds a timestamp may lie ahead of the batch's time before it is future_timestamp"
    )
    job_group: str = Field(
        "structure_validate_store",
        description="Kafka consumer group whose offsets, committed in the job's transactions, are its progress",
    )
    batch_retry_seconds: float = Field(
        900.0, ge=0, description="how long a failing batch is retried (with backoff) before the job fails"
    )
    insert_chunk: int = Field(1000, ge=1, le=100_000, description="documents per unordered insert")
    refusals_before_dead_letter: int = Field(
        6, ge=1, description="batch attempts a document may be refused (store otherwise up) before it is dead-lettered"
    )
    transaction_timeout_seconds: int = Field(
        60, ge=1, le=900, description="how long the broker waits for a task's transaction before it aborts it"
    )

    # --- dashboard --------------------------------------------------------------------------------
    dashboard_port: int = Field(5006, ge=1, le=65535, description="port the dashboard serves on")
    dashboard_history: int = Field(
        30_000, ge=0, description="clean messages a dashboard server reads back when it starts (recent history)"
    )
    dashboard_allow_origin: str = Field(
        "*", description="host[:port] list (comma-separated) the dashboard's websocket accepts; * = any"
    )

    # --- AWS --------------------------------------------------------------------------------------
    aws_region: str = Field("us-east-1", description="AWS region of every client")
    aws_endpoint_url: str = Field("", description="e.g. http://127.0.0.1:4566 for the local emulator")
    artifacts_bucket: str = Field("", description="S3 bucket for job artifacts and checkpoints")

    @property
    def topics(self) -> tuple[str, str, str]:
        # Computed on every read, never cached: model_copy() (sandboxed) copies a cached value, and a
        # sandboxed test would then delete the live stack's topics.
        return (self.raw_topic, self.clean_topic, self.invalid_topic)

    def to_env(self) -> dict[str, str]:
        """These settings as ``SP_*`` environment variables (for a subprocess)."""
        return {f"SP_{k.upper()}": str(v) for k, v in self.model_dump(exclude_none=True).items()}

    def sandboxed(self, tag: str, checkpoint_dir: str) -> Settings:
        """A copy with its own topics, database and checkpoint: a run that disturbs no other."""
        return self.model_copy(
            update={
                "raw_topic": f"{tag}-RawSensorData",
                "clean_topic": f"{tag}-CleanSensorData",
                "invalid_topic": f"{tag}-InvalidSensorData",
                "mongo_database": tag.replace("-", "_"),
                "checkpoint_location": f"{checkpoint_dir}/checkpoint-{tag}",
                "job_group": f"{tag}-structure_validate_store",
            }
        )

    def kafka_client_options(self) -> dict[str, Any]:
        """Connection options shared by every kafka-python client (producer, consumer, admin)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap.split(","),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_mechanism == "SCRAM-SHA-512":
            options |= {
                "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": self.kafka_sasl_password,
            }
        if self.kafka_ssl_cafile:
            options["ssl_cafile"] = self.kafka_ssl_cafile
        return options

    def transactional_id(self, partition: int) -> str:
        """The transactional.id of one source partition's writes: job group + source topic + partition.
        A new attempt at a partition (a retried task, a second driver, a new build) fences the older,
        as long as the id is the same: a build that renames the group or this format must stop the old
        job first (infra/iam.tf grants exactly these ids)."""
        return f"{self.job_group}.{self.raw_topic}.{partition}"

    def librdkafka_options(self) -> dict[str, Any]:
        """The same connection for librdkafka (confluent-kafka: the job's transactional producer).

        Amazon MSK IAM is OAUTHBEARER with tokens signed by AWS's own signer, as AWS documents for
        non-Java clients (aws-msk-iam-sasl-signer-python,
        https://docs.aws.amazon.com/msk/latest/developerguide/configure-clients-for-iam-access-control.html).
        """
        options: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism == "AWS_MSK_IAM":
            region = self.aws_region

            def token(_config: str) -> tuple[str, float]:
                # One signed token per process while it has a minute left (each client, e.g. the job's
                # producer per task, would otherwise build a botocore session and fetch credentials).
                cached = _MSK_TOKENS.get(region)
                if cached is None or cached[1] - time.time() * 1000 < 60_000:
                    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

                    cached = _MSK_TOKENS[region] = MSKAuthTokenProvider.generate_auth_token(region)
                return cached[0], cached[1] / 1000

            options |= {"sasl.mechanisms": "OAUTHBEARER", "oauth_cb": token}
        elif self.kafka_sasl_mechanism == "SCRAM-SHA-512":
            options |= {
                "sasl.mechanisms": "SCRAM-SHA-512",
                "sasl.username": self.kafka_sasl_username,
                "sasl.password": self.kafka_sasl_password,
            }
        if self.kafka_ssl_cafile:
            options["ssl.ca.location"] = self.kafka_ssl_cafile
        return options

    def spark_kafka_options(self) -> dict[str, str]:
        """The same connection as Spark's Kafka source/sink options (``kafka.``-prefixed)."""
        options = {
            "kafka.bootstrap.servers": self.kafka_bootstrap,
            "kafka.security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism == "AWS_MSK_IAM":
            # Needs software.amazon.msk:aws-msk-iam-auth on the classpath (shipped to S3 for EMR).
            options |= {
                "kafka.sasl.mechanism": "AWS_MSK_IAM",
                "kafka.sasl.jaas.config": "software.amazon.msk.auth.iam.IAMLoginModule required;",
                "kafka.sasl.client.callback.handler.class": ("software.amazon.msk.auth.iam.IAMClientCallbackHandler"),
            }
        elif self.kafka_sasl_mechanism == "SCRAM-SHA-512":

            def quoted(value: str) -> str:
                return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

            options |= {
                "kafka.sasl.mechanism": "SCRAM-SHA-512",
                "kafka.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f"username={quoted(self.kafka_sasl_username)} password={quoted(self.kafka_sasl_password)};",
            }
        if self.kafka_ssl_cafile:
            options |= {"kafka.ssl.truststore.type": "PEM", "kafka.ssl.truststore.location": self.kafka_ssl_cafile}
        return options


def settings_from_env_map(values: dict[str, str]) -> Settings:
    """Settings from a mapping of ``SP_*`` variables (the local stack definition), not the environment."""
    fields: dict[str, Any] = {k.removeprefix("SP_").lower(): v for k, v in values.items() if k.startswith("SP_")}
    return Settings(**fields)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides (from command-line flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def env_name(field: str) -> str:
    """The environment variable of a setting: ``api_port`` -> ``SP_API_PORT``."""
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def setting_help(field: str, described: str | None = None) -> str:
    """Help for a flag that overrides a setting: what it is (``described``, else the setting's
    description), its variable and its default, read from :class:`Settings` so they never drift."""
    info = Settings.model_fields[field]
    default = info.get_default()
    shown = "" if default in ("", None) else f"; default: {default}"
    return f"{described or info.description or field.replace('_', ' ')}  [env: {env_name(field)}{shown}]"
