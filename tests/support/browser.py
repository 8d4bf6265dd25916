"""Debian's Chromium for the browser tests: where it is, how it starts, and why it cannot run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in a container; the page is our own, on loopback
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: install Debian's chromium (`make browser-deps`)"
    if importlib.util.find_spec("playwright") is None:
        return "Python Playwright is not installed (pip install -e '.[dev]')"
    return None
