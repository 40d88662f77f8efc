"""ECS, ECR and CloudWatch Logs: what Terraform and the ECS runner need beyond moto."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from moto.ecs import models as ecs_models
from moto.ecs import responses as ecs_responses

from sensor_pipeline.emulator.moto_ext._base import (
    _set,
    _wrap,
)

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
