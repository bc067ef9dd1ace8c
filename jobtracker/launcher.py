"""The development and test launcher: ``python -m jobtracker.launcher run|test|services``.

``./dev`` prepares the virtualenv and node_modules, then execs this module
(``./dev lock``, which regenerates requirements.lock, never reaches it).

* ``run``      migrate, make sure the demo account exists, then run daphne and
               ``WORKERS`` RQ workers as child processes with prefixed logs.
* ``test``     make sure Debian's chromium and tesseract-ocr are installed, then
               ``python -m pytest``. (``run`` needs tesseract-ocr too, for the ocr stage.)
* ``services`` ``start|stop|status`` of the embedded PostgreSQL and Redis.

When ``DATABASE_URL`` or ``REDIS_URL`` is unset, the embedded servers of
``jobtracker.embedded`` are started (or reused) under the data folder
(``JOBTRACKER_DATA_DIR``, default ``<checkout>/.data``) and their URLs exported
to the children. Servers that a launcher started are stopped when the last
launcher using them exits.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from jobtracker import embedded

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
TESSERACT = "/usr/bin/tesseract"
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password-123"
STOP_GRACE = float(os.environ.get("JOBTRACKER_STOP_GRACE", "20"))

USAGE = """\
usage: ./dev run                       migrate, then serve (daphne) with RQ workers
       ./dev test [pytest args]        run the test suite
       ./dev services start|stop|status   the embedded PostgreSQL and Redis
       ./dev lock [--upgrade-package NAME]   regenerate requirements.lock (all, or one package)

environment: PORT (8000), HOST (127.0.0.1), WORKERS (2), DATABASE_URL, REDIS_URL,
             JOBTRACKER_DATA_DIR (<checkout>/.data), JOBTRACKER_CHROMIUM (/usr/bin/chromium)
"""


class LauncherError(Exception):
    """A problem to report in one clear line, exiting non-zero."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while not supervising: unwind and clean up."""


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def data_dir() -> Path:
    return Path(os.environ.get("JOBTRACKER_DATA_DIR") or ROOT / ".data").expanduser().resolve()


# --------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------


@contextlib.contextmanager
def services() -> Iterator[None]:
    """Export DATABASE_URL and REDIS_URL for the children, starting the embedded
    servers when either is unset; give the embedded servers back on the way out."""
    missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
    if not missing:
        say("Using DATABASE_URL and REDIS_URL from the environment.")
        yield
        return
    folder = data_dir()
    started_at = time.monotonic()
    pending: list[int] = []
    try:
        # A Ctrl-C in the middle would leave a half-written state: act on it after.
        with _deferred_signals(pending):
            urls = embedded.ensure_running(folder, lease=True)
    except embedded.EmbeddedError as exc:
        raise LauncherError(f"Could not start the embedded services: {exc}") from exc
    try:
        if pending:
            os.kill(os.getpid(), pending[0])  # now, with the lease given back below
        took = time.monotonic() - started_at
        verb = "Started" if urls["started"] else "Reusing"
        say(f"{verb} embedded PostgreSQL and Redis (data in {folder}) [{took:.1f} s]")
        for name in missing:
            os.environ[name] = urls[name]
            say(f"  {name}={urls[name]}")
        yield
    finally:
        with _deferred_signals([]):
            if embedded.release(folder):
                say("Stopped the embedded PostgreSQL and Redis.")


@contextlib.contextmanager
def _deferred_signals(pending: list[int]) -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP (collected in ``pending``) until the block ends."""
    names = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {sig: signal.signal(sig, lambda s, _f: pending.append(s)) for sig in names}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


# --------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn that makes a child get SIGTERM if the launcher dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return preexec


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "jobtracker.settings")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def manage(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=child_env(),
        check=False,
        capture_output=capture,
        text=True,
    )


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    buffer: bytes = b""
    returncode: int | None = None
    open_pipe: bool = field(default=False)


class Supervisor:
    """Runs children with prefixed output; one signal stops them all.

    A child that exits on its own (not asked to) is a failure: everything else
    is stopped and the launcher exits non-zero. Nothing is restarted, so a
    crash is seen rather than hidden behind a restart loop.
    """

    def __init__(self, children: list[Child], on_tick: Callable[[], None] | None = None):
        self.children = children
        self.on_tick = on_tick
        self.selector = selectors.DefaultSelector()
        self.width = max(len(c.name) for c in children)
        self.stop_reason: str | None = None
        self.failed = False
        self.signals: list[int] = []
        self.stop_started = 0.0
        self.escalation = 0

    def _print(self, child: Child, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        sys.stdout.write(f"{child.name:<{self.width}} | {text}\n")
        sys.stdout.flush()

    def start(self) -> None:
        preexec = _parent_death_signal()
        env = child_env()
        for child in self.children:
            child.proc = subprocess.Popen(
                child.argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,  # Ctrl-C reaches the launcher only; it forwards SIGTERM once
                preexec_fn=preexec,
            )
            os.set_blocking(child.proc.stdout.fileno(), False)
            self.selector.register(child.proc.stdout, selectors.EVENT_READ, child)
            child.open_pipe = True

    def _read(self, child: Child) -> None:
        assert child.proc is not None and child.proc.stdout is not None
        try:
            chunk = os.read(child.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        if not chunk:
            self._close(child)
            return
        child.buffer += chunk
        *lines, child.buffer = child.buffer.split(b"\n")
        for line in lines:
            self._print(child, line)

    def _close(self, child: Child) -> None:
        if child.buffer:
            self._print(child, child.buffer)
            child.buffer = b""
        if child.open_pipe:
            self.selector.unregister(child.proc.stdout)
            child.proc.stdout.close()
            child.open_pipe = False

    def _signal_all(self, sig: int) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, sig)

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_started = time.monotonic()
            say(f"{reason}: stopping {', '.join(c.name for c in self.children)} ...")
            self._signal_all(signal.SIGTERM)

    def _escalate(self) -> None:
        """Second step: SIGTERM again (RQ's cold shutdown); third: SIGKILL."""
        self.escalation += 1
        self.stop_started = time.monotonic()
        if self.escalation == 1:
            say("Still stopping: asking again (RQ cold shutdown); once more to kill.")
            self._signal_all(signal.SIGTERM)
        else:
            say("Killing what is left.")
            self._signal_all(signal.SIGKILL)

    def run(self) -> int:
        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            handlers[sig] = signal.signal(sig, lambda s, _f: self.signals.append(s))
        try:
            self.start()
            return self._loop()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self._signal_all(signal.SIGKILL)  # only reached with live children on errors

    def _loop(self) -> int:
        exited_at: float | None = None
        while True:
            for key, _events in self.selector.select(timeout=0.2):
                self._read(key.data)
            while self.signals:
                sig = self.signals.pop(0)
                if self.stop_reason is None:
                    self.request_stop(f"Got {signal.Signals(sig).name}")
                else:
                    self._escalate()
            for child in self.children:
                if child.returncode is None and child.proc.poll() is not None:
                    child.returncode = child.proc.returncode
                    if self.stop_reason is None:
                        self.failed = True
                        self.request_stop(
                            f"{child.name} exited unexpectedly (code {child.returncode})"
                        )
            if self.stop_reason is not None and time.monotonic() - self.stop_started > STOP_GRACE:
                self._escalate()
            if all(c.returncode is not None for c in self.children):
                # Drain what is left in the pipes (a grandchild may hold one
                # open, so do not wait for EOF forever).
                exited_at = exited_at or time.monotonic()
                if not any(c.open_pipe for c in self.children) or time.monotonic() - exited_at > 1:
                    for child in self.children:
                        self._close(child)
                    break
            elif self.stop_reason is None and self.on_tick is not None:
                self.on_tick()
        for child in self.children:
            say(f"{child.name} exited with code {child.returncode}")
        return 1 if self.failed else 0


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LauncherError(
                    f"Port {port} on {host} is already in use; set PORT to another one "
                    f"(PORT=8001 ./dev run)."
                ) from None
            raise LauncherError(f"Cannot listen on {host}:{port}: {exc}") from None


def _listening(host: str, port: int) -> bool:
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=0.2):
            return True
    except OSError:
        return False


def _ensure_demo() -> bool:
    """Create the demo account if missing; False when the command does not exist yet."""
    result = manage("ensure_demo", capture=True)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 and "Unknown command" in output:
        say("WARNING: no `ensure_demo` management command yet; skipping the demo account.")
        return False
    for line in output.splitlines():
        say(f"  {line}")
    if result.returncode != 0:
        raise LauncherError(f"manage.py ensure_demo failed (code {result.returncode}).")
    return True


def cmd_run(args: list[str]) -> int:
    if args:
        raise LauncherError(
            f"./dev run takes no arguments (got {' '.join(args)}); see ./dev --help"
        )
    host = os.environ.get("HOST", "127.0.0.1")
    try:
        port = int(os.environ.get("PORT", "8000"))
        workers = int(os.environ.get("WORKERS", "2"))
    except ValueError as exc:
        raise LauncherError(f"PORT and WORKERS must be integers: {exc}") from None
    _check_port_free(host, port)
    _ensure_tesseract()
    with services():
        say("Applying migrations: manage.py migrate --noinput")
        if manage("migrate", "--noinput").returncode != 0:
            raise LauncherError("manage.py migrate failed; see above.")
        demo = (
            f"{DEMO_USERNAME} / {DEMO_PASSWORD}" if _ensure_demo() else "none (no ensure_demo yet)"
        )
        children = [
            Child(
                "web",
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    host,
                    "-p",
                    str(port),
                    "jobtracker.asgi:application",
                ],
            )
        ]
        children += [
            Child(
                f"worker-{i}",
                [
                    sys.executable,
                    "manage.py",
                    "rqworker",
                    "high",
                    "default",
                    "low",
                    "--with-scheduler",
                ],
            )
            for i in range(1, workers + 1)
        ]
        shown = host if host not in ("0.0.0.0", "::", "") else "localhost"
        if ":" in shown:
            shown = f"[{shown}]"
        banner_done = False

        def banner() -> None:
            nonlocal banner_done
            if banner_done or not _listening(host, port):
                return
            banner_done = True
            for line in (
                "",
                f"Jobtracker is running at http://{shown}:{port}/",
                f"  demo login:  {demo}",
                f"  API token:   .venv/bin/python manage.py create_api_token {DEMO_USERNAME}",
                "  admin user:  .venv/bin/python manage.py createsuperuser",
                f"  workers:     {workers} (RQ queues high, default, low)",
                "  Ctrl-C stops everything.",
                "",
            ):
                say(line)

        return Supervisor(children, on_tick=banner).run()


def _apt_install(package: str, path: str, why: str) -> None:
    """Install Debian's ``package`` (which provides ``path``) with apt-get, or stop saying how."""
    how = (
        f"install the Debian package `{package}` as root (apt-get install {package}), "
        "then run again"
    )
    if os.geteuid() != 0:
        raise LauncherError(f"{why} {path}, which is missing: {how}.")
    if shutil.which("apt-get") is None:
        raise LauncherError(f"{why} {path}, and there is no apt-get here: {how}.")
    say(f"{why} {path}: installing Debian's `{package}` package ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        say("apt-get install failed; refreshing the package lists and trying again ...")
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
        subprocess.run(install, env=env, check=False)
    if not os.access(path, os.X_OK):
        raise LauncherError(f"Could not install the Debian package `{package}` ({path}); {how}.")


def _ensure_chromium() -> None:
    configured = os.environ.get("JOBTRACKER_CHROMIUM")
    path = configured or CHROMIUM
    if os.access(path, os.X_OK):
        os.environ["JOBTRACKER_CHROMIUM"] = path
        return
    if configured and configured != CHROMIUM:
        raise LauncherError(f"JOBTRACKER_CHROMIUM={configured} is not an executable file.")
    _apt_install("chromium", CHROMIUM, "Browser tests need")
    os.environ["JOBTRACKER_CHROMIUM"] = CHROMIUM


def _ensure_tesseract() -> None:
    """The ocr stage reads scanned pages with Tesseract (Debian's `tesseract-ocr`)."""
    found = shutil.which(os.environ.get("TESSERACT_CMD", "tesseract"))
    if found:
        return
    _apt_install("tesseract-ocr", TESSERACT, "The OCR stage needs")


def cmd_test(args: list[str]) -> int:
    _ensure_tesseract()
    _ensure_chromium()
    say(f"Chromium for browser tests: {os.environ['JOBTRACKER_CHROMIUM']}")
    # Tests keep to their own Redis database (settings.TESTING), so a `./dev run`
    # on the same servers never takes a test's jobs.
    with services():
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", *args],
            cwd=ROOT,
            env=child_env(),
            preexec_fn=_parent_death_signal(),
        )
        # pytest shares our process group: Ctrl-C reaches it directly (and it
        # prints its summary); we only wait. SIGTERM/SIGHUP are passed on.
        old = {
            signal.SIGINT: signal.signal(signal.SIGINT, lambda _s, _f: None),
            signal.SIGTERM: signal.signal(signal.SIGTERM, lambda s, _f: proc.send_signal(s)),
            signal.SIGHUP: signal.signal(signal.SIGHUP, lambda s, _f: proc.send_signal(s)),
        }
        try:
            returncode = proc.wait()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
    return returncode


def cmd_services(args: list[str]) -> int:
    action = args[0] if args else "status"
    folder = data_dir()
    if action == "start":
        started_at = time.monotonic()
        try:
            urls = embedded.ensure_running(folder)
        except embedded.EmbeddedError as exc:
            raise LauncherError(str(exc)) from exc
        embedded.keep_running(folder)
        verb = "Started" if urls["started"] else "Already running:"
        say(
            f"{verb} embedded PostgreSQL and Redis in {folder} "
            f"[{time.monotonic() - started_at:.1f} s]"
        )
        print(f"DATABASE_URL={urls['DATABASE_URL']}")
        print(f"REDIS_URL={urls['REDIS_URL']}")
        say("They keep running until `./dev services stop`; manage.py finds them by itself.")
        return 0
    if action == "stop":
        say("Stopped." if embedded.stop(folder) else f"Nothing was running for {folder}.")
        return 0
    if action == "status":
        info = embedded.status(folder)
        pg, redis = info["postgres"], info["redis"]
        print(f"data folder:  {info['data_dir']}")
        pg_state = f"running, pid {pg['pid']}" if pg else "stopped"
        redis_state = f"running, pid {redis['pid']}" if redis else "stopped"
        print(f"PostgreSQL:   {pg_state}   (log {info['postgres_log']})")
        print(f"Redis:        {redis_state}   (log {info['redis_log']})")
        if info["DATABASE_URL"]:
            print(f"DATABASE_URL={info['DATABASE_URL']}")
        if info["REDIS_URL"]:
            print(f"REDIS_URL={info['REDIS_URL']}")
        if pg or redis:
            users = ", ".join(str(x["pid"]) for x in info["leases"])
            if not info["auto_stop"]:
                print(
                    "launchers:    " + (users or "none") + "; they run until `./dev services stop`"
                )
            elif users:
                print(f"launchers:    {users}; the last of them to exit stops the servers")
            else:
                print(
                    "launchers:    none (the one that started them is gone); the next launcher "
                    "to exit stops them, or `./dev services stop`"
                )
        return 0 if (pg and redis) else 3
    raise LauncherError(f"Unknown services action {action!r}: use start, stop or status.")


COMMANDS = {"run": cmd_run, "test": cmd_test, "services": cmd_services}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"Unknown command {argv[0]!r}.\n\n{USAGE}", end="", file=sys.stderr)
        return 2
    os.chdir(ROOT)
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGHUP, _raise_terminated)
    try:
        return command(argv[1:])
    except LauncherError as exc:
        say(f"ERROR: {exc}")
        return 1
    except KeyboardInterrupt:
        say("Interrupted.")
        return 130
    except Terminated as exc:
        say(f"Got {signal.Signals(exc.args[0]).name}; stopped.")
        return 128 + exc.args[0]


if __name__ == "__main__":
    sys.exit(main())
