"""Keeps the local broker's SCRAM users and ACLs equal to what the emulator's IAM says (MSK IAM, locally).

A thread of the emulator. Every couple of seconds, and on demand before a workload starts
(:meth:`MskSync.sync`), it reads every IAM role's policies from the emulator and every emulated MSK
cluster, generates the ACLs by :mod:`.msk_acls`, and applies the difference to the broker through
its plain listener (whose ANONYMOUS principal is a super user): ACLs created and deleted, a SCRAM
user for each role that may ``kafka-cluster:Connect`` (password derived from a secret of this
emulator run), removed when the role loses it. What it applied, and every warning of the
translation, is in ``<state>/logs/kafka-acls.json``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
from pathlib import Path
from typing import Any

from sensor_pipeline.emulator import moto_ext, msk_acls

log = logging.getLogger("sensor_pipeline.emulator.msk")
SCRAM_ITERATIONS = 8192
SYNC_SECONDS = 2.0


def _roles() -> dict[str, list[str]]:
    """{role name: policy documents} of every role in every account of the emulator."""
    from moto.iam.models import iam_backends

    roles: dict[str, list[str]] = {}
    for backend in moto_ext._backends(iam_backends):
        for role in list(backend.roles.values()):
            documents = list(role.policies.values())
            for managed in list(role.managed_policies.values()):
                documents += [v.document for v in managed.versions if v.is_default]
            roles[role.name] = documents
    return roles


def _clusters() -> list[msk_acls.Cluster]:
    from moto.kafka.models import kafka_backends

    return [msk_acls.Cluster(arn) for backend in moto_ext._backends(kafka_backends) for arn in list(backend.clusters)]


class MskSync(threading.Thread):
    def __init__(self, bootstrap: str, state: Path) -> None:
        super().__init__(name="msk-acl-sync", daemon=True)
        self.bootstrap = bootstrap
        self.report_path = state / "logs" / "kafka-acls.json"
        self.secret = secrets.token_bytes(32)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.logins: set[str] = set()  # principals whose SCRAM credentials this run has set
        self.applied: set[msk_acls.Acl] = set()
        self._admin: Any = None
        self._first = True

    def password(self, role: str) -> str:
        return hmac.new(self.secret, role.encode(), hashlib.sha256).hexdigest()

    def credentials(self, role_arn: str) -> tuple[str, str]:
        """The SCRAM login of a role's Kafka principal (what MSK IAM authenticates as that role)."""
        role = role_arn.rsplit("/", 1)[-1]
        return role, self.password(role)

    def admin(self) -> Any:
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 10000})
        return self._admin

    def run(self) -> None:
        while not self.stopping.wait(SYNC_SECONDS):
            try:
                self.sync()
            except Exception:
                log.exception("MSK ACL sync failed; trying again")

    def sync(self) -> msk_acls.Generated:
        """Apply what IAM says now; returns what was generated."""
        with self.lock:
            clusters = _clusters()
            generated = msk_acls.Generated()
            roles = _roles() if clusters else {}
            for cluster in clusters:
                one = msk_acls.generate(roles, cluster)
                generated.acls |= one.acls
                generated.principals |= one.principals
                generated.warnings += one.warnings
                generated.refusals += one.refusals
            self._apply(generated)
            return generated

    def _apply(self, generated: msk_acls.Generated) -> None:
        from confluent_kafka.admin import (
            AclBindingFilter,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialDeletion,
            UserScramCredentialUpsertion,
        )

        admin = self.admin()
        idle = not (generated.acls or self.applied or generated.principals or self.logins)
        if idle and not self._first:
            return
        everything = AclBindingFilter(
            ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
        )
        present = {_acl(b) for b in admin.describe_acls(everything).result(timeout=15)}
        create = [a for a in generated.acls if a not in present]
        delete = [a for a in present if a not in generated.acls]
        if create:
            for future in admin.create_acls([_binding(a) for a in create]).values():
                future.result(timeout=15)
        if delete:
            for future in admin.delete_acls([_binding(a, AclBindingFilter) for a in delete]).values():
                future.result(timeout=15)
        if self._first:  # logins an earlier emulator run left on the broker: known, so removed unless wanted
            described = admin.describe_user_scram_credentials().result(timeout=15)
            self.logins = {f"User:{user}" for user in described} - generated.principals
            self._first = False
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        changes: list[Any] = [
            UserScramCredentialUpsertion(p.removeprefix("User:"), info, self.password(p.removeprefix("User:")).encode())
            for p in sorted(generated.principals - self.logins)
        ]
        changes += [
            UserScramCredentialDeletion(p.removeprefix("User:"), ScramMechanism.SCRAM_SHA_512)
            for p in sorted(self.logins - generated.principals)
        ]
        if changes:
            for future in admin.alter_user_scram_credentials(changes).values():
                future.result(timeout=15)
        if create or delete or changes:
            logins = ", ".join(sorted(generated.principals)) or "none"
            log.info("MSK IAM -> Kafka: %d ACLs created, %d deleted; logins: %s", len(create), len(delete), logins)
            for warning in generated.warnings:
                log.warning("MSK IAM -> Kafka: %s", warning)
        self.logins = set(generated.principals)
        self.applied = set(generated.acls)
        self.report_path.parent.mkdir(parents=True, exist_ok=True)
        self.report_path.write_text(json.dumps(generated.report(), indent=2) + "\n")


#: librdkafka names Kafka's CLUSTER resource type BROKER.
_LIBRDKAFKA_TYPE = {"CLUSTER": "BROKER"}


def _binding(acl: msk_acls.Acl, kind: Any = None) -> Any:
    """An ACL as confluent-kafka's AclBinding (or AclBindingFilter, to delete it)."""
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    return (kind or AclBinding)(
        ResourceType[_LIBRDKAFKA_TYPE.get(acl.resource_type, acl.resource_type)],
        acl.name,
        ResourcePatternType[acl.pattern_type],
        acl.principal,
        "*",
        AclOperation[acl.operation],
        AclPermissionType[acl.permission],
    )


def _acl(binding: Any) -> msk_acls.Acl:
    kind = {v: k for k, v in _LIBRDKAFKA_TYPE.items()}.get(binding.restype.name, binding.restype.name)
    return msk_acls.Acl(
        binding.principal,
        kind,
        binding.resource_pattern_type.name,
        binding.name,
        binding.operation.name,
        binding.permission_type.name,
    )
