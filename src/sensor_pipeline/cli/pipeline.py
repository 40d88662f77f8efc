"""The pipeline's own commands: the validation contract, its services and its set-up."""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import click

from sensor_pipeline.cli.common import reported, service_errors, service_logging, setting_option, settings


@click.command()
@setting_option("--future-tolerance", field="future_tolerance_seconds", type=click.IntRange(min=0))
def validate(future_tolerance: int | None) -> None:
    """Validate raw lines from stdin; print {"valid", "reason", "record"} per line to stdout.

    Exit code 0 when every line is valid, 1 when some are not.
    """
    from sensor_pipeline.contract.rules import validate_line

    tolerance = timedelta(seconds=settings(future_tolerance_seconds=future_tolerance).future_tolerance_seconds)
    all_valid = True
    out = sys.stdout
    for raw in sys.stdin:
        line = raw.rstrip("\r\n")
        verdict = validate_line(line, future_tolerance=tolerance)
        all_valid &= verdict.valid
        out.write(json.dumps(verdict.to_json_dict()) + "\n")
    out.flush()
    sys.exit(0 if all_valid else 1)


@click.command()
@setting_option("--host", field="api_host")
@setting_option("--port", field="api_port", type=click.IntRange(1, 65535))
@setting_option("--mode", field="sim_mode", type=click.Choice(["simulate", "replay"]))
@setting_option("--speed", field="sim_speed", type=click.FloatRange(min=0, min_open=True))
@setting_option("--fault-rate", field="sim_fault_rate", type=click.FloatRange(0, 1))
@setting_option("--seed", field="sim_seed", type=int)
def api(
    host: str | None,
    port: int | None,
    mode: str | None,
    speed: float | None,
    fault_rate: float | None,
    seed: int | None,
) -> None:
    """Serve the sensor API (GET /sensordata, /sensordata/stream, /health)."""
    from sensor_pipeline.source.api import serve

    service_logging()
    serve(settings(sim_mode=mode, sim_speed=speed, sim_fault_rate=fault_rate, sim_seed=seed), host, port)


@click.command()
@click.option("--count", type=click.IntRange(min=1), help="lines to print  [default: 6, one simulated hour]")
@click.option("--mode", type=click.Choice(["simulate", "replay"]), default="simulate", show_default=True)
@click.option("--seed", type=int, help="random seed for a repeatable simulation (--report: 1)")
@click.option("--fault-rate", type=click.FloatRange(0, 1), help="share of faulty lines (--report: the real rate)")
@click.option("--gaps", is_flag=True, help="let beaches miss hours at the real data's rate")
@click.option("--report", is_flag=True, help="simulate a season; print its KS distances and fault and gap rates")
def simulate(
    count: int | None, mode: str, seed: int | None, fault_rate: float | None, gaps: bool, report: bool
) -> None:
    """Print simulated (or replayed) raw lines, as GET /sensordata serves them.

    With --report, simulate a season (the months the real buoys report, with their gaps and faults)
    and print, per beach, the Kolmogorov-Smirnov distance of water temperature, turbidity and
    battery to the packaged real data, and the real and simulated gap and fault rates.
    """
    from sensor_pipeline.source import simulator

    if report:
        clashes = [flag for flag, given in (("--count", count), ("--gaps", gaps or None)) if given is not None]
        if mode != "simulate":
            clashes.append("--mode replay")
        if clashes:
            raise click.UsageError(f"--report simulates a whole season with gaps; drop {', '.join(clashes)}")
        click.echo(simulator.fidelity_report(seed=1 if seed is None else seed, fault_rate=fault_rate).table())
        return
    if gaps and mode != "simulate":
        raise click.UsageError("--gaps applies to --mode simulate (replay has the real gaps)")
    source = simulator.Simulator(mode=mode, seed=seed, fault_rate=fault_rate or 0.0, gaps=gaps)
    for line in source.take(count or len(simulator.BEACHES)):
        click.echo(line)


@click.command()
@click.option("--source", type=click.Choice(["stream", "poll"]), default="stream", show_default=True)
@click.option("--count", type=click.IntRange(min=1), help="stop after this many readings")
@setting_option("--rate", field="producer_rate", type=click.FloatRange(min=0))
@setting_option("--api-url", field="api_url")
def produce(source: str, count: int | None, rate: float | None, api_url: str | None) -> None:
    """Stream readings from the sensor API into RawSensorData.

    Exit code 0 when everything read was delivered, 1 when readings were left undelivered at a stop,
    2 on a Kafka error that retrying cannot fix (authorization, a message too large).
    """
    from sensor_pipeline.source import producer

    service_logging()
    sys.exit(producer.main(settings(api_url=api_url), source=source, count=count, rate=rate))


@click.command()
@setting_option("--port", field="dashboard_port", type=click.IntRange(1, 65535))
@click.option("--address", default="127.0.0.1", show_default=True)
def dashboard(port: int | None, address: str) -> None:
    """Serve the live Bokeh dashboard fed from CleanSensorData."""
    from sensor_pipeline.dashboard import serve

    service_logging()
    serve(settings(dashboard_port=port), address)


@click.command()
@click.option("--bucket", help="also create this S3 bucket (emulator or AWS)")
def init(bucket: str | None) -> None:
    """Create the topics and the store's indexes (idempotent)."""
    from sensor_pipeline.cloud import provision

    service_logging()
    with reported(*service_errors()):
        result = provision.ensure_all(settings(), bucket=bucket)
    click.echo(json.dumps(result))


COMMANDS = (validate, api, simulate, produce, dashboard, init)
