"""The state machine: every allowed transition, forbidden ones, and what each records."""

from __future__ import annotations

from typing import Any

import django_rq
import pytest

from processing.errors import CorruptDocument, InternalError
from processing.jobs import lifecycle
from processing.jobs.states import (
    JOB_TRANSITIONS,
    STAGE_TRANSITIONS,
    InvalidTransition,
    JobStatus,
    StageStatus,
    check_job_transition,
    check_stage_transition,
)
from processing.models import AuditEvent, Document, ProcessingJob, StageRun
from processing.pipeline.registry import Stage, get_pipeline, register
from tests.conftest import queued_rq_ids, stored_document

pytestmark = pytest.mark.django_db(transaction=True)

TWO_STAGES = "TEST_TWO_STAGES"


@pytest.fixture
def document(matter: Any, alice: Any) -> Document:
    return stored_document(matter, alice)


def _noop(ctx: Any) -> None:
    """A stage with nothing to do."""


@pytest.fixture(autouse=True)
def two_stage_pipeline() -> None:
    """The state machine is tested on a small pipeline of its own: two stages."""
    register(
        TWO_STAGES,
        [
            Stage("first", "First", f"{__name__}._noop"),
            Stage("second", "Second", f"{__name__}._noop"),
        ],
    )


@pytest.fixture
def job(document: Document, alice: Any) -> ProcessingJob:
    return lifecycle.create_job(document, by=alice, job_type=TWO_STAGES)


def begin(job: ProcessingJob) -> tuple[ProcessingJob, StageRun]:
    job.refresh_from_db()
    started = lifecycle.begin_stage(job.id, job.dispatch_id, worker="test")
    assert started is not None
    return started


def test_declared_graph_matches_the_contract() -> None:
    assert {
        "QUEUED": {"PROCESSING", "CANCELLED"},
        "PROCESSING": {"QUEUED", "COMPLETED", "FAILED", "CANCELLED"},
        "FAILED": {"QUEUED", "COMPLETED", "SKIPPED"},
        "COMPLETED": set(),
        "CANCELLED": set(),
        "SKIPPED": set(),
    } == JOB_TRANSITIONS
    for current, targets in JOB_TRANSITIONS.items():
        for target in JobStatus.values:
            if target in targets:
                check_job_transition(current, target)
            else:
                with pytest.raises(InvalidTransition):
                    check_job_transition(current, target)
    for current, targets in STAGE_TRANSITIONS.items():
        for target in StageStatus.values:
            if target in targets:
                check_stage_transition(current, target)
            else:
                with pytest.raises(InvalidTransition):
                    check_stage_transition(current, target)


def test_create_queues_after_commit_and_audits(job: ProcessingJob, alice: Any) -> None:
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    assert job.queue_name == "high"  # 3 pages: under the 100-page line
    assert queued_rq_ids() == [f"stage-{job.id}-{job.dispatch_id}"]
    event = AuditEvent.objects.get(job=job)
    assert (event.action, event.status_after, event.actor) == ("created", "QUEUED", alice)


def test_large_document_goes_to_the_default_queue(document: Document, alice: Any) -> None:
    Document.objects.filter(pk=document.pk).update(page_count=250)
    document.refresh_from_db()
    job = lifecycle.create_job(document, by=alice)
    assert job.queue_name == "default"
    assert django_rq.get_queue("default").job_ids == [f"stage-{job.id}-{job.dispatch_id}"]


def test_queued_to_processing_to_completed(job: ProcessingJob) -> None:
    job, run = begin(job)
    assert job.status == JobStatus.PROCESSING and job.started_at is not None
    assert run.status == StageStatus.IN_PROGRESS
    first_token = job.dispatch_id
    middle = lifecycle.complete_stage(job, run, done=3, total=3)
    # One stage done: still PROCESSING, half way, the next stage enqueued under a new token.
    assert middle is not None and middle.status == JobStatus.PROCESSING
    assert (middle.current_stage, middle.stage_index, middle.progress) == ("second", 2, 50)
    assert middle.dispatch_id != first_token
    assert f"stage-{job.id}-{middle.dispatch_id}" in queued_rq_ids()
    job, run = begin(middle)
    done = lifecycle.complete_stage(job, run, done=3, total=3)
    assert done is not None and done.status == JobStatus.COMPLETED
    assert done.progress == 100 and done.completed_at is not None
    run.refresh_from_db()
    assert run.status == StageStatus.COMPLETED and run.items_done == 3
    assert Document.objects.get(pk=job.document_id).processing_state == "PROCESSED"
    assert list(AuditEvent.objects.filter(job=job).values_list("action", flat=True)) == [
        "created",
        "started",
        "completed",
    ]


def test_permanent_error_fails_at_once_without_retry(job: ProcessingJob) -> None:
    job, run = begin(job)
    failed = lifecycle.fail_stage(job, run, CorruptDocument())
    assert failed is not None
    assert failed.status == JobStatus.FAILED
    assert failed.error_code == "CORRUPT_DOCUMENT" and failed.retry_count == 0
    assert "damaged" in failed.error


def test_transient_error_requeues_with_backoff_until_retries_run_out(job: ProcessingJob) -> None:
    for attempt in range(1, job.max_retries + 1):
        job, run = begin(job)
        job = lifecycle.fail_stage(job, run, InternalError(), detail="tb")
        assert job.status == JobStatus.QUEUED
        assert job.retry_count == attempt and job.next_attempt_at is not None
        assert job.error_code == "INTERNAL_ERROR"  # the last error stays visible
    job, run = begin(job)
    job = lifecycle.fail_stage(job, run, InternalError(), detail="tb")
    assert job.status == JobStatus.FAILED
    assert StageRun.objects.filter(job=job, status=StageStatus.FAILED).count() == 4


def test_failed_to_queued_by_retry_then_skipped(job: ProcessingJob, alice: Any) -> None:
    job, run = begin(job)
    lifecycle.fail_stage(job, run, CorruptDocument())
    job = lifecycle.retry(job, by=alice)
    assert job.status == JobStatus.QUEUED and job.retry_count == 1 and job.error is None
    assert f"stage-{job.id}-{job.dispatch_id}" in queued_rq_ids()
    job, run = begin(job)
    lifecycle.fail_stage(job, run, CorruptDocument())
    job = lifecycle.skip(job, by=alice)
    assert job.status == JobStatus.SKIPPED
    assert Document.objects.get(pk=job.document_id).processing_state == "INCOMPLETE"
    actions = list(AuditEvent.objects.filter(job=job).values_list("action", "actor__username"))
    assert ("retried", "alice") in actions and ("skipped", "alice") in actions


def test_a_person_cannot_retry_a_job_that_has_not_failed(job: ProcessingJob, alice: Any) -> None:
    with pytest.raises(InvalidTransition):
        lifecycle.retry(job, by=alice)  # QUEUED
    running, _run = begin(job)
    token = ProcessingJob.objects.get(pk=job.pk).dispatch_id
    with pytest.raises(InvalidTransition):
        lifecycle.retry(running, by=alice)  # PROCESSING: its stage is not started over
    after = ProcessingJob.objects.get(pk=job.pk)
    assert (after.status, after.retry_count, after.dispatch_id) == ("PROCESSING", 0, token)


def _failed_at(job: ProcessingJob, stage: str) -> ProcessingJob:
    """Run ``job`` up to ``stage`` and fail it there, for good."""
    job, run = begin(job)
    while job.current_stage != stage:
        lifecycle.complete_stage(job, run, done=1, total=1)
        job, run = begin(job)
    failed = lifecycle.fail_stage(job, run, CorruptDocument())
    assert failed is not None and failed.status == JobStatus.FAILED
    return failed


def test_skipping_a_failed_stage_queues_the_next_one_and_audits_why(
    job: ProcessingJob, alice: Any
) -> None:
    failed = _failed_at(job, "first")
    job = lifecycle.skip_stage(failed, by=alice, reason="Scan is unreadable", address="2001:db8::7")
    assert (job.status, job.current_stage, job.stage_index, job.progress) == (
        JobStatus.QUEUED,
        "second",
        2,
        50,
    )
    assert job.skipped_stages == ["first"]
    assert job.error is None and job.error_code is None
    assert f"stage-{job.id}-{job.dispatch_id}" in queued_rq_ids()
    runs = list(StageRun.objects.filter(job=job).values_list("stage", "status", "started_at"))
    assert runs == [("first", "FAILED", runs[0][2]), ("first", "SKIPPED", None)]
    event = AuditEvent.objects.get(job=job, action="stage_skipped")
    assert (event.actor, event.status_before, event.status_after) == (alice, "FAILED", "QUEUED")
    assert (event.reason, event.client_address, event.details) == (
        "Scan is unreadable",
        "2001:db8::7",
        {"stage": "first"},
    )
    assert Document.objects.get(pk=job.document_id).processing_state == "PENDING"

    # The rest of the pipeline runs; the document misses the skipped stage's results.
    job, run = begin(job)
    done = lifecycle.complete_stage(job, run, done=1, total=1)
    assert done is not None and done.status == JobStatus.COMPLETED and done.progress == 100
    assert Document.objects.get(pk=job.document_id).processing_state == "INCOMPLETE"
    assert ProcessingJob.objects.get(pk=job.pk).skipped_stages == ["first"]


def test_skipping_the_last_stage_completes_the_job_at_once(job: ProcessingJob, alice: Any) -> None:
    failed = _failed_at(job, "second")
    entries_before = queued_rq_ids()
    job = lifecycle.skip_stage(failed, by=alice)
    stored = ProcessingJob.objects.get(pk=job.pk)
    assert (stored.status, stored.current_stage, stored.progress) == ("COMPLETED", "second", 100)
    assert stored.completed_at is not None and stored.skipped_stages == ["second"]
    assert queued_rq_ids() == entries_before  # nothing left to run
    assert Document.objects.get(pk=job.document_id).processing_state == "INCOMPLETE"
    event = AuditEvent.objects.get(job=job, action="stage_skipped")
    assert (event.status_before, event.status_after, event.reason) == ("FAILED", "COMPLETED", "")


def test_cancel_queued_and_processing(document: Document, alice: Any) -> None:
    queued = lifecycle.create_job(document, by=alice)
    stale_token = queued.dispatch_id
    queued = lifecycle.cancel(queued, by=alice)
    assert queued.status == JobStatus.CANCELLED
    # Its queue entry is now a no-op: the worker finds a different token.
    assert lifecycle.begin_stage(queued.id, stale_token) is None

    running = lifecycle.create_job(document, by=alice)
    running, run = begin(running)
    lifecycle.cancel(running, by=alice)
    assert not lifecycle.still_running(running)
    assert lifecycle.complete_stage(running, run, done=1, total=3) is None
    run.refresh_from_db()
    assert run.status == StageStatus.SKIPPED
    assert ProcessingJob.objects.get(pk=running.pk).status == JobStatus.CANCELLED


@pytest.mark.parametrize(
    "reach, action",
    [
        ("COMPLETED", lifecycle.retry),
        ("COMPLETED", lifecycle.cancel),
        ("COMPLETED", lifecycle.skip),
        ("QUEUED", lifecycle.retry),
        ("QUEUED", lifecycle.skip),
        ("PROCESSING", lifecycle.prioritize),
        ("CANCELLED", lifecycle.retry),
        ("FAILED", lifecycle.cancel),
        ("QUEUED", lifecycle.skip_stage),
        ("PROCESSING", lifecycle.skip_stage),
        ("COMPLETED", lifecycle.skip_stage),
        ("CANCELLED", lifecycle.skip_stage),
    ],
)
def test_forbidden_transitions_raise_and_change_nothing(
    job: ProcessingJob, alice: Any, reach: str, action: Any
) -> None:
    if reach != "QUEUED":
        job, run = begin(job)
    if reach == "COMPLETED":
        lifecycle.complete_stage(job, run, done=1, total=1)
        job, run = begin(job)
        lifecycle.complete_stage(job, run, done=1, total=1)
    elif reach == "CANCELLED":
        lifecycle.cancel(job, by=alice)
    elif reach == "FAILED":
        lifecycle.fail_stage(job, run, CorruptDocument())
    before = ProcessingJob.objects.get(pk=job.pk)
    assert before.status == reach
    with pytest.raises(InvalidTransition) as caught:
        action(before, by=alice)
    assert caught.value.current == reach
    after = ProcessingJob.objects.get(pk=job.pk)
    assert (after.status, after.updated_at, after.retry_count) == (
        before.status,
        before.updated_at,
        before.retry_count,
    )


def test_prioritize_moves_to_front_of_high(document: Document, alice: Any) -> None:
    Document.objects.filter(pk=document.pk).update(page_count=500)
    document.refresh_from_db()
    first = lifecycle.create_job(document, by=alice)
    second = lifecycle.create_job(document, by=alice)
    small = Document.objects.create(
        matter=document.matter,
        original_name="s.pdf",
        file="x/s.pdf",
        content_type="application/pdf",
        size=10,
        sha256="1" * 64,
        page_count=1,
    )
    waiting_high = lifecycle.create_job(small, by=alice)
    second = lifecycle.prioritize(second, by=alice)
    assert second.priority == "high" and second.queue_name == "high"
    assert django_rq.get_queue("high").job_ids[0] == f"stage-{second.id}-{second.dispatch_id}"
    from processing.jobs.estimates import queue_position

    assert queue_position(second) == 1
    assert queue_position(ProcessingJob.objects.get(pk=waiting_high.pk)) == 2
    assert queue_position(ProcessingJob.objects.get(pk=first.pk)) == 3


def test_progress_is_throttled_per_call_but_never_goes_backwards(job: ProcessingJob) -> None:
    job, run = begin(job)
    assert lifecycle.record_progress(job, run, done=2, total=4)
    # Half of the first of two stages: a quarter of the job.
    assert ProcessingJob.objects.get(pk=job.pk).progress == 25
    lifecycle.record_progress(job, run, done=1, total=4)
    job = ProcessingJob.objects.get(pk=job.pk)
    assert job.progress == 25 and job.items_done == 1


def test_a_thousand_page_stage_does_not_write_a_row_per_page(
    job: ProcessingJob, django_assert_max_num_queries: Any
) -> None:
    """Progress writes are throttled: 1,000 calls in a burst cost a handful of queries."""
    from processing.jobs.context import StageContext

    job, run = begin(job)
    ctx = StageContext(job=job, stage_run=run)
    with django_assert_max_num_queries(4):
        for done in range(1, 1001):
            ctx.progress(done, 1000)
    # The last figure is kept for the stage's end, which always records it.
    assert (ctx.items_done, ctx.items_total) == (1000, 1000)
    lifecycle.complete_stage(job, run, done=ctx.items_done, total=1000)
    run.refresh_from_db()
    assert (run.items_done, run.items_total) == (1000, 1000)


def test_the_next_stage_starts_without_an_audit_event_and_with_its_own_run(
    job: ProcessingJob,
) -> None:
    job, run = begin(job)
    lifecycle.complete_stage(job, run, done=1, total=1)
    job, run = begin(job)
    assert (job.status, job.current_stage, job.stage_attempt) == ("PROCESSING", "second", 1)
    assert (run.stage, run.stage_index, run.attempt, run.status) == ("second", 2, 1, "IN_PROGRESS")
    assert run.job.document.original_name == "a.pdf"  # read with the job, for the stage
    assert StageRun.objects.get(pk=run.pk).worker == "test"
    actions = list(AuditEvent.objects.filter(job=job).values_list("action", flat=True))
    assert actions == ["created", "started"]


def test_a_queue_entry_from_before_the_stage_moved_on_is_stale(job: ProcessingJob) -> None:
    job, run = begin(job)
    first_token = job.dispatch_id
    lifecycle.complete_stage(job, run, done=1, total=1)
    assert lifecycle.begin_stage(job.id, first_token) is None
    assert StageRun.objects.filter(job=job).count() == 1


def test_progress_after_a_cancel_is_refused_and_not_written(job: ProcessingJob, alice: Any) -> None:
    job, run = begin(job)
    lifecycle.cancel(ProcessingJob.objects.get(pk=job.pk), by=alice)
    assert not lifecycle.record_progress(job, run, done=2, total=4)
    stored = ProcessingJob.objects.get(pk=job.pk)
    assert (stored.status, stored.items_done, stored.progress) == ("CANCELLED", 0, 0)
    assert StageRun.objects.get(pk=run.pk).items_done == 0


def _while_a_cancel_holds_the_row(job: ProcessingJob, alice: Any, call: Any) -> Any:
    """Run ``call()`` in a thread while another has cancelled ``job`` but not committed.

    Asserts that ``call`` waits for the cancel's row lock; returns what it returned
    once the cancel committed.
    """
    import threading

    from django.db import connection, transaction

    locked, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def cancel_and_hold() -> None:
        try:
            with transaction.atomic():
                lifecycle.cancel(ProcessingJob.objects.get(pk=job.pk), by=alice)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    def run_call() -> None:
        try:
            outcome["value"] = call()
        finally:
            connection.close()

    canceller = threading.Thread(target=cancel_and_hold)
    canceller.start()
    assert locked.wait(10)
    caller = threading.Thread(target=run_call)
    caller.start()
    caller.join(0.5)
    assert caller.is_alive()  # waiting for the cancel's row lock
    release.set()
    canceller.join(10)
    caller.join(10)
    assert "value" in outcome
    return outcome["value"]


def test_completing_a_stage_waits_for_a_cancel_holding_the_row_and_then_yields(
    job: ProcessingJob, alice: Any
) -> None:
    """The one-statement completion locks the row too: a cancel in flight wins."""
    job, run = begin(job)
    entries_before = queued_rq_ids()
    completed = _while_a_cancel_holds_the_row(
        job, alice, lambda: lifecycle.complete_stage(job, run, done=1, total=1)
    )
    assert completed is None
    assert ProcessingJob.objects.get(pk=job.pk).status == "CANCELLED"
    assert StageRun.objects.get(pk=run.pk).status == "SKIPPED"
    assert queued_rq_ids() == entries_before  # no next stage was enqueued


def test_a_stage_gets_more_time_for_each_page_it_must_read(
    document: Document, alice: Any, settings: Any
) -> None:
    """OCR of a long scan is not cut off at the one-size timeout; other stages keep it."""
    from rq.job import Job

    settings.STAGE_TIMEOUT, settings.STAGE_TIMEOUT_MAX = 600, 100_000
    Document.objects.filter(pk=document.pk).update(page_count=700)
    document.refresh_from_db()
    job = lifecycle.create_job(document, by=alice)  # DOCUMENT_PROCESSING: extract, then ocr
    connection = django_rq.get_connection("default")

    def queued_timeout(job: ProcessingJob) -> int:
        return Job.fetch(f"stage-{job.id}-{job.dispatch_id}", connection=connection).timeout

    assert queued_timeout(job) == 600  # extract
    job, run = begin(job)
    job = lifecycle.complete_stage(job, run, done=700, total=700)
    assert job is not None and job.current_stage == "ocr"
    ocr = get_pipeline(job.job_type).stage("ocr")
    assert queued_timeout(job) == 600 + 700 * ocr.seconds_per_page > 600
    # However long the document, a stage's allowance stops at STAGE_TIMEOUT_MAX.
    assert ocr.timeout(1_000_000) == 100_000


def test_beginning_a_stage_waits_for_a_cancel_holding_the_row_and_then_finds_it_stale(
    job: ProcessingJob, alice: Any
) -> None:
    """The one-statement begin locks the row first: it never starts a cancelled job."""
    job.refresh_from_db()
    started = _while_a_cancel_holds_the_row(
        job, alice, lambda: lifecycle.begin_stage(job.id, job.dispatch_id, worker="test")
    )
    assert started is None
    assert ProcessingJob.objects.get(pk=job.pk).status == "CANCELLED"
    assert not StageRun.objects.filter(job=job).exists()
    assert not AuditEvent.objects.filter(job=job, action="started").exists()


def test_a_queue_entry_delivered_twice_runs_its_stage_once(job: ProcessingJob) -> None:
    """A duplicate of an entry (first stage or next stage) finds its stage begun."""
    job.refresh_from_db()
    first = lifecycle.begin_stage(job.id, job.dispatch_id, worker="w1")
    assert first is not None
    assert lifecycle.begin_stage(job.id, job.dispatch_id, worker="w2") is None
    job, run = first
    lifecycle.complete_stage(job, run, done=1, total=1)
    assert lifecycle.begin_stage(job.id, job.dispatch_id, worker="w1") is not None
    assert lifecycle.begin_stage(job.id, job.dispatch_id, worker="w2") is None
    assert list(StageRun.objects.filter(job=job).values_list("stage", "worker")) == [
        ("first", "w1"),
        ("second", "w1"),
    ]
