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
        # DJANGO_ALLOW_ASYNC_UNSAFE: the browser tests set it for their own process.
        if k
        not in (
            "SECRET_KEY",
            "DEBUG",
            "JOBTRACKER_DEV",
            "DJANGO_SETTINGS_MODULE",
            "DJANGO_ALLOW_ASYNC_UNSAFE",
        )
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
    "client = Client()",
    "print(client.get('/api/docs', secure=True).status_code,"
    " client.get('/api/openapi.json', secure=True).status_code)",
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


PRODUCTION = {"SECRET_KEY": "k7Qx-" * 12, "ALLOWED_HOSTS": "jobs.example.com"}


def test_the_deploy_check_passes_with_production_settings(tmp_path: Path) -> None:
    checked = start(
        tmp_path, "manage.py", "check", "--deploy", "--fail-level", "DEBUG", **PRODUCTION
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The check can fail: served without HTTPS, the cookies are not secure.
    plain = start(
        tmp_path, "manage.py", "check", "--deploy", "--fail-level", "DEBUG", HTTPS="0", **PRODUCTION
    )
    assert plain.returncode != 0
    assert "SESSION_COOKIE_SECURE" in plain.stdout + plain.stderr


def test_production_answers_with_https_only_cookies_hsts_and_a_content_security_policy(
    tmp_path: Path,
) -> None:
    asked = start(
        tmp_path,
        "from django.test import Client",
        "client = Client(HTTP_HOST='jobs.example.com')",
        "plain = client.get('/login/')",
        "print(plain.status_code, plain['Location'])",
        "page = client.get('/login/', secure=True)",
        "print(page.status_code)",
        "print(page['Strict-Transport-Security'])",
        "print(page['Content-Security-Policy'])",
        "print(page.cookies['csrftoken']['secure'])",
        **PRODUCTION,
    )
    assert asked.returncode == 0, asked.stderr
    redirect, status, hsts, policy, secure_cookie = asked.stdout.splitlines()
    assert redirect == "301 https://jobs.example.com/login/"
    assert status == "200"
    assert hsts == "max-age=31536000; includeSubDomains; preload"
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert secure_cookie == "True"
