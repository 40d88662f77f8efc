"""The sensor API (Flask): raw readings in the contract's line format.

Run: ``sensor-pipeline api`` (port 3030), or ``create_app()`` under any WSGI server.

Endpoints
  ``GET /sensordata``                 one line, as the original design served it
  ``GET /sensordata?count=N``         N lines (1..10000), one per line, in one response
  ``GET /sensordata/stream``          an endless (or ``limit``-bounded) chunked stream of lines at the
                                      simulator's pace (``speed``); what the producer reads
  ``GET /beaches``                    the per-beach models fitted from the real data
  ``GET /health``                     liveness and counters
Bad query parameters answer 400 with a JSON error that says what is accepted; any other failure
answers a JSON 500 (logged), never a traceback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from sensor_pipeline.config import Settings
from sensor_pipeline.source.simulator import Simulator, describe_models

MAX_COUNT = 10_000
#: How often a stream with nothing due looks again (seconds).
STREAM_POLL = 0.05
# ASCII digits only: int() also takes ' 12', '+12', '1_2' and other scripts' digits ('١٢'). Eighteen
# digits hold every accepted value, and keep int() cheap on a hostile string.
_INTEGER = re.compile(r"-?[0-9]{1,18}")


class BadParameter(ValueError):
    """A query parameter is missing its allowed form."""


@dataclass(frozen=True)
class Clock:
    """Where the stream reads the time (monotonic seconds) and how it waits.

    Tests pass a fake one to check the pacing without sleeping.
    """

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def _int_param(name: str, default: int, low: int, high: int) -> int:
    values = request.args.getlist(name)
    if not values:
        return default
    accepted = f"{name} must be an integer in [{low}, {high}]"
    if len(values) > 1:
        raise BadParameter(f"{accepted}, given once; it was given {len(values)} times")
    text = values[0]
    shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"
    if not _INTEGER.fullmatch(text) or not low <= int(text) <= high:
        raise BadParameter(f"{accepted}, got {shown!r}")
    return int(text)


def create_app(
    settings: Settings | None = None, simulator: Simulator | None = None, clock: Clock | None = None
) -> Flask:
    settings = settings or Settings()
    clock = clock or Clock()
    source = simulator or Simulator(
        mode=settings.sim_mode,
        seed=settings.sim_seed,
        speed=settings.sim_speed,
        fault_rate=settings.sim_fault_rate,
    )
    app = Flask(__name__)
    app.extensions["simulator"] = source
    started = time.time()

    @app.errorhandler(BadParameter)
    def bad_parameter(error: BadParameter) -> tuple[Response, int]:
        return jsonify(error="bad_parameter", message=str(error)), 400

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        return jsonify(error=error.name.lower().replace(" ", "_"), message=error.description), error.code or 500

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        # Flask does not log an error a handler took; the client gets no internals.
        app.logger.error("%s %s failed", request.method, request.path, exc_info=error)
        return jsonify(error="internal_error", message="the sensor API failed on this request; see its log"), 500

    @app.get("/sensordata")
    def sensordata() -> Response:
        count = _int_param("count", 1, 1, MAX_COUNT)
        lines = source.take(count)
        return Response("\n".join(lines) + "\n", mimetype="text/plain")

    @app.get("/sensordata/stream")
    def stream() -> Response:
        limit = _int_param("limit", 0, 0, 10**9)

        def generate() -> Iterator[str]:
            sent = 0
            while not limit or sent < limit:
                lines = source.take_due(limit - sent if limit else MAX_COUNT, now=clock.now())
                if lines:
                    sent += len(lines)
                    yield "\n".join(lines) + "\n"
                else:
                    clock.sleep(STREAM_POLL)

        return Response(generate(), mimetype="text/plain")

    @app.get("/beaches")
    def beaches() -> Response:
        return jsonify(describe_models())

    @app.get("/health")
    def health() -> Response:
        body: dict[str, Any] = {
            "status": "ok",
            "mode": source.mode,
            "speed": source.speed,
            "fault_rate": source.fault_rate,
            "served": source.served,
            "uptime_s": round(time.time() - started, 1),
        }
        return jsonify(body)

    return app


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve with gunicorn: one process (the simulator's state is per process), threads for streams."""
    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host or settings.api_host}:{port or settings.api_port}")
            self.cfg.set("workers", 1)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", 16)
            self.cfg.set("timeout", 0)  # streaming responses are long-lived by design
            self.cfg.set("accesslog", None)

        def load(self) -> Flask:
            return create_app(settings)

    _Server().run()
