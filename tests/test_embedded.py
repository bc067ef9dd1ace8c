"""The embedded PostgreSQL and Redis of ``jobtracker.dev.services``: real servers, real
connections, on a data folder of their own (never the one the suite runs on)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dj_database_url
import psycopg
import pytest
import redis

from jobtracker.dev import host, services, state

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh data folder, stopped and removed afterwards.

    Not pytest's tmp_path: that lives under a 0700 directory, and as root the
    server runs as another user who must be able to reach its data folder.
    """
    path = Path(tempfile.mkdtemp(prefix="jt-embedded-", dir="/tmp"))
    try:
        yield path
    finally:
        services.stop(path)
        shutil.rmtree(path, ignore_errors=True)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_state(data_dir: Path, postgres: dict, redis_record: dict) -> None:
    (data_dir / "services.json").write_text(
        json.dumps(
            {
                "DATABASE_URL": "postgres://postgres@%2Fnowhere/jobtracker",
                "REDIS_URL": "unix:///nowhere/redis.sock?db=0",
                "postgres": postgres,
                "redis": redis_record,
            }
        )
    )


def test_read_state_answers_only_for_live_servers(tmp_path: Path) -> None:
    assert services.read_state(tmp_path) is None  # no state file
    (tmp_path / "services.json").write_text("{not json")
    assert services.read_state(tmp_path) is None

    dead = {"pid": _dead_pid(), "start": None}
    _write_state(tmp_path, dead, dead)
    assert services.read_state(tmp_path) is None

    # A live pid whose start time differs is a recycled pid, not our server.
    me = state.me()
    _write_state(tmp_path, me, {**me, "start": (me["start"] or 0) + 12345})
    assert services.read_state(tmp_path) is None

    _write_state(tmp_path, me, me)
    assert services.read_state(tmp_path) == {
        "DATABASE_URL": "postgres://postgres@%2Fnowhere/jobtracker",
        "REDIS_URL": "unix:///nowhere/redis.sock?db=0",
    }


def test_long_or_capitalised_paths_get_a_short_socket_dir(tmp_path: Path) -> None:
    assert host.socket_dir_usable(Path("/tmp/jt/run"))
    assert not host.socket_dir_usable(Path("/tmp/" + "x" * 90 + "/run"))
    # dj-database-url lower-cases the host part of the URL, i.e. the socket dir.
    assert not host.socket_dir_usable(Path("/home/Ann/jobtracker/.data/run"))

    long_dir = tmp_path / ("x" * 90)
    chosen = host.socket_dir(long_dir, os.geteuid())
    try:
        assert chosen is not None and chosen.parent == Path("/tmp")
        assert chosen.name.startswith("jobtracker-")
        assert host.socket_dir(long_dir, os.geteuid()) == chosen  # stable
    finally:
        if chosen is not None:
            chosen.rmdir()


def _ensure_in_subprocess(data_dir: Path) -> subprocess.Popen:
    code = (
        "import json, sys\n"
        "from jobtracker.dev import services\n"
        "print(json.dumps(services.ensure_running(sys.argv[1])))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(data_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )


def _pids(data_dir: Path) -> tuple[int, int]:
    info = services.status(data_dir)
    return info["postgres"]["pid"], info["redis"]["pid"]


def test_real_servers_start_once_are_reused_and_stop(data_dir: Path) -> None:
    # Two launchers racing on a fresh folder: one starts, the other reuses.
    racers = [_ensure_in_subprocess(data_dir) for _ in range(2)]
    results = [json.loads(proc.communicate(timeout=60)[0]) for proc in racers]
    assert all(proc.returncode == 0 for proc in racers)
    assert sorted(r["started"] for r in results) == [False, True]
    assert results[0]["DATABASE_URL"] == results[1]["DATABASE_URL"]
    urls = services.read_state(data_dir)
    assert urls == {k: results[0][k] for k in ("DATABASE_URL", "REDIS_URL")}

    db = dj_database_url.parse(urls["DATABASE_URL"])
    conninfo = {"host": db["HOST"], "port": db["PORT"] or 5432, "user": db["USER"]}
    with psycopg.connect(**conninfo, dbname=db["NAME"], autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
        # pytest-django needs a superuser to create test databases.
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    client = redis.Redis.from_url(urls["REDIS_URL"])
    assert client.ping()
    client.set("kept", "still here")
    client.close()

    # Idempotent: the same servers, nothing started.
    pids = _pids(data_dir)
    again = services.ensure_running(data_dir)
    assert again["started"] is False and _pids(data_dir) == pids

    assert services.stop(data_dir) is True
    assert services.read_state(data_dir) is None
    assert all(state.proc_start(pid) is None for pid in pids)
    assert services.stop(data_dir) is False

    # A leaseholder that starts them stops them when it releases; the
    # initdb'd cluster and the Redis snapshot are reused, so it is quick.
    began = time.monotonic()
    restarted = services.ensure_running(data_dir, lease=True)
    assert restarted["started"] is True
    assert time.monotonic() - began < 10
    with psycopg.connect(**conninfo, dbname=db["NAME"]) as conn:
        assert conn.execute("SELECT note FROM kept").fetchone() == ("still here",)
    client = redis.Redis.from_url(restarted["REDIS_URL"])
    assert client.get("kept") == b"still here"
    client.close()
    new_pids = _pids(data_dir)
    assert services.release(data_dir) is True
    assert services.read_state(data_dir) is None
    assert all(state.proc_start(pid) is None for pid in new_pids)
