"""Recovery: rebuild lost queue entries from the database, one pass at a time.

PostgreSQL is the record of every job; Redis only holds the queue entries that
make workers run them. An entry can go missing while its job waits: Redis was
unreachable when the job was enqueued (:func:`dispatch.enqueue_stage` logs and
goes on), the process died between the commit and its ``on_commit`` enqueue,
Redis lost its data (a restart without persistence, FLUSHALL), or a worker took
the entry and failed before the stage began (PostgreSQL away: RQ files it as
failed, and the job is still QUEUED under that entry's token).

What a pass finds, first: every QUEUED job, untouched for ``RECOVERY_GRACE_SECONDS``,
whose current dispatch (``dispatch_id``, see :func:`dispatch.rq_job_id`) has
no live RQ entry: none that is queued, scheduled (an automatic retry waiting in
RQ's scheduler), started or deferred. It reads only QUEUED rows (the partial
index ``job_active``), and asks Redis about them in one pipeline per batch.

What it does: hands each such job to :func:`lifecycle.requeue_lost`, which issues
a new dispatch token and enqueues the job's current stage after commit (at its
``next_attempt_at`` when that is still ahead, so a retry is never run early),
and audits ``requeued``. It returns a :class:`RecoveryReport`.

Why it is safe to run from several hosts at once: only jobs found lost are
locked, with ``SELECT … FOR UPDATE SKIP LOCKED``, so one pass never waits for
another, nor holds up a worker beginning a stage that has a live entry; a row
another pass holds is skipped, and once that pass commits the row has a new
token and ``updated_at``, so it no longer matches what this pass checked
(``requeue_lost`` re-checks the token under the lock). Each lost entry is
therefore replaced exactly once. The grace period keeps a pass from racing an
enqueue that is happening right now (a fresh upload's ``on_commit``); should it
race one anyway, the new token makes the older entry stand down, so the stage
still runs once.

Then, every PROCESSING job whose lease (``lease_expires_at``, see
:mod:`processing.jobs.lifecycle`) ran out before now, also through ``job_active``:

- its stage running (``stage_attempt > 0``): the worker holding it died, lost its
  host or hangs, since a live one renews the lease every few seconds (progress
  writes, its heartbeat). :func:`lifecycle.rescue_lost_stage` ends the run
  ``WORKER_LOST``, counts the attempt, and enqueues the stage again at once under
  a new token (or fails the job, its retries used up); the old work horse, should
  it be alive, is fenced off by the token change.
- between two stages (``stage_attempt = 0``: the finished stage committed, and
  its lease was left running until the next one begins): if the next stage's
  dispatch has no live RQ entry, the enqueue never happened (a crash between the
  commit and ``on_commit``, Redis lost it): :func:`lifecycle.requeue_lost`
  enqueues it again. A live entry (a long queue) is left alone.
- an external stage (lease holder ``external``): its outside service did not report
  within the stage's time limit; the same call fails it ``TIMEOUT``, retried with
  backoff like any transient error.

Both lock the rows they act on with ``SKIP LOCKED`` and re-check under the lock,
as above.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from redis import Redis
from rq.job import Job, JobStatus

from processing.errors import StageTimeout
from processing.jobs import dispatch, lifecycle
from processing.jobs.states import JobStatus as ProcessingStatus
from processing.models import ProcessingJob

ExpiredLease = tuple[uuid.UUID, uuid.UUID, int]
"""(id, dispatch_id, stage_attempt) of a PROCESSING job whose lease ran out."""

logger = logging.getLogger(__name__)

BATCH = 500
"""Jobs checked against Redis in one pipeline, and locked in one transaction."""

LIVE_RQ_STATUSES = frozenset(
    {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED}
)
"""An RQ entry in one of these will still run (or is running) its stage."""


@dataclass
class RecoveryReport:
    """What one recovery pass did."""

    checked: int = 0
    """QUEUED jobs past the grace period whose queue entry was looked up."""
    requeued: list[uuid.UUID] = field(default_factory=list)
    """Jobs whose entry was lost, enqueued again to run now."""
    rescheduled: list[uuid.UUID] = field(default_factory=list)
    """Automatic retries whose scheduled entry was lost, scheduled again for their time."""
    lost_stages: list[uuid.UUID] = field(default_factory=list)
    """Jobs whose running stage's worker was lost (lease ran out), enqueued again."""
    failed_lost: list[uuid.UUID] = field(default_factory=list)
    """Jobs whose worker was lost with no automatic retry left: now FAILED."""
    stranded: list[uuid.UUID] = field(default_factory=list)
    """PROCESSING jobs whose next stage was never enqueued, enqueued now."""
    timed_out: list[uuid.UUID] = field(default_factory=list)
    """External stages whose outside service never reported back: failed TIMEOUT."""

    @property
    def rescued(self) -> int:
        """How many jobs recovery changed (a new queue entry, or failed)."""
        return (
            len(self.requeued)
            + len(self.rescheduled)
            + len(self.lost_stages)
            + len(self.failed_lost)
            + len(self.stranded)
            + len(self.timed_out)
        )

    def lines(self) -> list[str]:
        """The report in words, one line per kind of rescue."""
        lines = []
        if self.requeued:
            lines.append(
                f"re-enqueued {_jobs(len(self.requeued))} whose queue entry was lost: "
                + ", ".join(map(str, self.requeued))
            )
        if self.rescheduled:
            lines.append(
                f"re-scheduled {_jobs(len(self.rescheduled))} waiting for an automatic retry "
                "whose scheduled entry was lost: " + ", ".join(map(str, self.rescheduled))
            )
        if self.lost_stages:
            lines.append(
                f"rescued {_stages(len(self.lost_stages))} of lost workers, enqueued again: "
                + ", ".join(map(str, self.lost_stages))
            )
        if self.failed_lost:
            lines.append(
                f"failed {_jobs(len(self.failed_lost))} whose worker was lost with no retry left: "
                + ", ".join(map(str, self.failed_lost))
            )
        if self.stranded:
            lines.append(
                f"enqueued the next stage of {_jobs(len(self.stranded))} stranded between "
                "stages: " + ", ".join(map(str, self.stranded))
            )
        if self.timed_out:
            lines.append(
                f"timed out {_stages(len(self.timed_out))} waiting for an external service: "
                + ", ".join(map(str, self.timed_out))
            )
        return lines or [f"nothing to recover ({_jobs(self.checked)} queued, all in their queue)"]


def _jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def _stages(count: int) -> str:
    return f"{count} stage" if count == 1 else f"{count} stages"


def recover(*, now: datetime | None = None) -> RecoveryReport:
    """One recovery pass: enqueue again every QUEUED job whose queue entry was lost, and
    rescue every PROCESSING job whose lease ran out."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=float(settings.RECOVERY_GRACE_SECONDS))
    report = RecoveryReport()
    connection = dispatch.redis_connection()
    for batch in _queued_batches(cutoff):
        report.checked += len(batch)
        live = _live(connection, batch)
        lost = [(job_id, token) for job_id, token in batch if not live[job_id]]
        if lost:
            _requeue(lost, cutoff, report)
    expired = list(expired_leases(now))
    running = [row for row in expired if row[2] > 0]
    if running:
        _rescue(running, now, report)
    between = [(job_id, token) for job_id, token, attempt in expired if attempt == 0]
    if between:
        live = _live(connection, between)
        _requeue_stranded([row for row in between if not live[row[0]]], now, report)
    if report.rescued:
        logger.info("Recovery: %s", "; ".join(report.lines()))
    return report


def candidates(cutoff: datetime) -> QuerySet[ProcessingJob]:
    """QUEUED jobs untouched since ``cutoff``, in the order they were queued."""
    return ProcessingJob.objects.filter(
        status=ProcessingStatus.QUEUED, updated_at__lte=cutoff
    ).order_by("enqueued_at", "id")


def leases_run_out(now: datetime) -> QuerySet[ProcessingJob]:
    """PROCESSING jobs whose lease ran out before ``now``, the longest expired first.

    PROCESSING rows are read through the partial index ``job_active``, so the
    finished jobs, however many, cost nothing.
    """
    return ProcessingJob.objects.filter(
        status=ProcessingStatus.PROCESSING, lease_expires_at__lte=now
    ).order_by("lease_expires_at", "id")


def expired_leases(now: datetime) -> Iterator[ExpiredLease]:
    """(id, dispatch_id, stage_attempt) of each job of :func:`leases_run_out`."""
    rows = leases_run_out(now).values_list("id", "dispatch_id", "stage_attempt")
    yield from rows.iterator(chunk_size=BATCH)


def _claimed(job_ids: Sequence[uuid.UUID], now: datetime) -> list[uuid.UUID]:
    """Lock (in the caller's transaction) the PROCESSING jobs with an expired lease that no
    other pass holds; their ids."""
    return list(
        ProcessingJob.objects.select_for_update(skip_locked=True)
        .filter(pk__in=job_ids, status=ProcessingStatus.PROCESSING, lease_expires_at__lte=now)
        .order_by("lease_expires_at", "id")
        .values_list("id", flat=True)
    )


def _rescue(expired: list[ExpiredLease], now: datetime, report: RecoveryReport) -> None:
    """Take over the running stages whose lease ran out (their worker is lost)."""
    checked = {job_id: token for job_id, token, _ in expired}
    with transaction.atomic():
        for job_id in _claimed(list(checked), now):
            try:
                job = lifecycle.rescue_lost_stage(job_id, lost_dispatch=checked[job_id], now=now)
            except Exception:
                logger.exception("Recovery could not rescue the stage of job %s", job_id)
                continue
            if job is None:
                continue
            if job.error_code == StageTimeout.code:
                report.timed_out.append(job_id)
                continue
            requeued = job.status == ProcessingStatus.QUEUED
            (report.lost_stages if requeued else report.failed_lost).append(job_id)


def _requeue_stranded(
    stranded: list[tuple[uuid.UUID, uuid.UUID]], now: datetime, report: RecoveryReport
) -> None:
    """Enqueue the next stage of PROCESSING jobs whose enqueue never happened."""
    checked = dict(stranded)
    with transaction.atomic():
        for job_id in _claimed(list(checked), now):
            try:
                job = lifecycle.requeue_lost(job_id, lost_dispatch=checked[job_id])
            except Exception:
                logger.exception("Recovery could not enqueue job %s again", job_id)
                continue
            if job is not None:
                report.stranded.append(job_id)


def _queued_batches(cutoff: datetime) -> Iterator[list[tuple[uuid.UUID, uuid.UUID]]]:
    """(id, dispatch_id) of QUEUED jobs untouched since ``cutoff``, oldest first, in batches.

    Keyset pagination on (enqueued_at, id): the order they were queued in, so jobs
    rebuilt after Redis lost its data go back in the order they had.
    """
    queued = candidates(cutoff)
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        page = queued
        if after is not None:
            page = page.filter(enqueued_at__gte=after[0]).exclude(
                enqueued_at=after[0], id__lte=after[1]
            )
        rows = list(page.values_list("id", "dispatch_id", "enqueued_at")[:BATCH])
        if not rows:
            return
        yield [(job_id, token) for job_id, token, _ in rows]
        if len(rows) < BATCH:
            return
        after = (rows[-1][2], rows[-1][0])


def _live(connection: Redis, batch: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> dict[uuid.UUID, bool]:
    """For each job of ``batch``, whether its current dispatch has a live RQ entry."""
    pipe = connection.pipeline(transaction=False)
    for job_id, token in batch:
        pipe.hget(Job.key_for(dispatch.rq_job_id(job_id, token)), "status")
    statuses = pipe.execute()
    return {
        job_id: status is not None and status.decode() in LIVE_RQ_STATUSES
        for (job_id, _), status in zip(batch, statuses, strict=True)
    }


def _requeue(
    lost: list[tuple[uuid.UUID, uuid.UUID]],
    cutoff: datetime,
    report: RecoveryReport,
) -> None:
    """Claim the lost jobs no other pass holds, and give each a new queue entry."""
    checked = dict(lost)
    with transaction.atomic():
        claimed = (
            ProcessingJob.objects.select_for_update(skip_locked=True)
            .filter(pk__in=checked, status=ProcessingStatus.QUEUED, updated_at__lte=cutoff)
            .order_by("enqueued_at", "id")
            .values_list("id", flat=True)
        )
        for job_id in list(claimed):
            try:
                job = lifecycle.requeue_lost(job_id, lost_dispatch=checked[job_id])
            except Exception:
                # One job that cannot be enqueued (its job type is no longer registered)
                # must not keep the others from theirs; its savepoint was rolled back.
                logger.exception("Recovery could not enqueue job %s again", job_id)
                continue
            if job is None:
                continue
            due = job.next_attempt_at
            waiting = due is not None and due > timezone.now()
            (report.rescheduled if waiting else report.requeued).append(job_id)
