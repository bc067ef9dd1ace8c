"""The only code that changes a job's status, progress counters, retries or error.

Every transition follows the same steps: lock the job row, check the move
against :mod:`processing.jobs.states`, write the job (status and its timestamp in
one update), its stage run and an :class:`AuditEvent`, and register the side
effects (enqueueing the next RQ job) with ``transaction.on_commit`` so that
nothing is enqueued that the database does not hold. The worker's three
per-stage steps (``begin_stage``, ``record_progress``, ``complete_stage``) do
all of that in one SQL statement each, written out in
:mod:`processing.jobs.statements`; everything else goes through the models.

Transitions, and who calls them:

=====================  ===========================  ==============================
function               job status                   called by
=====================  ===========================  ==============================
``create_job``         (new) -> QUEUED              upload service (pages, API)
``begin_stage``        QUEUED -> PROCESSING         worker, before a stage runs
``record_progress``    PROCESSING (counters only)   stage context, throttled
``complete_stage``     PROCESSING -> PROCESSING     worker: next stage enqueued
                       PROCESSING -> COMPLETED      worker: last stage done
``fail_stage``         PROCESSING -> QUEUED         transient error, retries left
                       PROCESSING -> FAILED         permanent error, or none left
``fail_crashed_stage`` PROCESSING -> FAILED         worker: a parser crashed the stage's work
                                                    horse (DOCUMENT_TOO_COMPLEX, permanent)
``renew_lease``        PROCESSING (lease only)      the stage's heartbeat, when it writes
                                                    no progress
``stop_stage``         (stage run only)             worker, when a stage saw a cancel
``hand_back``          PROCESSING -> QUEUED         worker shutting down (SIGTERM): the
                                                    stage goes back to the front of its
                                                    queue, not counted as an attempt
``stop_stuck_stage``   CANCELLED (stage run only)   RQ, a few seconds after a cancel
``retry``              FAILED -> QUEUED             person; resumes the failed stage
``skip``               FAILED -> SKIPPED            person
``skip_stage``         FAILED -> QUEUED             person; the next stage runs
                       FAILED -> COMPLETED          person; the failed stage was the last
``cancel``             QUEUED|PROCESSING -> CANCEL  person
``prioritize``         QUEUED (queue only)          person
``requeue_lost``       QUEUED (queue only)          recovery: its queue entry was lost
                       PROCESSING (queue only)      recovery: its next stage's enqueue
                                                    never happened (lease ran out)
``rescue_lost_stage``  PROCESSING -> QUEUED         recovery: the stage's lease ran out
                                                    (WORKER_LOST), retries left; an
                                                    external stage's (TIMEOUT), with backoff
                       PROCESSING -> FAILED         the same, none left
``report_external``    as ``record_progress``,      the signed callback of an outside
                       ``complete_stage`` or        service, for an external stage
                       ``fail_stage``
=====================  ===========================  ==============================

A person's actions reach these through :mod:`processing.jobs.actions`, which the
API, the pages and admin share. Each takes the person (``by``), the reason they
gave (``reason``) and the address their request came from (``address``), and
records them in the job's audit event with its status before and after.

Each RQ entry carries the job's ``dispatch_id``; a transition that enqueues
issues a new one, so a stale or duplicated queue entry finds a different token
and does nothing.

The token is also the running stage's lease: every write a stage makes (progress,
completion, failure, and its results through :func:`hold_stage`) is conditional on
it, so once recovery rescues a stage (a new token) its old work horse, should it
still be alive, can no longer write anything. ``lease_expires_at`` says until when
the stage's worker is presumed alive; its progress writes and its heartbeat
(:func:`renew_lease`) extend it.

An **external** stage (``Stage(..., external=True)``) runs nowhere here: ``begin_stage``
hands its lease to :data:`EXTERNAL_HOLDER` for the stage's whole time limit, and the
outside service's callbacks (:func:`report_external`) drive the same transitions a
worker's stage does. A progress report renews the lease (hearing from it counts as a
heartbeat); a stage that hears nothing until its lease runs out is failed ``TIMEOUT``
by recovery and retried with backoff, like any transient error.
"""

from __future__ import annotations

import logging
import random
import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from processing.errors import ExternalStageFailed, StageError, StageTimeout, WorkerLost
from processing.jobs import dispatch, queues, statements
from processing.jobs.states import (
    InvalidTransition,
    JobStatus,
    StageStatus,
    check_job_transition,
    check_stage_transition,
)
from processing.live import notices
from processing.models import (
    AuditEvent,
    Document,
    ProcessingJob,
    ProcessingState,
    StageRun,
)
from processing.permissions import Person, account
from processing.pipeline.registry import DOCUMENT_PROCESSING, get_pipeline

logger = logging.getLogger(__name__)

Actor = Person | None

__all__ = [
    "InvalidTransition",
    "begin_stage",
    "cancel",
    "complete_stage",
    "create_job",
    "fail_crashed_stage",
    "fail_stage",
    "hand_back",
    "hold_stage",
    "prioritize",
    "record_progress",
    "renew_lease",
    "report_external",
    "requeue_lost",
    "rescue_lost_stage",
    "retry",
    "skip",
    "skip_stage",
    "still_running",
    "stop_stage",
    "stop_stuck_stage",
]


# --- helpers -------------------------------------------------------------------------


def _audit(
    job: ProcessingJob,
    action: str,
    by: Actor,
    *,
    from_status: str = "",
    reason: str = "",
    address: str | None = None,
    **details: Any,
) -> None:
    """Append ``action`` to the job's audit trail: from ``from_status`` to its status now."""
    AuditEvent.objects.create(
        matter_id=job.matter_id,
        job=job,
        actor=account(by),
        action=action,
        status_before=from_status,
        status_after=job.status,
        reason=reason,
        client_address=address,
        details=details,
    )


def _locked(job_id: uuid.UUID | str) -> ProcessingJob:
    return ProcessingJob.objects.select_for_update().get(pk=job_id)


def _set_status(job: ProcessingJob, target: str) -> str:
    """Check and apply a status change; returns the old status."""
    current = job.status
    check_job_transition(current, target)
    job.status = target
    return current


def _stage_progress(job: ProcessingJob, done: int, total: int) -> int:
    """Whole-job percentage for ``done`` of ``total`` items of the current stage.

    A stage with no items counts as one item; the figure never goes backwards
    within an attempt.
    """
    fraction = 1.0 if total <= 0 and done > 0 else (min(done, total) / total if total > 0 else 0.0)
    value = int(100 * ((job.stage_index - 1) + fraction) / max(job.total_stages, 1))
    return max(job.progress, min(value, 99 if job.status != JobStatus.COMPLETED else 100))


def _queue_for(document: Document, priority: str) -> str:
    return queues.queue_for(
        priority=priority,
        page_count=document.page_count,
        size=document.size,
        high_max_pages=settings.HIGH_QUEUE_MAX_PAGES,
        high_max_bytes=settings.HIGH_QUEUE_MAX_BYTES,
    )


def _stage_timeout(job: ProcessingJob, stage: str) -> int:
    return get_pipeline(job.job_type).stage(stage).timeout(job.document.page_count)


def _dispatch(job: ProcessingJob, *, at_front: bool = False, when: Any = None) -> None:
    """Give the job a new dispatch token and enqueue its current stage after commit."""
    job.dispatch_id = uuid.uuid4()
    job_id, token, queue = job.id, job.dispatch_id, job.queue_name
    timeout = _stage_timeout(job, job.current_stage)
    transaction.on_commit(
        lambda: dispatch.enqueue_stage(
            job_id, token, queue, at_front=at_front, when=when, timeout=timeout
        )
    )


def _announce(job: ProcessingJob, kind: notices.Kind = "status") -> None:
    """Tell the live relay about the change once it is committed (now, in autocommit)."""
    transaction.on_commit(lambda: notices.announce(job, kind))


def lease_until(now: datetime) -> datetime:
    """When a lease taken or renewed at ``now`` runs out."""
    return now + timedelta(seconds=float(settings.LEASE_SECONDS))


EXTERNAL_HOLDER = "external"
"""The ``lease_holder`` of a begun external stage: the outside service, not a worker."""


def _lease_after(job: ProcessingJob, now: datetime) -> datetime:
    """When the running stage's lease, renewed at ``now``, runs out: a worker's after
    ``LEASE_SECONDS``, an outside service's after the stage's whole time limit."""
    if job.lease_holder == EXTERNAL_HOLDER:
        return now + timedelta(seconds=_stage_timeout(job, job.current_stage))
    return lease_until(now)


def _release(job: ProcessingJob) -> tuple[str, str]:
    """Clear the job's lease (it leaves PROCESSING); the fields to save."""
    job.lease_expires_at = None
    job.lease_holder = ""
    return ("lease_expires_at", "lease_holder")


def _save(job: ProcessingJob, *fields: str) -> None:
    job.updated_at = timezone.now()
    job.save(update_fields=[*fields, "updated_at"])


# --- creation ------------------------------------------------------------------------


def create_job(
    document: Document,
    *,
    by: Actor = None,
    job_type: str = DOCUMENT_PROCESSING,
    priority: str = "default",
    max_retries: int | None = None,
) -> ProcessingJob:
    """Create a QUEUED job for ``document`` and enqueue its first stage after commit."""
    pipeline = get_pipeline(job_type)
    with transaction.atomic():
        now = timezone.now()
        job = ProcessingJob(
            matter_id=document.matter_id,
            document=document,
            job_type=job_type,
            status=JobStatus.QUEUED,
            current_stage=pipeline.stages[0].name,
            stage_index=1,
            total_stages=len(pipeline.stages),
            max_retries=settings.JOB_MAX_RETRIES if max_retries is None else max_retries,
            priority=priority,
            queue_name=_queue_for(document, priority),
            created_by=account(by),
            created_at=now,
            enqueued_at=now,
            updated_at=now,
        )
        _dispatch(job)
        job.save(force_insert=True)
        _audit(job, "created", by, queue=job.queue_name)
        _announce(job)
    return job


# --- the worker's side -----------------------------------------------------------------
#
# Beginning a stage, recording its progress and completing it run once per stage of every
# job; each is one SQL statement of processing.jobs.statements (see why there). Failing a
# stage (rare, and it decides between retry and failure) locks the row with
# select_for_update and goes through the model, like everything people do.

check_job_transition(JobStatus.QUEUED, JobStatus.PROCESSING)
check_job_transition(JobStatus.PROCESSING, JobStatus.COMPLETED)
check_stage_transition(StageStatus.PENDING, StageStatus.IN_PROGRESS)
check_stage_transition(StageStatus.IN_PROGRESS, StageStatus.COMPLETED)
check_stage_transition(StageStatus.IN_PROGRESS, StageStatus.SKIPPED)


def begin_stage(
    job_id: uuid.UUID | str, dispatch_id: uuid.UUID | str, *, worker: str = ""
) -> tuple[ProcessingJob, StageRun] | None:
    """Mark the job's current stage as started; None if this queue entry is stale.

    A queue entry is stale when the job was cancelled, retried, prioritised or
    already moved on since it was enqueued (its token no longer matches), or
    when the same entry was delivered before and its stage has begun. A QUEUED
    job (its first stage, or a stage run again after a failure) becomes
    PROCESSING and the start is audited; the next stage of a job already
    PROCESSING changes no status. Returns the job, with its document, and the
    new stage run.
    """
    now = timezone.now()
    started = statements.begin_stage(
        job_id, dispatch_id, worker=worker[:200], now=now, lease=lease_until(now)
    )
    if started is None:
        return None
    job = started.job
    if get_pipeline(job.job_type).stage(job.current_stage).external:
        # Before the start is announced, so an outside service that acts on the
        # announcement finds its lease: the stage waits for its callbacks, not a worker.
        job.lease_holder = EXTERNAL_HOLDER
        job.lease_expires_at = _lease_after(job, now)
        statements.await_callback(job, holder=EXTERNAL_HOLDER, lease=job.lease_expires_at)
    _announce(job)
    return job, started.run


def record_progress(job: ProcessingJob, run: StageRun, *, done: int, total: int) -> bool:
    """Store the current stage's counters; False if the job is no longer ours to run.

    A cancel (or a rescue) that got the row first wins, and the stage learns of
    it from the return value. The write also renews the stage's lease.
    """
    progress = _stage_progress(job, done, total)
    now = timezone.now()
    ours = statements.record_progress(
        job, run, done=done, total=total, progress=progress, now=now, lease=_lease_after(job, now)
    )
    if ours:
        job.items_done, job.items_total, job.progress = done, total, progress
        job.updated_at = now
        _announce(job, "progress")
    return ours


def renew_lease(job: ProcessingJob) -> bool:
    """Extend the running stage's lease; False once the stage is no longer its to run."""
    return statements.renew_lease(job, lease=lease_until(timezone.now()))


def hold_stage(job: ProcessingJob) -> bool:
    """Inside the stage's transaction: lock its job row ``FOR SHARE`` while it is its to run.

    What the stage then writes in that transaction commits before any rescue,
    cancel or hand-back can change the token. False (nothing locked) when the
    stage was taken over or stopped: the caller rolls back.
    """
    return statements.hold_stage(job)


def still_running(job: ProcessingJob) -> bool:
    """True while the job is PROCESSING under the dispatch token its stage started with."""
    return ProcessingJob.objects.filter(
        pk=job.pk, status=JobStatus.PROCESSING, dispatch_id=job.dispatch_id
    ).exists()


def _end_stage_run(
    stage_run_id: int,
    target: str,
    *,
    done: int,
    total: int,
    error: StageError | None = None,
    detail: str = "",
    note: str = "",
) -> None:
    """Close an IN_PROGRESS stage run (callers hold the job's row lock).

    ``note`` says why a run that is not an error ended early (it is kept as its message).
    """
    check_stage_transition(StageStatus.IN_PROGRESS, target)
    fields: dict[str, Any] = {
        "status": target,
        "items_done": done,
        "items_total": total,
        "finished_at": timezone.now(),
    }
    if error is not None:
        fields.update(error_code=error.code, error_message=error.message, error_detail=detail)
    elif note:
        fields.update(error_message=note)
    StageRun.objects.filter(pk=stage_run_id, status=StageStatus.IN_PROGRESS).update(**fields)


def complete_stage(
    job: ProcessingJob, run: StageRun, *, done: int, total: int
) -> ProcessingJob | None:
    """Record a finished stage and move on: enqueue the next stage, or complete the job.

    ``job`` and ``run`` are what :func:`begin_stage` returned. If the job is
    still PROCESSING under the stage's dispatch token, it moves on and the stage
    run is COMPLETED; otherwise (cancelled, or taken over while the stage ran)
    the stage run is SKIPPED and None is returned. The last stage also marks the
    document processed (incompletely, when a person skipped one of its stages)
    and audits the completion.
    """
    following = get_pipeline(job.job_type).next_after(job.current_stage)
    now = timezone.now()
    # Autocommit: each statement commits alone; inside a caller's transaction, the
    # enqueue waits for its commit.
    if following is None:
        # A stage a person skipped left its results missing.
        state = ProcessingState.INCOMPLETE if job.skipped_stages else ProcessingState.PROCESSED
        progress = statements.complete_last_stage(
            job, run, done=done, total=total, document_state=state, now=now
        )
        if progress is None:
            return None
        job.status, job.completed_at, job.finished_at = JobStatus.COMPLETED, now, now
        job.items_done, job.items_total = done, total
        _release(job)
    else:
        token = uuid.uuid4()
        index = get_pipeline(job.job_type).index_of(following.name)
        # The stage may have counted the pages (the first does): the rest go where they say.
        queue = _queue_for(job.document, job.priority)
        progress = statements.complete_stage(
            job,
            run,
            done=done,
            total=total,
            progress=_stage_progress(job, 1, 1),
            next_stage=following.name,
            next_index=index,
            token=token,
            queue=queue,
            now=now,
            lease=lease_until(now),
        )
        if progress is None:
            return None
        job.current_stage, job.stage_index, job.queue_name = following.name, index, queue
        job.lease_expires_at, job.lease_holder = lease_until(now), ""
        job.items_done = job.items_total = job.stage_attempt = 0
        job.dispatch_id = token
        job_id, queue = job.id, job.queue_name
        timeout = _stage_timeout(job, following.name)
        transaction.on_commit(lambda: dispatch.enqueue_stage(job_id, token, queue, timeout=timeout))
    job.progress, job.updated_at = progress, now
    job.error = job.error_code = None
    job.error_detail = ""
    _announce(job)
    return job


def backoff_seconds(auto_retries: int) -> float:
    """Delay before automatic retry number ``auto_retries`` (1-based): exponential, jittered."""
    base = float(settings.RETRY_BACKOFF_BASE) * 2.0 ** max(auto_retries - 1, 0)
    return min(float(settings.RETRY_BACKOFF_MAX), base) * random.uniform(0.5, 1.0)


# What fail_stage records of every failed attempt, whether it is retried or not.
_ATTEMPT_FIELDS = (
    "status",
    "error",
    "error_code",
    "error_detail",
    "items_done",
    "items_total",
    "lease_expires_at",
    "lease_holder",
)


def fail_stage(
    started: ProcessingJob,
    run: StageRun,
    error: StageError,
    *,
    detail: str = "",
    done: int = 0,
    total: int = 0,
) -> ProcessingJob | None:
    """Record a failed stage: retry later (transient, retries left) or fail the job.

    ``started`` and ``run`` are what :func:`begin_stage` returned. ``detail``
    (a traceback) is kept for staff; users see ``error.message``.
    """
    with transaction.atomic():
        job = _locked(started.pk)
        if job.dispatch_id != started.dispatch_id or job.status != JobStatus.PROCESSING:
            _end_stage_run(run.pk, StageStatus.SKIPPED, done=done, total=total)
            return None
        _record_failure(job, run.pk, error, detail=detail, done=done, total=total)
    return job


def _record_failure(
    job: ProcessingJob,
    run_id: int | None,
    error: StageError,
    *,
    detail: str,
    done: int,
    total: int,
    **audit: Any,
) -> None:
    """Fail the running stage of ``job`` (locked, PROCESSING): retry with backoff, or FAILED."""
    if run_id is not None:
        _end_stage_run(
            run_id, StageStatus.FAILED, done=done, total=total, error=error, detail=detail
        )
    job.error, job.error_code, job.error_detail = error.message, error.code, detail
    job.items_done, job.items_total = done, total
    _release(job)
    if not error.permanent and job.auto_retries < job.max_retries:
        previous = _set_status(job, JobStatus.QUEUED)
        job.auto_retries += 1
        job.retry_count += 1
        delay = backoff_seconds(job.auto_retries)
        job.next_attempt_at = timezone.now() + timedelta(seconds=delay)
        job.enqueued_at = job.next_attempt_at
        _dispatch(job, when=job.next_attempt_at)
        _save(
            job,
            *_ATTEMPT_FIELDS,
            "auto_retries",
            "retry_count",
            "next_attempt_at",
            "enqueued_at",
            "dispatch_id",
        )
        _audit(
            job,
            "retry_scheduled",
            None,
            from_status=previous,
            error_code=error.code,
            delay_seconds=round(delay, 1),
            attempt=job.auto_retries,
            **audit,
        )
    else:
        previous = _set_status(job, JobStatus.FAILED)
        job.finished_at = timezone.now()
        _save(job, *_ATTEMPT_FIELDS, "finished_at")
        _audit(job, "failed", None, from_status=previous, error_code=error.code, **audit)
    _announce(job)


def fail_crashed_stage(
    job_id: uuid.UUID | str, dispatch_id: uuid.UUID | str, error: StageError, *, detail: str
) -> ProcessingJob | None:
    """Fail the stage whose work horse died of a parser's crash (its worker calls this).

    The horse could record nothing as it died, so its worker records it for it, as
    :func:`fail_stage` would have with ``error`` (permanent: the job FAILS at once),
    fenced on the dispatch: only while the job is still PROCESSING under
    ``dispatch_id`` with that dispatch's stage begun. None, doing nothing, otherwise
    (it was cancelled, rescued, or the horse died between two stages).
    """
    with transaction.atomic():
        job = (
            ProcessingJob.objects.select_for_update()
            .select_related("document")
            .filter(pk=job_id, dispatch_id=dispatch_id, status=JobStatus.PROCESSING)
            .exclude(stage_attempt=0)
            .first()
        )
        if job is None:
            return None
        run = (
            StageRun.objects.filter(job=job, status=StageStatus.IN_PROGRESS).order_by("-pk").first()
        )
        if run is None:
            return None
        return fail_stage(
            job, run, error, detail=detail, done=run.items_done, total=run.items_total
        )


def stop_stage(run: StageRun, *, done: int, total: int) -> None:
    """Close a stage run that stopped because its job was cancelled (or taken over)."""
    _end_stage_run(run.pk, StageStatus.SKIPPED, done=done, total=total)


HANDED_BACK = "Handed back on worker shutdown."
"""The message of a stage run whose worker was stopped (a deploy) and gave its stage back."""


def hand_back(
    started: ProcessingJob, run: StageRun, *, done: int, total: int
) -> ProcessingJob | None:
    """PROCESSING -> QUEUED: a worker that is shutting down gives its stage back.

    The stage stopped between two items (its results so far are kept, so the
    next attempt resumes after them); its run ends SKIPPED with the message
    :data:`HANDED_BACK`. The job gets a new token and goes to the front of its
    queue, where another worker takes it at once: a deploy costs no attempt, so
    ``auto_retries`` and ``retry_count`` do not change. Audited ``requeued`` by the
    system, cause ``shutdown``. None when the stage was no longer its worker's
    (cancelled or rescued meanwhile): its run is only closed.
    """
    with transaction.atomic():
        job = _locked(started.pk)
        if job.dispatch_id != started.dispatch_id or job.status != JobStatus.PROCESSING:
            _end_stage_run(run.pk, StageStatus.SKIPPED, done=done, total=total)
            return None
        _end_stage_run(run.pk, StageStatus.SKIPPED, done=done, total=total, note=HANDED_BACK)
        previous = _set_status(job, JobStatus.QUEUED)
        job.items_done, job.items_total = done, total
        job.next_attempt_at = None
        job.enqueued_at = _front_of_queue(job)
        _dispatch(job, at_front=True)
        _save(
            job,
            "status",
            "items_done",
            "items_total",
            "next_attempt_at",
            "enqueued_at",
            "dispatch_id",
            *_release(job),
        )
        _audit(
            job,
            "requeued",
            None,
            from_status=previous,
            cause="shutdown",
            stage=job.current_stage,
            stage_attempt=run.attempt,
            worker=run.worker,
            items_done=done,
            items_total=total,
        )
        _announce(job)
    return job


# --- what people do ------------------------------------------------------------------


def retry(
    job: ProcessingJob, *, by: Actor, reason: str = "", address: str | None = None
) -> ProcessingJob:
    """FAILED -> QUEUED: run the failed stage again; finished items are not redone.

    Only a FAILED job: PROCESSING -> QUEUED is the lifecycle's own move (an automatic
    retry), never a person's, who would otherwise start a running stage over.
    """
    with transaction.atomic():
        job = _locked(job.pk)
        if job.status != JobStatus.FAILED:
            raise InvalidTransition(job.status, JobStatus.QUEUED)
        previous = _set_status(job, JobStatus.QUEUED)
        job.retry_count += 1
        job.auto_retries = 0
        job.error = job.error_code = None
        job.error_detail = ""
        job.next_attempt_at = None
        job.finished_at = None
        job.enqueued_at = timezone.now()
        _dispatch(job)
        _save(
            job,
            "status",
            "retry_count",
            "auto_retries",
            "error",
            "error_code",
            "error_detail",
            "next_attempt_at",
            "finished_at",
            "enqueued_at",
            "dispatch_id",
        )
        _audit(
            job,
            "retried",
            by,
            from_status=previous,
            reason=reason,
            address=address,
            stage=job.current_stage,
        )
        _announce(job)
    return job


def skip(
    job: ProcessingJob, *, by: Actor, reason: str = "", address: str | None = None
) -> ProcessingJob:
    """FAILED -> SKIPPED: give up; the document is marked incompletely processed."""
    return _stop_for_good(job, JobStatus.SKIPPED, "skipped", by=by, reason=reason, address=address)


def cancel(
    job: ProcessingJob, *, by: Actor, reason: str = "", address: str | None = None
) -> ProcessingJob:
    """QUEUED|PROCESSING -> CANCELLED; a running stage stops at its next item.

    The job is CANCELLED as soon as this commits; a running stage learns of it
    between items (:meth:`StageContext.should_stop`) and closes its run. A stage
    stuck inside one item (a long Tesseract page) would not, so cancelling a
    PROCESSING job also schedules :func:`stop_stuck_stage` for
    ``CANCEL_GRACE_SECONDS`` later (see there).
    """
    return _stop_for_good(
        job, JobStatus.CANCELLED, "cancelled", by=by, reason=reason, address=address
    )


def _stop_for_good(
    job: ProcessingJob,
    target: str,
    action: str,
    *,
    by: Actor,
    reason: str,
    address: str | None,
) -> ProcessingJob:
    """Move the job to a final ``target`` status; its document stays incompletely processed."""
    with transaction.atomic():
        job = _locked(job.pk)
        previous = _set_status(job, target)
        job.finished_at = timezone.now()
        job.next_attempt_at = None
        running = job.dispatch_id  # the token a running stage started under
        # A new token turns any queue entry for this job (and a running stage) into a no-op.
        job.dispatch_id = uuid.uuid4()
        _save(job, "status", "finished_at", "next_attempt_at", "dispatch_id", *_release(job))
        Document.objects.filter(pk=job.document_id).update(
            processing_state=ProcessingState.INCOMPLETE
        )
        _audit(
            job,
            action,
            by,
            from_status=previous,
            reason=reason,
            address=address,
            stage=job.current_stage,
        )
        _announce(job)
        if previous == JobStatus.PROCESSING:  # only a cancel stops a running job
            _schedule_stop_check(job, running)
    return job


def _schedule_stop_check(job: ProcessingJob, running: uuid.UUID) -> None:
    """After commit, schedule :func:`stop_stuck_stage` for the stage run under ``running``."""
    job_id, delay = job.id, float(settings.CANCEL_GRACE_SECONDS)
    transaction.on_commit(lambda: dispatch.enqueue_stop_check(job_id, running, delay=delay))


def stop_stuck_stage(job_id: uuid.UUID | str, dispatch_id: uuid.UUID | str) -> bool:
    """The backstop of :func:`cancel`: stop a stage that did not stop by itself.

    Runs as an RQ job ``CANCEL_GRACE_SECONDS`` after a PROCESSING job was
    cancelled (RQ's scheduler enqueues it at the front of ``high``; any free
    worker runs it). A stage reaches its next item within that time, sees the
    cancel and closes its own run; then this finds no open run and does nothing.
    A stage stuck inside one item still has its run open: this closes the run
    (SKIPPED, as a stage that saw the cancel closes it), audits
    ``stage_stopped``, and after commit sends RQ's stop-job command for the
    queue entry the stage runs under (``dispatch_id``, the token it started
    with), which SIGKILLs its work horse. The horse cannot record anything as
    it dies, so it is recorded here first; RQ files the killed entry as
    STOPPED, neither retried by RQ nor handed to an exception handler, so
    nothing overwrites this: the job stays CANCELLED, with no automatic retry.
    The worker itself survives and takes its next job. Returns True when a run
    was still open.

    The check needs RQ's scheduler (the Procfile's workers run it) and a free
    worker: while every other worker is busy, the stuck stage keeps its own
    until one is free. The job itself is CANCELLED from the click on.
    """
    with transaction.atomic():
        job = _locked(job_id)
        runs = list(StageRun.objects.filter(job=job, status=StageStatus.IN_PROGRESS))
        if job.status != JobStatus.CANCELLED or not runs:
            return False
        for run in runs:
            _end_stage_run(run.pk, StageStatus.SKIPPED, done=run.items_done, total=run.items_total)
        _audit(
            job,
            "stage_stopped",
            None,
            from_status=job.status,
            stage=runs[-1].stage,
            worker=runs[-1].worker,
            grace_seconds=float(settings.CANCEL_GRACE_SECONDS),
        )
        transaction.on_commit(lambda: dispatch.stop_running_stage(job_id, dispatch_id))
    return True


# What skip_stage writes of the job, whether it goes on or completes.
_SKIP_STAGE_FIELDS = (
    "status",
    "skipped_stages",
    "error",
    "error_code",
    "error_detail",
    "auto_retries",
    "next_attempt_at",
    "progress",
    "dispatch_id",
)


def skip_stage(
    job: ProcessingJob, *, by: Actor, reason: str = "", address: str | None = None
) -> ProcessingJob:
    """FAILED -> QUEUED past its failed stage, which is marked SKIPPED; the rest runs.

    When the failed stage was the last, FAILED -> COMPLETED at once. Either way
    the stage is added to ``skipped_stages`` and gets a SKIPPED stage run, and
    the job finishes "completed with a skipped stage": its document ends
    incompletely processed, since that stage's results are missing.
    """
    with transaction.atomic():
        job = _locked(job.pk)
        if job.status != JobStatus.FAILED:
            raise InvalidTransition(job.status, "skipped past its failed stage")
        skipped = job.current_stage
        following = get_pipeline(job.job_type).next_after(skipped)
        previous = _set_status(job, JobStatus.QUEUED if following else JobStatus.COMPLETED)
        now = timezone.now()
        _close_skipped_stage(job, now)
        job.skipped_stages = [*job.skipped_stages, skipped]
        job.error = job.error_code = None
        job.error_detail = ""
        job.auto_retries = 0
        job.next_attempt_at = None
        if following is None:
            _complete_past_skipped_stage(job, now)
        else:
            _queue_stage_after_skipped(job, following.name, now)
        _audit(
            job,
            "stage_skipped",
            by,
            from_status=previous,
            reason=reason,
            address=address,
            stage=skipped,
        )
        _announce(job)
    return job


def _complete_past_skipped_stage(job: ProcessingJob, now: datetime) -> None:
    """Write a job whose skipped stage was its last: COMPLETED, its document incomplete."""
    job.progress = 100
    job.completed_at = job.finished_at = now
    # A new token turns any queue entry left for this job into a no-op.
    job.dispatch_id = uuid.uuid4()
    _save(job, *_SKIP_STAGE_FIELDS, "completed_at", "finished_at")
    Document.objects.filter(pk=job.document_id).update(processing_state=ProcessingState.INCOMPLETE)


def _queue_stage_after_skipped(job: ProcessingJob, stage: str, now: datetime) -> None:
    """Write a job whose skipped stage has a ``stage`` after it: QUEUED for that stage."""
    job.progress = _stage_progress(job, 1, 1)
    job.current_stage = stage
    job.stage_index = get_pipeline(job.job_type).index_of(stage)
    job.items_done = job.items_total = job.stage_attempt = 0
    job.finished_at = None
    job.enqueued_at = now
    _dispatch(job)
    _save(
        job,
        *_SKIP_STAGE_FIELDS,
        "current_stage",
        "stage_index",
        "items_done",
        "items_total",
        "stage_attempt",
        "finished_at",
        "enqueued_at",
    )


def _close_skipped_stage(job: ProcessingJob, now: datetime) -> None:
    """Add a SKIPPED run of the job's current stage to its history (never started)."""
    check_stage_transition(StageStatus.PENDING, StageStatus.SKIPPED)
    StageRun.objects.create(
        job=job,
        stage=job.current_stage,
        stage_index=job.stage_index,
        attempt=max(job.stage_attempt, 1),
        status=StageStatus.SKIPPED,
        created_at=now,
        finished_at=now,
    )


def _front_of_queue(job: ProcessingJob) -> datetime:
    """An ``enqueued_at`` that sorts the job ahead of everything waiting in its queue, as
    RQ's ``at_front`` puts it there."""
    first = (
        ProcessingJob.objects.queued()
        .filter(queue_name=job.queue_name)
        .exclude(pk=job.pk)
        .aggregate(first=Min("enqueued_at"))["first"]
    )
    now = timezone.now()
    return min(first, now) - timedelta(milliseconds=1) if first else now


def prioritize(
    job: ProcessingJob, *, by: Actor, reason: str = "", address: str | None = None
) -> ProcessingJob:
    """Move a QUEUED job to the front of the high-priority queue."""
    with transaction.atomic():
        job = _locked(job.pk)
        if job.status != JobStatus.QUEUED:
            raise InvalidTransition(job.status, "prioritised")
        job.priority = job.queue_name = queues.HIGH
        job.enqueued_at = _front_of_queue(job)
        job.next_attempt_at = None
        _dispatch(job, at_front=True)
        _save(job, "priority", "queue_name", "enqueued_at", "next_attempt_at", "dispatch_id")
        _audit(job, "prioritized", by, from_status=JobStatus.QUEUED, reason=reason, address=address)
        _announce(job)
    return job


# --- what recovery does -----------------------------------------------------------------


def requeue_lost(
    job_id: uuid.UUID | str, *, lost_dispatch: uuid.UUID | str
) -> ProcessingJob | None:
    """Enqueue again a job whose queue entry was lost (the status does not change).

    Called by :mod:`processing.jobs.recovery` once it found no live RQ entry for
    the dispatch ``lost_dispatch`` of a QUEUED job, or of a PROCESSING job between
    two stages (its next stage not begun, ``stage_attempt = 0``: the process died
    between the commit of the finished stage and its ``on_commit`` enqueue). The
    job gets a new dispatch token, so an entry of the old one that turns up after
    all (a Redis that comes back with its data) stands down. An automatic retry
    still waiting for its time is scheduled for it, never run early. A job between
    stages gets a new lease, so the next pass leaves it to its new entry. The audit
    trail records ``requeued`` by the system. Returns None, doing nothing, when
    the job is no longer waiting under ``lost_dispatch`` (it moved on since it was
    checked).
    """
    with transaction.atomic():
        job = _locked(job_id)
        between_stages = job.status == JobStatus.PROCESSING and job.stage_attempt == 0
        if not (job.status == JobStatus.QUEUED or between_stages) or str(job.dispatch_id) != str(
            lost_dispatch
        ):
            return None
        now = timezone.now()
        when = job.next_attempt_at if job.next_attempt_at and job.next_attempt_at > now else None
        _dispatch(job, when=when)
        fields = ["dispatch_id"]
        if between_stages:
            job.lease_expires_at = lease_until(now)
            fields.append("lease_expires_at")
        _save(job, *fields)
        _audit(
            job,
            "requeued",
            None,
            from_status=job.status,
            cause="stranded" if between_stages else "queue_entry_lost",
            queue=job.queue_name,
            stage=job.current_stage,
            lost_dispatch=str(lost_dispatch),
            scheduled_for=when.isoformat() if when else None,
        )
    return job


def rescue_lost_stage(
    job_id: uuid.UUID | str, *, lost_dispatch: uuid.UUID | str, now: datetime | None = None
) -> ProcessingJob | None:
    """PROCESSING -> QUEUED (or FAILED): take over a stage whose worker's lease ran out.

    Called by :mod:`processing.jobs.recovery` for a running stage (``stage_attempt >
    0``) whose lease expired before ``now``: its worker was killed (SIGKILL, the
    OOM killer), lost its host, or hangs. The stage run ends FAILED with
    ``WORKER_LOST`` and it counts as an automatic attempt, as any transient
    failure does, so a document that kills its worker every time ends FAILED after
    ``max_retries`` instead of looping. With retries left the job is QUEUED again
    at once (no backoff: the worker's death says nothing about waiting) under a new
    token, which fences the old work horse should it still be alive: every write it
    makes is conditional on the old token. After commit RQ is also asked to kill
    that horse (its worker may be alive, the horse hung). Audited ``requeued`` (or
    ``failed``) by the system, cause ``worker_lost``, with the worker and how far
    the lost run got. An external stage (its lease held by :data:`EXTERNAL_HOLDER`)
    lost no worker: its outside service did not report within the stage's time
    limit, so it fails ``TIMEOUT`` as :func:`fail_stage` fails any transient error
    (retried with backoff). None, doing nothing, when the job is no longer running under
    ``lost_dispatch`` with an expired lease (its worker renewed it, or it moved on).
    """
    now = now or timezone.now()
    with transaction.atomic():
        job = _locked(job_id)
        if (
            job.status != JobStatus.PROCESSING
            or str(job.dispatch_id) != str(lost_dispatch)
            or job.stage_attempt == 0
            or job.lease_expires_at is None
            or job.lease_expires_at > now
        ):
            return None
        if job.lease_holder == EXTERNAL_HOLDER:
            _time_out_external(job)
            return job
        error = WorkerLost()
        holder, expired = job.lease_holder, job.lease_expires_at
        run = (
            StageRun.objects.filter(job=job, status=StageStatus.IN_PROGRESS).order_by("-pk").first()
        )
        counted = run or job
        done, total = counted.items_done, counted.items_total
        detail = f"The lease of worker {holder or '?'} ran out at {expired.isoformat()}."
        if run is not None:
            _end_stage_run(
                run.pk, StageStatus.FAILED, done=done, total=total, error=error, detail=detail
            )
        job.error, job.error_code, job.error_detail = error.message, error.code, detail
        job.items_done, job.items_total = done, total
        _release(job)
        details: dict[str, Any] = {
            "cause": "worker_lost",
            "error_code": error.code,
            "stage": job.current_stage,
            "stage_attempt": job.stage_attempt,
            # Its last sign of life: when it last took or renewed the lease.
            "last_seen": (expired - timedelta(seconds=float(settings.LEASE_SECONDS))).isoformat(),
            "worker": holder,
            "items_done": done,
            "items_total": total,
        }
        if job.auto_retries < job.max_retries:
            previous = _set_status(job, JobStatus.QUEUED)
            job.auto_retries += 1
            job.retry_count += 1
            job.next_attempt_at = None
            job.enqueued_at = timezone.now()
            _dispatch(job)
            _save(
                job,
                *_ATTEMPT_FIELDS,
                "auto_retries",
                "retry_count",
                "next_attempt_at",
                "enqueued_at",
                "dispatch_id",
            )
            _audit(job, "requeued", None, from_status=previous, attempt=job.auto_retries, **details)
        else:
            previous = _set_status(job, JobStatus.FAILED)
            job.finished_at = timezone.now()
            # A new token: the old horse, should it still run, can write nothing more.
            job.dispatch_id = uuid.uuid4()
            _save(job, *_ATTEMPT_FIELDS, "finished_at", "dispatch_id")
            _audit(job, "failed", None, from_status=previous, **details)
        _announce(job)
        job_pk = job.pk
        transaction.on_commit(lambda: dispatch.stop_running_stage(job_pk, lost_dispatch))
    return job


def _time_out_external(job: ProcessingJob) -> None:
    """Fail ``job``'s external stage (locked), whose outside service never reported back."""
    run = StageRun.objects.filter(job=job, status=StageStatus.IN_PROGRESS).order_by("-pk").first()
    counted = run or job
    expired = job.lease_expires_at
    detail = (
        f"No callback for stage {job.current_stage!r} from its external service "
        f"by {expired.isoformat() if expired else '?'}."
    )
    _record_failure(
        job,
        run.pk if run else None,
        StageTimeout(),
        detail=detail,
        done=counted.items_done,
        total=counted.items_total,
        cause="external_timeout",
        stage=job.current_stage,
    )


# --- what an outside service reports -------------------------------------------------------

ExternalEvent = Literal["progress", "completed", "failed"]


class NotAwaitingCallback(InvalidTransition):
    """A callback for a job that is not PROCESSING in the external stage it names."""

    def __init__(self, job: ProcessingJob, stage: str, event: str) -> None:
        super().__init__(job.status, f"{event} ({stage})")
        self.stage = job.current_stage
        self.args = (
            f"This job is not waiting for a report on stage {stage!r}: "
            f"it is {job.status}, at stage {job.current_stage!r}.",
        )


def report_external(
    job_id: uuid.UUID | str,
    *,
    stage: str,
    event: ExternalEvent,
    done: int = 0,
    total: int = 0,
    message: str = "",
    permanent: bool = False,
    attempt: int | None = None,
) -> ProcessingJob:
    """Apply an outside service's report on the external ``stage`` of a job.

    ``progress`` is :func:`record_progress` (which renews the stage's lease: hearing
    from the service counts as a heartbeat), ``completed`` is :func:`complete_stage`
    (the next stage enqueued after commit, or the job COMPLETED), ``failed`` is
    :func:`fail_stage` with ``EXTERNAL_STAGE_FAILED``, permanent as reported; the
    service's ``message`` is kept for staff only. All under the job's row lock,
    inside the caller's transaction, and only while the job is PROCESSING in that
    stage under the token the stage began with, and, when ``attempt`` is given, in that
    attempt of the stage (a late report on an attempt that timed out must not finish
    its retry); otherwise :class:`NotAwaitingCallback`. ``ProcessingJob.DoesNotExist``
    for an unknown job.
    """
    with transaction.atomic():
        job = ProcessingJob.objects.select_for_update().select_related("document").get(pk=job_id)
        try:
            external = get_pipeline(job.job_type).stage(job.current_stage).external
        except KeyError:  # a pipeline no longer registered
            external = False
        run = (
            StageRun.objects.filter(job=job, stage=stage, status=StageStatus.IN_PROGRESS)
            .order_by("-pk")
            .first()
        )
        begun = job.status == JobStatus.PROCESSING and job.stage_attempt > 0
        ours = run is not None and (attempt is None or run.attempt == attempt)
        if not (external and begun and job.current_stage == stage and ours):
            raise NotAwaitingCallback(job, stage, event)
        assert run is not None  # for mypy: checked above
        if event == "progress":
            record_progress(job, run, done=done, total=total)
        elif event == "completed":
            complete_stage(job, run, done=done, total=total)
        else:
            error = ExternalStageFailed(message, permanent=permanent)
            fail_stage(job, run, error, detail=message, done=done, total=total)
    return job
