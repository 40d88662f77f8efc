"""EC2 security group rules: descriptions and retried authorizations answered as AWS does."""

from __future__ import annotations

import json
import threading
from typing import Any

from moto.ec2.models.security_groups import SecurityGroupRule

from sensor_pipeline.emulator.moto_ext._base import (
    _wrap,
    _wrap_property,
)

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
