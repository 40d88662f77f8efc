"""The sensor API through Flask's test client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sensor_pipeline.api import create_app
from sensor_pipeline.config import Settings
from sensor_pipeline.rules import validate_line
from sensor_pipeline.simulator import BEACHES


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


@pytest.mark.parametrize("query", ["count=0", "count=10001", "count=abc", "count=-1", "count=1.5"])
def test_bad_parameters_get_a_400_with_a_json_error(client: FlaskClient, query: str) -> None:
    response = client.get(f"/sensordata?{query}")
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "bad_parameter" and "count" in body["message"]


def test_unknown_paths_get_json_errors(client: FlaskClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


def test_stream_serves_lines_at_the_simulated_pace(client: FlaskClient) -> None:
    response = client.get("/sensordata/stream?limit=12")
    lines = response.get_data(as_text=True).splitlines()
    assert len(lines) == 12 and all(validate_line(line).valid for line in lines)


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
