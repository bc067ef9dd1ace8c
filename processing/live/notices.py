"""What the lifecycle announces after each commit: which job changed, and how.

A notice is a few bytes PUBLISHed on a Redis channel; the relay
(:mod:`processing.live.relay`) renders and pushes the job's current state. A
failure to publish is logged and forgotten: the job is safe in PostgreSQL and
the pages poll when pushes stop.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Literal

from django.conf import settings
from redis.exceptions import RedisError

from processing.jobs import dispatch

logger = logging.getLogger(__name__)

Kind = Literal["status", "progress"]
"""``status``: pushed at once. ``progress``: counters only, coalesced per job."""


def channel() -> str:
    """The Redis channel notices travel on (apart per Redis database, as tests need)."""
    return f"{settings.LIVE_PREFIX}notices"


def announce(job_id: uuid.UUID | str, matter_id: uuid.UUID | str, kind: Kind) -> None:
    """Tell the relay that a job changed. Never raises."""
    notice = json.dumps({"job": str(job_id), "matter": str(matter_id), "kind": kind})
    try:
        dispatch.redis_connection().publish(channel(), notice)
    except RedisError:
        logger.warning("Could not announce a change of job %s: Redis unreachable", job_id)
