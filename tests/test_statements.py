"""The worker's single statements (processing.jobs.statements) against the models.

Two things can go wrong with hand-written SQL next to an ORM: a field added to a
model that the statements do not know, and a statement that writes something
other than what the same transition written with the ORM would. These tests
catch both. The ORM versions below are the specification: plain model code,
read top to bottom.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import models, transaction
from django.utils import timezone

from processing.jobs import lifecycle, statements
from processing.jobs.states import JobStatus, StageStatus
from processing.models import (
    AuditEvent,
    Document,
    ProcessingJob,
    ProcessingState,
    StageRun,
)
from processing.pipeline.registry import Stage, register
from tests.conftest import stored_document

pytestmark = pytest.mark.django_db(transaction=True)

THREE_STAGES = "TEST_THREE_STAGES"


def _noop(ctx: Any) -> None:
    """A stage with nothing to do."""


@pytest.fixture(autouse=True)
def three_stage_pipeline() -> None:
    register(THREE_STAGES, [Stage(n, n.title(), f"{__name__}._noop") for n in ("a", "b", "c")])


# --- every field is handled ---------------------------------------------------------------


def _columns(model: type[models.Model]) -> tuple[str, ...]:
    return tuple(f.column for f in model._meta.concrete_fields)


def _insert_columns(sql: str, table: str) -> tuple[str, ...]:
    found = re.search(rf"INSERT INTO {table} \(([^)]*)\)", sql)
    assert found, f"no INSERT INTO {table} in the statement"
    return tuple(c.strip() for c in found.group(1).split(","))


@pytest.mark.parametrize(
    ("model", "columns"),
    [
        (ProcessingJob, statements.JOB_COLUMNS),
        (Document, statements.DOCUMENT_COLUMNS),
        (StageRun, statements.STAGE_RUN_COLUMNS),
    ],
)
def test_the_rows_read_back_list_every_field_of_the_model_in_order(
    model: type[models.Model], columns: tuple[str, ...]
) -> None:
    # Model.from_db takes values in field order, by attribute name.
    assert columns == _columns(model)
    assert columns == tuple(f.attname for f in model._meta.concrete_fields)


def test_every_insert_fills_every_column_but_the_serial_id() -> None:
    stage_run = _columns(StageRun)[1:]
    audit = _columns(AuditEvent)[1:]
    assert _insert_columns(statements.BEGIN_STAGE, "processing_stagerun") == stage_run
    assert _insert_columns(statements.BEGIN_STAGE, "processing_auditevent") == audit
    assert _insert_columns(statements.COMPLETE_LAST_STAGE, "processing_auditevent") == audit


def test_the_statements_name_the_models_tables() -> None:
    tables = {model._meta.db_table for model in (ProcessingJob, Document, StageRun, AuditEvent)}
    assert tables == {
        "processing_processingjob",
        "processing_document",
        "processing_stagerun",
        "processing_auditevent",
    }
    written = set(
        re.findall(r"(?:FROM|UPDATE|INTO|JOIN) (processing_[a-z]+)\b", " ".join(statements.ALL))
    )
    assert written == tables


# --- the same rows as the ORM ---------------------------------------------------------------


def _lease(now: datetime) -> datetime:
    return now + timedelta(seconds=15)


def _orm_begin_stage(job_id: uuid.UUID, *, worker: str, now: datetime) -> None:
    """begin_stage, written with the ORM."""
    with transaction.atomic():
        job = ProcessingJob.objects.select_for_update().get(pk=job_id)
        first_start = job.status == JobStatus.QUEUED
        job.status = JobStatus.PROCESSING
        job.started_at = job.started_at or now
        job.stage_started_at = now
        job.items_done = job.items_total = 0
        job.next_attempt_at = None
        job.stage_attempt += 1
        job.updated_at = now
        job.lease_expires_at, job.lease_holder = _lease(now), worker
        job.save()
        StageRun.objects.create(
            job=job,
            stage=job.current_stage,
            stage_index=job.stage_index,
            attempt=job.stage_attempt,
            status=StageStatus.IN_PROGRESS,
            worker=worker,
            created_at=now,
            started_at=now,
        )
        if first_start:
            AuditEvent.objects.create(
                matter_id=job.matter_id,
                job=job,
                action="started",
                status_before=JobStatus.QUEUED,
                status_after=JobStatus.PROCESSING,
                details={"stage": job.current_stage},
                created_at=now,
            )


def _orm_record_progress(
    job_id: uuid.UUID, *, done: int, total: int, progress: int, now: datetime
) -> None:
    """record_progress, written with the ORM."""
    with transaction.atomic():
        job = ProcessingJob.objects.select_for_update().get(pk=job_id)
        job.items_done, job.items_total = done, total
        job.progress = max(job.progress, progress)
        job.updated_at = now
        job.lease_expires_at = _lease(now)
        job.save()
        run = job.stage_runs.get(status=StageStatus.IN_PROGRESS)
        run.items_done, run.items_total = done, total
        run.save()


def _orm_complete_stage(
    job_id: uuid.UUID,
    *,
    done: int,
    total: int,
    progress: int,
    next_stage: str,
    next_index: int,
    token: uuid.UUID,
    queue: str,
    now: datetime,
) -> None:
    """complete_stage (to the next stage), written with the ORM."""
    with transaction.atomic():
        job = ProcessingJob.objects.select_for_update().get(pk=job_id)
        job.progress = max(job.progress, progress)
        job.current_stage, job.stage_index = next_stage, next_index
        job.items_done = job.items_total = job.stage_attempt = 0
        job.dispatch_id = token
        job.queue_name = queue
        job.lease_expires_at, job.lease_holder = _lease(now), ""
        job.error = job.error_code = None
        job.error_detail = ""
        job.updated_at = now
        job.save()
        _orm_close_run(job, done=done, total=total, now=now)


def _orm_complete_last_stage(job_id: uuid.UUID, *, done: int, total: int, now: datetime) -> None:
    """complete_last_stage, written with the ORM."""
    with transaction.atomic():
        job = ProcessingJob.objects.select_for_update().get(pk=job_id)
        job.status = JobStatus.COMPLETED
        job.progress = 100
        job.completed_at = job.finished_at = now
        job.items_done, job.items_total = done, total
        job.lease_expires_at, job.lease_holder = None, ""
        job.error = job.error_code = None
        job.error_detail = ""
        job.updated_at = now
        job.save()
        _orm_close_run(job, done=done, total=total, now=now)
        Document.objects.filter(pk=job.document_id).update(
            processing_state=ProcessingState.PROCESSED
        )
        AuditEvent.objects.create(
            matter_id=job.matter_id,
            job=job,
            action="completed",
            status_before=JobStatus.PROCESSING,
            status_after=JobStatus.COMPLETED,
            details={},
            created_at=now,
        )


def _orm_close_run(job: ProcessingJob, *, done: int, total: int, now: datetime) -> None:
    run = job.stage_runs.get(status=StageStatus.IN_PROGRESS)
    run.status = StageStatus.COMPLETED
    run.items_done, run.items_total = done, total
    run.finished_at = now
    run.save()


# What legitimately differs between two jobs: their own ids and tokens.
_OWN = {"id", "job_id", "document_id", "dispatch_id", "sha256", "file", "original_name"}


def _rows(job_id: uuid.UUID) -> dict[str, Any]:
    """Everything the database holds about a job, without its own ids."""
    job = ProcessingJob.objects.filter(pk=job_id).values().get()

    def strip(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k not in _OWN}

    def when_written(event: dict[str, Any]) -> dict[str, Any]:
        # The twins' "created" events cannot be given the same time afterwards: the
        # audit trail is append-only.
        return strip(event) if event["action"] != "created" else strip(event) | {"created_at": 0}

    return {
        "job": strip(job),
        "document": strip(Document.objects.filter(pk=job["document_id"]).values().get()),
        "stage_runs": [strip(r) for r in StageRun.objects.filter(job_id=job_id).values()],
        "audit": [when_written(r) for r in AuditEvent.objects.filter(job_id=job_id).values()],
    }


def _fields(instance: models.Model) -> dict[str, Any]:
    return {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}


@pytest.fixture
def twins(matter: Any, alice: Any) -> tuple[ProcessingJob, ProcessingJob]:
    """Two identical QUEUED jobs: one for the statements, one for the ORM."""
    jobs = []
    for name in ("statement.pdf", "orm.pdf"):
        document = stored_document(matter, alice, name, page_count=4)
        jobs.append(lifecycle.create_job(document, by=alice, job_type=THREE_STAGES))
    # Same creation times, so only what the transitions write can differ.
    now = timezone.now()
    ProcessingJob.objects.filter(pk__in=[j.pk for j in jobs]).update(
        created_at=now, enqueued_at=now, updated_at=now
    )
    Document.objects.filter(pk__in=[j.document_id for j in jobs]).update(created_at=now)
    return jobs[0], jobs[1]


def test_each_statement_writes_what_the_orm_would_for_a_whole_job(
    twins: tuple[ProcessingJob, ProcessingJob],
) -> None:
    by_statement, by_orm = twins
    token = uuid.uuid4()

    def same_rows() -> None:
        assert _rows(by_statement.pk) == _rows(by_orm.pk)

    for index, (stage, following) in enumerate([("a", "b"), ("b", "c"), ("c", None)], start=1):
        now = timezone.now()
        job_dispatch = ProcessingJob.objects.get(pk=by_statement.pk).dispatch_id
        started = statements.begin_stage(
            by_statement.pk, job_dispatch, worker="w:1", now=now, lease=_lease(now)
        )
        assert started is not None
        job, run, was_queued = started
        assert was_queued == (stage == "a")  # only the first stage starts a QUEUED job
        _orm_begin_stage(by_orm.pk, worker="w:1", now=now)
        same_rows()
        # What begin_stage hands the stage is what the database holds.
        assert _fields(job) == _fields(ProcessingJob.objects.get(pk=by_statement.pk))
        assert _fields(job.document) == _fields(Document.objects.get(pk=job.document_id))
        assert _fields(run) == _fields(StageRun.objects.get(pk=run.pk))
        assert (job.current_stage, run.stage, run.attempt) == (stage, stage, 1)

        now = timezone.now()
        ours = statements.record_progress(
            job, run, done=2, total=4, progress=index * 10, now=now, lease=_lease(now)
        )
        assert ours is True
        _orm_record_progress(by_orm.pk, done=2, total=4, progress=index * 10, now=now)
        same_rows()

        now = timezone.now()
        if following is None:
            progress = statements.complete_last_stage(job, run, done=4, total=4, now=now)
            _orm_complete_last_stage(by_orm.pk, done=4, total=4, now=now)
            assert progress == 100
        else:
            arguments: dict[str, Any] = {
                "done": 4,
                "total": 4,
                "progress": index * 33,
                "next_stage": following,
                "next_index": index + 1,
                "queue": "low",
                "now": now,
            }
            progress = statements.complete_stage(
                job, run, token=uuid.uuid4(), lease=_lease(now), **arguments
            )
            _orm_complete_stage(by_orm.pk, token=token, **arguments)
            assert progress == index * 33
        same_rows()

    finished = _rows(by_statement.pk)
    assert finished["job"]["status"] == JobStatus.COMPLETED
    assert finished["document"]["processing_state"] == ProcessingState.PROCESSED
    assert [r["status"] for r in finished["stage_runs"]] == [StageStatus.COMPLETED] * 3
    assert [a["action"] for a in finished["audit"]] == ["created", "started", "completed"]


def test_a_stale_token_writes_nothing(twins: tuple[ProcessingJob, ProcessingJob]) -> None:
    job, _other = twins
    before = _rows(job.pk)
    now = timezone.now()
    stale = statements.begin_stage(job.pk, uuid.uuid4(), worker="w:1", now=now, lease=_lease(now))
    assert stale is None
    assert _rows(job.pk) == before
