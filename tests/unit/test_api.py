"""The sensor API through Flask's test client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sensor_pipeline.config import Settings
from sensor_pipeline.contract.rules import validate_line
from sensor_pipeline.source.api import STREAM_POLL, Clock, create_app
from sensor_pipeline.source.simulator import BEACHES


@pytest.fixture
def app() -> Flask:
    return create_app(Settings(sim_seed=3, sim_speed=3_600_000))


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as client:
        yield client


def test_one_reading_per_request_in_the_original_line_format(client: FlaskClient) -> None:
    response = client.get("/sensordata")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    lines = response.get_data(as_text=True).splitlines()
    assert len(lines) == 1
    assert validate_line(lines[0]).valid


def test_batch_form_returns_count_valid_lines_from_six_beaches(client: FlaskClient) -> None:
    lines = client.get("/sensordata?count=60").get_data(as_text=True).splitlines()
    assert len(lines) == 60
    verdicts = [validate_line(line) for line in lines]
    assert all(v.valid for v in verdicts)
    assert {v.record["Beach"] for v in verdicts if v.record} == set(BEACHES)
    assert len({v.record["MeasurementID"] for v in verdicts if v.record}) == 60


HOSTILE_VALUES = {
    "negative": "-1",
    "beyond 64 bits": "9" * 30,
    "thousands of digits": "9" * 5000,
    "not a number": "abc",
    "a decimal": "1.5",
    "an exponent": "1e3",
    "empty": "",
    "spaces around": "%2012%20",
    "a sign": "%2B12",
    "underscores": "1_0",
    "arabic-indic digits": "١٢",
    "fullwidth digits": "１２",
    "superscript digits": "²",
    "a null byte": "1%00",
    "not UTF-8": "%FF%FE",
    "a very long string": "x" * 100_000,
}


@pytest.mark.parametrize("path", ["/sensordata?count=", "/sensordata/stream?limit="])
@pytest.mark.parametrize("value", HOSTILE_VALUES.values(), ids=HOSTILE_VALUES.keys())
def test_hostile_parameters_get_a_400_with_a_json_error(client: FlaskClient, path: str, value: str) -> None:
    response = client.get(path + value)
    assert response.status_code == 400 and response.is_json
    body = response.get_json()
    name = path.rsplit("?", 1)[1].rstrip("=")
    assert body["error"] == "bad_parameter"
    assert body["message"].startswith(f"{name} must be an integer in [")
    assert len(body["message"]) < 200  # a hostile value is quoted, not echoed whole


@pytest.mark.parametrize(
    "query", ["/sensordata?count=0", "/sensordata?count=10001", "/sensordata/stream?limit=1000000001"]
)
def test_out_of_range_parameters_get_a_400_naming_the_range(client: FlaskClient, query: str) -> None:
    response = client.get(query)
    assert response.status_code == 400
    assert response.get_json()["message"] in (
        "count must be an integer in [1, 10000], got '0'",
        "count must be an integer in [1, 10000], got '10001'",
        "limit must be an integer in [0, 1000000000], got '1000000001'",
    )


def test_a_repeated_parameter_gets_a_400_saying_so(client: FlaskClient) -> None:
    response = client.get("/sensordata?count=1&count=2")
    assert response.status_code == 400
    assert response.get_json()["message"] == "count must be an integer in [1, 10000], given once; it was given 2 times"


def test_the_limits_of_count_are_accepted(client: FlaskClient) -> None:
    assert len(client.get("/sensordata?count=1").get_data(as_text=True).splitlines()) == 1
    assert len(client.get("/sensordata?count=10000").get_data(as_text=True).splitlines()) == 10_000


def test_an_unexpected_failure_gets_a_json_500_without_internals(client: FlaskClient, app: Flask) -> None:
    def broken(count: int) -> list[str]:
        raise RuntimeError("secret detail")

    app.extensions["simulator"].take = broken
    response = client.get("/sensordata")
    assert response.status_code == 500 and response.get_json()["error"] == "internal_error"
    assert "secret" not in response.get_data(as_text=True)


def test_unknown_paths_get_json_errors(client: FlaskClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


class FakeClock:
    """Monotonic time that moves only when the stream sleeps."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


@pytest.mark.parametrize("speed", [3600.0, 36_000.0, 360_000.0])
def test_stream_serves_lines_at_the_simulated_pace(speed: float) -> None:
    clock = FakeClock()
    app = create_app(Settings(sim_seed=3, sim_speed=speed), clock=Clock(clock.now, clock.sleep))
    per_second = len(BEACHES) * speed / 3600  # each beach reports once per simulated hour
    limit = int(per_second * 5)
    response = app.test_client().get(f"/sensordata/stream?limit={limit}", buffered=False)
    arrivals: list[tuple[float, int]] = []  # (fake seconds since the stream began, lines so far)
    lines: list[str] = []
    for chunk in response.iter_encoded():
        lines.extend(chunk.decode().splitlines())
        arrivals.append((clock.t - 1000.0, len(lines)))
    assert sum(clock.sleeps) >= 4.0, "the stream's five seconds are waited on the clock it was given"
    assert len(lines) == limit and all(validate_line(line).valid for line in lines)
    for elapsed, sent in arrivals:
        # Never ahead of the pace, and never behind it by more than one look at the clock.
        assert sent <= per_second * elapsed + 1e-6
        assert sent >= per_second * (elapsed - STREAM_POLL) - 1 - 1e-6
    assert arrivals[-1][0] == pytest.approx(5, abs=STREAM_POLL + 1e-6)
    assert set(clock.sleeps) == {STREAM_POLL}


def test_health_reports_mode_and_counters(client: FlaskClient) -> None:
    client.get("/sensordata?count=5")
    body = client.get("/health").get_json()
    assert body["status"] == "ok" and body["mode"] == "simulate" and body["served"] == 5


def test_fault_injection_produces_invalid_lines_at_about_the_rate() -> None:
    app = create_app(Settings(sim_seed=11, sim_fault_rate=0.2))
    lines = app.test_client().get("/sensordata?count=2000").get_data(as_text=True).splitlines()
    invalid = sum(not validate_line(line).valid for line in lines)
    duplicates = len(lines) - len(set(lines))
    assert 0.10 < (invalid + duplicates) / len(lines) < 0.30
    assert duplicates > 0
