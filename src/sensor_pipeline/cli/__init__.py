"""``sensor-pipeline``: the project's command line.

    sensor-pipeline validate < lines.txt        one JSON verdict per input line (contract)
    sensor-pipeline api | produce | dashboard   run a pipeline service
    sensor-pipeline simulate [--report]         simulated lines, or how close the simulation is to the real data
    sensor-pipeline init                        create topics, indexes (and a bucket), idempotently
    sensor-pipeline job progress|reset-progress the streaming job's committed offsets and lag
    sensor-pipeline stack up|down|status|clean|compose   the native local stack (make local-*)
    sensor-pipeline emr upload|submit|status|cancel|shutdown|logs   EMR Serverless job runs

Plumbing that ``make deploy`` and the local stack call (``aws ...``, ``emulator``) is hidden from the
help. Settings come from ``SP_*`` environment variables (:mod:`sensor_pipeline.config`); flags
override them. Exit codes: 0 done, 1 the step failed (``Error: ...`` says why), 2 bad arguments or
settings (the message says what is accepted). Some commands say more in their help: ``validate``
(1: some line invalid), ``produce`` (1: readings left undelivered, 2: a non-retriable Kafka error),
``stack status`` (3: not running, 4: a service down) and a few plumbing checks.
"""

from __future__ import annotations

import click

from sensor_pipeline.cli import aws, emr, emulator, job, pipeline, stack
from sensor_pipeline.cli.common import configure_logging

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sensor-pipeline", message="%(prog)s %(version)s")
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    envvar="SP_LOG_LEVEL",
    help="log level on stderr, before the command (sensor-pipeline --log-level debug api)  "
    "[env: SP_LOG_LEVEL, which the Spark job reads too; default: INFO for services, else warnings only]",
)
def main(log_level: str | None) -> None:
    """Real-time beach water-quality pipeline."""
    if log_level:
        configure_logging(log_level.upper())


for command in (
    *pipeline.COMMANDS,
    job.job,
    stack.stack,
    emr.emr,
    aws.aws_group,
    emulator.emulator,
):
    main.add_command(command)
