"""The ``./dev`` commands: ``python -m jobtracker.dev run|test|services``.

``./dev`` prepares the virtualenv and node_modules, then execs this package
(``./dev lock``, which regenerates requirements.lock, never reaches it).

* ``run``      migrate, make sure the demo account exists, then run daphne and
               ``WORKERS`` RQ workers as child processes with prefixed logs
               (see ``supervisor``).
* ``test``     make sure Debian's chromium and tesseract-ocr are installed, then
               ``python -m pytest``. Without pytest arguments (the whole suite, as
               CI runs it) ``ruff check .`` and mypy run first, and a finding fails
               the command. (``run`` needs tesseract-ocr too, for the ocr stage.)
* ``services`` ``start|stop|status`` of the embedded PostgreSQL and Redis.

When ``DATABASE_URL`` or ``REDIS_URL`` is unset, the embedded servers (see
``services``) are started (or reused) under the data folder
(``JOBTRACKER_DATA_DIR``, default ``<checkout>/.data``) and their URLs exported
to the children. Servers that a launcher started are stopped when the last
launcher using them exits.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from jobtracker.dev import services
from jobtracker.dev.state import EmbeddedError
from jobtracker.dev.supervisor import Child, Supervisor, parent_death_signal, say
from processing.jobs import queues

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
TESSERACT = "/usr/bin/tesseract"
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password-123"

USAGE = """\
usage: ./dev run                       migrate, then serve (daphne) with RQ workers
       ./dev test [pytest args]        run the test suite (alone: ruff and mypy first)
       ./dev services start|stop|status   the embedded PostgreSQL and Redis
       ./dev lock [--upgrade-package NAME]   regenerate requirements.lock (all, or one package)

environment: PORT (8000), HOST (127.0.0.1), WORKERS (2), DATABASE_URL, REDIS_URL,
             JOBTRACKER_DATA_DIR (<checkout>/.data), JOBTRACKER_CHROMIUM (/usr/bin/chromium)
"""


class LauncherError(Exception):
    """A problem to report in one clear line, exiting non-zero."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while not supervising: unwind and clean up."""


def data_dir() -> Path:
    """The embedded servers' data folder: JOBTRACKER_DATA_DIR, else ``<checkout>/.data``."""
    return Path(os.environ.get("JOBTRACKER_DATA_DIR") or ROOT / ".data").expanduser().resolve()


# --------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------


@contextlib.contextmanager
def service_urls() -> Iterator[None]:
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
            urls = services.ensure_running(folder, lease=True)
    except EmbeddedError as exc:
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
            if services.release(folder):
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


def child_env() -> dict[str, str]:
    """The environment of everything the commands run: ours, plus Django's settings."""
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "jobtracker.settings")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def manage(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    """Run ``manage.py`` with ``args`` in the checkout."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=child_env(),
        check=False,
        capture_output=capture,
        text=True,
    )


def run_in_foreground(argv: list[str]) -> int:
    """Run ``argv`` in the checkout and return its exit code.

    The child shares our process group: Ctrl-C reaches it directly (pytest then
    prints its summary); we only wait. SIGTERM and SIGHUP are passed on.
    """
    proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(), preexec_fn=parent_death_signal())
    old = {
        signal.SIGINT: signal.signal(signal.SIGINT, lambda _s, _f: None),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda s, _f: proc.send_signal(s)),
        signal.SIGHUP: signal.signal(signal.SIGHUP, lambda s, _f: proc.send_signal(s)),
    }
    try:
        return proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


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
    with service_urls():
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
                    "jobtracker.serve",
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
                    *queues.QUEUES,
                    "--with-scheduler",
                ],
            )
            for i in range(1, workers + 1)
        ]
        # Pushes every job change to the pages' websockets (processing.live.relay).
        children.append(Child("live", [sys.executable, "manage.py", "live_relay"]))
        # Re-enqueues jobs whose queue entry was lost; prunes old RQ data and stage history
        # (processing.jobs.recovery, processing.jobs.retention).
        children.append(Child("upkeep", [sys.executable, "manage.py", "upkeep"]))
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

        return Supervisor(children, cwd=ROOT, env=child_env(), on_tick=banner).run()


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
    whole_suite = not args
    if whole_suite:
        _check("ruff check .", [sys.executable, "-m", "ruff", "check", "--quiet", "."])
    else:
        say("pytest arguments given: ruff and mypy skipped (`./dev test` alone runs them).")
    # Tests keep to their own Redis database (settings.TESTING), so a `./dev run`
    # on the same servers never takes a test's jobs.
    with service_urls():
        if whole_suite:
            _type_check()
        return run_in_foreground([sys.executable, "-m", "pytest", *args])


def _type_check() -> None:
    """mypy, configured in pyproject.toml, with the environment pytest gets (django-stubs
    loads the settings)."""
    _check("mypy", [sys.executable, "-m", "mypy"])


def _check(name: str, argv: list[str]) -> None:
    """Run one check of the whole suite; any finding (non-zero exit) fails ``./dev test``."""
    started = time.monotonic()
    returncode = run_in_foreground(argv)
    took = f"[{time.monotonic() - started:.1f} s]"
    if returncode != 0:
        raise LauncherError(f"{name} failed (exit code {returncode}; findings above) {took}")
    say(f"{name}: passed {took}")


def cmd_services(args: list[str]) -> int:
    action = args[0] if args else "status"
    folder = data_dir()
    if action == "start":
        started_at = time.monotonic()
        try:
            urls = services.ensure_running(folder)
        except EmbeddedError as exc:
            raise LauncherError(str(exc)) from exc
        services.keep_running(folder)
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
        say("Stopped." if services.stop(folder) else f"Nothing was running for {folder}.")
        return 0
    if action == "status":
        info = services.status(folder)
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
    # Everything ./dev runs is development: settings may then use a development
    # SECRET_KEY (in production a missing one stops the start; see settings.py).
    os.environ.setdefault("JOBTRACKER_DEV", "1")
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
        return 128 + int(exc.args[0])
