"""The only code that changes a job's status, progress counters, retries or error.

Every transition follows the same steps: lock the job row, check the move
against :mod:`processing.jobs.states`, write the job (status and its timestamp in
one update), its stage run and an :class:`AuditEvent`, and register the side
effects (enqueueing the next RQ job) with ``transaction.on_commit`` so that
nothing is enqueued that the database does not hold.

Transitions, and who calls them:

=====================  ===========================  ==============================
function               job status                   called by
=====================  ===========================  ==============================
``create_job``         (new) -> QUEUED              upload (view, API)
``begin_stage``        QUEUED -> PROCESSING         worker, before a stage runs
``record_progress``    PROCESSING (counters only)   stage context, throttled
``complete_stage``     PROCESSING -> PROCESSING     worker: next stage enqueued
                       PROCESSING -> COMPLETED      worker: last stage done
``fail_stage``         PROCESSING -> QUEUED         transient error, retries left
                       PROCESSING -> FAILED         permanent error, or none left
``stop_stage``         (stage run only)             worker, when a stage saw a cancel
``retry``              FAILED -> QUEUED             person; resumes the failed stage
``skip``               FAILED -> SKIPPED            person
``cancel``             QUEUED|PROCESSING -> CANCEL  person
``prioritize``         QUEUED (queue only)          person
=====================  ===========================  ==============================

Each RQ entry carries the job's ``dispatch_id``; a transition that enqueues
issues a new one, so a stale or duplicated queue entry finds a different token
and does nothing.
"""

from __future__ import annotations

import functools
import logging
import random
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.db.models import AutoField, Min
from django.utils import timezone

from processing.errors import StageError
from processing.jobs import dispatch
from processing.jobs.states import (
    InvalidTransition,
    JobStatus,
    StageStatus,
    check_job_transition,
    check_stage_transition,
)
from processing.models import (
    AuditEvent,
    Document,
    ProcessingJob,
    ProcessingState,
    StageRun,
)
from processing.pipeline.registry import DOCUMENT_PROCESSING, get_pipeline

logger = logging.getLogger(__name__)

Actor = AbstractBaseUser | AnonymousUser | None

__all__ = [
    "InvalidTransition",
    "begin_stage",
    "cancel",
    "complete_stage",
    "create_job",
    "fail_stage",
    "prioritize",
    "record_progress",
    "retry",
    "skip",
    "still_running",
    "stop_stage",
]


# --- helpers -------------------------------------------------------------------------


def _actor(by: Actor) -> Any:
    return by if by is not None and getattr(by, "is_authenticated", False) else None


def _audit(
    job: ProcessingJob, action: str, by: Actor, *, from_status: str = "", **details: Any
) -> None:
    AuditEvent.objects.create(
        matter_id=job.matter_id,
        job=job,
        actor=_actor(by),
        action=action,
        from_status=from_status,
        to_status=job.status,
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
    if priority == "high":
        return "high"
    if priority == "low":
        return "low"
    pages = document.page_count
    if pages is not None:
        return "high" if pages < settings.HIGH_QUEUE_MAX_PAGES else "default"
    # Page count unknown (the file did not open at upload): a small file is a small job.
    return "high" if document.size < 5 * 1024 * 1024 else "default"


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
            created_by=_actor(by),
            created_at=now,
            enqueued_at=now,
            updated_at=now,
        )
        _dispatch(job)
        job.save(force_insert=True)
        _audit(job, "created", by, queue=job.queue_name)
    return job


# --- the worker's side -----------------------------------------------------------------
#
# These run once per stage of every job, so their round trips are most of what tracking
# costs a pipeline (bench/tracking_overhead.py). Beginning a stage, reporting progress
# and completing a stage are therefore each ONE statement: a conditional UPDATE of the
# job, with the rows that go with it (stage run, audit event, document) written by
# data-modifying CTEs of the same statement, so they commit together.
# ``UPDATE ... WHERE id = … AND dispatch_id = … AND status = …`` is the lock, check and
# write of the other transitions in one round trip: the UPDATE takes the row lock, and
# PostgreSQL re-checks the WHERE against the row as it is once the lock is held, so a
# cancel that committed first makes it match nothing. The status moves these make are
# checked against processing.jobs.states when this module loads. Failing a stage (rare, and
# it decides between retry and failure) and everything people do lock the row with
# select_for_update and go through the model.

check_job_transition(JobStatus.QUEUED, JobStatus.PROCESSING)
check_job_transition(JobStatus.PROCESSING, JobStatus.COMPLETED)
check_stage_transition(StageStatus.PENDING, StageStatus.IN_PROGRESS)
check_stage_transition(StageStatus.IN_PROGRESS, StageStatus.COMPLETED)
check_stage_transition(StageStatus.IN_PROGRESS, StageStatus.SKIPPED)


def _table(model: type[Any]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@functools.cache
def _insert_fields(model: type[Any], exclude: tuple[str, ...], prefix: str) -> tuple[Any, str, str]:
    """The fields, column list and named placeholders to INSERT a ``model`` row.

    Fields in ``exclude`` are left out (the statement takes them from elsewhere);
    placeholders are ``%(<prefix><n>)s``, filled by :func:`_insert_params`.
    """
    fields = tuple(
        f
        for f in model._meta.concrete_fields
        if not isinstance(f, AutoField) and f.name not in exclude
    )
    for f in fields:
        if f.generated or f.has_db_default():
            raise NotImplementedError(f"the worker's INSERT cannot fill {f} yet")
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(f"%({prefix}{n})s" for n in range(len(fields)))
    return fields, columns, placeholders


def _insert_params(instance: Any, fields: tuple[Any, ...], prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}{n}": f.get_db_prep_save(getattr(instance, f.attname), connection)
        for n, f in enumerate(fields)
    }


@functools.cache
def _columns(model: type[Any], alias: str) -> tuple[list[str], str]:
    """Attribute names and the SELECT list of every column of ``model``, as ``alias``.

    The values are handed to ``Model.from_db`` as psycopg returns them, without
    Django's converters: a field that needs one (JSONField, a custom field) stops
    this here rather than arrive unconverted.
    """
    fields = model._meta.concrete_fields
    for f in fields:
        if hasattr(f, "from_db_value") or f.get_db_converters(connection):
            raise NotImplementedError(f"the worker's SELECT cannot convert {f} yet")
    quote = connection.ops.quote_name
    return [f.attname for f in fields], ", ".join(f"{alias}.{quote(f.column)}" for f in fields)


# What begin_stage's stage run and audit event take from the updated job row.
_RUN_FROM_JOB = ("job", "stage", "stage_index", "attempt")
_AUDIT_FROM_JOB = ("matter", "job", "details")


@functools.cache
def _begin_sql() -> str:
    _, run_columns, run_values = _insert_fields(StageRun, _RUN_FROM_JOB, "run")
    _, audit_columns, audit_values = _insert_fields(AuditEvent, _AUDIT_FROM_JOB, "audit")
    _, job_columns = _columns(ProcessingJob, "job")
    _, document_columns = _columns(Document, "document")
    # ``current`` locks the row and reads its status as it is once locked (the
    # UPDATE re-checks its WHERE against that same version), so ``current.status``
    # says whether this start is QUEUED -> PROCESSING. A PROCESSING job's next stage
    # has not begun while its stage_attempt is 0 (complete_stage resets it), so a
    # second delivery of the same queue entry finds it begun and does nothing.
    return f"""
        WITH current AS (
            SELECT id, status FROM {_table(ProcessingJob)}
            WHERE id = %(job)s AND dispatch_id = %(dispatch)s
            FOR UPDATE
        ), job AS (
            UPDATE {_table(ProcessingJob)}
            SET status = %(processing)s, started_at = COALESCE(started_at, %(now)s),
                stage_started_at = %(now)s, items_done = 0, items_total = 0,
                next_attempt_at = NULL, stage_attempt = stage_attempt + 1, updated_at = %(now)s
            WHERE id = (SELECT id FROM current) AND dispatch_id = %(dispatch)s
                AND (status = %(queued)s OR (status = %(processing)s AND stage_attempt = 0))
            RETURNING *
        ), run AS (
            INSERT INTO {_table(StageRun)} (job_id, stage, stage_index, attempt, {run_columns})
            SELECT id, current_stage, stage_index, stage_attempt, {run_values} FROM job
            RETURNING id
        ), audited AS (
            INSERT INTO {_table(AuditEvent)} (matter_id, job_id, details, {audit_columns})
            SELECT job.matter_id, job.id, jsonb_build_object('stage', job.current_stage),
                {audit_values}
            FROM job, current WHERE current.status = %(queued)s
        )
        SELECT run.id, {job_columns}, {document_columns}
        FROM job JOIN {_table(Document)} document ON document.id = job.document_id, run
    """


def prepare_statements() -> None:
    """Build the worker's statements and have psycopg parse each once, in this process.

    A forking worker calls this before it forks, so every work horse starts with
    both cached instead of building and parsing them for each stage it runs.
    Parsing ahead needs psycopg's client-side binding (Django's default); without
    it only the statements are built.
    """

    class _Nulls(dict[str, Any]):
        def __missing__(self, key: str) -> None:
            return None

    statements = (_begin_sql(), _complete_sql(True), _complete_sql(False), _progress_sql())
    with connection.cursor() as cursor:
        mogrify = getattr(cursor.cursor, "mogrify", None)
        for sql in statements if mogrify is not None else ():
            mogrify(sql, _Nulls())


def begin_stage(
    job_id: uuid.UUID | str, dispatch_id: uuid.UUID | str, *, worker: str = ""
) -> tuple[ProcessingJob, StageRun] | None:
    """Mark the job's current stage as started; None if this queue entry is stale.

    A queue entry is stale when the job was cancelled, retried, prioritised or
    already moved on since it was enqueued (its token no longer matches), or
    when the same entry was delivered before and its stage has begun.

    One statement locks the job row, checks the token and the status, resets
    the stage counters, opens the stage run and reads the job and its document
    for the stage. A QUEUED job (its first stage, or a stage run again after a
    failure) becomes PROCESSING and the start is audited; the next stage of a
    job already PROCESSING changes no status.
    """
    now = timezone.now()
    run = StageRun(
        status=StageStatus.IN_PROGRESS, worker=worker[:200], created_at=now, started_at=now
    )
    audit = AuditEvent(
        action="started",
        from_status=JobStatus.QUEUED,
        to_status=JobStatus.PROCESSING,
        created_at=now,
    )
    run_fields, _, _ = _insert_fields(StageRun, _RUN_FROM_JOB, "run")
    audit_fields, _, _ = _insert_fields(AuditEvent, _AUDIT_FROM_JOB, "audit")
    params = {
        "job": job_id,
        "dispatch": dispatch_id,
        "now": now,
        "queued": JobStatus.QUEUED,
        "processing": JobStatus.PROCESSING,
        **_insert_params(run, run_fields, "run"),
        **_insert_params(audit, audit_fields, "audit"),
    }
    with connection.cursor() as cursor:
        cursor.execute(_begin_sql(), params)
        row = cursor.fetchone()
    if row is None:
        return None
    job_attnames, _ = _columns(ProcessingJob, "job")
    document_attnames, _ = _columns(Document, "document")
    split = 1 + len(job_attnames)
    job = ProcessingJob.from_db(connection.alias, job_attnames, row[1:split])
    job.document = Document.from_db(connection.alias, document_attnames, row[split:])
    run.id, run.job = row[0], job
    run.stage, run.stage_index, run.attempt = job.current_stage, job.stage_index, job.stage_attempt
    run._state.adding = False
    return job, run


@functools.cache
def _progress_sql() -> str:
    return f"""
        WITH job AS (
            UPDATE {_table(ProcessingJob)}
            SET items_done = %(done)s, items_total = %(total)s,
                progress = GREATEST(progress, %(progress)s), updated_at = %(now)s
            WHERE id = %(job)s AND dispatch_id = %(dispatch)s AND status = %(processing)s
            RETURNING id
        ), run AS (
            UPDATE {_table(StageRun)} SET items_done = %(done)s, items_total = %(total)s
            WHERE id = %(run)s AND EXISTS (SELECT FROM job)
        )
        SELECT EXISTS (SELECT FROM job)
    """


def record_progress(job: ProcessingJob, run: StageRun, *, done: int, total: int) -> bool:
    """Store the current stage's counters; False if the job is no longer ours to run.

    One conditional statement: a cancel that got the row first wins, and the
    stage learns of it from the return value.
    """
    progress = _stage_progress(job, done, total)
    params = {
        "job": job.id,
        "dispatch": job.dispatch_id,
        "run": run.pk,
        "done": done,
        "total": total,
        "progress": progress,
        "now": timezone.now(),
        "processing": JobStatus.PROCESSING,
    }
    with connection.cursor() as cursor:
        cursor.execute(_progress_sql(), params)
        (ours,) = cursor.fetchone()
    if ours:
        job.items_done, job.items_total, job.progress = done, total, progress
    return bool(ours)


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
) -> None:
    """Close an IN_PROGRESS stage run (callers hold the job's row lock)."""
    check_stage_transition(StageStatus.IN_PROGRESS, target)
    fields: dict[str, Any] = {
        "status": target,
        "items_done": done,
        "items_total": total,
        "finished_at": timezone.now(),
    }
    if error is not None:
        fields.update(error_code=error.code, error_message=error.message, error_detail=detail)
    StageRun.objects.filter(pk=stage_run_id, status=StageStatus.IN_PROGRESS).update(**fields)


@functools.cache
def _complete_sql(last: bool) -> str:
    """The statement of :func:`complete_stage`: to the next stage, or (``last``) COMPLETED."""
    if last:
        _, audit_columns, audit_values = _insert_fields(AuditEvent, (), "audit")
        moved = f"""
            UPDATE {_table(ProcessingJob)}
            SET status = %(completed)s, progress = 100, completed_at = %(now)s,
                finished_at = %(now)s, items_done = %(done)s, items_total = %(total)s,
                error = NULL, error_code = NULL, error_detail = '', updated_at = %(now)s
            WHERE id = %(job)s AND dispatch_id = %(dispatch)s AND status = %(processing)s
            RETURNING progress
        """
        after = f"""
            , processed AS (
                UPDATE {_table(Document)} SET processing_state = %(processed)s
                WHERE id = %(document)s AND EXISTS (SELECT FROM job)
            ), audited AS (
                INSERT INTO {_table(AuditEvent)} ({audit_columns})
                SELECT {audit_values} WHERE EXISTS (SELECT FROM job)
            )
        """
    else:
        moved = f"""
            UPDATE {_table(ProcessingJob)}
            SET progress = GREATEST(progress, %(progress)s), current_stage = %(next)s,
                stage_index = %(index)s, items_done = 0, items_total = 0, stage_attempt = 0,
                dispatch_id = %(token)s,
                error = NULL, error_code = NULL, error_detail = '', updated_at = %(now)s
            WHERE id = %(job)s AND dispatch_id = %(dispatch)s AND status = %(processing)s
            RETURNING progress
        """
        after = ""
    return f"""
        WITH job AS ({moved}), run AS (
            UPDATE {_table(StageRun)}
            SET status = CASE WHEN EXISTS (SELECT FROM job) THEN %(run_completed)s
                    ELSE %(run_skipped)s END,
                items_done = %(done)s, items_total = %(total)s, finished_at = %(now)s
            WHERE id = %(run)s AND status = %(in_progress)s
        ){after}
        SELECT progress FROM job
    """


def complete_stage(
    job: ProcessingJob, run: StageRun, *, done: int, total: int
) -> ProcessingJob | None:
    """Record a finished stage and move on: enqueue the next stage, or complete the job.

    ``job`` and ``run`` are what :func:`begin_stage` returned. One statement
    moves the job on (if it is still PROCESSING under the stage's dispatch
    token), closes the stage run (COMPLETED, or SKIPPED when the job was
    cancelled or taken over while the stage ran; then None is returned) and,
    for the last stage, marks the document processed and audits.
    """
    pipeline = get_pipeline(job.job_type)
    following = pipeline.next_after(job.current_stage)
    now = timezone.now()
    token = uuid.uuid4()
    params: dict[str, Any] = {
        "job": job.id,
        "dispatch": job.dispatch_id,
        "run": run.pk,
        "now": now,
        "done": done,
        "total": total,
        "processing": JobStatus.PROCESSING,
        "run_completed": StageStatus.COMPLETED,
        "run_skipped": StageStatus.SKIPPED,
        "in_progress": StageStatus.IN_PROGRESS,
    }
    if following is None:
        audit = AuditEvent(
            matter_id=job.matter_id,
            job_id=job.id,
            action="completed",
            from_status=JobStatus.PROCESSING,
            to_status=JobStatus.COMPLETED,
            details={},
            created_at=now,
        )
        audit_fields, _, _ = _insert_fields(AuditEvent, (), "audit")
        params.update(
            completed=JobStatus.COMPLETED,
            processed=ProcessingState.PROCESSED,
            document=job.document_id,
            **_insert_params(audit, audit_fields, "audit"),
        )
    else:
        index = pipeline.index_of(following.name)
        params.update(
            progress=_stage_progress(job, 1, 1), next=following.name, index=index, token=token
        )
    # Autocommit: the statement commits alone; inside a caller's transaction, the
    # enqueue waits for its commit.
    with connection.cursor() as cursor:
        cursor.execute(_complete_sql(following is None), params)
        row = cursor.fetchone()
    if row is None:
        return None
    job.progress, job.updated_at = row[0], now
    job.error = job.error_code = None
    job.error_detail = ""
    if following is None:
        job.status, job.completed_at, job.finished_at = JobStatus.COMPLETED, now, now
        job.items_done, job.items_total = done, total
    else:
        job.current_stage, job.stage_index = following.name, index
        job.items_done = job.items_total = job.stage_attempt = 0
        job.dispatch_id = token
        job_id, queue = job.id, job.queue_name
        timeout = _stage_timeout(job, following.name)
        transaction.on_commit(lambda: dispatch.enqueue_stage(job_id, token, queue, timeout=timeout))
    return job


def backoff_seconds(auto_retries: int) -> float:
    """Delay before automatic retry number ``auto_retries`` (1-based): exponential, jittered."""
    base = settings.RETRY_BACKOFF_BASE * (2 ** max(auto_retries - 1, 0))
    return min(settings.RETRY_BACKOFF_MAX, base) * random.uniform(0.5, 1.0)


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
        _end_stage_run(
            run.pk, StageStatus.FAILED, done=done, total=total, error=error, detail=detail
        )
        job.error, job.error_code, job.error_detail = error.message, error.code, detail
        job.items_done, job.items_total = done, total
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
                "status",
                "error",
                "error_code",
                "error_detail",
                "items_done",
                "items_total",
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
            )
        else:
            previous = _set_status(job, JobStatus.FAILED)
            job.finished_at = timezone.now()
            _save(
                job,
                "status",
                "error",
                "error_code",
                "error_detail",
                "items_done",
                "items_total",
                "finished_at",
            )
            _audit(job, "failed", None, from_status=previous, error_code=error.code)
    return job


def stop_stage(run: StageRun, *, done: int, total: int) -> None:
    """Close a stage run that stopped because its job was cancelled."""
    _end_stage_run(run.pk, StageStatus.SKIPPED, done=done, total=total)


# --- what people do ------------------------------------------------------------------


def retry(job: ProcessingJob, *, by: Actor) -> ProcessingJob:
    """FAILED -> QUEUED: run the failed stage again; finished items are not redone."""
    with transaction.atomic():
        job = _locked(job.pk)
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
        _audit(job, "retried", by, from_status=previous, stage=job.current_stage)
    return job


def skip(job: ProcessingJob, *, by: Actor) -> ProcessingJob:
    """FAILED -> SKIPPED: give up; the document is marked incompletely processed."""
    with transaction.atomic():
        job = _locked(job.pk)
        previous = _set_status(job, JobStatus.SKIPPED)
        job.finished_at = timezone.now()
        _save(job, "status", "finished_at")
        Document.objects.filter(pk=job.document_id).update(
            processing_state=ProcessingState.INCOMPLETE
        )
        _audit(job, "skipped", by, from_status=previous, stage=job.current_stage)
    return job


def cancel(job: ProcessingJob, *, by: Actor) -> ProcessingJob:
    """QUEUED|PROCESSING -> CANCELLED; a running stage stops at its next item."""
    with transaction.atomic():
        job = _locked(job.pk)
        previous = _set_status(job, JobStatus.CANCELLED)
        job.finished_at = timezone.now()
        job.next_attempt_at = None
        # A new token turns any queue entry for this job into a no-op.
        job.dispatch_id = uuid.uuid4()
        _save(job, "status", "finished_at", "next_attempt_at", "dispatch_id")
        Document.objects.filter(pk=job.document_id).update(
            processing_state=ProcessingState.INCOMPLETE
        )
        _audit(job, "cancelled", by, from_status=previous, stage=job.current_stage)
    return job


def prioritize(job: ProcessingJob, *, by: Actor) -> ProcessingJob:
    """Move a QUEUED job to the front of the high-priority queue."""
    with transaction.atomic():
        job = _locked(job.pk)
        if job.status != JobStatus.QUEUED:
            raise InvalidTransition(job.status, "prioritised")
        job.priority = "high"
        job.queue_name = "high"
        first = (
            ProcessingJob.objects.queued()
            .filter(queue_name="high")
            .exclude(pk=job.pk)
            .aggregate(first=Min("enqueued_at"))["first"]
        )
        now = timezone.now()
        # Sort it ahead of everything waiting in `high`, as RQ's at_front does.
        job.enqueued_at = min(first, now) - timedelta(milliseconds=1) if first else now
        job.next_attempt_at = None
        _dispatch(job, at_front=True)
        _save(job, "priority", "queue_name", "enqueued_at", "next_attempt_at", "dispatch_id")
        _audit(job, "prioritized", by, from_status=JobStatus.QUEUED)
    return job
