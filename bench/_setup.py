"""Shared set-up for the benchmarks: settings, a fresh database, a clean Redis db, results.

Import this module before anything from Django or the project. It points
``DATABASE_URL`` at a dedicated database ``jobtracker_bench`` on the server of
``DATABASE_URL`` (or of the embedded PostgreSQL that ``./dev services start``
runs), selects a dedicated Redis database number (``BENCH_REDIS_DB``, default 13),
and gives uploads their own media folder. Child processes (workers, daphne)
inherit all of it through the environment (:func:`child_env`).

``prepare()`` drops and recreates the database, migrates it, flushes the Redis
database and prints the versions line.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
BENCH_DB = "jobtracker_bench"


def _bench_redis_db() -> int:
    """BENCH_REDIS_DB, else a REDIS_DB the caller set (>= 0), else 13."""
    for name in ("BENCH_REDIS_DB", "REDIS_DB"):
        value = os.environ.get(name, "")
        if value.strip() and int(value) >= 0:
            return int(value)
    return 13


BENCH_REDIS_DB = _bench_redis_db()
os.environ["BENCH_REDIS_DB"] = str(BENCH_REDIS_DB)

for _path in (str(ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)


def _server_urls() -> tuple[str, str]:
    """DATABASE_URL and REDIS_URL from the environment, else from the embedded services."""
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not (database_url and redis_url):
        from jobtracker.dev import services

        data_dir = Path(os.environ.get("JOBTRACKER_DATA_DIR", ROOT / ".data"))
        state = services.read_state(data_dir) or {}
        database_url = database_url or state.get("DATABASE_URL", "")
        redis_url = redis_url or state.get("REDIS_URL", "")
    if not (database_url and redis_url):
        sys.exit(
            "bench: no PostgreSQL/Redis. Run `./dev services start`, or set DATABASE_URL and "
            "REDIS_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres and "
            "redis://127.0.0.1:6379/0)."
        )
    return database_url, redis_url


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _with_redis_db(url: str, db: int) -> str:
    """``url`` on Redis database ``db``; a unix:// URL keeps its ``//`` (redis-py needs it).

    The benchmarks hand the app a finished URL and REDIS_DB=-1, so they do not depend on
    how a given version of settings combines the two (an earlier one lost the ``//``).
    """
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"] + [("db", str(db))]
        return f"unix://{parts.netloc}{parts.path}?{urlencode(query)}"
    return urlunsplit(parts._replace(path=f"/{db}"))


_SERVER_DATABASE_URL, _REDIS_URL = _server_urls()
DATABASE_URL = _with_database(_SERVER_DATABASE_URL, BENCH_DB)
MEDIA_ROOT = Path(os.environ.get("JOBTRACKER_DATA_DIR", ROOT / ".data")) / "bench-media"

os.environ["DATABASE_URL"] = DATABASE_URL
os.environ["REDIS_URL"] = _with_redis_db(_REDIS_URL, BENCH_REDIS_DB)
os.environ["REDIS_DB"] = "-1"
os.environ["MEDIA_ROOT"] = str(MEDIA_ROOT)
os.environ["DJANGO_SETTINGS_MODULE"] = "jobtracker.settings"
os.environ.pop("PYTEST_VERSION", None)
# The app logs at INFO by default; the benchmarks keep the console for their tables.
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), str(BENCH_DIR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for worker and server processes: same database, Redis db, media."""
    return {**os.environ, **extra}


def django_setup() -> None:
    """``django.setup()`` once, with this module's environment."""
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()


def _maintenance_connection() -> Any:
    """An autocommit psycopg connection to the server's ``postgres`` database."""
    import psycopg
    from django.conf import settings

    params = settings.DATABASES["default"]
    kwargs = {
        "dbname": "postgres",
        "user": params.get("USER") or None,
        "password": params.get("PASSWORD") or None,
        "host": params.get("HOST") or None,
        "port": params.get("PORT") or None,
    }
    return psycopg.connect(**{k: v for k, v in kwargs.items() if v}, autocommit=True)


def reset_database() -> None:
    """Drop and recreate ``jobtracker_bench``, then migrate it (quietly)."""
    from django.core.management import call_command
    from django.db import connections

    connections.close_all()
    with _maintenance_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    call_command("migrate", verbosity=0, interactive=False)


def forget_jobs() -> None:
    """Remove every job of the benchmarks' database with its stage runs and audit events.

    ``TRUNCATE``, not ``DELETE``: the audit trail refuses deletion (an audit event
    protects its job), and this database is the benchmarks' own throwaway one.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE processing_processingjob, processing_stagerun, processing_auditevent"
        )


def redis() -> Any:
    """A client on the benchmarks' Redis database (the one the app's queues use)."""
    import redis as redis_py
    from django.conf import settings

    return redis_py.Redis.from_url(settings.REDIS_URL)


def flush_redis() -> None:
    """Empty the benchmarks' Redis database (only that one)."""
    redis().flushdb()


def reset_media() -> None:
    shutil.rmtree(MEDIA_ROOT, ignore_errors=True)
    MEDIA_ROOT.mkdir(parents=True, exist_ok=True)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def versions() -> dict[str, str]:
    """Machine, Python, packages and servers, for the results."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
        cursor.execute("SHOW fsync")
        fsync = cursor.fetchone()[0]
        cursor.execute("SHOW synchronous_commit")
        sync_commit = cursor.fetchone()[0]
    info = redis().info("server")
    return {
        "machine": (
            f"{os.cpu_count()} vCPU {_cpu_model()}, {platform.system()} {platform.release()}"
        ),
        "python": platform.python_version(),
        "django": _version("Django"),
        "rq": _version("rq"),
        "django-rq": _version("django-rq"),
        "redis-py": _version("redis"),
        "psycopg": _version("psycopg"),
        "pypdfium2": _version("pypdfium2"),
        "fpdf2": _version("fpdf2"),
        "daphne": _version("daphne"),
        "postgresql": f"{pg_version} (fsync={fsync}, synchronous_commit={sync_commit})",
        "redis": f"{info.get('redis_version')} (db {BENCH_REDIS_DB})",
        "database": f"{BENCH_DB} via {_redacted(_SERVER_DATABASE_URL)}",
    }


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts._replace(path=""))


def versions_line(info: dict[str, str]) -> str:
    return (
        f"{info['machine']} | Python {info['python']} | Django {info['django']} | "
        f"rq {info['rq']} | django-rq {info['django-rq']} | redis-py {info['redis-py']} | "
        f"psycopg {info['psycopg']} | pypdfium2 {info['pypdfium2']} | daphne {info['daphne']} | "
        f"PostgreSQL {info['postgresql']} | Redis {info['redis']}"
    )


def prepare(*, database: bool = True) -> dict[str, str]:
    """Fresh database, empty Redis db and media folder; prints and returns the versions."""
    django_setup()
    if database:
        reset_database()
    flush_redis()
    reset_media()
    info = versions()
    info["load_1min_at_start"] = str(load())
    print(versions_line(info))
    print(
        f"database {info['database']}, Redis db {BENCH_REDIS_DB}, media {MEDIA_ROOT}; "
        f"load average {info['load_1min_at_start']} (2 vCPU: others' work skews figures)"
    )
    print()
    return info


# --- results ---------------------------------------------------------------------------


def cpu_seconds(pid: int | None = None) -> float | None:
    """CPU time a process has run (ns precision, from /proc/<pid>/schedstat), or None."""
    try:
        return int(Path(f"/proc/{pid or 'self'}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def backend_pid() -> int | None:
    """This process's PostgreSQL backend, when it runs on this machine (else None)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        if "postgres" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return pid
    except OSError:
        pass
    return None


def load() -> float:
    """The 1-minute load average: the machine is shared, so it goes into the results."""
    return round(os.getloadavg()[0], 2)


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {
        "benchmark": name,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_1min_at_end": load(),
        **data,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain text table, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(
            value.ljust(width) if i == 0 else value.rjust(width)
            for i, (value, width) in enumerate(zip(row, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return str(value)


# --- fixtures --------------------------------------------------------------------------

_WORDS_TEXT = (
    "agreement party clause witness exhibit deposition counsel motion hearing evidence "
    "plaintiff defendant court order judgment appeal statute damages contract breach "
    "liability notice schedule amendment record filing discovery settlement testimony "
    "the of and to in that for with on by as at from under within pursuant thereof"
)
WORDS = _WORDS_TEXT.split()


def page_text(page: int, words: int = 300) -> str:
    """Deterministic prose of ``words`` words for page ``page``."""
    n = len(WORDS)
    out = [WORDS[(page * 7 + i * (i % 5 + 3)) % n] for i in range(words)]
    return f"Page {page}. " + " ".join(out) + "."


def make_text_pdf(pages: int, words: int = 300, text: Any = None) -> bytes:
    """A text PDF of ``pages`` pages, ``text(number, words)`` on each (default
    :func:`page_text`; fpdf2, core font)."""
    from fpdf import FPDF

    text = text or page_text
    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    for number in range(1, pages + 1):
        pdf.add_page()
        pdf.multi_cell(0, 5, text(number, words))
    return bytes(pdf.output())


class QueryCounter:
    """A ``connection.execute_wrapper`` that counts the SQL statements it sees."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):  # noqa: ANN001
        self.count += 1
        return execute(sql, params, many, context)


def make_owner(username: str = "bench") -> tuple[Any, Any]:
    """A user and a matter they own."""
    from django.contrib.auth import get_user_model

    from processing.models import Matter, Membership, Role

    user = get_user_model().objects.create_user(username=username, password="bench-password-1")
    matter = Matter.objects.create(name=f"Bench matter ({username})", created_by=user)
    Membership.objects.create(matter=matter, user=user, role=Role.OWNER)
    return user, matter


# --- servers the benchmarks start -------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_up(port: int, path: str = "/login/") -> bool:
    """True once the server on ``port`` answers ``GET path`` (any status)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        conn.getresponse().read()
        conn.close()
        return True
    except OSError:
        return False
