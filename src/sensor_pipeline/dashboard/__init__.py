"""The live dashboard: a Bokeh directory app (``main.py``) fed from CleanSensorData.

Run: ``sensor-pipeline dashboard`` (wraps ``bokeh serve``), then open http://127.0.0.1:5006/dashboard.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sensor_pipeline.config import Settings

APP_DIR = Path(__file__).resolve().parent


def serve(settings: Settings, address: str = "127.0.0.1") -> None:
    """Replace this process with ``bokeh serve`` of this directory app (signals go straight to it)."""
    # One --allow-websocket-origin per host[:port] (comma-separated in SP_DASHBOARD_ALLOW_ORIGIN):
    # Bokeh accepts the websocket only from pages served at one of them.
    origins = [o.strip() for o in settings.dashboard_allow_origin.split(",") if o.strip()] or ["*"]
    command = [
        sys.executable,
        "-m",
        "bokeh",
        "serve",
        str(APP_DIR),
        "--address",
        address,
        "--port",
        str(settings.dashboard_port),
        *(flag for origin in origins for flag in ("--allow-websocket-origin", origin)),
        "--num-procs",
        "1",
    ]
    os.execv(sys.executable, command)
