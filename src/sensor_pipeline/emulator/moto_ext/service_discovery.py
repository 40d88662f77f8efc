"""Cloud Map: deleting a namespace deletes its hosted zone."""

from __future__ import annotations

from typing import Any

from moto.route53.models import route53_backends
from moto.servicediscovery import models as servicediscovery_models
from moto.utilities.utils import get_partition

from sensor_pipeline.emulator.moto_ext._base import (
    _wrap,
)

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
