"""Debian's chromium as the browser tests and ``make bench-dashboard`` drive it (through Playwright).

``scripts/install-browser.sh`` (``make browser``) installs it with apt-get when it is missing; nothing
downloads a browser build from anywhere else. ``SP_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: Headless, and no background connections: this kind of machine's closed network refuses them.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """The chromium to launch; FileNotFoundError saying how to get one when there is none."""
    path = os.environ.get("SP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise FileNotFoundError("no chromium: `make browser` installs Debian's package (or set SP_CHROMIUM)")
    return path
