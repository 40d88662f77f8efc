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
    origin = settings.dashboard_allow_origin
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
        "--allow-websocket-origin",
        origin if origin != "*" else "*",
        "--num-procs",
        "1",
    ]
    os.execv(sys.executable, command)
