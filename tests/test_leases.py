"""Leases on running stages: the stage of a lost worker is rescued and resumes, a zombie
work horse's writes are refused, a job stranded between two stages is enqueued again,
and a worker asked to stop (SIGTERM) hands its stage back."""

from __future__ import annotations

import re
import signal
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import django_rq
import psycopg
import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from rq.job import Job

from processing.errors import ServiceUnavailable, StageCancelled
from processing.jobs import dispatch, lifecycle, recovery
from processing.jobs.context import Heartbeat, StageContext
from processing.jobs.queues import QUEUES
from processing.models import (
    AuditEvent,
    DocumentChunk,
    DocumentPage,
    Matter,
    ProcessingJob,
    StageRun,
)
from processing.pipeline.checkpoints import stream_rows
from processing.pipeline.extract import extract
from processing.pipeline.registry import Stage, register
from tests.conftest import queued_rq_ids, stored_document
from tests.stages import (
    FLAKY_DOCUMENT,
    flaky_extract,
    make_page_fail,
    make_pages_slow,
    page_reads,
    redis,
    stored_file,
    wait_until,
    worker_processes,
)
from tests.test_stopping_and_resuming import assert_pages_and_chunks_stored_once, ten_page_pdf

pytestmark = pytest.mark.django_db(transaction=True)

TWO_STAGES = "TEST_LEASES_TWO_STAGES"
WORKER = "worker-host:4242"


def _noop(ctx: Any) -> None:
    """A stage with nothing to do."""


@pytest.fixture(autouse=True)
def two_stage_pipeline() -> None:
    register(
        TWO_STAGES,
        [
            Stage("first", "First", f"{__name__}._noop"),
            Stage("second", "Second", f"{__name__}._noop"),
        ],
    )


@pytest.fixture(autouse=True)
def every_progress_written(settings: Any) -> None:
    settings.PROGRESS_WRITE_INTERVAL = 0


def begin(job: ProcessingJob) -> tuple[ProcessingJob, StageRun]:
    """What a worker does: take the job's queue entry, and begin its stage under its token."""
    job.refresh_from_db()
    taken = Job.fetch(rq_id(job), connection=django_rq.get_connection("default"))
    django_rq.get_queue(job.queue_name).remove(taken)
    started = lifecycle.begin_stage(job.pk, job.dispatch_id, worker=WORKER)
    assert started is not None
    return started


def expire_lease(job: ProcessingJob) -> None:
    """What time does to the lease of a stage whose worker died: it runs out."""
    ProcessingJob.objects.filter(pk=job.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


def rq_id(job: ProcessingJob) -> str:
    job.refresh_from_db()
    return dispatch.rq_job_id(job.pk, job.dispatch_id)


def history(job: ProcessingJob) -> list[tuple[str, str, str | None]]:
    return list(StageRun.objects.filter(job=job).values_list("stage", "status", "error_code"))


# --- a lost worker ------------------------------------------------------------------------


def test_the_stage_of_a_lost_worker_is_rescued_as_an_attempt_and_resumes_where_it_stopped(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    document = stored_file(matter, alice, "deposition.pdf", ten_page_pdf())
    job = lifecycle.create_job(document, by=alice, job_type=FLAKY_DOCUMENT)
    started, run = begin(job)
    # The worker stores pages 1-6, reports them, and dies reading page 7 (SIGKILL, OOM):
    # nothing records its end.
    make_page_fail(document, 7, times=1, permanent=False)
    ctx = StageContext(job=started, stage_run=run)
    with pytest.raises(ServiceUnavailable):
        flaky_extract(ctx)
    assert lifecycle.record_progress(started, run, done=6, total=10)
    assert recovery.recover().rescued == 0  # its lease has not run out yet
    expire_lease(job)

    report = recovery.recover()

    assert report.lost_stages == [job.pk]
    assert report.lines() == [f"rescued 1 stage of lost workers, enqueued again: {job.pk}"]
    client = api_client(alice)
    body = client.get(f"/api/jobs/{job.pk}").json()
    assert (body["status"], body["error_code"], body["retry_count"]) == ("QUEUED", "WORKER_LOST", 1)
    assert body["next_attempt_at"] is None  # at once: no backoff for a lost worker
    assert (
        body["error"]
        == "The worker processing this document stopped unexpectedly. It will be retried."
    )
    assert queued_rq_ids() == [rq_id(job)]  # under a new token
    lost = StageRun.objects.get(pk=run.pk)
    assert (lost.status, lost.error_code, lost.items_done, lost.items_total) == (
        "FAILED",
        "WORKER_LOST",
        6,
        10,
    )
    event = AuditEvent.objects.get(job=job, action="requeued")
    assert event.actor is None and (event.status_before, event.status_after) == (
        "PROCESSING",
        "QUEUED",
    )
    assert {k: event.details[k] for k in ("cause", "worker", "items_done", "items_total")} == {
        "cause": "worker_lost",
        "worker": WORKER,
        "items_done": 6,
        "items_total": 10,
    }
    assert recovery.recover().rescued == 0  # rescued once

    worker()

    job.refresh_from_db()
    assert (job.status, job.error_code, job.auto_retries) == ("COMPLETED", None, 1)
    # Pages 1-6 were not read again; page 7 twice (the death, then the rescue).
    assert page_reads(document) == {**{n: 1 for n in range(1, 11)}, 7: 2}
    assert_pages_and_chunks_stored_once(document)
    assert history(job)[:2] == [
        ("extract", "FAILED", "WORKER_LOST"),
        ("extract", "COMPLETED", None),
    ]

    # The job's timeline says what happened.
    page = Client()
    page.force_login(alice)
    html = page.get(f"/jobs/{job.pk}/").content.decode()
    lost_at = timezone.localtime(event.created_at).strftime("%H:%M:%S")
    assert re.search(rf"worker lost at \d\d:\d\d:\d\d, requeued at {lost_at}", html)
    assert "resumed from item 7 of 10" in html
    assert "the worker running it was lost" in html


def test_a_document_that_kills_its_worker_every_time_ends_failed_not_in_a_loop(
    api_client: Any, alice: Any, matter: Matter
) -> None:
    job = lifecycle.create_job(
        stored_document(matter, alice), by=alice, job_type=TWO_STAGES, max_retries=1
    )
    begin(job)
    expire_lease(job)
    assert recovery.recover().lost_stages == [job.pk]
    begin(job)  # the retry's worker dies too
    expire_lease(job)

    report = recovery.recover()

    assert report.failed_lost == [job.pk] and report.lost_stages == []
    assert report.lines() == [f"failed 1 job whose worker was lost with no retry left: {job.pk}"]
    body = api_client(alice).get(f"/api/jobs/{job.pk}").json()
    assert (body["status"], body["error_code"], body["retry_count"]) == ("FAILED", "WORKER_LOST", 1)
    assert history(job) == [("first", "FAILED", "WORKER_LOST")] * 2
    failed = AuditEvent.objects.filter(job=job).last()
    assert failed is not None and failed.action == "failed"
    assert failed.details["cause"] == "worker_lost"
    assert recovery.recover().rescued == 0


def test_a_stage_that_writes_no_progress_keeps_its_lease_by_its_heartbeat(
    alice: Any, matter: Matter, settings: Any
) -> None:
    settings.LEASE_SECONDS = 2
    settings.LEASE_RENEW_SECONDS = 0.1
    job = lifecycle.create_job(stored_document(matter, alice), by=alice, job_type=TWO_STAGES)
    started, run = begin(job)
    taken = ProcessingJob.objects.get(pk=job.pk).lease_expires_at
    assert taken is not None

    ctx = StageContext(job=started, stage_run=run)
    with Heartbeat(ctx):
        wait_until(
            lambda: ProcessingJob.objects.get(pk=job.pk).lease_expires_at > taken,
            seconds=10,
            what="the heartbeat to renew the lease",
        )
        # Where the first lease would have run out, the stage is still its worker's.
        assert recovery.recover(now=taken + timedelta(milliseconds=1)).rescued == 0
    assert not ctx.should_stop()
    assert ProcessingJob.objects.get(pk=job.pk).status == "PROCESSING"


# --- a zombie work horse ------------------------------------------------------------------


def test_a_zombie_work_horse_can_write_nothing_once_its_stage_was_taken_over(
    alice: Any, matter: Matter
) -> None:
    document = stored_file(matter, alice, "deposition.pdf", ten_page_pdf())
    job = lifecycle.create_job(document, by=alice, job_type=FLAKY_DOCUMENT)
    old_job, old_run = begin(job)
    zombie = StageContext(job=old_job, stage_run=old_run)
    # Its worker is SIGKILLed; its horse, in its own process group, lives on, hung.
    expire_lease(job)
    assert lifecycle.rescue_lost_stage(job.pk, lost_dispatch=old_job.dispatch_id) is not None
    new_job, new_run = begin(job)  # the new attempt, on a live worker
    fresh = StageContext(job=new_job, stage_run=new_run)
    fresh.progress(2, 10)

    # Progress, and the heartbeat, are refused; the zombie learns it should stop.
    zombie.progress(5, 10)
    assert zombie.should_stop()
    assert lifecycle.renew_lease(old_job) is False
    # Result rows: a batch, any fenced write, and the stage itself store nothing.
    with pytest.raises(StageCancelled):
        stream_rows(
            DocumentPage,
            ("document", "page_number", "text", "char_count", "source"),
            [(document.pk, 1, "zombie text", 11, "text_layer")],
            seconds=1,
            max_size=1000,
            fence=zombie.fence,
        )
    with pytest.raises(StageCancelled), zombie.fenced():
        DocumentChunk.objects.create(document=document, matter=matter, index=0, text="zombie")
    with pytest.raises(StageCancelled):
        extract(zombie)
    assert DocumentPage.objects.filter(document=document).count() == 0
    assert DocumentChunk.objects.filter(document=document).count() == 0
    # Completing, failing or handing back its stage changes nothing.
    assert lifecycle.complete_stage(old_job, old_run, done=10, total=10) is None
    assert lifecycle.fail_stage(old_job, old_run, ServiceUnavailable(), done=5, total=10) is None
    assert lifecycle.hand_back(old_job, old_run, done=5, total=10) is None
    lifecycle.stop_stage(old_run, done=5, total=10)

    now = ProcessingJob.objects.get(pk=job.pk)
    assert (now.status, now.dispatch_id, now.stage_attempt) == (
        "PROCESSING",
        new_job.dispatch_id,
        2,
    )
    assert (now.current_stage, now.items_done, now.items_total) == ("extract", 2, 10)
    assert (now.lease_holder, now.error_code) == (WORKER, "WORKER_LOST")
    assert StageRun.objects.get(pk=old_run.pk).status == "FAILED"  # not turned into SKIPPED
    assert StageRun.objects.get(pk=new_run.pk).status == "IN_PROGRESS"

    # The new attempt goes on as if the zombie had never been.
    extract(fresh)
    assert lifecycle.complete_stage(new_job, new_run, done=10, total=10) is not None
    assert DocumentPage.objects.filter(document=document).count() == 10
    assert not DocumentPage.objects.filter(text="zombie text").exists()


# --- a job stranded between two stages -----------------------------------------------------


def test_a_job_whose_next_stage_was_never_enqueued_is_found_once_its_lease_runs_out(
    alice: Any, matter: Matter, worker: Any, settings: Any
) -> None:
    job = lifecycle.create_job(stored_document(matter, alice), by=alice, job_type=TWO_STAGES)
    assert worker(max_jobs=1) == 1  # the first stage; it committed and enqueued the second
    # What a crash between that commit and its on_commit enqueue leaves: the row, and no
    # RQ entry for the next stage.
    Job.fetch(rq_id(job), connection=django_rq.get_connection("default")).delete()
    job.refresh_from_db()
    assert (job.status, job.current_stage, job.stage_attempt) == ("PROCESSING", "second", 0)
    assert job.lease_expires_at is not None and job.lease_holder == ""
    assert recovery.recover().rescued == 0  # its lease has not run out yet

    later = timezone.now() + timedelta(seconds=settings.LEASE_SECONDS + 1)
    report = recovery.recover(now=later)

    assert report.stranded == [job.pk]
    assert report.lines() == [f"enqueued the next stage of 1 job stranded between stages: {job.pk}"]
    assert queued_rq_ids() == [rq_id(job)]
    event = AuditEvent.objects.get(job=job, action="requeued")
    assert event.details["cause"] == "stranded" and event.details["stage"] == "second"
    worker()
    job.refresh_from_db()
    assert job.status == "COMPLETED" and job.lease_expires_at is None
    assert history(job) == [("first", "COMPLETED", None), ("second", "COMPLETED", None)]


def test_a_job_between_stages_whose_next_stage_waits_in_a_long_queue_is_left_alone(
    alice: Any, matter: Matter, worker: Any, settings: Any
) -> None:
    job = lifecycle.create_job(stored_document(matter, alice), by=alice, job_type=TWO_STAGES)
    worker(max_jobs=1)
    waiting = rq_id(job)

    report = recovery.recover(now=timezone.now() + timedelta(seconds=settings.LEASE_SECONDS + 1))

    assert report.rescued == 0 and queued_rq_ids() == [waiting]
    assert not AuditEvent.objects.filter(job=job, action="requeued").exists()


# --- a worker asked to stop -----------------------------------------------------------------


def test_a_worker_sent_sigterm_hands_its_stage_back_and_another_worker_finishes_it(
    alice: Any, matter: Matter, tmp_path: Path
) -> None:
    document = stored_file(matter, alice, "deposition.pdf", ten_page_pdf())
    make_pages_slow(document, 0.3)
    job = lifecycle.create_job(document, by=alice, job_type=FLAKY_DOCUMENT)

    # Leases of ten minutes: whatever happens below, no lease runs out (nor does recovery run).
    with worker_processes(QUEUES, logs=tmp_path / "first", LEASE_SECONDS="600") as (first,):
        wait_until(lambda: len(page_reads(document)) >= 3, seconds=30, what="page 3")
        first.send_signal(signal.SIGTERM)  # a deploy

        wait_until(
            lambda: ProcessingJob.objects.get(pk=job.pk).status == "QUEUED",
            seconds=15,
            what="the stage to be handed back",
        )
        assert first.wait(timeout=15) == 0  # and the worker exits

    job.refresh_from_db()
    assert (job.retry_count, job.auto_retries, job.error_code) == (0, 0, None)
    assert job.lease_expires_at is None and queued_rq_ids() == [rq_id(job)]
    handed = StageRun.objects.get(job=job)
    assert (handed.status, handed.error_message) == ("SKIPPED", "Handed back on worker shutdown.")
    assert 3 <= handed.items_done < 10
    event = AuditEvent.objects.get(job=job, action="requeued")
    assert event.actor is None and event.details["cause"] == "shutdown"

    redis().delete(f"tests:{document.pk}:slow")
    with worker_processes(QUEUES, logs=tmp_path / "second"):
        wait_until(
            lambda: ProcessingJob.objects.get(pk=job.pk).status == "COMPLETED",
            seconds=60,
            what="the second worker to finish the job",
        )

    assert page_reads(document) == {n: 1 for n in range(1, 11)}  # no page read twice
    assert_pages_and_chunks_stored_once(document)
    assert history(job)[:2] == [("extract", "SKIPPED", None), ("extract", "COMPLETED", None)]


# --- PostgreSQL restarts ------------------------------------------------------------------


def _loses_the_database(ctx: Any) -> None:
    """A stage during which PostgreSQL goes away (a restart) for about a second."""
    own_pid = ProcessingJob.objects.raw("SELECT pg_backend_pid() AS id")[0].id
    with _maintenance() as admin:
        admin.execute(
            f'ALTER DATABASE "{connection.settings_dict["NAME"]}" ALLOW_CONNECTIONS false'
        )
        admin.execute("SELECT pg_terminate_backend(%s)", [own_pid])
    threading.Timer(1.5, _allow_connections).start()
    ProcessingJob.objects.count()  # the dropped connection: OperationalError


def _maintenance() -> Any:
    params = {**connection.get_connection_params(), "dbname": "postgres"}
    return psycopg.connect(**params, autocommit=True)


def _allow_connections() -> None:
    with _maintenance() as admin:
        admin.execute(f'ALTER DATABASE "{connection.settings_dict["NAME"]}" ALLOW_CONNECTIONS true')


def test_a_stage_that_loses_postgresql_is_recorded_once_it_is_back_and_retried(
    api_client: Any, alice: Any, matter: Matter, worker: Any, settings: Any
) -> None:
    settings.RETRY_BACKOFF_BASE = settings.RETRY_BACKOFF_MAX = 600  # the retry waits
    register("TEST_LOSES_DATABASE", [Stage("first", "First", f"{__name__}._loses_the_database")])
    job = lifecycle.create_job(
        stored_document(matter, alice), by=alice, job_type="TEST_LOSES_DATABASE"
    )
    try:
        worker()
    finally:
        _allow_connections()  # whatever happened, the next tests can connect

    body = api_client(alice).get(f"/api/jobs/{job.pk}").json()
    assert (body["status"], body["error_code"], body["retry_count"]) == (
        "QUEUED",
        "SERVICE_UNAVAILABLE",
        1,
    )
    assert history(job) == [("first", "FAILED", "SERVICE_UNAVAILABLE")]
    assert AuditEvent.objects.filter(job=job, action="retry_scheduled").count() == 1
