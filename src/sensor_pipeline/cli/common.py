"""What every command group shares: settings with readable errors, logging, errors as exit codes,
and options documented from :class:`~sensor_pipeline.config.Settings`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from pydantic import ValidationError

from sensor_pipeline.config import Settings, env_name, load_settings, setting_help

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def settings(**overrides: Any) -> Settings:
    """The settings from ``SP_*`` variables and the command's flags; a bad value is a usage error (exit 2)."""
    try:
        return load_settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(f"{env_name('_'.join(str(p) for p in e['loc']))}: {e['msg']}" for e in error.errors())
        raise click.UsageError(f"invalid settings: {problems}") from error


def configure_logging(level: str) -> None:
    """Log to stderr at ``level``; a no-op once logging is configured (``--log-level`` comes first)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    if logging.getLogger().level > logging.DEBUG:
        # kafka-python logs every failed connection attempt at ERROR: an outage would flood the log.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def service_logging() -> None:
    """A long-running service logs at INFO unless ``--log-level`` said otherwise."""
    configure_logging("INFO")


@contextmanager
def reported(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the expected failures of a step into ``Error: <what to do>`` and exit code 1, no traceback."""
    try:
        yield
    except errors as error:
        raise click.ClickException(str(error)) from error


def service_errors() -> tuple[type[BaseException], ...]:
    """What a step meets when Kafka, the store or AWS is down or refuses it: for :func:`reported`."""
    from botocore.exceptions import BotoCoreError, ClientError
    from confluent_kafka import KafkaException
    from kafka.errors import KafkaError
    from pymongo.errors import PyMongoError

    return (KafkaException, KafkaError, PyMongoError, BotoCoreError, ClientError)


def setting_option(*param_decls: str, field: str, **attrs: Any) -> Callable[[Any], Any]:
    """A flag that overrides a setting: its help is the setting's description, its env var and default
    (read from :class:`Settings`, so the help never drifts from what the command does)."""
    return click.option(*param_decls, help=setting_help(field, attrs.pop("help", None)), **attrs)
