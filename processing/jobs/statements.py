"""The worker's per-stage steps, each written as one SQL statement.

They run once per stage of every job, so their round trips are most of what
tracking costs a pipeline (``bench/tracking_overhead.py``). Beginning a stage,
recording its progress and completing it are therefore each ONE statement: a
conditional ``UPDATE`` of the job row, with the rows that go with it (the stage
run, an audit event, the document) written by data-modifying CTEs of the same
statement, so that they commit together.

``UPDATE … WHERE id = … AND dispatch_id = … AND status = …`` is the lock, the
check and the write of a transition in one round trip: the ``UPDATE`` takes the
row lock, and PostgreSQL re-checks the ``WHERE`` against the row as it is once
the lock is held, so a cancel that committed first makes it match nothing.

Only :mod:`processing.jobs.lifecycle` calls these functions; it decides the
values (progress, the next stage, tokens) and registers what happens after
commit. The status moves they make are checked against
:mod:`processing.jobs.states` when the lifecycle loads.

The column lists are written out. ``tests/test_statements.py`` fails when a
model gains a field that they do not list, and checks that each statement
writes the same rows as the same transition written with the ORM.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from django.db import connection

from processing.jobs.states import JobStatus, StageStatus
from processing.models import Document, ProcessingJob, ProcessingState, StageRun

# Every column of the rows the statements read back, in the models' field order
# (Model.from_db takes the values in that order).
JOB_COLUMNS = (
    "id",
    "matter_id",
    "document_id",
    "job_type",
    "status",
    "error",
    "error_code",
    "error_detail",
    "current_stage",
    "stage_index",
    "total_stages",
    "items_total",
    "items_done",
    "progress",
    "stage_attempt",
    "skipped_stages",
    "retry_count",
    "auto_retries",
    "max_retries",
    "next_attempt_at",
    "priority",
    "queue_name",
    "dispatch_id",
    "enqueued_at",
    "created_by_id",
    "created_at",
    "started_at",
    "stage_started_at",
    "completed_at",
    "finished_at",
    "updated_at",
    "lease_expires_at",
    "lease_holder",
)
DOCUMENT_COLUMNS = (
    "id",
    "matter_id",
    "uploaded_by_id",
    "original_name",
    "file",
    "content_type",
    "size",
    "sha256",
    "page_count",
    "processing_state",
    "created_at",
)
STAGE_RUN_COLUMNS = (
    "id",
    "job_id",
    "stage",
    "stage_index",
    "attempt",
    "status",
    "items_total",
    "items_done",
    "worker",
    "error_code",
    "error_message",
    "error_detail",
    "created_at",
    "started_at",
    "finished_at",
)


def _select(alias: str, columns: tuple[str, ...]) -> str:
    return ", ".join(f"{alias}.{column}" for column in columns)


BEGIN_STAGE = f"""
    WITH current AS (
        SELECT id, status FROM processing_processingjob
        WHERE id = %(job)s AND dispatch_id = %(dispatch)s
        FOR UPDATE
    ), job AS (
        UPDATE processing_processingjob
        SET status = %(processing)s, started_at = COALESCE(started_at, %(now)s),
            stage_started_at = %(now)s, items_done = 0, items_total = 0,
            next_attempt_at = NULL, stage_attempt = stage_attempt + 1, updated_at = %(now)s,
            lease_expires_at = %(lease)s, lease_holder = %(worker)s
        WHERE id = (SELECT id FROM current) AND dispatch_id = %(dispatch)s
            AND (status = %(queued)s OR (status = %(processing)s AND stage_attempt = 0))
        RETURNING *
    ), run AS (
        INSERT INTO processing_stagerun (
            job_id, stage, stage_index, attempt, status, items_total, items_done, worker,
            error_code, error_message, error_detail, created_at, started_at, finished_at
        )
        SELECT id, current_stage, stage_index, stage_attempt, %(in_progress)s, 0, 0, %(worker)s,
            NULL, NULL, '', %(now)s, %(now)s, NULL
        FROM job
        RETURNING *
    ), audited AS (
        INSERT INTO processing_auditevent (
            matter_id, job_id, actor_id, action, status_before, status_after, reason,
            client_address, details, created_at
        )
        SELECT job.matter_id, job.id, NULL, 'started', %(queued)s, %(processing)s, '', NULL,
            jsonb_build_object('stage', job.current_stage), %(now)s
        FROM job, current
        WHERE current.status = %(queued)s
    )
    SELECT {_select("job", JOB_COLUMNS)},
        {_select("document", DOCUMENT_COLUMNS)},
        {_select("run", STAGE_RUN_COLUMNS)},
        current.status = %(queued)s
    FROM job JOIN processing_document document ON document.id = job.document_id, run, current
"""


class Started(NamedTuple):
    """What :func:`begin_stage` returns: the job with its document, its new stage run, and
    whether the job was QUEUED (its status changed) rather than moving to a next stage."""

    job: ProcessingJob
    run: StageRun
    was_queued: bool


def begin_stage(
    job_id: uuid.UUID | str,
    dispatch_id: uuid.UUID | str,
    *,
    worker: str,
    now: datetime,
    lease: datetime,
) -> Started | None:
    """Start the job's current stage; None when this queue entry is stale.

    Locks: the job row (``FOR UPDATE`` in ``current``), if ``dispatch_id`` is its token.
    Checks: the job is QUEUED, or PROCESSING with its next stage not begun yet
    (``stage_attempt = 0``, which :data:`COMPLETE_STAGE` sets), so a queue entry
    delivered twice runs its stage once. ``current`` reads the status as it is
    once locked, which is how the audit knows whether this is QUEUED -> PROCESSING.
    Writes: the job (PROCESSING, stage counters reset, ``stage_attempt`` + 1, its
    lease held by ``worker`` until ``lease``); a new IN_PROGRESS stage run; for a
    QUEUED job, a "started" audit event.
    Returns: the job with its document, the stage run, and whether it was QUEUED.
    """
    params: dict[str, Any] = {
        "job": job_id,
        "dispatch": dispatch_id,
        "worker": worker,
        "now": now,
        "lease": lease,
        "queued": JobStatus.QUEUED,
        "processing": JobStatus.PROCESSING,
        "in_progress": StageStatus.IN_PROGRESS,
    }
    with connection.cursor() as cursor:
        cursor.execute(BEGIN_STAGE, params)
        row = cursor.fetchone()
    if row is None:
        return None
    job_end = len(JOB_COLUMNS)
    document_end = job_end + len(DOCUMENT_COLUMNS)
    job = ProcessingJob.from_db(connection.alias, JOB_COLUMNS, row[:job_end])
    job.document = Document.from_db(connection.alias, DOCUMENT_COLUMNS, row[job_end:document_end])
    run = StageRun.from_db(connection.alias, STAGE_RUN_COLUMNS, row[document_end:-1])
    run.job = job
    return Started(job, run, bool(row[-1]))


RECORD_PROGRESS = """
    WITH job AS (
        UPDATE processing_processingjob
        SET items_done = %(done)s, items_total = %(total)s,
            progress = GREATEST(progress, %(progress)s), updated_at = %(now)s,
            lease_expires_at = %(lease)s
        WHERE id = %(job)s AND dispatch_id = %(dispatch)s AND status = %(processing)s
        RETURNING id
    ), run AS (
        UPDATE processing_stagerun
        SET items_done = %(done)s, items_total = %(total)s
        WHERE id = %(run)s AND EXISTS (SELECT FROM job)
    )
    SELECT EXISTS (SELECT FROM job)
"""


def record_progress(
    job: ProcessingJob,
    run: StageRun,
    *,
    done: int,
    total: int,
    progress: int,
    now: datetime,
    lease: datetime,
) -> bool:
    """Store the running stage's counters; False when the job is no longer this stage's.

    Locks: the job row, if it is PROCESSING under the stage's dispatch token.
    Checks: that token and status (a cancel that got the row first wins).
    Writes: the job's and the stage run's item counters, the job's progress,
    which never goes down (``GREATEST``), and its lease, renewed until ``lease``
    (the heartbeat rides on the progress write: no round trip of its own).
    """
    params: dict[str, Any] = {
        "job": job.id,
        "dispatch": job.dispatch_id,
        "run": run.pk,
        "done": done,
        "total": total,
        "progress": progress,
        "now": now,
        "lease": lease,
        "processing": JobStatus.PROCESSING,
    }
    with connection.cursor() as cursor:
        cursor.execute(RECORD_PROGRESS, params)
        (ours,) = cursor.fetchone()
    return bool(ours)


# Both completions close the stage run the same way: COMPLETED when the job row
# was still the stage's to move on, SKIPPED when it was cancelled or taken over.
_CLOSE_RUN = """
    run AS (
        UPDATE processing_stagerun
        SET status = CASE WHEN EXISTS (SELECT FROM job) THEN %(run_completed)s
                ELSE %(run_skipped)s END,
            items_done = %(done)s, items_total = %(total)s, finished_at = %(now)s
        WHERE id = %(run)s AND status = %(in_progress)s
    )
"""

COMPLETE_STAGE = f"""
    WITH job AS (
        UPDATE processing_processingjob
        SET progress = GREATEST(progress, %(progress)s), current_stage = %(next)s,
            stage_index = %(index)s, items_done = 0, items_total = 0, stage_attempt = 0,
            dispatch_id = %(token)s, queue_name = %(queue)s, lease_expires_at = %(lease)s,
            lease_holder = '', error = NULL, error_code = NULL, error_detail = '',
            updated_at = %(now)s
        WHERE id = %(job)s AND dispatch_id = %(dispatch)s AND status = %(processing)s
        RETURNING progress
    ), {_CLOSE_RUN}
    SELECT progress FROM job
"""

COMPLETE_LAST_STAGE = f"""
    WITH job AS (
        UPDATE processing_processingjob
        SET status = %(completed)s, progress = 100, completed_at = %(now)s,
            finished_at = %(now)s, items_done = %(done)s, items_total = %(total)s,
            lease_expires_at = NULL, lease_holder = '',
            error = NULL, error_code = NULL, error_detail = '', updated_at = %(now)s
        WHERE id = %(job)s AND dispatch_id = %(dispatch)s AND status = %(processing)s
        RETURNING progress
    ), {_CLOSE_RUN}, processed AS (
        UPDATE processing_document SET processing_state = %(document_state)s
        WHERE id = %(document)s AND EXISTS (SELECT FROM job)
    ), audited AS (
        INSERT INTO processing_auditevent (
            matter_id, job_id, actor_id, action, status_before, status_after, reason,
            client_address, details, created_at
        )
        SELECT %(matter)s, %(job)s, NULL, 'completed', %(processing)s, %(completed)s, '', NULL,
            '{{}}'::jsonb, %(now)s
        WHERE EXISTS (SELECT FROM job)
    )
    SELECT progress FROM job
"""


def _completion_params(
    job: ProcessingJob, run: StageRun, *, done: int, total: int, now: datetime
) -> dict[str, Any]:
    return {
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


def _progress_of(sql: str, params: dict[str, Any]) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def complete_stage(
    job: ProcessingJob,
    run: StageRun,
    *,
    done: int,
    total: int,
    progress: int,
    next_stage: str,
    next_index: int,
    token: uuid.UUID,
    queue: str,
    now: datetime,
    lease: datetime,
) -> int | None:
    """Close a finished stage and point the job at ``next_stage`` under a new ``token``,
    on ``queue``.

    Locks: the job row, if it is PROCESSING under the stage's dispatch token.
    Checks: that token and status.
    Writes: the job (next stage, counters reset, ``stage_attempt = 0``, the new
    token and queue, error cleared, progress never down, a lease with no holder until
    ``lease``: should the next stage's enqueue never happen, recovery finds the
    job once it runs out); the stage run COMPLETED, or
    SKIPPED when the job was cancelled or taken over while the stage ran.
    Returns: the job's progress, or None when the job was no longer the stage's.
    """
    params = _completion_params(job, run, done=done, total=total, now=now)
    params.update(
        progress=progress, next=next_stage, index=next_index, token=token, queue=queue, lease=lease
    )
    return _progress_of(COMPLETE_STAGE, params)


def complete_last_stage(
    job: ProcessingJob,
    run: StageRun,
    *,
    done: int,
    total: int,
    document_state: str = ProcessingState.PROCESSED,
    now: datetime,
) -> int | None:
    """Close the last stage and complete the job.

    Locks: the job row, if it is PROCESSING under the stage's dispatch token.
    Checks: that token and status.
    Writes: the job (COMPLETED, progress 100, its timestamps, error and lease
    cleared); the
    stage run COMPLETED (or SKIPPED, as above); the document's ``document_state``
    (PROCESSED, or INCOMPLETE when a stage was skipped); a "completed" audit event.
    Returns: the job's progress (100), or None when the job was no longer the stage's.
    """
    params = _completion_params(job, run, done=done, total=total, now=now)
    params.update(
        completed=JobStatus.COMPLETED,
        document_state=document_state,
        document=job.document_id,
        matter=job.matter_id,
    )
    return _progress_of(COMPLETE_LAST_STAGE, params)


RENEW_LEASE = """
    UPDATE processing_processingjob SET lease_expires_at = %(lease)s
    WHERE id = %(job)s AND dispatch_id = %(dispatch)s AND status = %(processing)s
"""


def renew_lease(job: ProcessingJob, *, lease: datetime) -> bool:
    """Extend the running stage's lease until ``lease``; False when it is no longer the stage's.

    Locks: the job row, if it is PROCESSING under the stage's dispatch token.
    Checks: that token and status (a rescue or a cancel that got the row first wins).
    Writes: ``lease_expires_at`` only; not ``updated_at``, since nothing a person
    sees has changed.
    """
    params: dict[str, Any] = {
        "job": job.id,
        "dispatch": job.dispatch_id,
        "lease": lease,
        "processing": JobStatus.PROCESSING,
    }
    with connection.cursor() as cursor:
        cursor.execute(RENEW_LEASE, params)
        return bool(cursor.rowcount)


AWAIT_CALLBACK = """
    UPDATE processing_processingjob
    SET lease_holder = %(holder)s, lease_expires_at = %(lease)s
    WHERE id = %(job)s AND dispatch_id = %(dispatch)s AND status = %(processing)s
"""


def await_callback(job: ProcessingJob, *, holder: str, lease: datetime) -> bool:
    """Hand the begun external stage's lease to the outside service, until ``lease``.

    Locks: the job row, if it is PROCESSING under the stage's dispatch token.
    Checks: that token and status.
    Writes: ``lease_holder`` (``holder``) and ``lease_expires_at``; not
    ``updated_at``, since nothing a person sees has changed.
    """
    params: dict[str, Any] = {
        "job": job.id,
        "dispatch": job.dispatch_id,
        "holder": holder,
        "lease": lease,
        "processing": JobStatus.PROCESSING,
    }
    with connection.cursor() as cursor:
        cursor.execute(AWAIT_CALLBACK, params)
        return bool(cursor.rowcount)


HOLD_STAGE = """
    SELECT 1 FROM processing_processingjob
    WHERE id = %(job)s AND dispatch_id = %(dispatch)s AND status = %(processing)s
    FOR SHARE
"""


def hold_stage(job: ProcessingJob) -> bool:
    """Inside the caller's transaction: keep the stage's job row from being taken over.

    Locks: the job row ``FOR SHARE``, if it is PROCESSING under the stage's
    dispatch token, until the caller's transaction ends. ``FOR SHARE`` (not ``FOR
    KEY SHARE``) conflicts with every ``UPDATE`` of the row, so a rescue, a cancel
    or a hand-back waits for the caller's commit, and whatever the caller writes
    in that transaction is committed while the stage is still its to run.
    Returns False (locking nothing) when the stage is no longer its to run.
    """
    params: dict[str, Any] = {
        "job": job.id,
        "dispatch": job.dispatch_id,
        "processing": JobStatus.PROCESSING,
    }
    with connection.cursor() as cursor:
        cursor.execute(HOLD_STAGE, params)
        return cursor.fetchone() is not None


ALL = (
    BEGIN_STAGE,
    RECORD_PROGRESS,
    COMPLETE_STAGE,
    COMPLETE_LAST_STAGE,
    RENEW_LEASE,
    AWAIT_CALLBACK,
    HOLD_STAGE,
)


def prepare() -> None:
    """Have psycopg parse each statement once, in this process.

    A forking worker calls this before it forks, so every work horse starts with
    them parsed instead of parsing them for each stage it runs. Parsing ahead
    needs psycopg's client-side binding (Django's default); without it this
    does nothing.
    """

    class _Nulls(dict[str, Any]):
        def __missing__(self, key: str) -> None:
            return None

    with connection.cursor() as cursor:
        mogrify = getattr(cursor.cursor, "mogrify", None)
        if mogrify is None:
            return
        for sql in ALL:
            mogrify(sql, _Nulls())
