"""moto, extended in-process so that ``terraform apply`` of ``infra/`` works against a moto server.

Plain moto 5.2 lacks pieces this stack needs: MSK clusters never leave CREATING and have neither
bootstrap brokers nor configurations, the RDS backend refuses the DocumentDB engine, EMR Serverless
refuses ``emr-spark-*`` release labels and ends every job run at once. ``install`` patches moto's
backend and response classes in this process, before a ``moto.server.ThreadedMotoServer`` serves
requests. Each patch is small, says which gap it fills, and wraps moto's own method where it can;
``uninstall`` restores moto (for tests sharing a process).

    install(EmulatorConfig(kafka_bootstrap="127.0.0.1:9092"))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=4599)
    server.start()

What is emulated stops at the control plane: no broker, database or Spark job runs here. Job runs
stay SUBMITTED until a runner outside this module moves them on (``emr_job_runs`` finds them).
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from moto.core.responses import ActionResult, EmptyResult
from moto.ec2.models.security_groups import SecurityGroupRule
from moto.ecs import models as ecs_models
from moto.ecs import responses as ecs_responses
from moto.emrserverless import models as emr_models
from moto.emrserverless import responses as emr_responses
from moto.emrserverless import urls as emr_urls
from moto.emrserverless.exceptions import ResourceNotFoundException, ValidationException
from moto.kafka import models as kafka_models
from moto.kafka import responses as kafka_responses
from moto.kafka import urls as kafka_urls
from moto.kafka.exceptions import BadRequestException, NotFoundException
from moto.rds import models as rds_models
from moto.rds.utils import ClusterEngine, DbInstanceEngine
from moto.route53.models import route53_backends
from moto.servicediscovery import models as servicediscovery_models
from moto.utilities.utils import get_partition

__all__ = ["EmulatorConfig", "ecs_backends", "emr_job_runs", "install", "uninstall"]


@dataclass(frozen=True)
class EmulatorConfig:
    """What the emulated services answer about the data services that really run locally."""

    kafka_bootstrap: str = "127.0.0.1:9092"  # MSK GetBootstrapBrokers: the plaintext listener
    #: MSK GetBootstrapBrokers for TLS, SASL/SCRAM and SASL/IAM: the broker's enforcing SASL_SSL listener
    #: (empty: the plaintext one).
    kafka_secure_bootstrap: str = ""
    mongo_host: str = "127.0.0.1"  # DocumentDB cluster, reader and instance endpoint address
    mongo_port: int = 27017  # DocumentDB port when no server runs per cluster (docdb is None)
    #: Runs each DocumentDB cluster as a TLS, password-checking server (None: the endpoint is mongo_port).
    docdb: Any = None


_config = EmulatorConfig()
_undo: list[Callable[[], None]] = []
_lock = threading.Lock()
_MISSING = object()


def install(config: EmulatorConfig) -> None:
    """Patch moto in this process; idempotent (a second call only replaces the configuration)."""
    global _config
    with _lock:
        _config = config
        if _undo:
            return
        _patch_kafka()
        _patch_docdb()
        _patch_emr_serverless()
        _patch_ecs()
        _patch_ec2()
        _patch_s3()
        _patch_service_discovery()


def uninstall() -> None:
    """Undo every patch of ``install``, newest first."""
    with _lock:
        while _undo:
            _undo.pop()()


def _backends(backend_dict: Any) -> list[Any]:
    # Copies at every level: moto's request threads add backends while a runner thread walks them.
    return [backend for regions in list(backend_dict.values()) for backend in list(regions.values())]


def emr_job_runs() -> list[tuple[str, Any]]:
    """(application id, moto ``JobRun``) of every EMR Serverless job run, in every account and region."""
    runs: list[tuple[str, Any]] = []
    for backend in _backends(emr_models.emrserverless_backends):
        for application_id, application_runs in list(backend.job_runs.items()):
            runs.extend((application_id, run) for run in list(application_runs))
    return runs


def ecs_backends() -> list[Any]:
    """Every moto ECS backend in use, in every account and region."""
    return _backends(ecs_models.ecs_backends)


# --- patching helpers --------------------------------------------------------------------------


def _set(target: Any, name: str, value: Any) -> None:
    """Set ``target.name`` and remember how to restore it."""
    original = vars(target).get(name, _MISSING)
    setattr(target, name, value)

    def undo() -> None:
        if original is _MISSING:
            delattr(target, name)
        else:
            setattr(target, name, original)

    _undo.append(undo)


def _wrap(cls: Any, name: str, wrapper: Callable[..., Any]) -> None:
    """Replace method ``cls.name`` by one calling ``wrapper(original, self, *args, **kwargs)``."""
    original = getattr(cls, name)

    @functools.wraps(original)
    def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
        return wrapper(original, self, *args, **kwargs)

    _set(cls, name, patched)


def _wrap_property(cls: Any, name: str, getter: Callable[[Any, Any], Any]) -> None:
    """Replace read-only property ``cls.name`` by ``getter(self, moto's value)``."""
    original: property = getattr(cls, name)
    _set(cls, name, property(lambda self: getter(self, original.__get__(self))))


def _add_url_paths(urls_module: Any, paths: dict[str, Any]) -> None:
    """Route more URL paths to a service (read when the server builds the service's app)."""
    _set(urls_module, "url_paths", {**urls_module.url_paths, **paths})


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _arn(owner: Any, service: str, resource: str) -> str:
    """An ARN in the account and region of ``owner`` (a moto backend or model)."""
    partition = get_partition(owner.region_name)
    return f"arn:{partition}:{service}:{owner.region_name}:{owner.account_id}:{resource}"


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
    secure = _config.kafka_secure_bootstrap or _config.kafka_bootstrap
    authentication = cluster.client_authentication or {}
    sasl = authentication.get("sasl") or {}
    transit = ((cluster.encryption_info or {}).get("encryptionInTransit") or {}).get("clientBroker", "TLS")
    if cluster.cluster_type == "SERVERLESS":  # serverless clusters are IAM over TLS only
        sasl, transit = {"iam": {"enabled": True}}, "TLS"
    unauthenticated = (authentication.get("unauthenticated") or {}).get("enabled", not authentication)
    brokers = {}
    if transit in ("PLAINTEXT", "TLS_PLAINTEXT") and unauthenticated:
        brokers["bootstrapBrokerString"] = _config.kafka_bootstrap
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


# --- DocumentDB (the RDS API with engine "docdb") ----------------------------------------------

_DOCDB = "docdb"


def _docdb_cluster_init(original: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    # A DocumentDB cluster is a real server (emulator.docdb): TLS only, its master user with the
    # password of the managed secret. Its storage type is omitted unless asked for (AWS returns
    # StorageType only for iopt1; moto's "gp2" is a diff).
    original(self, *args, **kwargs)
    if self.engine == _DOCDB:
        if _config.docdb is None:
            self.port = _config.mongo_port
        self.storage_type = kwargs.get("storage_type")
        if not kwargs.get("db_cluster_parameter_group_name"):
            self.parameter_group = "default.docdb5.0"
        if _config.docdb is not None:
            secret = getattr(self, "master_user_secret", None)
            password = json.loads(secret.secret.secret_string)["password"] if secret else self.master_user_password
            _config.docdb.start(self.db_cluster_identifier, int(self.port), self.master_username, password)


def _docdb_instance_init(original: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    original(self, *args, **kwargs)
    if self.engine == _DOCDB:
        cluster = _config.docdb.port(getattr(self, "db_cluster_identifier", None) or "") if _config.docdb else None
        self.port = cluster or _config.mongo_port


def _keep_master_secret(original: Any, self: Any, kwargs: dict[str, Any]) -> Any:
    # Gap: moto makes a new master-user secret (new ARN, new password) on every ModifyDBCluster that
    # passes ManageMasterUserPassword=true, which the aws provider sends with any change of the
    # cluster; AWS keeps the secret it manages. A new ARN would leave the workloads' IAM grants naming
    # the old one, a new password the DocumentDB stand-in's user.
    cluster = self.clusters.get(kwargs.get("db_cluster_identifier", ""))
    if kwargs.get("manage_master_user_password") and getattr(cluster, "master_user_secret", None) is not None:
        kwargs = {
            k: v for k, v in kwargs.items() if k not in ("manage_master_user_password", "master_user_secret_kms_key_id")
        }
    return original(self, kwargs)


def _docdb_delete_cluster(original: Any, self: Any, cluster_identifier: str, *args: Any, **kwargs: Any) -> Any:
    cluster = original(self, cluster_identifier, *args, **kwargs)
    if getattr(cluster, "engine", None) == _DOCDB and _config.docdb is not None:
        _config.docdb.stop(cluster_identifier)
    return cluster


def _docdb_address(self: Any, moto_value: Any) -> Any:
    # The cluster, reader and instance endpoints of DocumentDB name the cluster's own server: a loopback
    # address of its own, on the port Terraform asked for (a different port would be a diff that
    # replaces the cluster at every plan); without servers, the local MongoDB-wire server.
    if self.engine != _DOCDB:
        return moto_value
    if _config.docdb is None:
        return _config.mongo_host
    return _config.docdb.host(getattr(self, "db_cluster_identifier", ""))


def _master_secret_string(self: Any) -> str:
    # Gap: moto's managed master-user secret holds {"username": "admin", "password": "P@55w0rd!"}
    # whatever the master user; AWS's holds the master user and a generated password.
    username = getattr(self.resource, "master_username", None) or "admin"
    return json.dumps({"username": username, "password": secrets.token_urlsafe(24)})


def _master_secret_init(original: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    # moto reports the new secret "creating" once; it exists when the call returns: "active".
    original(self, *args, **kwargs)
    self._status = "active"


def _patch_docdb() -> None:
    # Gap: moto's RDS backend knows no "docdb" engine, so aws_docdb_cluster and
    # aws_docdb_cluster_instance are refused ("Engine 'docdb' is not supported").
    cluster_engines = ClusterEngine.list_cluster_engines
    instance_engines = DbInstanceEngine.valid_db_instance_engine
    _set(ClusterEngine, "list_cluster_engines", classmethod(lambda cls: sorted({*cluster_engines(), _DOCDB})))
    _set(DbInstanceEngine, "valid_db_instance_engine", classmethod(lambda cls: sorted({*instance_engines(), _DOCDB})))

    # DocumentDB's defaults, where moto's per-engine tables have no docdb row (a KeyError).
    def docdb_default(cls: Any, name: str, docdb_value: Callable[[], Any]) -> None:
        original = getattr(cls, name)

        def patched(*args: Any, **kwargs: Any) -> Any:
            engine = kwargs["engine"] if "engine" in kwargs else args[0]
            return docdb_value() if engine == _DOCDB else original(*args, **kwargs)

        _set(cls, name, staticmethod(patched))

    docdb_default(rds_models.DBCluster, "default_engine_version", lambda: "5.0.0")
    docdb_default(rds_models.DBCluster, "default_port", lambda: _config.mongo_port)
    docdb_default(rds_models.DBCluster, "default_allocated_storage", lambda: 1)
    docdb_default(rds_models.DBInstance, "default_port", lambda: _config.mongo_port)
    versions = rds_models.DBInstance.default_engine_versions
    _set(rds_models.DBInstance, "default_engine_versions", {**versions, _DOCDB: "5.0.0"})

    _wrap(rds_models.DBCluster, "__init__", _docdb_cluster_init)
    _wrap(rds_models.RDSBackend, "delete_db_cluster", _docdb_delete_cluster)
    _wrap(rds_models.RDSBackend, "modify_db_cluster", _keep_master_secret)
    _wrap(rds_models.DBInstance, "__init__", _docdb_instance_init)
    _wrap_property(rds_models.DBCluster, "endpoint", _docdb_address)
    _wrap_property(rds_models.DBCluster, "reader_endpoint", _docdb_address)
    _wrap_property(rds_models.DBInstance, "address", _docdb_address)

    # ManageMasterUserPassword: moto already keeps the secret in its Secrets Manager backend (same
    # account and region, named rds!cluster-<uuid>) and deletes it with the cluster.
    _set(rds_models.MasterUserSecret, "_generate_secret_string", _master_secret_string)
    _wrap(rds_models.MasterUserSecret, "__init__", _master_secret_init)


# --- EMR Serverless ----------------------------------------------------------------------------

_TERMINAL_RUN_STATES = frozenset({"SUCCESS", "FAILED", "CANCELLED"})

# Application settings moto's Application drops. Kept as snake_case attributes, which moto's
# serializer finds for the camelCase members of the API's Application shape.
_APPLICATION_EXTRAS = (
    "architecture",
    "imageConfiguration",
    "interactiveConfiguration",
    "runtimeConfiguration",
    "monitoringConfiguration",
    "schedulerConfiguration",
    "workerTypeSpecifications",
)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _emr_create_application(original: Any, self: Any, *args: Any, **kwargs: Any) -> Any:
    # Gap: moto accepts only release labels emr-X.Y.0; AWS also names releases emr-spark-X.Y.Z.
    label = kwargs["release_label"]
    if not re.fullmatch(r"emr-spark-\d+\.\d+\.\d+", label):
        return original(self, *args, **kwargs)
    application = original(self, *args, **{**kwargs, "release_label": "emr-7.0.0"})  # passes moto's check
    application.release_label = label
    return application


def _emr_start_job_run(original: Any, self: Any, application_id: str, *args: Any, **kwargs: Any) -> Any:
    # Gap: moto runs jobs on an application in any state; AWS starts a CREATED or STOPPED
    # application on StartJobRun when auto-start is on, and refuses the run when it is off.
    application = self.get_application(application_id)
    idle = application.state in ("CREATED", "STOPPED")
    if idle and not (application.auto_start_configuration or {}).get("enabled", True):
        raise ValidationException(f"Application {application_id} is not started and auto-start is disabled")
    run = original(self, application_id, *args, **kwargs)
    if idle:
        application.state = "STARTED"
    return run


def _emr_cancel_job_run(self: Any, application_id: str, job_run_id: str) -> tuple[str, str]:
    # Gap: moto cancels at once (CANCELLED); AWS cancels asynchronously through CANCELLING, and
    # the local job runner ends the run. A finished run cannot be cancelled.
    run = self.get_job_run(application_id, job_run_id)
    if run.state in _TERMINAL_RUN_STATES:
        raise ValidationException(f"Job run {job_run_id} is already in a terminal state: {run.state}")
    run.state = "CANCELLING"
    return application_id, job_run_id


def _emr_handle_start_job_run(original: Any, self: Any) -> Any:
    # Gap: StartJobRun's mode (BATCH/STREAMING) and retryPolicy are dropped by moto; they are kept
    # on the JobRun (attributes mode, retry_policy), returned by GetJobRun, read by the runner.
    result = original(self)
    run = self.emrserverless_backend.get_job_run(result.result["applicationId"], result.result["jobRunId"])
    run.mode = self._get_param("mode") or "BATCH"
    run.retry_policy = self._get_param("retryPolicy")
    return result


def _emr_keep_extras(response: Any, application: Any, update: bool) -> None:
    # Gap: architecture and the other settings above are dropped by moto, so the plan after an
    # apply wants to set them again; UpdateApplication's releaseLabel is ignored as well.
    for key in _APPLICATION_EXTRAS:
        value = response._get_param(key)
        if value is not None:
            setattr(application, _snake(key), value)
        elif key == "architecture" and not update:
            application.architecture = "X86_64"  # AWS's default
    if update and response._get_param("releaseLabel"):
        application.release_label = response._get_param("releaseLabel")


def _emr_handle_create_application(original: Any, self: Any) -> Any:
    result = original(self)
    application = self.emrserverless_backend.get_application(result.result["applicationId"])
    _emr_keep_extras(self, application, update=False)
    return result


def _emr_handle_update_application(original: Any, self: Any) -> Any:
    result = original(self)
    _emr_keep_extras(self, result.result["application"], update=True)
    return result


def _emr_tagged(backend: Any, arn: str) -> Any:
    for application in backend.applications.values():
        if application.arn == arn:
            return application
    for runs in backend.job_runs.values():
        for run in runs:
            if run.arn == arn:
                return run
    raise ResourceNotFoundException(arn, "Resource")


# Gap: TagResource / UntagResource / ListTagsForResource are missing (404); Terraform lists the
# tags of every tagged resource it reads.


def _emr_handle_list_tags(self: Any) -> ActionResult:
    resource = _emr_tagged(self.emrserverless_backend, self._get_param("resourceArn"))
    return ActionResult({"tags": resource.tags or {}})


def _emr_handle_tag(self: Any) -> EmptyResult:
    resource = _emr_tagged(self.emrserverless_backend, self._get_param("resourceArn"))
    resource.tags = {**(resource.tags or {}), **(self._get_param("tags") or {})}
    return EmptyResult()


def _emr_handle_untag(self: Any) -> EmptyResult:
    resource = _emr_tagged(self.emrserverless_backend, self._get_param("resourceArn"))
    keys = set(self._get_param("tagKeys") or [])
    resource.tags = {k: v for k, v in (resource.tags or {}).items() if k not in keys}
    return EmptyResult()


def _patch_emr_serverless() -> None:
    # Gap: moto makes a new application STARTED at once; AWS creates it CREATED (it starts on its
    # first job run, or on StartApplication). moto makes a new job run SUCCESS at once; on AWS it
    # is SUBMITTED, and here the local job runner moves it through PENDING/RUNNING to its end.
    _set(emr_models, "APPLICATION_STATUS", "CREATED")
    _set(emr_models, "JOB_STATUS", "SUBMITTED")
    backend = emr_models.EMRServerlessBackend
    _wrap(backend, "create_application", _emr_create_application)
    _wrap(backend, "start_job_run", _emr_start_job_run)
    _set(backend, "cancel_job_run", _emr_cancel_job_run)
    response = emr_responses.EMRServerlessResponse
    _wrap(response, "start_job_run", _emr_handle_start_job_run)
    _wrap(response, "create_application", _emr_handle_create_application)
    _wrap(response, "update_application", _emr_handle_update_application)
    _set(response, "list_tags_for_resource", _emr_handle_list_tags)
    _set(response, "tag_resource", _emr_handle_tag)
    _set(response, "untag_resource", _emr_handle_untag)
    _add_url_paths(emr_urls, {"{0}/tags/(?P<resourceArn>.+)$": response.dispatch})


# --- ECS ---------------------------------------------------------------------------------------


def _ecs_keep_rebalancing(original: Any, self: Any) -> Any:
    # Gap: CreateService / UpdateService drop availabilityZoneRebalancing, so DescribeServices
    # lacks it and the plan after an apply wants to set it again.
    result = original(self)
    service = result.result["service"]
    requested = self._get_param("availabilityZoneRebalancing")
    if requested is not None or getattr(service, "availability_zone_rebalancing", None) is None:
        service.availability_zone_rebalancing = requested or "DISABLED"
    # Dropped as well: the health-check grace period, which the ECS runner honours.
    grace = self._get_param("healthCheckGracePeriodSeconds")
    if grace is not None or getattr(service, "health_check_grace_period_seconds", None) is None:
        service.health_check_grace_period_seconds = int(grace or 0)
    return result


def _ecs_task_level_sizes(original: Any, task_definition: Any) -> Any:
    # Gap: RunTask sums the containers' own memory and fails (500) when, as on Fargate, only the task
    # definition is sized. Containers without a size take the task's share.
    containers = task_definition.container_definitions
    missing = [c for c in containers if c.get("memory") is None and c.get("memoryReservation") is None]
    for container in missing:
        container["memoryReservation"] = int(task_definition.memory or 0) // max(1, len(containers))
    try:
        return original(task_definition)
    finally:
        for container in missing:
            container.pop("memoryReservation", None)


def _ecr_layer_not_found(self: Any) -> Any:
    # Gap: GetDownloadUrlForLayer is not implemented (500, which SDKs retry); the rehearsal's image has no
    # layers, so ECR's answer for a digest the repository lacks: LayersNotFoundException.
    from moto.core.exceptions import ServiceException

    class LayersNotFoundException(ServiceException):
        code = "LayersNotFoundException"

    raise LayersNotFoundException(f"The image layer {self._get_param('layerDigest')} does not exist in the repository")


def _logs_kms_key(key_id: str | None) -> Callable[[Any], str]:
    # Gap: AssociateKmsKey / DisassociateKmsKey are not implemented (500, which Terraform retries for
    # ever): the aws provider calls them when a log group's key changes, e.g. on an adopted group.
    def handler(self: Any) -> str:
        from moto.logs.exceptions import ResourceNotFoundException as LogGroupNotFound

        name = self._get_param("logGroupName")
        group = self.logs_backend.groups.get(name)
        if group is None:
            raise LogGroupNotFound()
        group.kms_key_id = self._get_param("kmsKeyId") if key_id is None else None
        return ""

    return handler


def _patch_ecs() -> None:
    from moto.ecr.responses import ECRResponse
    from moto.logs.responses import LogsResponse

    _set(LogsResponse, "associate_kms_key", _logs_kms_key(None))
    _set(LogsResponse, "disassociate_kms_key", _logs_kms_key(""))
    _set(ECRResponse, "get_download_url_for_layer", _ecr_layer_not_found)
    _set(
        ecs_models.EC2ContainerServiceBackend,
        "_calculate_task_resource_requirements",
        staticmethod(
            functools.partial(
                _ecs_task_level_sizes, ecs_models.EC2ContainerServiceBackend._calculate_task_resource_requirements
            )
        ),
    )
    _wrap(ecs_responses.EC2ContainerServiceResponse, "create_service", _ecs_keep_rebalancing)
    _wrap(ecs_responses.EC2ContainerServiceResponse, "update_service", _ecs_keep_rebalancing)


# --- EC2 ---------------------------------------------------------------------------------------


def _rule_group_without_own_account(self: Any, info: dict[str, str] | None) -> dict[str, str] | None:
    # Gap (with infra/'s emulator settings): a rule referencing a group of the same account carries
    # ReferencedGroupInfo.UserId. The aws provider, run with skip_requesting_account_id, knows no
    # account id, so it reads the reference back as "<account>/sg-..." instead of "sg-...": a diff
    # on every plan. Same-account references are answered without the UserId.
    if info and info.get("UserId") == self.ec2_backend.account_id:
        return {key: value for key, value in info.items() if key != "UserId"}
    return info


def _rule_description(self: Any, description: str | None) -> str | None:
    # Gap: the description of a rule referencing a group is kept with the group pair, and
    # DescribeSecurityGroupRules reads only the description of CIDR rules: the plan re-adds it.
    return description if description is not None else self.source_group.get("Description")


# --- S3 ----------------------------------------------------------------------------------------


#: The request context bucket policies are evaluated in. Every call of the deployed system is HTTPS
#: on AWS; the emulator speaks HTTP on loopback only, so calls count as the TLS calls they stand for.
_S3_REQUEST_CONTEXT = {"aws:SecureTransport": "true"}


def _condition_holds(condition: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        if operator not in ("Bool", "StringEquals"):
            continue  # as moto: an operator it cannot evaluate is not held against the request
        for key, expected in tests.items():
            values = [expected] if isinstance(expected, str) else list(expected)
            if context.get(key, "").lower() not in [str(v).lower() for v in values]:
                return False
    return True


def _bucket_permission(original: Any, self: Any, action: str, resource: str) -> Any:
    # Gap: moto evaluates bucket-policy conditions with no request context, knows only StringEquals,
    # and answers DENIED when a statement's condition does not hold, whatever its effect. infra/'s
    # "Deny unless aws:SecureTransport" therefore denies every object call. Statements are evaluated
    # here with a request context; one whose condition does not hold does not apply (as on AWS).
    if self.policy is None:
        return original(self, action, resource)
    from moto.iam.access_control import IAMPolicyStatement, PermissionResult

    statements = json.loads(self.policy)["Statement"]
    permitted = False
    for statement in statements if isinstance(statements, list) else [statements]:
        if statement.get("Condition") and not _condition_holds(statement["Condition"], _S3_REQUEST_CONTEXT):
            continue
        unconditional = {k: v for k, v in statement.items() if k != "Condition"}
        result = IAMPolicyStatement(unconditional).is_action_permitted(action, resource)
        if result == PermissionResult.DENIED:
            return result
        permitted |= result == PermissionResult.PERMITTED
    return PermissionResult.PERMITTED if permitted else PermissionResult.NEUTRAL


def _patch_s3() -> None:
    from moto.s3.models import FakeBucket

    _wrap(FakeBucket, "get_permission", _bucket_permission)


_RETRY_WINDOW = 120.0
_answered: dict[str, tuple[float, Any]] = {}
_invocation = threading.local()


def _note_invocation(original: Any, self: Any) -> Any:
    # The AWS SDKs send one amz-sdk-invocation-id for an operation and all of its retries.
    _invocation.id = self.headers.get("amz-sdk-invocation-id") or ""
    try:
        return original(self)
    finally:
        _invocation.id = ""


def _retried_rule_request(original: Any, self: Any, *args: Any, **kwargs: Any) -> Any:
    # Gap: when the emulator answers slowly (the machine busy building and starting the stack), the aws
    # provider's SDK may retry AuthorizeSecurityGroupIngress/Egress after the first attempt succeeded;
    # moto then answers InvalidPermission.Duplicate and the apply fails (seen twice in twelve
    # rehearsals). A retry of the same operation (its SDK invocation id, within two minutes) gets the
    # first answer again; any other duplicate, two identical rules of a configuration among them, is
    # refused as AWS refuses it.
    import time

    from moto.ec2.exceptions import InvalidPermissionDuplicateError

    invocation = getattr(_invocation, "id", "")
    signature = f"{invocation}:{json.dumps([args, kwargs], sort_keys=True, default=str)}"
    try:
        result = original(self, *args, **kwargs)
    except InvalidPermissionDuplicateError:
        earlier = _answered.get(signature) if invocation else None
        if earlier is None or time.monotonic() - earlier[0] > _RETRY_WINDOW:
            raise
        return earlier[1]
    if invocation:
        _answered[signature] = (time.monotonic(), result)
    return result


def _patch_ec2() -> None:
    _wrap_property(SecurityGroupRule, "referenced_group_info", _rule_group_without_own_account)
    _wrap_property(SecurityGroupRule, "description", _rule_description)
    from moto.ec2.models.security_groups import SecurityGroupBackend
    from moto.ec2.responses.security_groups import SecurityGroups

    for name in ("authorize_security_group_ingress", "authorize_security_group_egress"):
        _wrap(SecurityGroupBackend, name, _retried_rule_request)
        _wrap(SecurityGroups, name, _note_invocation)


# --- Cloud Map ---------------------------------------------------------------------------------


def _delete_namespace_and_zone(original: Any, self: Any, namespace_id: str) -> Any:
    # Gap: the Route 53 hosted zone moto creates for a DNS namespace outlives the namespace; AWS
    # deletes it with the namespace (a destroy would leave the zone behind).
    zone_id = self.get_namespace(namespace_id).dns_properties.get("HostedZoneId")
    operation = original(self, namespace_id)
    if zone_id:
        zones = route53_backends[self.account_id][get_partition(self.region_name)].zones
        zones.pop(zone_id.removeprefix("/hostedzone/"), None)
    return operation


def _patch_service_discovery() -> None:
    _wrap(servicediscovery_models.ServiceDiscoveryBackend, "delete_namespace", _delete_namespace_and_zone)
