"""What runs for a data folder: ``services.json``, its lock, the leases, and liveness.

The state file records the URLs and processes of the embedded servers and the
launchers holding a *lease* on them. A recorded process counts as running only
while the same pid has the same start time, so a recycled pid never passes for
one of our servers.

Standard library only, no subprocess: settings read the state at import time
(through ``services.read_state``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeGuard

STATE_FILE = "services.json"
LOCK_FILE = ".services.lock"
LOCK_TIMEOUT = 120.0
START_TIMEOUT = 60.0  # for a server to start (also: initdb, pg_ctl)
STOP_TIMEOUT = 30.0  # for a server to stop before it is killed


class EmbeddedError(RuntimeError):
    """The embedded services could not be started or stopped."""


# --------------------------------------------------------------------------
# The data folder and its state file
# --------------------------------------------------------------------------


def prepare_data_dir(data_dir: Path | str) -> Path:
    """The absolute data folder, created if missing."""
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


def load_state(data_dir: Path) -> dict | None:
    """The contents of ``services.json``, or None when it is missing or unreadable."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(data_dir: Path, state: dict) -> None:
    """Replace ``services.json`` atomically (readers never see half a file)."""
    tmp = data_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, data_dir / STATE_FILE)


@contextlib.contextmanager
def locked(data_dir: Path) -> Iterator[None]:
    """Hold the data folder's lock, so two launchers never start or stop at once."""
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


# --------------------------------------------------------------------------
# Leases
# --------------------------------------------------------------------------


def me() -> dict:
    """This process as a lease (or any process record): pid and start time."""
    return record(os.getpid())


def live_leases(state: dict) -> list[dict]:
    """The leases in ``state`` whose holders are still alive."""
    leases = state.get("leases")
    if not isinstance(leases, list):
        return []
    return [x for x in leases if alive(x)]


# --------------------------------------------------------------------------
# Process liveness
# --------------------------------------------------------------------------


def proc_start(pid: int) -> int | None:
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


def record(pid: int) -> dict:
    """What the state file keeps of a process: its pid and start time."""
    return {"pid": pid, "start": proc_start(pid)}


def alive(process: object) -> TypeGuard[dict]:
    """Is this recorded process (``{"pid", "start"}``) still the same live process?"""
    if not isinstance(process, dict):
        return False
    pid, start = process.get("pid"), process.get("start")
    if not isinstance(pid, int):
        return False
    actual = proc_start(pid)
    if actual is None:
        return False
    return start is None or actual == 0 or actual == start


def process_is(pid: int, comm: str, cwd: Path) -> bool:
    """Is ``pid`` a live process named ``comm`` running in ``cwd``? (Servers chdir
    to their data directory, which tells ours from anyone else's.)"""
    if proc_start(pid) is None:
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


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, or None."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def terminate(pid: int, sig: int, comm: str, cwd: Path) -> None:
    """Send ``sig`` to our server ``pid`` and wait for it to go; escalate to SIGKILL."""
    if not process_is(pid, comm, cwd):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + STOP_TIMEOUT
    while proc_start(pid) is not None:
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.02)
