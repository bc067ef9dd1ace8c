"""The embedded PostgreSQL and Redis of a data folder, as one pair: start, share, stop.

When ``DATABASE_URL`` and ``REDIS_URL`` are not set, ``./dev run`` and
``./dev test`` start a real PostgreSQL and a real Redis under a data folder,
by default ``<checkout>/.data``::

    services.json    URLs, pids and leases of the running servers (read by settings)
    .services.lock   held while starting or stopping, so two launchers never race
    pg/              PGDATA and pg/server.log (see ``postgres``)
    redis/           redis.conf, redis.pid, redis.log, dump.rdb (see ``redis``)
    run/             unix sockets, or elsewhere (see ``host``)

The servers outlive the process that started them, so ``python manage.py …`` in
another shell, a second launcher or a test run reuses them. A launcher takes a
*lease* (``ensure_running(..., lease=True)``) and gives it back with
``release``: servers that a launcher started are stopped when the last lease is
released; servers started otherwise (``./dev services start``) run until
``stop``.

``read_state`` is called by settings at import time: it reads the state file
and /proc, and this module and those it imports need nothing beyond the
standard library to load.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from jobtracker.dev import postgres, redis
from jobtracker.dev.state import (
    STATE_FILE,
    alive,
    live_leases,
    load_state,
    locked,
    me,
    prepare_data_dir,
    write_state,
)


def read_state(data_dir: Path | str) -> dict[str, str] | None:
    """Return the URLs of the embedded servers running for ``data_dir``, or None.

    ``{"DATABASE_URL": ..., "REDIS_URL": ...}`` only when the state file exists
    and both recorded server processes are alive (same pid *and* same start
    time, so a recycled pid does not count).
    """
    state = load_state(Path(data_dir))
    if not state:
        return None
    if not (alive(state.get("postgres")) and alive(state.get("redis"))):
        return None
    urls = {key: state.get(key) for key in ("DATABASE_URL", "REDIS_URL")}
    if not all(isinstance(value, str) and value for value in urls.values()):
        return None
    return urls  # type: ignore[return-value]


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
    data_dir = prepare_data_dir(data_dir)
    with locked(data_dir):
        state = load_state(data_dir) or {}
        was_running = alive(state.get("postgres")) or alive(state.get("redis"))
        started = False

        pg = postgres.running(data_dir)
        if pg is not None:
            try:
                postgres.ensure_database(pg)
            except Exception:  # noqa: BLE001 - unhealthy: restart it
                postgres.stop(data_dir)
                pg = None
        if pg is None:
            pg = postgres.start(data_dir)
            postgres.ensure_database(pg)
            started = True

        redis_server = state.get("redis")
        if not (alive(redis_server) and redis.ping(redis_server)):
            redis.stop(data_dir, redis_server)
            redis_server = redis.start(data_dir)
            started = True

        # Servers this call started from nothing follow the caller's wish;
        # otherwise whoever started them decided.
        auto_stop = lease if started and not was_running else bool(state.get("auto_stop"))
        leases = live_leases(state)
        if lease:
            mine = me()
            leases = [x for x in leases if x["pid"] != mine["pid"]] + [mine]
        new_state = {
            "DATABASE_URL": postgres.url(pg),
            "REDIS_URL": redis.url(redis_server),
            "postgres": pg,
            "redis": redis_server,
            "auto_stop": auto_stop,
            "leases": leases,
            "data_dir": str(data_dir),
        }
        write_state(data_dir, new_state)
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
    with locked(data_dir):
        state = load_state(data_dir)
        if state is None:
            return False
        mine = os.getpid()
        state["leases"] = [x for x in live_leases(state) if x["pid"] != mine]
        if not state["leases"] and state.get("auto_stop"):
            _stop_all(data_dir, state)
            return True
        write_state(data_dir, state)
        return False


def keep_running(data_dir: Path | str) -> None:
    """Make the running servers outlive their launchers (until ``stop``)."""
    data_dir = Path(data_dir).resolve()
    with locked(data_dir):
        state = load_state(data_dir)
        if state is not None:
            state["auto_stop"] = False
            write_state(data_dir, state)


def stop(data_dir: Path | str) -> bool:
    """Stop the embedded servers of ``data_dir``. Returns True if any was running."""
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        return False
    with locked(data_dir):
        return _stop_all(data_dir, load_state(data_dir) or {})


def status(data_dir: Path | str) -> dict:
    """What is running for ``data_dir``, for humans (``./dev services status``)."""
    data_dir = Path(data_dir).resolve()
    state = load_state(data_dir) or {}
    pg = postgres.running(data_dir) if (data_dir / "pg").is_dir() else None
    redis_server = state.get("redis") if alive(state.get("redis")) else None
    return {
        "data_dir": str(data_dir),
        "postgres": pg,
        "redis": redis_server,
        "DATABASE_URL": postgres.url(pg) if pg else None,
        "REDIS_URL": redis.url(redis_server) if redis_server else None,
        "auto_stop": bool(state.get("auto_stop", False)),
        "leases": live_leases(state),
        "postgres_log": str(data_dir / "pg" / "server.log"),
        "redis_log": str(data_dir / "redis" / "redis.log"),
    }


def _stop_all(data_dir: Path, state: dict) -> bool:
    was = postgres.running(data_dir) is not None or alive(state.get("redis"))
    redis.stop(data_dir, state.get("redis"))
    postgres.stop(data_dir)
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()
    return was
