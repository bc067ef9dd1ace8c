"""The matter and job pages over plain HTTP: what they show, who may see them, what their
polling gets back, and a page cost that does not grow with the matter."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from processing.jobs import lifecycle
from processing.jobs.states import JobStatus
from processing.models import Document, Matter, ProcessingJob, Role
from processing.pipeline.registry import Stage, register
from tests.conftest import stored_document

pytestmark = pytest.mark.django_db(transaction=True)

ONE_STAGE = "TEST_PAGES_ONE_STAGE"


def _noop(ctx: Any) -> None:
    """A stage with nothing to do."""


@pytest.fixture(autouse=True)
def one_stage_pipeline() -> None:
    register(ONE_STAGE, [Stage("only", "Only", f"{__name__}._noop")])


def browser_of(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def new_job(matter: Matter, by: Any, name: str = "a.pdf") -> ProcessingJob:
    return lifecycle.create_job(stored_document(matter, by, name), by=by, job_type=ONE_STAGE)


def finish(job: ProcessingJob) -> None:
    started = lifecycle.begin_stage(job.pk, ProcessingJob.objects.get(pk=job.pk).dispatch_id)
    assert started is not None
    assert lifecycle.complete_stage(*started, done=1, total=1) is not None


def test_a_polled_row_answers_286_once_its_job_is_finished(matter: Matter, alice: Any) -> None:
    job = new_job(matter, alice)
    client = browser_of(alice)
    for path in (f"/jobs/{job.pk}/row", f"/jobs/{job.pk}/history"):
        waiting = client.get(path)
        assert waiting.status_code == 200, path
        assert 'hx-trigger="every 2s [jtPolling()], jt:resync' in waiting.content.decode()
    assert "1st in line" in client.get(f"/jobs/{job.pk}/row").content.decode()
    finish(job)
    for path in (f"/jobs/{job.pk}/row", f"/jobs/{job.pk}/history"):
        done = client.get(path)
        assert done.status_code == 286, path
        assert "every 2s" not in done.content.decode()  # the swapped-in part polls no more
    assert "Done" in client.get(f"/jobs/{job.pk}/row").content.decode()


def test_the_polled_parts_are_404_to_whoever_is_not_on_the_matter(
    matter: Matter, alice: Any, make_user: Any
) -> None:
    job = new_job(matter, alice)
    stranger = browser_of(make_user("mallory"))
    for path in (
        f"/jobs/{job.pk}/row",
        f"/jobs/{job.pk}/history",
        f"/matters/{matter.pk}/summary",
        f"/matters/{matter.pk}/",
    ):
        assert stranger.get(path).status_code == 404, path
    assert Client().get(f"/jobs/{job.pk}/row").status_code == 302  # to the login page


def test_the_matter_page_filters_by_status_and_pages_by_fifty(matter: Matter, alice: Any) -> None:
    jobs = [new_job(matter, alice, f"doc-{n:03}.pdf") for n in range(55)]
    finish(jobs[0])
    client = browser_of(alice)
    first = client.get(f"/matters/{matter.pk}/").content.decode()
    assert first.count('class="job status-') == 50
    assert "Page 1 of 2" in first
    second = client.get(f"/matters/{matter.pk}/?page=2").content.decode()
    assert second.count('class="job status-') == 5
    completed = client.get(f"/matters/{matter.pk}/?status=COMPLETED").content.decode()
    assert completed.count('class="job status-') == 1 and "doc-000.pdf" in completed
    assert "Processing 54 documents" in first  # the banner counts the whole matter
    assert "54 queued · 0 processing · 1 done · 0 failed" in first


def test_a_member_sees_the_job_page_with_its_timeline_and_audit(
    make_user: Any, make_matter: Any, alice: Any
) -> None:
    make_user("bob")
    matter = make_matter(alice, bob=Role.VIEWER)
    job = new_job(matter, alice)
    finish(job)
    page = browser_of(type(alice).objects.get(username="bob")).get(f"/jobs/{job.pk}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert f'id="job-{job.pk}"' in html and f'id="job-history-{job.pk}"' in html
    assert "attempt 1 · completed" in html
    assert "uploaded it" in html and "finished processing" in html
    assert "Open the processed document" in html


def _queries_for_matter_page(client: Client, matter: Matter) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(f"/matters/{matter.pk}/").status_code == 200
    return len(queries)


def test_the_matter_page_costs_the_same_queries_with_10_and_1000_jobs(
    matter: Matter, alice: Any, make_matter: Any
) -> None:
    client = browser_of(alice)
    small = make_matter(alice, "Small")
    _bulk_jobs(small, alice, 10)
    _bulk_jobs(matter, alice, 1000)
    client.get(f"/matters/{small.pk}/")  # warm the per-process caches (stage history)
    assert _queries_for_matter_page(client, small) == _queries_for_matter_page(client, matter)


def _bulk_jobs(matter: Matter, by: Any, count: int) -> None:
    """``count`` jobs in a realistic mix: most done, some failed, some running or queued."""
    documents = Document.objects.bulk_create(
        Document(
            matter=matter,
            uploaded_by=by,
            original_name=f"bulk-{n}.pdf",
            file=f"x/bulk-{n}.pdf",
            content_type="application/pdf",
            size=100,
            sha256=f"{n:064}",
            page_count=1 + n % 40,
        )
        for n in range(count)
    )
    mix = (
        [JobStatus.COMPLETED] * 6
        + [JobStatus.FAILED, JobStatus.PROCESSING]
        + [JobStatus.QUEUED] * 2
    )
    ProcessingJob.objects.bulk_create(
        ProcessingJob(
            matter=matter,
            document=document,
            job_type=ONE_STAGE,
            status=mix[n % len(mix)],
            current_stage="only",
            queue_name="high",
            created_by=by,
        )
        for n, document in enumerate(documents)
    )
