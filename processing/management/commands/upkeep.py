"""``manage.py upkeep``: recovery every few seconds, retention every few minutes (run one or more).

A recovery pass (:mod:`processing.jobs.recovery`) runs every ``RECOVERY_INTERVAL``
seconds and the retention pass (:mod:`processing.jobs.retention`) every
``RETENTION_INTERVAL`` seconds. A pass that cannot reach PostgreSQL or Redis is
logged and tried again at the next interval: the process outlives the services it
needs. Both passes are safe to run from several hosts at once. SIGTERM or Ctrl-C
stops it between passes.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import Error as DatabaseError
from django.db import close_old_connections
from redis.exceptions import RedisError

from processing.jobs import recovery, retention

logger = logging.getLogger("processing.upkeep")


def _run_pass(name: str, work: Callable[[], list[str]], write: Callable[[str], None]) -> bool:
    """Run one pass and write what it did; False (logged) if it could not run.

    A service that is away is expected (a restart, a failover): one line, and the
    next interval tries again. Anything else is logged with its traceback, and the
    process goes on too: it is the one that keeps jobs from being stranded.
    """
    try:
        close_old_connections()  # a connection PostgreSQL dropped is replaced, not reused
        lines = work()
    except (DatabaseError, RedisError, OSError) as exc:
        logger.warning("Upkeep: the %s pass could not run (%s); trying again later", name, exc)
        return False
    except Exception:
        logger.exception("Upkeep: the %s pass failed; trying again later", name)
        return False
    finally:
        with contextlib.suppress(DatabaseError):
            close_old_connections()
    for line in lines:
        if not line.startswith("nothing to"):
            write(f"{name}: {line}")
    return True


class Command(BaseCommand):
    help = (
        "Run recovery every RECOVERY_INTERVAL seconds and retention every "
        "RETENTION_INTERVAL seconds, until stopped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--passes",
            type=int,
            default=0,
            help="Stop after this many recovery passes (default: run until stopped).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
        passes, limit = 0, options["passes"]
        next_retention = time.monotonic()
        self.stdout.write(
            f"upkeep: recovery every {settings.RECOVERY_INTERVAL:g} s, "
            f"retention every {settings.RETENTION_INTERVAL:g} s"
        )
        try:
            while not stop.is_set():
                started = time.monotonic()
                _run_pass("recovery", lambda: recovery.recover().lines(), self.stdout.write)
                if started >= next_retention:
                    if _run_pass("retention", lambda: retention.prune().lines(), self.stdout.write):
                        next_retention = started + float(settings.RETENTION_INTERVAL)
                    else:
                        next_retention = started + float(settings.RECOVERY_INTERVAL)
                passes += 1
                if limit and passes >= limit:
                    break
                stop.wait(
                    max(0.0, float(settings.RECOVERY_INTERVAL) - (time.monotonic() - started))
                )
        except KeyboardInterrupt:
            pass
