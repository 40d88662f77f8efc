"""S3 bucket policies with conditions, evaluated for a TLS request."""

from __future__ import annotations

import json
from typing import Any

from sensor_pipeline.emulator.moto_ext._base import (
    _wrap,
)

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
