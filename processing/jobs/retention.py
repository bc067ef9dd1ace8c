"""Retention: remove what is no longer needed once jobs are long finished.

Two things pile up with every job: RQ's record of each queue entry that ended
(its job hash and its place in a queue's finished, failed or canceled registry),
and the stage history (:class:`StageRun` rows) of every job. :func:`prune`
removes RQ's records of entries that ended more than ``RQ_RESULT_RETENTION_HOURS``
ago, and the stage history of jobs that finished more than
``STAGE_HISTORY_RETENTION_DAYS`` ago. A job that is still queued or running
keeps its whole history, and so does one that finished recently. The nonces of
external stages' callbacks are kept ``CALLBACK_NONCE_RETENTION_HOURS`` (a day): a
replay older than five minutes is refused for its timestamp anyway. The audit
trail is never pruned: it is append-only (a database trigger refuses deletes).

Run by ``manage.py prune`` and, every ``RETENTION_INTERVAL`` seconds, by
``manage.py upkeep``. Safe to run from several hosts at once: deleting what is
already gone does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone
from redis import Redis
from rq.job import Job
from rq.registry import BaseRegistry, CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry

from processing.jobs import dispatch, queues
from processing.jobs.states import FINISHED_JOB_STATUSES
from processing.models import CallbackNonce, ProcessingJob, StageRun

logger = logging.getLogger(__name__)

BATCH = 500
"""RQ entries fetched at once; jobs whose history is deleted in one statement."""

ENDED_REGISTRIES: tuple[type[BaseRegistry], ...] = (
    FinishedJobRegistry,
    FailedJobRegistry,
    CanceledJobRegistry,
)
"""RQ's registries of queue entries that will not run again."""


@dataclass
class PruneReport:
    """What one retention pass removed."""

    rq_entries: int = 0
    """RQ queue entries (job hash and registry entry) that ended before the cutoff."""
    stage_runs: int = 0
    """Stage history rows of jobs that finished before the cutoff."""
    nonces: int = 0
    """Callback nonces received before the cutoff."""

    def lines(self) -> list[str]:
        """The report in words."""
        if not (self.rq_entries or self.stage_runs or self.nonces):
            return ["nothing to prune"]
        lines = [
            f"removed {self.rq_entries} finished RQ queue entries older than "
            f"{settings.RQ_RESULT_RETENTION_HOURS:g} h",
            f"removed {self.stage_runs} stage history rows of jobs finished more than "
            f"{settings.STAGE_HISTORY_RETENTION_DAYS:g} days ago",
        ]
        if self.nonces:
            lines.append(
                f"removed {self.nonces} callback nonces older than "
                f"{settings.CALLBACK_NONCE_RETENTION_HOURS:g} h"
            )
        return lines


def prune(*, now: datetime | None = None) -> PruneReport:
    """Remove RQ data and stage history past their retention (see the module docstring)."""
    now = now or timezone.now()
    report = PruneReport(
        rq_entries=prune_rq_entries(
            before=now - timedelta(hours=float(settings.RQ_RESULT_RETENTION_HOURS))
        ),
        stage_runs=prune_stage_history(
            before=now - timedelta(days=float(settings.STAGE_HISTORY_RETENTION_DAYS))
        ),
        nonces=prune_nonces(
            before=now - timedelta(hours=float(settings.CALLBACK_NONCE_RETENTION_HOURS))
        ),
    )
    if report.rq_entries or report.stage_runs or report.nonces:
        logger.info("Retention: %s", "; ".join(report.lines()))
    return report


def prune_rq_entries(*, before: datetime) -> int:
    """Delete RQ's records of queue entries that ended before ``before``; how many.

    An id left in a registry whose job hash already expired is dropped from it too
    (not counted).
    """
    connection = dispatch.redis_connection()
    removed = 0
    for name in queues.QUEUES:
        for registry_class in ENDED_REGISTRIES:
            registry = registry_class(name, connection=connection)
            for ids in _registry_batches(connection, registry.key):
                for job_id, job in zip(ids, Job.fetch_many(ids, connection), strict=True):
                    if job is None:
                        connection.zrem(registry.key, job_id)
                    elif _ended_before(job, before):
                        job.delete(remove_from_queue=False)
                        removed += 1
    return removed


def _registry_batches(connection: Redis, key: str) -> Iterator[list[str]]:
    """The ids in a registry, a batch at a time (read first: deleting changes it)."""
    ids = [
        raw.decode() if isinstance(raw, bytes) else str(raw)
        for raw in connection.zrange(key, 0, -1)
    ]
    for start in range(0, len(ids), BATCH):
        yield ids[start : start + BATCH]


def _ended_before(job: Job, before: datetime) -> bool:
    ended = job.ended_at or job.enqueued_at or job.created_at
    if ended.tzinfo is None:  # RQ keeps UTC
        ended = ended.replace(tzinfo=UTC)
    return ended < before


def prune_stage_history(*, before: datetime) -> int:
    """Delete the stage runs of jobs that finished before ``before``; how many."""
    finished = ProcessingJob.objects.filter(
        status__in=FINISHED_JOB_STATUSES, finished_at__lt=before
    ).values_list("id", flat=True)
    removed = 0
    while True:
        jobs = list(
            StageRun.objects.filter(job__in=finished).values_list("job_id", flat=True)[:BATCH]
        )
        if not jobs:
            return removed
        # Checked again as it deletes: a person may have retried one of them meanwhile.
        deleted, _ = StageRun.objects.filter(job_id__in=set(jobs), job__in=finished).delete()
        removed += deleted


def prune_nonces(*, before: datetime) -> int:
    """Delete the callback nonces received before ``before``; how many."""
    deleted, _ = CallbackNonce.objects.filter(received_at__lt=before).delete()
    return deleted
