"""What every patch shares: the configuration, the undo list and the patching helpers."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from moto.utilities.utils import get_partition


class _State:
    """The configuration the patches read when moto calls them (``install`` replaces it)."""

    config: EmulatorConfig


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


_undo: list[Callable[[], None]] = []
_lock = threading.Lock()
_MISSING = object()


def _backends(backend_dict: Any) -> list[Any]:
    # Copies at every level: moto's request threads add backends while a runner thread walks them.
    return [backend for regions in list(backend_dict.values()) for backend in list(regions.values())]


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


state = _State()
state.config = EmulatorConfig()
