"""What the lifecycle announces after each commit: which job changed, and how.

A notice is PUBLISHed on a Redis channel; the relay (:mod:`processing.live.relay`)
renders and pushes it. Every notice carries the job's row as the change
committed it, so clients get each state in the order it happened, even when the
next follows within milliseconds (the relay never reads a job's state back from
the database, which may already hold a later one). A failure to publish is
logged and forgotten: the job is safe in PostgreSQL and the pages poll when
pushes stop.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Any, Literal

from django.conf import settings
from redis.exceptions import RedisError

from processing.jobs import dispatch
from processing.models import ProcessingJob

logger = logging.getLogger(__name__)

# A status notice carries every column of the job row, by attribute name.
_FIELDS = ProcessingJob._meta.concrete_fields

Kind = Literal["status", "progress"]
"""``status``: pushed at once. ``progress``: counters only, coalesced per job."""


def channel() -> str:
    """The Redis channel notices travel on (apart per Redis database, as tests need)."""
    return f"{settings.LIVE_PREFIX}notices"


def announce(job: ProcessingJob, kind: Kind) -> None:
    """Tell the relay that ``job`` changed (``job`` as just committed). Never raises."""
    notice: dict[str, Any] = {
        "job": str(job.pk),
        "matter": str(job.matter_id),
        "kind": kind,
        "row": {f.attname: getattr(job, f.attname) for f in _FIELDS},
    }
    try:
        dispatch.redis_connection().publish(channel(), json.dumps(notice, default=_plain))
    except RedisError:
        logger.warning("Could not announce a change of job %s: Redis unreachable", job.pk)


def _plain(value: object) -> str:
    """JSON for a row's UUIDs and times, to the microsecond (DjangoJSONEncoder keeps
    milliseconds: a state would then look older than the row it came from)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} in a job row")


def committed_row(notice: dict[str, Any]) -> ProcessingJob:
    """The job as the notice carries it: as its change committed it."""
    row = notice["row"]
    return ProcessingJob(
        **{f.attname: f.to_python(row[f.attname]) for f in _FIELDS if f.attname in row}
    )
