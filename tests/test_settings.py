"""Production settings: a start without a SECRET_KEY is stopped with a clear message, the
API docs follow a setting, and the demo account is for development only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start(tmp_path: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Load the settings as a production process would: no ./dev, no embedded servers;
    then run ``command`` (Python code, or manage.py and its arguments)."""
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
    argv = list(command) if command and command[0] == "manage.py" else ["-c", _code(*command)]
    return subprocess.run(
        [sys.executable, *argv],
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


def _code(*lines: str) -> str:
    return "\n".join(("import django", "django.setup()", *lines))


ASK_DOCS = (
    "from django.test import Client",
    "print(Client().get('/api/docs').status_code, Client().get('/api/openapi.json').status_code)",
)


def test_the_api_docs_are_off_in_production_unless_asked_for(tmp_path: Path) -> None:
    production = {"SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "testserver"}
    off = start(tmp_path, *ASK_DOCS, **production)
    assert off.stdout.split() == ["404", "404"], off.stderr
    on = start(tmp_path, *ASK_DOCS, API_DOCS="1", **production)
    assert on.stdout.split() == ["200", "200"], on.stderr


def test_the_demo_account_is_refused_outside_development(tmp_path: Path) -> None:
    refused = start(tmp_path, "manage.py", "ensure_demo", SECRET_KEY="x" * 50)
    assert refused.returncode != 0
    assert "for development (./dev run) only" in refused.stderr
