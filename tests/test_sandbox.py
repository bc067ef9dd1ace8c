"""A document cannot hurt its worker: a stage over the memory budget, or one whose parser
aborts the process, fails DOCUMENT_TOO_COMPLEX at once (not retried) and the worker takes
its next job; the web process never opens a document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from processing.jobs import lifecycle
from processing.jobs.queues import QUEUES
from processing.models import AuditEvent, Matter, ProcessingJob, StageRun
from tests.conftest import make_pdf, stored_document
from tests.stages import (
    CRASHING,
    HUNGRY_BYTES,
    KILLED,
    MEMORY_HUNGRY,
    QUICK,
    notes,
    wait_until,
    worker_processes,
)

pytestmark = pytest.mark.django_db(transaction=True)

# No lease runs out during these tests, and no recovery runs: only the worker itself
# can have failed a stage.
NO_LEASE_EXPIRY = {"LEASE_SECONDS": "3600", "LEASE_RENEW_SECONDS": "1800"}


def status_of(job: ProcessingJob) -> str:
    return ProcessingJob.objects.values_list("status", flat=True).get(pk=job.pk)


def finished(*jobs: ProcessingJob) -> bool:
    return all(status_of(job) in ("COMPLETED", "FAILED") for job in jobs)


def history(job: ProcessingJob) -> list[tuple[str, str, str | None]]:
    return list(StageRun.objects.filter(job=job).values_list("stage", "status", "error_code"))


def test_a_stage_past_the_memory_budget_fails_too_complex_not_retried_and_the_worker_goes_on(
    api_client: Any, alice: Any, matter: Matter, tmp_path: Path
) -> None:
    hungry = lifecycle.create_job(stored_document(matter, alice), by=alice, job_type=MEMORY_HUNGRY)
    following = lifecycle.create_job(
        stored_document(matter, alice, "next.pdf"), by=alice, job_type=QUICK
    )
    limit = str(300 * 1024 * 1024)  # the stage asks for 600 MB
    with worker_processes(
        QUEUES, logs=tmp_path / "logs", STAGE_MEMORY_LIMIT=limit, **NO_LEASE_EXPIRY
    ) as (process,):
        wait_until(lambda: finished(hungry, following), seconds=60, what="both jobs to end")
        assert process.poll() is None  # the worker lives on

    client = api_client(alice)
    body = client.get(f"/api/jobs/{hungry.pk}").json()
    assert (body["status"], body["error_code"], body["retry_count"]) == (
        "FAILED",
        "DOCUMENT_TOO_COMPLEX",
        0,
    )
    assert body["error"] == (
        "This document needed more than 300 MB of memory to read, the most one document may use."
    )
    assert history(hungry) == [("inflate", "FAILED", "DOCUMENT_TOO_COMPLEX")]
    # It got somewhere before the budget stopped it, and never had all it asked for.
    reached = [n["number"] for n in notes(hungry.pk, "allocated")]
    assert reached and max(reached) < HUNGRY_BYTES
    hungry.refresh_from_db()
    assert hungry.auto_retries == 0 and hungry.next_attempt_at is None
    # The next job on the same worker process ran as usual.
    assert client.get(f"/api/jobs/{following.pk}").json()["status"] == "COMPLETED"
    assert notes(following.pk, "ran")


def test_a_stage_whose_parser_aborts_the_process_fails_at_once_and_the_worker_goes_on(
    api_client: Any, alice: Any, matter: Matter, tmp_path: Path
) -> None:
    crashing = lifecycle.create_job(stored_document(matter, alice), by=alice, job_type=CRASHING)
    following = lifecycle.create_job(
        stored_document(matter, alice, "next.pdf"), by=alice, job_type=QUICK
    )
    with worker_processes(QUEUES, logs=tmp_path / "logs", **NO_LEASE_EXPIRY) as (process,):
        wait_until(lambda: finished(crashing, following), seconds=60, what="both jobs to end")
        assert process.poll() is None

    client = api_client(alice)
    body = client.get(f"/api/jobs/{crashing.pk}").json()
    assert (body["status"], body["error_code"], body["retry_count"]) == (
        "FAILED",
        "DOCUMENT_TOO_COMPLEX",
        0,
    )
    assert body["error"] == (
        "Reading this document made the program reading it crash, "
        "so it could not be processed. Trying again would crash it again."
    )
    assert notes(crashing.pk, "started")  # it did begin its item
    assert history(crashing) == [("parse", "FAILED", "DOCUMENT_TOO_COMPLEX")]
    run = StageRun.objects.get(job=crashing)
    assert run.error_detail.startswith("The work horse running this stage was killed by SIGABRT")
    failed = AuditEvent.objects.filter(job=crashing).last()
    assert failed is not None and failed.action == "failed" and failed.actor is None
    assert failed.details == {"error_code": "DOCUMENT_TOO_COMPLEX"}
    assert client.get(f"/api/jobs/{following.pk}").json()["status"] == "COMPLETED"


def test_a_stage_whose_process_is_sigkilled_is_left_to_its_lease(
    api_client: Any, alice: Any, matter: Matter, tmp_path: Path
) -> None:
    # SIGKILL is the OOM killer or a person's cancel, not the document: nothing is
    # decided at once, the lease rescue (WORKER_LOST, retried) takes it once it runs out.
    killed = lifecycle.create_job(stored_document(matter, alice), by=alice, job_type=KILLED)
    following = lifecycle.create_job(
        stored_document(matter, alice, "next.pdf"), by=alice, job_type=QUICK
    )
    with worker_processes(QUEUES, logs=tmp_path / "logs", **NO_LEASE_EXPIRY) as (process,):
        # The worker takes its jobs in order: once the second has ended, the first's
        # horse death has been handled.
        wait_until(lambda: finished(following), seconds=60, what="the next job to end")
        assert process.poll() is None

    body = api_client(alice).get(f"/api/jobs/{killed.pk}").json()
    assert (body["status"], body["error_code"]) == ("PROCESSING", None)
    assert history(killed) == [("parse", "IN_PROGRESS", None)]


def test_an_upload_does_not_open_the_document_and_its_first_stage_counts_the_pages(
    api_client: Any, alice: Any, matter: Matter, worker: Any, settings: Any
) -> None:
    settings.HIGH_QUEUE_MAX_BYTES = 1024  # so that this small PDF counts as big by its size
    settings.HIGH_QUEUE_MAX_PAGES = 5
    content = make_pdf(["One.", "Two.", "Three."])
    assert len(content) > 1024
    client = api_client(alice)
    response = client.upload(matter.pk, "brief.pdf", content)
    assert response.status_code == 201
    data = response.json()["data"]
    # Not opened: no page count, and the first stage goes by the file's size.
    assert data["document"]["page_count"] is None
    job = ProcessingJob.objects.get(pk=data["job"]["job_id"])
    assert job.queue_name == "default"

    worker()

    body = client.get(f"/api/jobs/{job.pk}").json()
    assert (body["status"], body["page_count"]) == ("COMPLETED", 3)
    # Its first stage counted 3 pages (under 5): the stages after it went to high.
    job.refresh_from_db()
    assert job.queue_name == "high"
