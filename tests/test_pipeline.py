"""Uploads go through real RQ workers to their end state, with the right pages and text."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from processing.jobs.queues import QUEUES
from processing.models import DocumentPage, ProcessingJob, StageRun
from tests.conftest import database_url, job_of, make_docx, make_pdf

pytestmark = pytest.mark.django_db(transaction=True)


def status_of(client: Any, job: ProcessingJob) -> dict[str, Any]:
    response = client.get(f"/api/jobs/{job.pk}")
    assert response.status_code == 200
    return response.json()


def test_multi_page_pdf_completes_with_each_pages_text(
    api_client: Any, alice: Any, matter: Any, worker: Any
) -> None:
    client = api_client(alice)
    pages = [f"Page {n} of the settlement agreement, clause {n * 7}." for n in range(1, 6)]
    response = client.upload(matter.pk, "agreement.pdf", make_pdf(pages))
    assert response.status_code == 201
    job = job_of(response)
    assert status_of(client, job)["status"] == "QUEUED"

    worker()

    body = status_of(client, job)
    assert body["status"] == "COMPLETED"
    assert body["page_count"] == 5 and body["progress"] == 100
    assert (body["items_done"], body["items_total"]) == (5, 5)
    assert body["current_stage"] == "entities" and body["stage_index"] == body["total_stages"] == 5
    assert [s["status"] for s in body["stages"]] == ["COMPLETED"] * 5
    assert body["error"] is None and body["result_url"]
    texts = list(DocumentPage.objects.filter(document=job.document).values_list("text", flat=True))
    assert len(texts) == 5
    assert "clause 21" in texts[2] and "clause 35" in texts[4]


def test_docx_with_a_table_completes(api_client: Any, alice: Any, matter: Any, worker: Any) -> None:
    client = api_client(alice)
    content = make_docx(
        ["Memorandum of understanding.", "Second page starts here."],
        table=[["Party", "Amount"], ["Acme Corp", "$1,200"]],
        page_break_after=0,
    )
    job = job_of(client.upload(matter.pk, "memo.docx", content))
    assert job.document.content_type.endswith("wordprocessingml.document")
    worker()
    body = status_of(client, job)
    assert body["status"] == "COMPLETED" and body["page_count"] == 2
    text = " ".join(
        DocumentPage.objects.filter(document=job.document).values_list("text", flat=True)
    )
    assert "Memorandum of understanding" in text and "Acme Corp" in text and "$1,200" in text


def test_latin1_text_completes_with_its_accents(
    api_client: Any, alice: Any, matter: Any, worker: Any
) -> None:
    client = api_client(alice)
    content = "Déclaration du témoin: la façade était endommagée, reçu à Genève.\n".encode(
        "latin-1"
    )
    job = job_of(client.upload(matter.pk, "statement.txt", content * 20))
    worker()
    assert status_of(client, job)["status"] == "COMPLETED"
    page = DocumentPage.objects.get(document=job.document)
    assert "façade était endommagée, reçu à Genève" in page.text


def test_html_completes_with_visible_text_only(
    api_client: Any, alice: Any, matter: Any, worker: Any
) -> None:
    client = api_client(alice)
    html = (
        b"<!DOCTYPE html><html><head><title>Docket</title><style>.x{color:red}</style>"
        b"<script>var secret='do-not-index';</script></head><body><h1>Docket 4:13-cr-03121</h1>"
        b"<table><tr><td>Filed</td><td>Indictment</td></tr></table></body></html>"
    )
    job = job_of(client.upload(matter.pk, "docket.html", html))
    worker()
    body = status_of(client, job)
    assert body["status"] == "COMPLETED" and body["page_count"] == 1
    text = DocumentPage.objects.get(document=job.document).text
    assert "Docket 4:13-cr-03121" in text and "Indictment" in text
    assert "do-not-index" not in text and "color:red" not in text


@pytest.mark.parametrize(
    "kind, code",
    [("corrupt", "CORRUPT_DOCUMENT"), ("encrypted", "ENCRYPTED_DOCUMENT")],
)
def test_broken_pdfs_fail_once_with_their_code(
    api_client: Any, alice: Any, matter: Any, worker: Any, kind: str, code: str
) -> None:
    if kind == "corrupt":
        content = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage without xref\n%%EOF\n"
    else:
        import io

        from pypdf import PdfReader, PdfWriter

        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["Privileged."]))))
        writer.encrypt(user_password="s3cret", owner_password="owner")
        out = io.BytesIO()
        writer.write(out)
        content = out.getvalue()
    client = api_client(alice)
    response = client.upload(matter.pk, f"{kind}.pdf", content)
    assert response.status_code == 201  # accepted at upload, judged by the stage
    job = job_of(response)
    ran = worker()
    body = status_of(client, job)
    assert body["status"] == "FAILED" and body["error_code"] == code
    assert body["retry_count"] == 0 and body["next_attempt_at"] is None
    assert ran == 1  # no automatic retry was enqueued
    assert "Traceback" not in body["error"] and len(body["error"]) > 20
    # The worker survived and still works.
    good = job_of(client.upload(matter.pk, "fine.pdf", make_pdf(["Fine."])))
    worker()
    assert status_of(client, good)["status"] == "COMPLETED"


def test_a_rerun_skips_pages_already_extracted(
    api_client: Any, alice: Any, matter: Any, worker: Any
) -> None:
    """A retry resumes: finished pages keep their rows and are not read again."""
    from processing.errors import InternalError
    from processing.jobs import lifecycle

    client = api_client(alice)
    job = job_of(client.upload(matter.pk, "long.pdf", make_pdf([f"Page {n}" for n in range(1, 9)])))
    # First attempt got through 3 pages, then the worker's stage failed.
    job.refresh_from_db()
    started = lifecycle.begin_stage(job.id, job.dispatch_id)
    assert started is not None
    _, run = started
    for number in (1, 2, 3):
        DocumentPage.objects.create(
            document=job.document,
            page_number=number,
            text=f"kept from the first attempt, page {number}",
        )
    lifecycle.fail_stage(job, run, InternalError(), done=3, total=8)
    job.refresh_from_db()
    assert job.status == "QUEUED" and job.retry_count == 1
    # Run the scheduled retry now rather than waiting out the backoff.
    from processing.jobs.dispatch import enqueue_stage

    enqueue_stage(job.id, job.dispatch_id, job.queue_name)
    worker()
    job.refresh_from_db()
    assert job.status == "COMPLETED" and job.error_code is None
    rows = DocumentPage.objects.filter(document=job.document).order_by("page_number")
    assert rows.count() == 8
    assert [r.text for r in rows[:3]] == [  # not redone
        f"kept from the first attempt, page {n}" for n in (1, 2, 3)
    ]
    assert "Page 4" in rows[3].text
    runs = list(
        StageRun.objects.filter(job=job, stage="extract").values_list(
            "status", "items_done", "items_total"
        )
    )
    assert runs == [("FAILED", 3, 8), ("COMPLETED", 8, 8)]


def test_production_worker_process_completes_a_job(
    api_client: Any, alice: Any, matter: Any
) -> None:
    """The Procfile's worker (forking RQ worker via django-rq) runs the pipeline."""
    client = api_client(alice)
    job = job_of(client.upload(matter.pk, "brief.pdf", make_pdf(["Brief one.", "Brief two."])))
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(Path(job.document.file.path).parents[3]),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "rqworker", *QUEUES, "--burst"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    body = status_of(client, job)
    assert body["status"] == "COMPLETED" and body["page_count"] == 2


def test_checkpoint_rows_that_already_exist_are_kept_and_the_rest_saved(
    api_client: Any, alice: Any, matter: Any
) -> None:
    """Two workers racing on one stage never duplicate or lose a page's row."""
    from processing.pipeline.checkpoints import stream_rows

    job = job_of(api_client(alice).upload(matter.pk, "x.pdf", make_pdf(["a", "b", "c"])))
    document = job.document
    DocumentPage.objects.create(document=document, page_number=2, text="saved by the other")
    columns = ("document", "page_number", "text", "char_count", "source")
    stream_rows(
        DocumentPage,
        columns,
        [(document.pk, n, f"page {n}", 6, "text_layer") for n in (1, 2, 3)],
        seconds=60,
        max_size=1 << 20,
    )
    pages = dict(DocumentPage.objects.filter(document=document).values_list("page_number", "text"))
    assert pages == {1: "page 1", 2: "saved by the other", 3: "page 3"}


def test_streamed_rows_keep_what_was_read_before_a_page_failed(
    api_client: Any, alice: Any, matter: Any
) -> None:
    """A page that cannot be read costs only itself: the pages before it are stored."""
    from processing.errors import CorruptDocument
    from processing.pipeline.checkpoints import stream_rows

    job = job_of(api_client(alice).upload(matter.pk, "x.pdf", make_pdf(["a", "b", "c", "d"])))
    document = job.document
    DocumentPage.objects.create(document=document, page_number=2, text="saved by the other")
    batches: list[int] = []

    def pages() -> Any:
        for number in (1, 2, 3):
            yield (document.pk, number, f"page {number}", 6, "text_layer")
        raise CorruptDocument(detail="page 4")

    with pytest.raises(CorruptDocument):
        stream_rows(
            DocumentPage,
            ("document", "page_number", "text", "char_count", "source"),
            pages(),
            seconds=60,
            max_size=1 << 20,
            after_batch=lambda: batches.append(1),
        )
    pages_stored = dict(
        DocumentPage.objects.filter(document=document).values_list("page_number", "text")
    )
    assert pages_stored == {1: "page 1", 2: "saved by the other", 3: "page 3"}


def test_streamed_rows_commit_in_batches_bounded_by_size(
    api_client: Any, alice: Any, matter: Any
) -> None:
    """Each batch is committed (and reported) once it holds max_size of text."""
    from processing.pipeline.checkpoints import stream_rows

    job = job_of(api_client(alice).upload(matter.pk, "x.pdf", make_pdf(["a"])))
    document = job.document
    stored_after_each_batch: list[int] = []
    stream_rows(
        DocumentPage,
        ("document", "page_number", "text", "char_count", "source"),
        ((document.pk, n, "x" * 10, 10, "text_layer") for n in range(1, 8)),
        seconds=60,
        max_size=30,
        size=lambda row: row[3],
        after_batch=lambda: stored_after_each_batch.append(
            DocumentPage.objects.filter(document=document).count()
        ),
    )
    assert stored_after_each_batch == [3, 6, 7]
