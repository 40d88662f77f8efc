"""DocumentDB through the RDS API (engine ``docdb``): clusters served by the local store or a per-cluster stand-in."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from moto.rds import models as rds_models
from moto.rds.utils import ClusterEngine, DbInstanceEngine

from sensor_pipeline.emulator.moto_ext._base import (
    _set,
    _wrap,
    _wrap_property,
    state,
)

# --- DocumentDB (the RDS API with engine "docdb") ----------------------------------------------

_DOCDB = "docdb"


def _docdb_cluster_init(original: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    # A DocumentDB cluster is a real server (emulator.docdb): TLS only, its master user with the
    # password of the managed secret. Its storage type is omitted unless asked for (AWS returns
    # StorageType only for iopt1; moto's "gp2" is a diff).
    original(self, *args, **kwargs)
    if self.engine == _DOCDB:
        if state.config.docdb is None:
            self.port = state.config.mongo_port
        self.storage_type = kwargs.get("storage_type")
        if not kwargs.get("db_cluster_parameter_group_name"):
            self.parameter_group = "default.docdb5.0"
        if state.config.docdb is not None:
            secret = getattr(self, "master_user_secret", None)
            password = json.loads(secret.secret.secret_string)["password"] if secret else self.master_user_password
            state.config.docdb.start(self.db_cluster_identifier, int(self.port), self.master_username, password)


def _docdb_instance_init(original: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    original(self, *args, **kwargs)
    if self.engine == _DOCDB:
        docdb = state.config.docdb
        cluster = docdb.port(getattr(self, "db_cluster_identifier", None) or "") if docdb else None
        self.port = cluster or state.config.mongo_port


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
    if getattr(cluster, "engine", None) == _DOCDB and state.config.docdb is not None:
        state.config.docdb.stop(cluster_identifier)
    return cluster


def _docdb_address(self: Any, moto_value: Any) -> Any:
    # The cluster, reader and instance endpoints of DocumentDB name the cluster's own server: a loopback
    # address of its own, on the port Terraform asked for (a different port would be a diff that
    # replaces the cluster at every plan); without servers, the local MongoDB-wire server.
    if self.engine != _DOCDB:
        return moto_value
    if state.config.docdb is None:
        return state.config.mongo_host
    return state.config.docdb.host(getattr(self, "db_cluster_identifier", ""))


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
    docdb_default(rds_models.DBCluster, "default_port", lambda: state.config.mongo_port)
    docdb_default(rds_models.DBCluster, "default_allocated_storage", lambda: 1)
    docdb_default(rds_models.DBInstance, "default_port", lambda: state.config.mongo_port)
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
