"""The RQ worker class: RQ's forking worker, with the stage code loaded before it forks.

``manage.py rqworker`` sets Django up but does not import ``processing.jobs.tasks``
or the stages, so RQ's forking worker would import them again in every work
horse, for every stage (the document readers pull in pypdfium2, pypdf,
python-docx, lxml and eyecite: a few hundred milliseconds). Loading them once
in the parent makes each fork start warm, and so does whatever else a stage
would otherwise work out again in every work horse (see :class:`Worker`).
settings.RQ["WORKER_CLASS"] names it.

It also hands a running stage back when it is asked to stop (SIGTERM: a deploy, a
rolling restart). RQ's warm shutdown waits for the work horse to finish, and RQ
puts each horse in its own process group, so the horse never sees the SIGTERM: a
long stage would hold the deploy up, and be killed mid-item by the cold shutdown
that follows. The worker forwards a ``SIGUSR1`` to its horse instead, whose
stage stops at its next item and goes back to the front of its queue
(:func:`processing.jobs.lifecycle.hand_back`); the worker then exits.

And it keeps each work horse within a memory budget, attributing a horse that a
parser crashed to its document (:mod:`processing.jobs.sandbox`).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
from types import FrameType
from typing import TYPE_CHECKING, Any

import rq
from django.db import DatabaseError
from rq.job import Job
from rq.queue import Queue
from rq.utils import get_version

from processing.jobs import sandbox

if TYPE_CHECKING:
    from resource import struct_rusage

logger = logging.getLogger(__name__)


def preload() -> None:
    """Import the stage runner and every registered pipeline's stages; warm lazy imports."""
    from django.db import connection

    import processing.jobs.tasks  # noqa: F401 - what every work horse runs
    from processing.jobs import statements
    from processing.pipeline.entity_finder import find_entities
    from processing.pipeline.registry import get_pipeline, job_types

    for job_type in job_types():
        for stage in get_pipeline(job_type).stages:
            stage.load()
    # eyecite loads its reporter tables on first use.
    find_entities("See Roe v. Wade, 410 U.S. 113 (1973), decided 22 January 1973.")
    # Django caches per-process lookups on a first connection (PostgreSQL type OIDs),
    # and psycopg the parsed form of the lifecycle's statements; the connection itself
    # is closed so no socket is shared across forks. A worker started while PostgreSQL
    # is away (restarting) starts all the same: each work horse connects for itself.
    try:
        connection.ensure_connection()
        statements.prepare()
    except DatabaseError as exc:
        logger.warning("Started without a warm database connection: %s", exc)
    finally:
        connection.close()


HAND_BACK_SIGNAL = signal.SIGUSR1
"""What the worker sends its work horse when it is asked to stop."""


def _install_hand_back_handler() -> None:
    from processing.jobs.context import request_hand_back

    signal.signal(HAND_BACK_SIGNAL, request_hand_back)


class Worker(rq.Worker):
    """RQ's forking worker (one process per stage: a crash costs one stage, not the worker)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        preload()
        # RQ asks the server its version (INFO) the first time a connection enqueues,
        # and remembers it on the connection: ask now, so work horses inherit it
        # instead of asking once per stage.
        get_version(self.connection)
        # What is loaded now lives as long as the worker: keep the cycle collector of
        # each work horse from walking it (and copying every page it touches).
        gc.freeze()

    def _install_signal_handlers(self) -> None:
        """RQ's SIGINT/SIGTERM handlers, and the hand-back handler every work horse inherits.

        Installed before any fork, so a horse is never without it (SIGUSR1's
        default action would end the horse).
        """
        super()._install_signal_handlers()  # type: ignore[no-untyped-call]
        _install_hand_back_handler()

    def setup_work_horse_signals(self) -> None:
        """RQ's work horse signals, with the hand-back handler kept."""
        super().setup_work_horse_signals()  # type: ignore[no-untyped-call]
        _install_hand_back_handler()

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """Warm shutdown (RQ's), first telling a running work horse to hand its stage back."""
        horse = self.horse_pid
        if horse:
            try:
                os.kill(horse, HAND_BACK_SIGNAL)
            except ProcessLookupError:
                pass  # it has just ended
            else:
                self.log.info("Worker %s: asked horse %s to hand its stage back", self.name, horse)
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        """RQ's work horse, its memory budget set before anything of the stage runs."""
        sandbox.limit_work_horse()
        super().main_work_horse(job, queue)

    def handle_work_horse_killed(
        self, job: Job, retpid: int | None, ret_val: int | None, rusage: struct_rusage | None
    ) -> None:
        """RQ's note of a horse that died on its own; a parser's crash fails its stage."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)  # type: ignore[no-untyped-call]
        sandbox.attribute_crash(job, ret_val, peak_kb=rusage.ru_maxrss if rusage else None)
