"""What RQ workers call: fetch by id, run the stage, hand the outcome to the lifecycle."""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable

from django.db import Error as DatabaseError
from django.db import close_old_connections, connection
from redis.exceptions import RedisError
from rq.timeouts import JobTimeoutException

from processing.errors import (
    InternalError,
    ServiceUnavailable,
    StageCancelled,
    StageError,
    StageHandedBack,
    StageTimeout,
)
from processing.jobs import lifecycle, sandbox
from processing.jobs.context import Heartbeat, StageContext
from processing.pipeline.registry import get_pipeline

logger = logging.getLogger(__name__)

RECORD_RETRY_SECONDS = 20.0
"""How long the outcome of a stage is retried while PostgreSQL is away (a restart takes
a few seconds); past it the stage's lease runs out and recovery rescues it."""


def _recorded[T](what: str, job_id: str, write: Callable[[], T]) -> T:
    """Run the lifecycle call ``write``, trying again on a fresh connection while
    PostgreSQL is away, for up to :data:`RECORD_RETRY_SECONDS`."""
    deadline = time.monotonic() + RECORD_RETRY_SECONDS
    pause = 0.25
    while True:
        try:
            return write()
        except DatabaseError as exc:
            if time.monotonic() + pause > deadline:
                logger.error("Could not record the %s of job %s: %s", what, job_id, exc)
                raise
            logger.warning("Could not record the %s of job %s (%s); retrying", what, job_id, exc)
            connection.close()  # a dropped connection is replaced, not reused
            time.sleep(pause)
            pause = min(pause * 2, 4.0)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_stage(job_id: str, dispatch_id: str) -> str:
    """Run the current stage of job ``job_id`` if ``dispatch_id`` is still its token.

    Returns a short word for RQ's result: ``stale``, ``completed``, ``failed``,
    ``cancelled``, ``external`` (an external stage, begun: the app runs nothing for it)
    or ``handed back`` (its worker is shutting down: the stage went
    back to the front of its queue). While the stage runs, a :class:`Heartbeat`
    keeps its lease alive. The outcome is recorded even across a PostgreSQL
    restart (:func:`_recorded`).
    """
    close_old_connections()
    started = lifecycle.begin_stage(job_id, dispatch_id, worker=_worker_name())
    if started is None:
        return "stale"
    job, stage_run = started
    stage = get_pipeline(job.job_type).stage(job.current_stage)
    if stage.external:
        # Begun, its lease handed to the outside service: its callbacks go on from here.
        return "external"
    ctx = StageContext(job=job, stage_run=stage_run)
    error: StageError
    detail = ""
    try:
        with Heartbeat(ctx):
            stage.load()(ctx)
    except StageHandedBack:
        handed = _recorded(
            "hand-back",
            job_id,
            lambda: lifecycle.hand_back(job, stage_run, done=ctx.items_done, total=ctx.items_total),
        )
        return "handed back" if handed is not None else "cancelled"
    except StageCancelled:
        _recorded(
            "stop",
            job_id,
            lambda: lifecycle.stop_stage(stage_run, done=ctx.items_done, total=ctx.items_total),
        )
        return "cancelled"
    except StageError as exc:
        error = exc
        detail = exc.detail or ("" if exc.permanent else traceback.format_exc())
        logger.info("Stage %s of job %s failed: %s [%s]", stage.name, job_id, exc.code, exc)
    except JobTimeoutException:
        error, detail = StageTimeout(), traceback.format_exc()
        logger.warning("Stage %s of job %s timed out", stage.name, job_id)
    except MemoryError:
        # Past the work horse's memory budget: the document's doing, and it would be again.
        sandbox.lift_memory_limit()
        error, detail = sandbox.out_of_memory(), traceback.format_exc()
        logger.warning("Stage %s of job %s ran out of memory", stage.name, job_id)
    except (DatabaseError, RedisError, ConnectionError) as exc:
        error, detail = ServiceUnavailable(), traceback.format_exc()
        logger.warning("Stage %s of job %s lost a service: %s", stage.name, job_id, exc)
        close_old_connections()
    except Exception:
        error, detail = InternalError(), traceback.format_exc()
        logger.exception("Stage %s of job %s raised unexpectedly", stage.name, job_id)
    else:
        _recorded(
            "completion",
            job_id,
            lambda: lifecycle.complete_stage(
                job, stage_run, done=ctx.items_done, total=ctx.items_total
            ),
        )
        return "completed"
    _recorded(
        "failure",
        job_id,
        lambda: lifecycle.fail_stage(
            job, stage_run, error, detail=detail, done=ctx.items_done, total=ctx.items_total
        ),
    )
    return "failed"


def stop_stuck_stage(job_id: str, dispatch_id: str) -> str:
    """The backstop of a cancel (:func:`lifecycle.stop_stuck_stage`).

    Returns ``stopped`` when the stage was still running and its work horse is
    being killed, ``nothing to stop`` when it had stopped by itself.
    """
    close_old_connections()
    return "stopped" if lifecycle.stop_stuck_stage(job_id, dispatch_id) else "nothing to stop"
