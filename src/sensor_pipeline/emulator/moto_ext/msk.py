"""Amazon MSK: clusters that become ACTIVE, bootstrap brokers (the local broker's listeners) and configurations."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from moto.kafka import models as kafka_models
from moto.kafka import responses as kafka_responses
from moto.kafka import urls as kafka_urls
from moto.kafka.exceptions import BadRequestException, NotFoundException

from sensor_pipeline.emulator.moto_ext._base import (
    _add_url_paths,
    _arn,
    _now_iso,
    _set,
    _wrap,
    state,
)

# --- MSK ---------------------------------------------------------------------------------------


@dataclass
class _MskRevision:
    revision: int
    description: str
    server_properties: bytes
    creation_time: str = field(default_factory=_now_iso)

    def summary(self) -> dict[str, Any]:
        return {"creationTime": self.creation_time, "description": self.description, "revision": self.revision}


@dataclass
class _MskConfiguration:
    arn: str
    name: str
    kafka_versions: list[str]
    revisions: list[_MskRevision]
    creation_time: str = field(default_factory=_now_iso)

    def describe(self) -> dict[str, Any]:
        latest = self.revisions[-1]
        return {
            "arn": self.arn,
            "creationTime": self.creation_time,
            "description": latest.description,
            "kafkaVersions": self.kafka_versions,
            "latestRevision": latest.summary(),
            "name": self.name,
            "state": "ACTIVE",
        }


def _msk_store(backend: Any, name: str) -> dict[str, Any]:
    """A dict kept on a moto Kafka backend, so that moto's reset clears it with the backend."""
    store: dict[str, Any] = backend.__dict__.setdefault(f"ext_{name}", {})
    return store


def _msk_not_found(message: str) -> NotFoundException:
    error = NotFoundException(message)
    error.code = 404  # AWS's status; moto's JSON errors default to 400
    return error


def _msk_cluster(backend: Any, arn: str) -> Any:
    # Gap: moto raises KeyError (a 500) for an unknown cluster, which breaks Terraform's refresh
    # and its wait for a deleted cluster; AWS answers NotFoundException, status 404.
    if arn not in backend.clusters:
        raise _msk_not_found(f"Cluster {arn} does not exist")
    return backend.clusters[arn]


def _msk_configuration(backend: Any, arn: str) -> _MskConfiguration:
    # MSK answers an unknown configuration with BadRequestException (400) and this message, by
    # which the aws provider recognises a deleted configuration.
    configuration: _MskConfiguration | None = _msk_store(backend, "configurations").get(arn)
    if configuration is None:
        raise BadRequestException(f"Configuration ARN does not exist: {arn}")
    return configuration


def _msk_cluster_init(original: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    # Gap: moto leaves clusters (provisioned and serverless) CREATING forever and Terraform waits
    # forever; AWS makes them ACTIVE once the brokers are up, which the local broker already is.
    original(self, *args, **kwargs)
    self.state = "ACTIVE"
    self.creation_time = _now_iso()  # moto's has no time zone, which the Go SDK refuses to parse


def _msk_cluster_arn(self: Any) -> str:
    # Gap: moto's cluster ARN is cluster/<uuid>; AWS's is cluster/<name>/<uuid>-<n>, which infra/
    # splits on "/" to build the kafka-cluster:* topic and group ARNs of its IAM policies.
    suffix = "s1" if self.cluster_type == "SERVERLESS" else "1"
    return _arn(self, "kafka", f"cluster/{self.cluster_name}/{self.cluster_id}-{suffix}")


def _msk_known_cluster_only(original: Any, self: Any, cluster_arn: str, *args: Any, **kwargs: Any) -> Any:
    _msk_cluster(self, cluster_arn)
    return original(self, cluster_arn, *args, **kwargs)


def _msk_get_bootstrap_brokers(self: Any, cluster_arn: str) -> dict[str, str]:
    # Gap: GetBootstrapBrokers is not implemented (500). The plaintext string is the local broker's
    # plain listener; TLS, SCRAM and IAM (port 9098 on MSK) its SASL_SSL listener, where the ACLs made
    # from the roles' kafka-cluster statements are enforced (msk_acls).
    # MSK answers only the strings of the listeners the cluster has: plaintext only when its
    # client-broker encryption allows plaintext, IAM/SCRAM only when that SASL mechanism is on
    # (GetBootstrapBrokers, https://docs.aws.amazon.com/msk/1.0/apireference/clusters-clusterarn-bootstrap-brokers.html).
    cluster = _msk_cluster(self, cluster_arn)
    secure = state.config.kafka_secure_bootstrap or state.config.kafka_bootstrap
    authentication = cluster.client_authentication or {}
    sasl = authentication.get("sasl") or {}
    transit = ((cluster.encryption_info or {}).get("encryptionInTransit") or {}).get("clientBroker", "TLS")
    if cluster.cluster_type == "SERVERLESS":  # serverless clusters are IAM over TLS only
        sasl, transit = {"iam": {"enabled": True}}, "TLS"
    unauthenticated = (authentication.get("unauthenticated") or {}).get("enabled", not authentication)
    brokers = {}
    if transit in ("PLAINTEXT", "TLS_PLAINTEXT") and unauthenticated:
        brokers["bootstrapBrokerString"] = state.config.kafka_bootstrap
    if transit in ("TLS", "TLS_PLAINTEXT") and (unauthenticated or authentication.get("tls")):
        brokers["bootstrapBrokerStringTls"] = secure
    if (sasl.get("scram") or {}).get("enabled"):
        brokers["bootstrapBrokerStringSaslScram"] = secure
    if (sasl.get("iam") or {}).get("enabled"):
        brokers["bootstrapBrokerStringSaslIam"] = secure
    return brokers


def _msk_update_cluster_configuration(
    self: Any, cluster_arn: str, configuration_info: dict[str, Any], current_version: str
) -> str:
    # Gap: not implemented; Terraform calls it when aws_msk_configuration gets a new revision. The
    # change is applied at once and its operation reported complete.
    cluster = _msk_cluster(self, cluster_arn)
    if current_version != cluster.current_version:
        raise BadRequestException(f"The cluster's current version is {cluster.current_version}, not {current_version}")
    _msk_configuration(self, configuration_info["arn"])
    cluster.configuration_info = configuration_info
    cluster.current_version = f"K{uuid.uuid4().hex[:13].upper()}"
    operation_arn = _arn(self, "kafka", f"cluster-operation/{cluster.cluster_name}/{uuid.uuid4()}")
    now = _now_iso()
    _msk_store(self, "operations")[operation_arn] = {
        "clusterArn": cluster_arn,
        "creationTime": now,
        "endTime": now,
        "operationArn": operation_arn,
        "operationState": "UPDATE_COMPLETE",
        "operationType": "UPDATE_CLUSTER_CONFIGURATION",
    }
    return operation_arn


def _msk_create_configuration(
    self: Any, name: str, kafka_versions: list[str], server_properties: bytes, description: str
) -> _MskConfiguration:
    # Gap: MSK configurations (aws_msk_configuration) are not implemented at all (404).
    configurations: dict[str, _MskConfiguration] = _msk_store(self, "configurations")
    if any(c.name == name for c in configurations.values()):
        raise BadRequestException(f"A configuration named {name} already exists")
    arn = _arn(self, "kafka", f"configuration/{name}/{uuid.uuid4()}-1")
    configurations[arn] = _MskConfiguration(
        arn, name, kafka_versions, [_MskRevision(1, description, server_properties)]
    )
    return configurations[arn]


def _msk_update_configuration(
    self: Any, arn: str, server_properties: bytes, description: str | None
) -> _MskConfiguration:
    configuration = _msk_configuration(self, arn)
    latest = configuration.revisions[-1]
    description = latest.description if description is None else description
    configuration.revisions.append(_MskRevision(latest.revision + 1, description, server_properties))
    return configuration


def _msk_delete_configuration(self: Any, arn: str) -> None:
    _msk_configuration(self, arn)
    users = [c.arn for c in self.clusters.values() if (c.configuration_info or {}).get("arn") == arn]
    if users:
        raise BadRequestException(f"Configuration {arn} is in use by {', '.join(users)}")
    del _msk_store(self, "configurations")[arn]


# The REST handlers of the operations above. moto finds the operation with botocore's model of the
# API and leaves its path parameters, URL-decoded, in ``uri_match``.


def _json_body(response: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(response.body) if response.body else {}
    return parsed


def _msk_handle_get_bootstrap_brokers(self: Any) -> str:
    return json.dumps(self.kafka_backend.get_bootstrap_brokers(self.uri_match["clusterArn"]))


def _msk_handle_update_cluster_configuration(self: Any) -> str:
    request = _json_body(self)
    cluster_arn = self.uri_match["clusterArn"]
    operation_arn = self.kafka_backend.update_cluster_configuration(
        cluster_arn, request["configurationInfo"], request["currentVersion"]
    )
    return json.dumps({"clusterArn": cluster_arn, "clusterOperationArn": operation_arn})


def _msk_handle_describe_cluster_operation(self: Any) -> str:
    operation_arn = self.uri_match["clusterOperationArn"]
    operation = _msk_store(self.kafka_backend, "operations").get(operation_arn)
    if operation is None:
        raise _msk_not_found(f"Cluster operation {operation_arn} does not exist")
    return json.dumps({"clusterOperationInfo": operation})


def _msk_handle_create_configuration(self: Any) -> str:
    request = _json_body(self)
    configuration = self.kafka_backend.create_configuration(
        name=request["name"],
        kafka_versions=request.get("kafkaVersions") or [],
        server_properties=base64.b64decode(request["serverProperties"]),
        description=request.get("description", ""),
    )
    described = configuration.describe()
    return json.dumps({key: described[key] for key in ("arn", "creationTime", "latestRevision", "name", "state")})


def _msk_handle_describe_configuration(self: Any) -> str:
    return json.dumps(_msk_configuration(self.kafka_backend, self.uri_match["arn"]).describe())


def _msk_handle_describe_configuration_revision(self: Any) -> str:
    configuration = _msk_configuration(self.kafka_backend, self.uri_match["arn"])
    wanted = int(self.uri_match["revision"])
    revision = next((r for r in configuration.revisions if r.revision == wanted), None)
    if revision is None:
        raise BadRequestException(f"Revision {wanted} of {configuration.arn} does not exist")
    server_properties = base64.b64encode(revision.server_properties).decode()
    return json.dumps({"arn": configuration.arn, **revision.summary(), "serverProperties": server_properties})


def _msk_handle_list_configurations(self: Any) -> str:
    configurations = _msk_store(self.kafka_backend, "configurations").values()
    return json.dumps({"configurations": [c.describe() for c in configurations]})


def _msk_handle_list_configuration_revisions(self: Any) -> str:
    configuration = _msk_configuration(self.kafka_backend, self.uri_match["arn"])
    return json.dumps({"revisions": [r.summary() for r in configuration.revisions]})


def _msk_handle_update_configuration(self: Any) -> str:
    request = _json_body(self)
    configuration = self.kafka_backend.update_configuration(
        arn=self.uri_match["arn"],
        server_properties=base64.b64decode(request["serverProperties"]),
        description=request.get("description"),
    )
    return json.dumps({"arn": configuration.arn, "latestRevision": configuration.revisions[-1].summary()})


def _msk_handle_delete_configuration(self: Any) -> str:
    arn = self.uri_match["arn"]
    self.kafka_backend.delete_configuration(arn)
    return json.dumps({"arn": arn, "state": "DELETING"})


def _patch_kafka() -> None:
    _wrap(kafka_models.FakeKafkaCluster, "__init__", _msk_cluster_init)
    _set(kafka_models.FakeKafkaCluster, "_generate_arn", _msk_cluster_arn)
    for name in ("describe_cluster", "describe_cluster_v2", "delete_cluster"):
        _wrap(kafka_models.KafkaBackend, name, _msk_known_cluster_only)
    backend_methods = {
        "get_bootstrap_brokers": _msk_get_bootstrap_brokers,
        "update_cluster_configuration": _msk_update_cluster_configuration,
        "create_configuration": _msk_create_configuration,
        "update_configuration": _msk_update_configuration,
        "delete_configuration": _msk_delete_configuration,
    }
    handlers = {
        "get_bootstrap_brokers": _msk_handle_get_bootstrap_brokers,
        "update_cluster_configuration": _msk_handle_update_cluster_configuration,
        "describe_cluster_operation": _msk_handle_describe_cluster_operation,
        "create_configuration": _msk_handle_create_configuration,
        "describe_configuration": _msk_handle_describe_configuration,
        "describe_configuration_revision": _msk_handle_describe_configuration_revision,
        "list_configurations": _msk_handle_list_configurations,
        "list_configuration_revisions": _msk_handle_list_configuration_revisions,
        "update_configuration": _msk_handle_update_configuration,
        "delete_configuration": _msk_handle_delete_configuration,
    }
    for name, method in backend_methods.items():
        _set(kafka_models.KafkaBackend, name, method)
    for name, handler in handlers.items():
        _set(kafka_responses.KafkaResponse, name, handler)
    # /v1/clusters/<arn>/bootstrap-brokers and .../configuration are already routed to Kafka.
    dispatch = kafka_responses.KafkaResponse.dispatch
    _add_url_paths(
        kafka_urls,
        {
            "{0}/v1/configurations$": dispatch,
            "{0}/v1/configurations/(?P<arn>.+)$": dispatch,
            "{0}/v1/operations/(?P<clusterOperationArn>.+)$": dispatch,
        },
    )
