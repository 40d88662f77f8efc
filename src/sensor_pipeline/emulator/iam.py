"""IAM enforcement in the emulator: every AWS call a workload makes is authorized against its own role.

moto's own access control (``INITIAL_NO_AUTH_ACTION_COUNT``) authenticates callers but, for every
service but S3, authorizes against the resource ``*`` (so a statement scoped to an ARN never
matches), evaluates only ``StringEquals`` conditions and denies when an Allow's condition does not
hold. This module replaces its authorization step, in the emulator process only:

* **Who calls.** The account root (the deploying user: Terraform, ``deploy.sh``, the local stack's
  own clients sign with localstack-client's dummy keys) may do anything, as the root user can. Every other
  caller must be an IAM user or a role session issued by the emulator's STS: the ECS and EMR
  runners assume each workload's role as its service would (:func:`assume_role_as_service`, trust
  policy checked) and hand the session to the workload.
* **What it may do.** The role's inline and attached policies, evaluated by :mod:`.policy` with the
  resource ARN of each call (:func:`_resource`) and a request context (``aws:SecureTransport``: every
  call stands for an HTTPS call; ``aws:PrincipalArn``, ``s3:prefix``, ...).
* **What S3 and Secrets Manager do on the caller's behalf.** An object read or written in a bucket
  encrypted with a customer-managed KMS key also needs ``kms:Decrypt`` / ``kms:GenerateDataKey`` on
  that key for the caller, evaluated with ``kms:ViaService`` and the encryption context S3 uses; a
  secret encrypted with one needs ``kms:Decrypt``. The key policy must let IAM decide (its
  account-root statement) or name the caller.

A denied call answers AccessDenied, is logged with the role, the action and the resource, and is
appended to ``<state>/logs/aws-denied.jsonl``, which the rehearsal checks (``sensor-pipeline aws
denials``). Still not enforced: resource policies other than S3 bucket policies' denies and KMS key
policies, SCPs, permissions boundaries, session policies, VPC endpoint policies, credentials' expiry
beyond what :func:`assume_role_as_service` sets.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sensor_pipeline.emulator import policy

log = logging.getLogger("sensor_pipeline.emulator.iam")

#: Access keys that stand for the account root: localstack-client's dummy keys (its Session's default
#: "accesskey", its patch's "test") and deploy.sh's ("test").
ROOT_ACCESS_KEYS = frozenset({"test", "accesskey"})
DENIALS_FILE = Path("logs") / "aws-denied.jsonl"
SESSION_SECONDS = 3600


@dataclass
class _Settings:
    state: Path | None = None


_settings = _Settings()
_file_lock = threading.Lock()


def configure(state: Path | None) -> None:
    _settings.state = state


# --- the caller ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    arn: str  # arn:aws:sts::<account>:assumed-role/<role>/<session>, or an IAM user's ARN
    principal_arn: str  # the role's (or user's) ARN: aws:PrincipalArn
    account: str
    documents: tuple[str, ...]  # identity-based policy documents (JSON)

    @property
    def role_name(self) -> str:
        return self.principal_arn.rsplit("/", 1)[-1]


def _documents(raw: list[Any]) -> tuple[str, ...]:
    out = []
    for item in raw:
        if isinstance(item, str):
            out.append(item)
        elif hasattr(item, "versions"):  # a managed Policy
            out.append(next(v.document for v in item.versions if v.is_default))
        elif isinstance(item, dict) and "policy_document" in item:
            out.append(item["policy_document"])
        else:
            out.append(json.dumps(item) if not isinstance(item, str) else item)
    return tuple(out)


def _caller(access_key: Any, account: str) -> Caller:
    from moto.iam.access_control import AssumedRoleAccessKey

    arn = access_key.arn
    if isinstance(access_key, AssumedRoleAccessKey):
        principal = f"arn:aws:iam::{account}:role/{access_key._owner_role_name}"
        session = _session(access_key._access_key_id, account)
        if session is not None and session.expiration.timestamp() < time.time():
            from moto.core.exceptions import JsonRESTError

            raise JsonRESTError("ExpiredTokenException", "The security token included in the request is expired")
    else:
        principal = arn
    return Caller(arn, principal, account, _documents(access_key.collect_policies()))


def _session(access_key_id: str, account: str) -> Any:
    from moto.sts.models import sts_backends

    for role in sts_backends[account]["aws"].assumed_roles:
        if role.access_key_id == access_key_id:
            return role
    return None


# --- resources and context -------------------------------------------------------------------------


def _param(response: Any, name: str) -> str:
    try:
        value = response._get_param(name)
    except Exception:  # a protocol whose parser needs more than this request has
        value = None
    if value is None:
        value = (response.querystring.get(name) or [None])[0] if hasattr(response, "querystring") else None
    return str(value) if value is not None else ""


def _secret_arn(account: str, region: str, secret_id: str) -> str:
    from moto.secretsmanager.models import secretsmanager_backends

    secrets = secretsmanager_backends[account][region].secrets
    if secret_id in secrets:
        return str(secrets[secret_id].arn)
    if secret_id.startswith("arn:"):
        return secret_id
    return f"arn:aws:secretsmanager:{region}:{account}:secret:{secret_id}"


def _key_arn(account: str, region: str, key_id: str) -> str | None:
    from moto.kms.models import kms_backends

    backend = kms_backends[account][region]
    try:
        return str(backend.describe_key(key_id).arn)
    except Exception:
        return None


def _resource(response: Any, service: str, action: str, account: str, region: str) -> str:
    """The ARN a call acts on, as IAM's service authorization reference names it (``*`` when unknown)."""
    name = action.split(":", 1)[1]
    if service == "secretsmanager" and _param(response, "SecretId"):
        return _secret_arn(account, region, _param(response, "SecretId"))
    if service == "logs":
        group, stream = _param(response, "logGroupName"), _param(response, "logStreamName")
        group_arn = f"arn:aws:logs:{region}:{account}:log-group:{group}"
        if group and stream and name in ("CreateLogStream", "PutLogEvents", "GetLogEvents"):
            return f"{group_arn}:log-stream:{stream}"
        if group:
            return f"{group_arn}:*"  # IAM evaluates log-group actions on "...:log-group:<name>:*"
        if name == "DescribeLogGroups":  # whatever the prefix asked: only log-group:* (or wider) allows it
            return f"arn:aws:logs:{region}:{account}:log-group:*"
    if service == "ecr" and _param(response, "repositoryName"):
        return f"arn:aws:ecr:{region}:{account}:repository/{_param(response, 'repositoryName')}"
    if service == "sts" and name == "AssumeRole":
        return _param(response, "RoleArn") or "*"
    if service == "kms" and _param(response, "KeyId"):
        return _key_arn(account, region, _param(response, "KeyId")) or "*"
    return "*"


def _context(caller: Caller, region: str, response: Any, action: str) -> dict[str, str | list[str]]:
    context: dict[str, str | list[str]] = {
        # Every call of the deployed system is HTTPS; the emulator listens on loopback HTTP only.
        "aws:SecureTransport": "true",
        "aws:PrincipalArn": caller.principal_arn,
        "aws:PrincipalAccount": caller.account,
        "aws:RequestedRegion": region,
    }
    if action.lower() in ("s3:listbucket", "s3:listbucketversions"):
        query = getattr(response, "querystring", {}) or {}
        for key in ("prefix", "delimiter", "max-keys"):
            if query.get(key):
                context[f"s3:{key}"] = str(query[key][0])
    return context


# --- decisions --------------------------------------------------------------------------------------


class Denied(Exception):
    """Raised inside the emulator; turned into the service's AccessDenied answer."""


def _record_denial(caller_arn: str, role: str, action: str, resource: str, reason: str) -> None:
    entry = {"time": time.time(), "principal": caller_arn, "role": role, "action": action, "resource": resource}
    log.error("AccessDenied: %s (role %s) may not %s on %s: %s", caller_arn, role, action, resource, reason)
    if _settings.state is None:
        return
    path = _settings.state / DENIALS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock, path.open("a") as out:
        out.write(json.dumps(entry | {"reason": reason}) + "\n")


def _message(caller: Caller, action: str, resource: str, reason: str) -> str:
    return f"User: {caller.arn} is not authorized to perform: {action} on resource: {resource} because {reason}"


def key_policy_allows(caller: Caller, key_arn: str, action: str, context: policy.Context) -> policy.Decision:
    """KMS: the key policy names the caller, or delegates to IAM (its account-root statement) and IAM allows."""
    from moto.kms.models import kms_backends

    region = key_arn.split(":")[3]
    key = kms_backends[caller.account][region].describe_key(key_arn)
    document = _aws_managed_key_policy(key, caller.account, region) or json.loads(key.policy)
    direct = policy.evaluate_resource_policy(document, {"AWS": caller.principal_arn}, action, "*", context)
    if direct.allowed or direct.reason.startswith("explicitly"):
        return direct
    root = policy.evaluate_resource_policy(
        document, {"AWS": f"arn:aws:iam::{caller.account}:root"}, action, "*", context
    )
    if not root.allowed:
        return policy.Decision(False, f"the key policy of {key_arn} neither names the caller nor delegates to IAM")
    return policy.evaluate(caller.documents, action, key_arn, context)


def _aws_managed_key_policy(key: Any, account: str, region: str) -> dict[str, Any] | None:
    """An AWS managed key (alias ``aws/<service>``) has AWS's fixed policy: every principal of the account
    may use it through that service ("AWS managed keys", AWS KMS Developer Guide,
    https://docs.aws.amazon.com/kms/latest/developerguide/concepts.html#aws-managed-key); moto gives
    it an ordinary root-only policy instead."""
    service = next((name.removeprefix("alias/aws/") for name in key.aliases if name.startswith("alias/aws/")), None)
    if service is None:
        return None
    statement = {
        "Effect": "Allow",
        "Principal": {"AWS": "*"},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant",
                   "kms:DescribeKey"],
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:CallerAccount": account,
                                       "kms:ViaService": f"{service}.{region}.amazonaws.com"}},
    }  # fmt: skip
    return {"Version": "2012-10-17", "Statement": [statement]}


def _implicit_kms(caller: Caller, service: str, action: str, resource: str, region: str, response: Any) -> None:
    """The KMS permission S3 or Secrets Manager uses on the caller's behalf (SSE-KMS, encrypted secrets)."""
    checks: list[tuple[str, str, dict[str, str | list[str]]]] = []
    if service == "s3" and action in ("s3:GetObject", "s3:PutObject") and "/" in resource.split(":::", 1)[-1]:
        from moto.s3.models import s3_backends

        bucket_name, key_name = resource.split(":::", 1)[1].split("/", 1)
        backend = s3_backends[caller.account]["aws"]
        bucket = backend.buckets.get(bucket_name)
        if bucket is None:
            return
        key_id, bucket_key = None, False
        if action == "s3:GetObject":
            obj = bucket.keys.get(key_name)
            if obj is not None and obj.encryption == "aws:kms":
                key_id, bucket_key = obj.kms_key_id, str(obj.bucket_key_enabled).lower() == "true"
        else:
            key_id = response.headers.get("x-amz-server-side-encryption-aws-kms-key-id")
            rule = (bucket.encryption or {}).get("Rule", {})
            default = rule.get("ApplyServerSideEncryptionByDefault", {})
            if key_id is None and default.get("SSEAlgorithm") == "aws:kms":
                key_id = default.get("KMSMasterKeyID")
            bucket_key = str(rule.get("BucketKeyEnabled", "false")).lower() == "true"
        if key_id:
            key_arn = _key_arn(caller.account, region, key_id)
            context_arn = f"arn:aws:s3:::{bucket_name}" + ("" if bucket_key else f"/{key_name}")
            kms_action = "kms:Decrypt" if action == "s3:GetObject" else "kms:GenerateDataKey"
            if key_arn:
                checks.append(
                    (kms_action, key_arn, {"kms:ViaService": f"s3.{region}.amazonaws.com",
                                           "kms:EncryptionContext:aws:s3:arn": context_arn,
                                           "kms:CallerAccount": caller.account})
                )  # fmt: skip
    if service == "secretsmanager" and action == "secretsmanager:GetSecretValue":
        from moto.secretsmanager.models import secretsmanager_backends

        secrets = secretsmanager_backends[caller.account][region].secrets
        secret = secrets[resource] if resource in secrets else None  # noqa: SIM401 (its get() ignores ARNs)
        key_id = getattr(secret, "kms_key_id", None)
        key_arn = _key_arn(caller.account, region, key_id) if key_id else None
        if key_arn:
            checks.append(
                ("kms:Decrypt", key_arn, {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com",
                                          "kms:EncryptionContext:SecretARN": resource,
                                          "kms:CallerAccount": caller.account})
            )  # fmt: skip
    for kms_action, key_arn, extra in checks:
        context = _context(caller, region, response, kms_action) | extra
        decision = key_policy_allows(caller, key_arn, kms_action, context)
        if not decision.allowed:
            reason = f"{decision.reason} ({action} on {resource} needs it, via {extra['kms:ViaService']})"
            _record_denial(caller.arn, caller.role_name, kms_action, key_arn, reason)
            raise Denied(_message(caller, kms_action, key_arn, reason))


def authorize(response: Any, iam_request_cls: type, resource: str) -> None:
    """The replacement for moto's authorization step (see the module docstring)."""
    from moto.core.exceptions import AccessDeniedError, JsonRESTError

    headers = response.headers
    authorization = headers.get("Authorization") or ""
    access_key = authorization.partition("Credential=")[2].partition("/")[0]
    if access_key in ROOT_ACCESS_KEYS and "X-Amz-Security-Token" not in headers:
        return
    if not authorization:  # unsigned: only S3's anonymous access, which the bucket then decides
        if iam_request_cls.__name__ == "S3IAMRequest":
            return
        raise AccessDeniedError(user_arn="anonymous", action=response._get_action())
    request = iam_request_cls(
        account_id=response.current_account,
        method=response.method,
        path=response.raw_path + ("?" + response.uri.split("?", 1)[1] if "?" in response.uri else ""),
        data=response.data,
        body=response.raw_body,
        headers=headers,
        action=response._get_action(),
    )
    request.check_signature()
    scope = authorization.partition("Credential=")[2].partition(",")[0].split("/")
    region, service = scope[2], scope[3]
    action = request._action
    caller = _caller(request._access_key, response.current_account)
    if action == "sts:GetCallerIdentity":
        return
    if service != "s3":
        resource = _resource(response, service, action, caller.account, region)
    context = _context(caller, region, response, action)
    decision = policy.evaluate(caller.documents, action, resource, context)
    try:
        if not decision.allowed:
            reason = decision.reason + (
                " (the emulator knows no resource ARN for this action)" if resource == "*" else ""
            )
            _record_denial(caller.arn, caller.role_name, action, resource, reason)
            raise Denied(_message(caller, action, resource, reason))
        _implicit_kms(caller, service, action, resource, region, response)
    except Denied as denied:
        if service == "s3":
            request._raise_access_denied()
        raise JsonRESTError("AccessDeniedException", str(denied)) from None


def install() -> None:
    """Turn on authentication and this authorization in moto (emulator process only)."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    from sensor_pipeline.emulator import moto_ext

    moto_ext._set(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)

    def patched(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        authorize(self, iam_request_cls, resource)

    moto_ext._set(ActionAuthenticatorMixin, "_authenticate_and_authorize_action", patched)


# --- services assuming a workload's role ----------------------------------------------------------------


class TrustError(RuntimeError):
    """The role's trust policy does not let the service assume it (as ECS/EMR would report)."""


def assume_role_as_service(
    role_arn: str, service: str, session_name: str, source_arn: str = "", seconds: int = SESSION_SECONDS
) -> dict[str, str]:
    """What ECS (``ecs-tasks.amazonaws.com``) or EMR Serverless does to run a workload as its role.

    The role's trust policy is evaluated for the service principal with ``aws:SourceAccount`` and
    ``aws:SourceArn`` (the confused-deputy keys services send); then the emulator's STS issues a
    session. Returns the credentials in the container-credentials endpoint's JSON shape.
    """
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    account = role_arn.split(":")[4]
    try:
        role = iam_backends[account]["aws"].get_role_by_arn(role_arn)
    except Exception as error:
        raise TrustError(f"{service} cannot assume {role_arn}: the role does not exist ({error})") from error
    context: dict[str, str | list[str]] = {"aws:SourceAccount": account}
    if source_arn:
        context["aws:SourceArn"] = source_arn
    decision = policy.evaluate_resource_policy(
        role.assume_role_policy_document, {"Service": service}, "sts:AssumeRole", role_arn, context
    )
    if not decision.allowed:
        _record_denial(f"service:{service}", role.name, "sts:AssumeRole", role_arn, f"trust policy: {decision.reason}")
        raise TrustError(f"{service} cannot assume {role_arn}: its trust policy does not allow it ({decision.reason})")
    session = sts_backends[account]["aws"].assume_role(
        region_name="us-east-1",
        role_session_name=session_name[:64],
        role_arn=role_arn,
        policy="",
        duration=seconds,
        external_id="",
    )
    return {
        "AccessKeyId": session.access_key_id,
        "SecretAccessKey": session.secret_access_key,
        "Token": session.session_token,
        "Expiration": session.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "RoleArn": role_arn,
    }


def denials(state: Path, since: float = 0.0) -> list[dict[str, Any]]:
    """Denied calls recorded since ``since`` (epoch seconds)."""
    path = state / DENIALS_FILE
    if not path.is_file():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if e["time"] >= since]
