"""Where the project keeps what it installs and builds (never committed)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """The project cache: ``$CONNFORMANCE_CACHE`` or ``<project>/.cache/connformance``."""
    env = os.environ.get("CONNFORMANCE_CACHE")
    path = Path(env) if env else PROJECT_ROOT / ".cache" / "connformance"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_report_dir() -> Path:
    return Path(os.environ.get("CONNFORMANCE_REPORT_DIR", PROJECT_ROOT / "report"))
