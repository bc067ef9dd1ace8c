"""The matter and job pages over plain HTTP: what they show, who may see them, what their
polling gets back, a page cost that does not grow with the matter, and uploading the same
file twice."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils.formats import date_format
from django.utils.timezone import localtime

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
        assert 'hx-trigger="every 2s [jtPolling()], jt:resync"' in waiting.content.decode()
    assert "1st in line" in client.get(f"/jobs/{job.pk}/row").content.decode()
    finish(job)
    for path in (f"/jobs/{job.pk}/row", f"/jobs/{job.pk}/history"):
        done = client.get(path)
        assert done.status_code == 286, path
        assert "hx-trigger" not in done.content.decode()  # the swapped-in part polls no more
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


# --- uploading the same file twice -----------------------------------------------------

DEPOSITION = b"Deposition of the witness, taken on the twelfth of March.\n" * 3


def _hidden_fields(html: str, form_id: str) -> dict[str, str]:
    """The hidden inputs of the element with ``form_id`` in a page, as the browser sends them."""
    part = html[html.index(f'id="{form_id}"') :]
    part = part[: part.index("</form>")]
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', part)
    return {name: unescape(value) for name, value in fields}


def test_an_upload_of_bytes_already_in_the_matter_says_where_they_are_and_can_go_anyway(
    matter: Matter, alice: Any
) -> None:
    client = browser_of(alice)
    upload = f"/matters/{matter.pk}/upload"
    client.post(upload, {"file": SimpleUploadedFile("deposition.txt", DEPOSITION)})
    original = Document.objects.get()
    job = ProcessingJob.objects.get()

    answer = client.post(
        upload, {"file": SimpleUploadedFile("deposition copy.txt", DEPOSITION)}, follow=True
    )

    page = answer.content.decode()
    assert Document.objects.count() == 1 and ProcessingJob.objects.count() == 1
    when = date_format(localtime(original.created_at), "j M Y, H:i")
    assert "“deposition copy.txt” was already uploaded as" in page
    assert f'<a href="/documents/{original.pk}/">deposition.txt</a>' in page
    assert f">{when}</time>" in page and "so it was not processed again" in page
    assert f'<a href="/jobs/{job.pk}/">Its job</a> is queued.' in page
    assert "Upload anyway" in page
    # Said once: the next visit of the page does not repeat it.
    assert "already uploaded" not in client.get(f"/matters/{matter.pk}/").content.decode()

    anyway = client.post(upload, _hidden_fields(page, "duplicate-upload"), follow=True)

    assert "“deposition copy.txt” was uploaded and queued." in anyway.content.decode()
    copy = Document.objects.exclude(pk=original.pk).get()
    assert copy.original_name == "deposition copy.txt" and copy.sha256 == original.sha256
    assert Path(copy.file.path).read_bytes() == DEPOSITION
    assert ProcessingJob.objects.filter(document=copy).count() == 1


def test_upload_anyway_takes_only_a_document_of_the_same_matter(
    matter: Matter, alice: Any, make_matter: Any
) -> None:
    client = browser_of(alice)
    other = make_matter(alice, "Another matter")
    client.post(f"/matters/{other.pk}/upload", {"file": SimpleUploadedFile("a.txt", DEPOSITION)})
    elsewhere = Document.objects.get()

    answer = client.post(
        f"/matters/{matter.pk}/upload",
        {"allow_duplicate": "1", "copy_of": str(elsewhere.pk), "name": "a.txt"},
        follow=True,
    )

    assert "That document is no longer in this matter." in answer.content.decode()
    assert Document.objects.count() == 1
