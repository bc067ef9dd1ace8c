"""Production settings: a start without a SECRET_KEY is stopped with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Load the settings as a production process would: no ./dev, no embedded servers."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SECRET_KEY", "DEBUG", "JOBTRACKER_DEV", "DJANGO_SETTINGS_MODULE")
    }
    base.update(
        JOBTRACKER_DATA_DIR=str(tmp_path / "no-data"),
        DATABASE_URL="postgres://app@db.example/app",
        REDIS_URL="redis://cache.example:6379/0",
        DJANGO_SETTINGS_MODULE="jobtracker.settings",
        **env,
    )
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_without_a_secret_key_does_not_start(tmp_path: Path) -> None:
    refused = start(tmp_path)
    assert refused.returncode != 0
    assert "SECRET_KEY is not set" in refused.stderr
    assert start(tmp_path, SECRET_KEY="x" * 50).returncode == 0


def test_development_starts_without_a_secret_key(tmp_path: Path) -> None:
    assert start(tmp_path, DEBUG="1").returncode == 0
    assert start(tmp_path, JOBTRACKER_DEV="1").returncode == 0
