"""ETA and queue position from fixed histories: exact figures, and queries that do not
grow with the number of jobs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import django_rq
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rq import Worker

from processing.errors import ServiceUnavailable
from processing.jobs import estimates, lifecycle
from processing.jobs.states import JobStatus, StageStatus
from processing.models import Matter, ProcessingJob, StageRun
from processing.pipeline.registry import DOCUMENT_PROCESSING, get_pipeline
from tests.conftest import stored_document

pytestmark = pytest.mark.django_db

# Seconds one 10-page document took in each stage: 0.5 s a page for the whole pipeline.
# Each stage also costs the worker estimates.BETWEEN_STAGES_SECONDS (40 ms) outside its
# run: five of them are 0.2 s, which the whole seconds below round away.
HISTORY = {"extract": 1.0, "ocr": 2.0, "chunk": 1.0, "index": 0.5, "entities": 0.5}
PER_PAGE = {stage: seconds / 10 for stage, seconds in HISTORY.items()}
WHOLE_PIPELINE = sum(PER_PAGE.values())
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def history(matter: Matter, alice: Any) -> None:
    """One completed 10-page job, with each stage's run taking ``HISTORY`` seconds."""
    document = stored_document(matter, alice, "history.pdf", page_count=10)
    job = ProcessingJob.objects.create(
        matter=matter, document=document, status=JobStatus.COMPLETED, created_at=NOW
    )
    start = NOW - timedelta(hours=1)
    for index, (stage, seconds) in enumerate(HISTORY.items(), start=1):
        StageRun.objects.create(
            job=job,
            stage=stage,
            stage_index=index,
            status=StageStatus.COMPLETED,
            items_total=10,
            items_done=10,
            started_at=start,
            finished_at=start + timedelta(seconds=seconds),
        )
        start += timedelta(seconds=seconds)


@pytest.fixture
def queued(matter: Matter, alice: Any) -> Callable[..., ProcessingJob]:
    """``queued(pages)``: a new QUEUED job on a document of that many pages."""
    made = 0

    def make(pages: int, name: str = "") -> ProcessingJob:
        nonlocal made
        made += 1
        document = stored_document(matter, alice, name or f"doc{made}.pdf", page_count=pages)
        job = lifecycle.create_job(document, by=alice)
        return reload(job)

    return make


@pytest.fixture
def two_workers() -> Iterator[None]:
    """Two RQ workers registered in Redis (never started): what Worker.count sees."""
    connection = django_rq.get_connection("default")
    workers = [
        Worker([django_rq.get_queue("high")], name=f"test-worker-{n}", connection=connection)
        for n in (1, 2)
    ]
    for worker in workers:
        worker.register_birth()
    yield
    for worker in workers:
        worker.register_death()


def reload(job: ProcessingJob) -> ProcessingJob:
    return ProcessingJob.objects.select_related("document").get(pk=job.pk)


def estimate(job: ProcessingJob, now: datetime = NOW) -> estimates.Estimate:
    return estimates.for_jobs([reload(job)], now=now)[job.pk]


def test_no_history_and_no_pace_is_no_estimate(queued: Callable[..., ProcessingJob]) -> None:
    job = queued(3)
    assert estimate(job) == estimates.Estimate(
        queue_position=1, eta_seconds=None, estimated_completion=None
    )


@pytest.mark.usefixtures("history")
def test_the_estimate_scales_with_the_pages(queued: Callable[..., ProcessingJob]) -> None:
    learned = estimates.stage_costs()
    assert {stage: cost.per_page for stage, cost in learned.items()} == pytest.approx(PER_PAGE)
    assert {cost.fixed for cost in learned.values()} == {0.0}  # one run: no line to fit
    long = queued(300)
    assert estimate(long) == estimates.Estimate(1, 150, NOW + timedelta(seconds=150))
    ProcessingJob.objects.filter(pk=long.pk).update(status=JobStatus.CANCELLED)
    assert estimate(queued(4)).eta_seconds == 2


@pytest.mark.usefixtures("history")
def test_a_running_stage_goes_at_its_own_pace(queued: Callable[..., ProcessingJob]) -> None:
    job = queued(40)
    started = lifecycle.begin_stage(job.id, job.dispatch_id, worker="test")
    assert started is not None
    job, run = started
    lifecycle.record_progress(job, run, done=10, total=40)
    job = reload(job)
    assert job.stage_started_at is not None

    # 10 pages in 5 s: the 30 left take 15 s, where history says 0.1 s a page (3 s).
    after = job.stage_started_at + timedelta(seconds=5)
    later_stages = (WHOLE_PIPELINE - PER_PAGE["extract"]) * 40
    assert estimate(job, after).eta_seconds == round(15 + later_stages) == 31
    assert estimate(job, after).queue_position is None


@pytest.mark.usefixtures("history", "two_workers")
def test_jobs_of_one_queue_take_turns_and_share_the_workers(
    queued: Callable[..., ProcessingJob],
) -> None:
    first, second, third = queued(10), queued(20), queued(10)  # all in the high queue
    big = queued(150)  # the default queue: taken once high is empty
    found = estimates.for_jobs([reload(j) for j in (first, second, third, big)], now=NOW)

    assert [found[j.pk].queue_position for j in (first, second, third, big)] == [1, 2, 3, 4]
    # Each stage done puts the job's next stage at the back of its queue, so the first
    # job's last stage waits for every stage of the other two: 40 pages at 0.5 s on 2
    # workers, for the first job as for the last.
    assert found[first.pk].eta_seconds == found[third.pk].eta_seconds == 40 * 0.5 / 2
    # The big job waits for the whole high queue, but one job runs on one worker at a
    # time: its own 75 s are more than (75 + 20) / 2.
    assert found[big.pk].eta_seconds == 75
    assert big.queue_name == "default" and first.queue_name == "high"


@pytest.mark.usefixtures("history")
def test_a_job_further_on_counts_only_the_stages_it_has_left(
    queued: Callable[..., ProcessingJob],
) -> None:
    estimates.stage_costs()  # learned (and kept) before these near-instant runs
    ahead = queued(10)
    for _ in range(3):  # extract, ocr and chunk done: index and entities left
        ahead = reload(ahead)
        started = lifecycle.begin_stage(ahead.id, ahead.dispatch_id, worker="test")
        assert started is not None
        lifecycle.complete_stage(*started, done=10, total=10)
    ahead = reload(ahead)
    assert (ahead.status, ahead.current_stage) == (JobStatus.PROCESSING, "index")
    behind = queued(10)

    found = estimates.for_jobs([ahead, reload(behind)], now=NOW)
    tail = (PER_PAGE["index"] + PER_PAGE["entities"]) * 10  # 1 s
    # The job at `index` waits for two stages of the new one (1 + 2 s), one worker.
    assert found[ahead.pk].eta_seconds == round(tail + (PER_PAGE["extract"] + PER_PAGE["ocr"]) * 10)
    # The new one waits for what the other has left.
    assert found[behind.pk].eta_seconds == round(WHOLE_PIPELINE * 10 + tail)
    assert (found[ahead.pk].queue_position, found[behind.pk].queue_position) == (None, 1)


@pytest.mark.usefixtures("history")
def test_a_job_waiting_for_its_next_attempt_adds_the_wait(
    queued: Callable[..., ProcessingJob],
) -> None:
    job = queued(10)
    started = lifecycle.begin_stage(job.id, job.dispatch_id, worker="test")
    assert started is not None
    failed = lifecycle.fail_stage(*started, ServiceUnavailable("Try later."))
    assert failed is not None and failed.status == JobStatus.QUEUED
    assert failed.next_attempt_at is not None
    waiting = queued(20)  # due now: ahead of the failed job, which waits

    now = failed.next_attempt_at - timedelta(seconds=30)
    found = estimates.for_jobs([reload(failed), reload(waiting)], now=now)
    assert found[failed.pk].eta_seconds == round(30 + WHOLE_PIPELINE * 10 + WHOLE_PIPELINE * 20)
    assert found[failed.pk].queue_position == 2
    # The job that is due does not wait for the one that is not.
    assert found[waiting.pk] == estimates.Estimate(1, 10, now + timedelta(seconds=10))


@pytest.mark.usefixtures("history")
def test_finished_jobs_have_no_estimate(queued: Callable[..., ProcessingJob]) -> None:
    job = queued(10)
    ProcessingJob.objects.filter(pk=job.pk).update(status=JobStatus.COMPLETED)
    assert estimate(job) == estimates.NO_ESTIMATE


def test_a_stage_costs_a_fixed_time_per_run_plus_a_time_per_page(
    matter: Matter, alice: Any, queued: Callable[..., ProcessingJob]
) -> None:
    for pages, seconds in ((10, 1.0), (110, 6.0), (60, 3.5)):
        document = stored_document(matter, alice, f"h{pages}.pdf", page_count=pages)
        job = ProcessingJob.objects.create(
            matter=matter, document=document, status=JobStatus.COMPLETED
        )
        StageRun.objects.create(
            job=job,
            stage="extract",
            stage_index=1,
            status=StageStatus.COMPLETED,
            started_at=NOW,
            finished_at=NOW + timedelta(seconds=seconds),
        )
    assert estimates.stage_costs()["extract"] == pytest.approx(estimates.StageCost(0.5, 0.05))
    # Only extract has a history: 0.5 + 0.04 + 0.05 s a page.
    assert estimate(queued(200)).eta_seconds == round(0.54 + 0.05 * 200) == 11


def test_the_pipeline_is_the_one_the_history_is_for() -> None:
    assert [s.name for s in get_pipeline(DOCUMENT_PROCESSING).stages] == list(HISTORY)


# --- queries -----------------------------------------------------------------------------


def _queries(jobs: list[ProcessingJob]) -> int:
    estimates.clear_history()
    with CaptureQueriesContext(connection) as captured:
        found = estimates.for_jobs(jobs)
    assert set(found) == {j.pk for j in jobs}
    return len(captured)


@pytest.mark.usefixtures("history")
def test_a_batch_costs_the_same_queries_for_10_jobs_as_for_200(
    queued: Callable[..., ProcessingJob],
) -> None:
    for _ in range(200):
        queued(5)
    jobs = list(ProcessingJob.objects.queued().select_related("document"))
    assert len(jobs) == 200
    # The history, the queue positions, the active jobs' work.
    assert _queries(jobs[:10]) == _queries(jobs) == 3
    # The history is kept for a while.
    with CaptureQueriesContext(connection) as captured:
        estimates.for_jobs(jobs)
    assert len(captured) == 2


@pytest.mark.usefixtures("history")
def test_a_matters_job_list_costs_the_same_queries_for_10_jobs_as_for_100(
    queued: Callable[..., ProcessingJob], api_client: Any, alice: Any, matter: Matter
) -> None:
    for _ in range(100):
        queued(5)
    api = api_client(alice)
    url = f"/api/matters/{matter.pk}/jobs"
    api.get(url)  # the history and the token's first use

    counts = []
    for per_page in (10, 100):
        with CaptureQueriesContext(connection) as captured:
            response = api.get(f"{url}?per_page={per_page}")
        assert response.status_code == 200
        assert len(response.json()["data"]) == per_page
        counts.append(len(captured))
    assert counts[0] == counts[1]
