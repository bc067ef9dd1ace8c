"""Putting a job's current stage on an RQ queue, and stopping one that runs.

Called only from :mod:`processing.jobs.lifecycle`, after commit. A failure to reach
Redis is logged, not raised: the job is safe in PostgreSQL, and recovery
rebuilds missing queue entries from it.
"""

from __future__ import annotations

import functools
import logging
import uuid
from datetime import datetime, timedelta

import django_rq
from django.conf import settings
from redis import Redis
from redis.exceptions import RedisError
from rq import get_current_job
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError

from processing.jobs import queues

logger = logging.getLogger(__name__)

RESULT_TTL = 24 * 3600
FAILURE_TTL = 7 * 24 * 3600


@functools.cache
def _own_connection() -> Redis:
    """One Redis client per process (all queues share REDIS_URL).

    django_rq.get_queue() otherwise builds a new client, pool and socket per call:
    connect, handshake and redis-py's driver-info lookup (importlib.metadata, ~3 ms)
    on every enqueue. redis-py's pool notices a fork (pid check) and reconnects in the
    child.
    """
    return django_rq.get_connection("default")


def redis_connection() -> Redis:
    """The running RQ job's connection inside a worker, else this process's own client.

    A forking worker runs each stage in a new work horse, which already holds a fresh
    connection to the same Redis (RQ used it to start the job); a second client of our
    own would cost a new socket and handshake per stage.
    """
    current = get_current_job()
    return current.connection if current is not None else _own_connection()


def rq_job_id(job_id: uuid.UUID | str, dispatch_id: uuid.UUID | str) -> str:
    """The RQ job id of one dispatch of one processing job."""
    return f"stage-{job_id}-{dispatch_id}"


def enqueue_stage(
    job_id: uuid.UUID | str,
    dispatch_id: uuid.UUID | str,
    queue_name: str,
    *,
    at_front: bool = False,
    when: datetime | None = None,
    timeout: int | None = None,
) -> bool:
    """Enqueue ``tasks.run_stage`` for this dispatch; False if Redis was unreachable.

    ``timeout`` is how long the stage may run (default ``settings.STAGE_TIMEOUT``).
    """
    queue = django_rq.get_queue(queue_name, connection=redis_connection())
    options = {
        "job_id": rq_job_id(job_id, dispatch_id),
        "job_timeout": timeout or settings.STAGE_TIMEOUT,
        "result_ttl": RESULT_TTL,
        "failure_ttl": FAILURE_TTL,
        "description": f"processing job {job_id}",
    }
    args = (str(job_id), str(dispatch_id))
    try:
        if when is not None:
            queue.enqueue_at(when, "processing.jobs.tasks.run_stage", *args, **options)
        else:
            queue.enqueue("processing.jobs.tasks.run_stage", *args, at_front=at_front, **options)
    except RedisError:
        logger.warning(
            "Could not enqueue job %s (dispatch %s) on %s: Redis unreachable; "
            "recovery will re-enqueue it from the database.",
            job_id,
            dispatch_id,
            queue_name,
            exc_info=True,
        )
        return False
    return True


def stop_check_id(job_id: uuid.UUID | str, dispatch_id: uuid.UUID | str) -> str:
    """The RQ job id of the check that follows the cancel of one running dispatch."""
    return f"stop-{job_id}-{dispatch_id}"


def enqueue_stop_check(
    job_id: uuid.UUID | str, dispatch_id: uuid.UUID | str, *, delay: float
) -> bool:
    """Run ``tasks.stop_stuck_stage`` in ``delay`` seconds; False if Redis was unreachable.

    RQ's scheduler (workers run ``--with-scheduler``) puts it at the front of the
    ``high`` queue when it is due, so the next free worker runs it.
    """
    queue = django_rq.get_queue(queues.HIGH, connection=redis_connection())
    try:
        queue.enqueue_in(
            timedelta(seconds=max(delay, 0.0)),
            "processing.jobs.tasks.stop_stuck_stage",
            str(job_id),
            str(dispatch_id),
            job_id=stop_check_id(job_id, dispatch_id),
            at_front=True,
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            description=f"stop cancelled job {job_id}",
        )
    except RedisError:
        logger.warning(
            "Could not schedule the stop check of cancelled job %s: Redis unreachable; "
            "its stage stops at its next item.",
            job_id,
            exc_info=True,
        )
        return False
    return True


def stop_running_stage(job_id: uuid.UUID | str, dispatch_id: uuid.UUID | str) -> bool:
    """Have RQ kill the work horse running this dispatch (its stop-job command, SIGKILL).

    False when no worker is running it (it ended, or its worker is gone) or Redis
    was unreachable. The worker that runs it survives and takes its next job.
    """
    try:
        send_stop_job_command(redis_connection(), rq_job_id(job_id, dispatch_id))
    except (NoSuchJobError, InvalidJobOperation):
        return False
    except RedisError:
        logger.warning(
            "Could not stop the stage of job %s (dispatch %s): Redis unreachable",
            job_id,
            dispatch_id,
            exc_info=True,
        )
        return False
    return True
