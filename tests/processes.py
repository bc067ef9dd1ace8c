"""The app's own processes for tests that need them as ./dev run starts them: daphne,
the live relay, RQ workers and upkeep, each its own process, on the test database,
this run's Redis database and the test's media folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from processing.jobs.queues import QUEUES
from tests.conftest import database_url

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "test-artifacts" / "logs"
ASGI_APP = "jobtracker.asgi:application"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveApp:
    """daphne from the start; the relay, workers and upkeep when the test says (so that
    it can watch a job from before its first stage). Logs go to test-artifacts/logs/<name>/."""

    def __init__(self, media_root: Path, name: str, **environment: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "MEDIA_ROOT": str(media_root),
            "PROGRESS_WRITE_INTERVAL": "0.05",  # small documents still report progress
            "PYTHONUNBUFFERED": "1",
            **environment,
        }
        self.logs = LOGS / name
        shutil.rmtree(self.logs, ignore_errors=True)  # this run's logs only
        self.logs.mkdir(parents=True, exist_ok=True)
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        """Run ``python *command`` in the checkout, in a session of its own (so that a
        signal to it reaches only it), its output in ``<name>.log``."""
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, *command],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def start_worker(self, name: str = "worker") -> subprocess.Popen[bytes]:
        """An RQ worker as the Procfile runs it, with RQ's scheduler."""
        return self.start(name, "manage.py", "rqworker", *QUEUES, "--with-scheduler")

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert time.monotonic() < deadline, f"daphne did not start; see {self.logs}"
            assert all(p.poll() is None for p in self.processes), f"see {self.logs}"
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM to each, then a second (RQ's cold shutdown ends a running work horse)."""
        for signal_number in ("terminate", "terminate"):
            for process in self.processes:
                if process.poll() is None:
                    getattr(process, signal_number)()
            time.sleep(0.2)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@contextmanager
def running_app(
    media_root: Path, name: str, *, relay: bool, **environment: str
) -> Iterator[LiveApp]:
    """The web server (daphne, as jobtracker.serve runs it), and the live relay if ``relay``,
    until the block ends."""
    live = LiveApp(media_root, name, **environment)
    live.start("web", "-m", "jobtracker.serve", "-b", "127.0.0.1", "-p", str(live.port), ASGI_APP)
    if relay:
        live.start("live", "manage.py", "live_relay")
    try:
        live.wait_until_serving()
        yield live
    finally:
        live.stop()
