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
from typing import Any, Literal

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
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
    notice: dict[str, Any] = {"job": str(job.pk), "matter": str(job.matter_id), "kind": kind}
    if kind == "status":
        notice["row"] = {f.attname: getattr(job, f.attname) for f in _FIELDS}
    try:
        dispatch.redis_connection().publish(channel(), json.dumps(notice, cls=DjangoJSONEncoder))
    except RedisError:
        logger.warning("Could not announce a change of job %s: Redis unreachable", job.pk)


def committed_row(notice: dict[str, Any]) -> ProcessingJob | None:
    """The job as a status notice carries it (None for a progress notice)."""
    row = notice.get("row")
    if row is None:
        return None
    return ProcessingJob(
        **{f.attname: f.to_python(row[f.attname]) for f in _FIELDS if f.attname in row}
    )
