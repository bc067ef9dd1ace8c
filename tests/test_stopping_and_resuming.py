"""Cancelling a running stage, the backstop for one that does not stop, and retries that
resume: with real worker processes, as ``./dev run`` starts them (forking, with RQ's
scheduler)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq.job import Job

from processing.jobs import dispatch, lifecycle
from processing.jobs.queues import LOW, QUEUES
from processing.models import AuditEvent, DocumentChunk, DocumentPage, ProcessingJob, StageRun
from processing.pipeline.chunk import split_chunks
from tests.conftest import make_pdf, stored_document
from tests.stages import (
    FLAKY_DOCUMENT,
    ITEM_SECONDS,
    QUICK,
    SLOW_ITEMS,
    STUCK_ITEM,
    make_page_fail,
    notes,
    page_reads,
    redis,
    stored_file,
    wait_until,
    worker_processes,
)

pytestmark = pytest.mark.django_db(transaction=True)


def cancel(client: Any, job: ProcessingJob) -> dict[str, Any]:
    response = client.post(f"/api/matters/{job.matter_id}/jobs/{job.pk}/cancel")
    assert response.status_code == 200
    data: dict[str, Any] = response.json()["data"]
    return data


def closed_run(job: ProcessingJob) -> StageRun | None:
    """The job's stage run, once it is no longer IN_PROGRESS."""
    return StageRun.objects.filter(job=job).exclude(status="IN_PROGRESS").first()


def actions(job: ProcessingJob) -> list[str]:
    return list(AuditEvent.objects.filter(job=job).values_list("action", flat=True))


def test_a_cancelled_stage_stops_at_its_next_item(
    api_client: Any, alice: Any, matter: Any, settings: Any, tmp_path: Path
) -> None:
    settings.CANCEL_GRACE_SECONDS = 1  # so that the backstop's check runs during the test
    job = lifecycle.create_job(stored_document(matter, alice), by=alice, job_type=SLOW_ITEMS)
    # No progress write answers for the check (they tell a stage of a cancel too, but
    # only every PROGRESS_WRITE_INTERVAL): the stage learns of it by asking.
    with worker_processes(QUEUES, logs=tmp_path / "logs", PROGRESS_WRITE_INTERVAL="60"):
        wait_until(lambda: len(notes(job.pk, "started")) >= 3, seconds=30, what="item 3")
        running = ProcessingJob.objects.get(pk=job.pk).dispatch_id

        assert cancel(api_client(alice), job)["status"] == "CANCELLED"
        cancelled_at = time.time()

        run = wait_until(lambda: closed_run(job), seconds=10, what="the stage to stop")
        stopped_after = time.time() - cancelled_at
        # The backstop's check comes after the grace period and finds nothing to stop.
        check = Job.fetch(dispatch.stop_check_id(job.pk, running), connection=redis())
        wait_until(
            lambda: check.get_status() == "finished", seconds=15, what="the backstop's check"
        )
        assert check.return_value() == "nothing to stop"

    started, finished = notes(job.pk, "started"), notes(job.pk, "finished")
    # The item in progress at the cancel was finished; no item was begun after it.
    assert [item for item in started if item["at"] > cancelled_at] == []
    assert [item["number"] for item in finished] == [item["number"] for item in started]
    assert len(started) < 10 and stopped_after < ITEM_SECONDS + 2
    assert (run.status, run.items_done, run.items_total) == ("SKIPPED", len(finished), 20)
    job.refresh_from_db()
    assert job.status == "CANCELLED" and job.retry_count == 0
    assert actions(job) == ["created", "started", "cancelled"]


def test_a_stage_stuck_inside_an_item_is_stopped_by_rq_and_its_worker_goes_on(
    api_client: Any, alice: Any, matter: Any, settings: Any, tmp_path: Path
) -> None:
    settings.CANCEL_GRACE_SECONDS = 1
    stuck = lifecycle.create_job(
        stored_document(matter, alice), by=alice, job_type=STUCK_ITEM, priority=LOW
    )
    # The stuck stage's worker takes only `low`; the backstop's check goes to `high`.
    with worker_processes((LOW,), ("high",), logs=tmp_path / "logs") as (stuck_worker, _):
        wait_until(lambda: notes(stuck.pk, "started"), seconds=30, what="the stuck item")
        running = ProcessingJob.objects.get(pk=stuck.pk).dispatch_id
        clicked = time.monotonic()

        assert cancel(api_client(alice), stuck)["status"] == "CANCELLED"

        run = wait_until(lambda: closed_run(stuck), seconds=30, what="the stage run to close")
        assert time.monotonic() - clicked < 30
        entry = Job.fetch(dispatch.rq_job_id(stuck.pk, running), connection=redis())
        wait_until(lambda: entry.get_status() == "stopped", seconds=30, what="RQ to kill it")

        # The worker whose work horse was killed is alive and takes the next job.
        after = lifecycle.create_job(
            stored_document(matter, alice, name="b.pdf"), by=alice, job_type=QUICK, priority=LOW
        )
        wait_until(
            lambda: ProcessingJob.objects.get(pk=after.pk).status == "COMPLETED",
            seconds=30,
            what="the next job",
        )
        assert stuck_worker.poll() is None

    assert notes(stuck.pk, "finished") == []  # killed inside its item
    stuck.refresh_from_db()
    assert (stuck.status, stuck.retry_count, stuck.auto_retries) == ("CANCELLED", 0, 0)
    assert stuck.error_code is None and stuck.next_attempt_at is None
    assert list(StageRun.objects.filter(job=stuck).values_list("stage", "status")) == [
        ("stuck", "SKIPPED")
    ]
    assert run.finished_at is not None
    assert actions(stuck) == ["created", "started", "cancelled", "stage_stopped"]
    event = AuditEvent.objects.get(job=stuck, action="stage_stopped")
    assert event.actor is None and event.details["stage"] == "stuck"


def test_a_cancel_goes_through_when_redis_is_unreachable(
    api_client: Any, alice: Any, matter: Any, monkeypatch: Any, caplog: Any
) -> None:
    """The backstop cannot be scheduled; the cancel is still made, and the log says why."""
    job = lifecycle.create_job(stored_document(matter, alice), by=alice, job_type=QUICK)
    assert lifecycle.begin_stage(job.id, job.dispatch_id, worker="test") is not None
    unreachable = Redis.from_url("unix:///nowhere/redis.sock")
    monkeypatch.setattr(dispatch, "_own_connection", lambda: unreachable)

    with caplog.at_level(logging.WARNING, logger="processing.jobs.dispatch"):
        assert cancel(api_client(alice), job)["status"] == "CANCELLED"

    assert ProcessingJob.objects.get(pk=job.pk).status == "CANCELLED"
    assert "Could not schedule the stop check of cancelled job" in caplog.text


# --- retries resume --------------------------------------------------------------------


def ten_page_pdf() -> bytes:
    return make_pdf(
        [
            f"Page {n} of the deposition. The witness described exhibit {n} at length, "
            f"and counsel for the defendant asked about the lease signed in year {2000 + n}."
            for n in range(1, 11)
        ]
    )


def assert_pages_and_chunks_stored_once(document: Any) -> None:
    pages = list(DocumentPage.objects.filter(document=document).order_by("page_number"))
    assert [page.page_number for page in pages] == list(range(1, 11))
    assert all(f"Page {page.page_number} of the deposition" in page.text for page in pages)
    chunks = list(DocumentChunk.objects.filter(document=document).order_by("index"))
    expected = list(split_chunks((page.page_number, page.text) for page in pages))
    assert [chunk.index for chunk in chunks] == list(range(len(expected)))
    assert [chunk.text for chunk in chunks] == [span.text for span in expected]


def test_a_transient_failure_on_page_7_retries_with_growing_delays_and_resumes_there(
    alice: Any, matter: Any, tmp_path: Path
) -> None:
    document = stored_file(matter, alice, "deposition.pdf", ten_page_pdf())
    make_page_fail(document, 7, times=2, permanent=False)
    job = lifecycle.create_job(document, by=alice, job_type=FLAKY_DOCUMENT)

    with worker_processes(QUEUES, logs=tmp_path / "logs", RETRY_BACKOFF_BASE="1"):
        wait_until(
            lambda: ProcessingJob.objects.get(pk=job.pk).status in ("COMPLETED", "FAILED"),
            seconds=45,
            what="the job to finish",
        )

    job.refresh_from_db()
    assert job.status == "COMPLETED" and job.error_code is None
    assert (job.retry_count, job.auto_retries) == (2, 2)
    delays = [
        event.details["delay_seconds"]
        for event in AuditEvent.objects.filter(job=job, action="retry_scheduled")
    ]
    # Base 1 s, doubled per attempt, jittered down to half: 0.5-1 s, then 1-2 s.
    assert len(delays) == 2 and delays[0] <= delays[1]
    assert 0.5 <= delays[0] <= 1.0 <= delays[1] <= 2.0
    # Pages 1-6 were read once; page 7 three times (two failures); 8-10 once.
    assert page_reads(document) == {**{n: 1 for n in range(1, 11)}, 7: 3}
    history = list(
        StageRun.objects.filter(job=job).values_list("stage", "status", "items_done", "error_code")
    )
    assert history[:3] == [
        ("extract", "FAILED", 6, "SERVICE_UNAVAILABLE"),
        ("extract", "FAILED", 6, "SERVICE_UNAVAILABLE"),
        ("extract", "COMPLETED", 10, None),
    ]
    assert [(stage, status) for stage, status, *_ in history[3:]] == [
        ("ocr", "COMPLETED"),
        ("chunk", "COMPLETED"),
        ("index", "COMPLETED"),
        ("entities", "COMPLETED"),
    ]
    assert_pages_and_chunks_stored_once(document)


def test_a_manual_retry_after_a_permanent_failure_resumes_at_the_failed_page(
    api_client: Any, alice: Any, matter: Any, worker: Any
) -> None:
    client = api_client(alice)
    document = stored_file(matter, alice, "deposition.pdf", ten_page_pdf())
    make_page_fail(document, 7, times=1, permanent=True)
    job = lifecycle.create_job(document, by=alice, job_type=FLAKY_DOCUMENT)
    worker()
    failed = client.get(f"/api/jobs/{job.pk}").json()
    assert (failed["status"], failed["error_code"], failed["retry_count"]) == (
        "FAILED",
        "CORRUPT_DOCUMENT",
        0,
    )
    assert (failed["current_stage"], failed["items_done"]) == ("extract", 6)

    response = client.post(f"/api/matters/{matter.pk}/jobs/{job.pk}/retry")
    assert response.status_code == 200 and response.json()["data"]["retry_count"] == 1
    worker()

    body = client.get(f"/api/matters/{matter.pk}/jobs/{job.pk}").json()["data"]
    assert (body["status"], body["retry_count"]) == ("COMPLETED", 1)
    assert page_reads(document) == {**{n: 1 for n in range(1, 11)}, 7: 2}
    assert [(run["stage"], run["attempt"], run["status"]) for run in body["stage_history"]] == [
        ("extract", 1, "FAILED"),
        ("extract", 2, "COMPLETED"),
        ("ocr", 1, "COMPLETED"),
        ("chunk", 1, "COMPLETED"),
        ("index", 1, "COMPLETED"),
        ("entities", 1, "COMPLETED"),
    ]
    assert_pages_and_chunks_stored_once(document)
