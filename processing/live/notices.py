"""What the lifecycle announces after each commit: which job changed, and how.

A notice is PUBLISHed on a Redis channel; the relay (:mod:`processing.live.relay`)
renders and pushes it. A status change carries the job's row as it was
committed, so that each status reaches the clients even when the next one
follows within milliseconds (the relay would otherwise read the later one from
the database); a progress notice carries only the ids, and the relay reads the
latest counters. A failure to publish is logged and forgotten: the job is safe
in PostgreSQL and the pages poll when pushes stop.
"""

from __future__ import annotations

import json
import logging
from typing import Literal

from django.conf import settings
from django.core import serializers
from redis.exceptions import RedisError

from processing.jobs import dispatch
from processing.models import ProcessingJob

logger = logging.getLogger(__name__)

Kind = Literal["status", "progress"]
"""``status``: pushed at once. ``progress``: counters only, coalesced per job."""


def channel() -> str:
    """The Redis channel notices travel on (apart per Redis database, as tests need)."""
    return f"{settings.LIVE_PREFIX}notices"


def announce(job: ProcessingJob, kind: Kind) -> None:
    """Tell the relay that ``job`` changed (``job`` as just committed). Never raises."""
    notice = {"job": str(job.pk), "matter": str(job.matter_id), "kind": kind}
    if kind == "status":
        notice["row"] = serializers.serialize("json", [job])
    try:
        dispatch.redis_connection().publish(channel(), json.dumps(notice))
    except RedisError:
        logger.warning("Could not announce a change of job %s: Redis unreachable", job.pk)


def committed_row(notice: dict[str, str]) -> ProcessingJob | None:
    """The job as a status notice carries it (None for a progress notice)."""
    if "row" not in notice:
        return None
    job = next(serializers.deserialize("json", notice["row"])).object
    return job if isinstance(job, ProcessingJob) else None
