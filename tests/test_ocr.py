"""The ``ocr`` stage: scanned pages are read, text pages are left alone, through real workers.

Uploads go through the API and real RQ workers run ``extract`` then ``ocr``
(the default pipeline is narrowed to those two here) with the real Tesseract.
Pages are small so that the whole file runs in seconds.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from processing.documents import PDF, open_document
from processing.jobs import lifecycle
from processing.models import Document, DocumentPage, ProcessingJob, StageRun
from processing.pipeline.ocr import needs_ocr
from processing.pipeline.registry import DOCUMENT_PROCESSING, get_pipeline, register
from tests.conftest import CORPUS, job_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def extract_then_ocr() -> Iterator[None]:
    """Uploads run ``extract`` and ``ocr`` only, whatever the default pipeline holds."""
    default = get_pipeline(DOCUMENT_PROCESSING)
    register(
        DOCUMENT_PROCESSING,
        [default.stage("extract"), default.stage("ocr")],
    )
    yield
    register(DOCUMENT_PROCESSING, list(default.stages))


# --- documents made here ----------------------------------------------------------------


def text_image(lines: list[str], size: tuple[int, int], font_size: int = 44) -> Image.Image:
    """Black text on white, like a clean scan; Pillow's own font, so no system font is needed."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=font_size)
    for n, line in enumerate(lines):
        draw.text((font_size, font_size * (1 + 1.6 * n)), line, fill=0, font=font)
    return image


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def pdf(pages: list[str | Image.Image], *, page_size: Any = (105, 148)) -> bytes:  # A6, mm
    """A PDF with a text page per string and a scanned page (image only) per image."""
    document = FPDF(format=page_size)
    document.set_font("helvetica", size=10)
    for page in pages:
        document.add_page()
        if isinstance(page, str):
            document.multi_cell(0, 6, page)
        else:
            document.image(page, x=0, y=0, w=document.w, h=document.h)
    return bytes(document.output())


SCAN = text_image(
    ["Quarterly inspection report", "for the Ashford warehouse,", "signed by Marguerite Okafor."],
    (1240, 1748),  # A6 at 300 dpi
)
TEXT_PAGES = [
    "Page one of the lease: the tenant pays rent on the first day of each month.",
    "Page three of the lease: either party may end it with ninety days' notice.",
]


def upload(client: Any, matter: Any, name: str, content: bytes) -> ProcessingJob:
    response = client.upload(matter.pk, name, content)
    assert response.status_code == 201, response.content
    return job_of(response)


def status_of(client: Any, job: ProcessingJob) -> dict[str, Any]:
    response = client.get(f"/api/jobs/{job.pk}")
    assert response.status_code == 200
    return response.json()


def pages_of(document: Document) -> list[DocumentPage]:
    return list(DocumentPage.objects.filter(document=document).order_by("page_number"))


def ocr_run(job: ProcessingJob) -> StageRun:
    return StageRun.objects.filter(job=job, stage="ocr").latest("created_at")


def drawn_size(note: str) -> tuple[int, int]:
    """The image size an OCR note reports ("Read from a 2000×2000 px image …")."""
    found = re.search(r"(\d+)×(\d+) px", note)
    assert found, note
    return int(found.group(1)), int(found.group(2))


def resident_bytes() -> int:
    """This process's resident memory (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """The highest resident memory of this process (the worker runs in it) while active."""

    def __init__(self) -> None:
        self.start = self.peak = resident_bytes()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, resident_bytes())
            threading.Event().wait(0.005)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


# --- what a user sees -------------------------------------------------------------------


def test_a_scanned_page_in_a_text_pdf_is_read_and_the_text_pages_are_left_alone(
    api_client: Any, alice: Any, matter: Any, worker: Any
) -> None:
    client = api_client(alice)
    job = upload(client, matter, "lease.pdf", pdf([TEXT_PAGES[0], SCAN, TEXT_PAGES[1]]))
    worker()

    body = status_of(client, job)
    assert body["status"] == "COMPLETED" and body["page_count"] == 3
    assert (body["items_done"], body["items_total"]) == (3, 3)
    first, scanned, third = pages_of(job.document)
    assert scanned.source == "ocr" and scanned.ocr_status == "recognised"
    assert "Ashford warehouse" in scanned.text and "Marguerite Okafor" in scanned.text
    assert scanned.char_count == len(scanned.text)
    assert scanned.ocr_confidence is not None and 60 < scanned.ocr_confidence <= 100
    assert drawn_size(scanned.ocr_note) == (1241, 1749)  # A6 at 300 dpi, rounded up
    for page, original in ((first, TEXT_PAGES[0]), (third, TEXT_PAGES[1])):
        assert page.source == "text_layer" and page.ocr_status == "not_needed"
        assert page.text.split() == original.split() and page.ocr_confidence is None


def test_a_png_upload_is_accepted_and_read(
    api_client: Any, alice: Any, matter: Any, worker: Any
) -> None:
    client = api_client(alice)
    image = text_image(["Invoice 4471 from Harrowgate", "Plumbing Supplies Ltd"], (900, 300))
    job = upload(client, matter, "photo-of-invoice.png", png(image))
    assert job.document.content_type == "image/png"
    worker()

    assert status_of(client, job)["status"] == "COMPLETED"
    (page,) = pages_of(job.document)
    assert page.source == "ocr" and page.ocr_status == "recognised"
    assert "Harrowgate" in page.text and "Plumbing Supplies" in page.text
    assert Document.objects.get(pk=job.document.pk).page_count == 1


def test_a_huge_page_is_drawn_within_the_pixel_budget(
    api_client: Any, alice: Any, matter: Any, worker: Any, settings: Any
) -> None:
    settings.OCR_MAX_PIXELS = 4_000_000
    client = api_client(alice)
    survey = text_image(["Boundary survey of the", "Penrose estate"], (2000, 2000), font_size=90)
    # 200 × 200 inches: 60,000 × 60,000 pixels (3.6 GB in gray) if drawn at 300 dpi.
    job = upload(client, matter, "survey.pdf", pdf([survey], page_size=(5080, 5080)))

    with PeakMemory() as memory:
        worker()

    assert status_of(client, job)["status"] == "COMPLETED"
    (page,) = pages_of(job.document)
    width, height = drawn_size(page.ocr_note)
    assert width * height <= 4_000_000 and (width, height) == (2000, 2000)
    assert "reduced to stay within 4 megapixels" in page.ocr_note
    assert "Penrose estate" in page.text
    assert memory.growth_mb < 250, f"the worker grew by {memory.growth_mb:.0f} MB"
    # The same page within the default budget is still far below 300 dpi.
    with open_document(job.document.file.path, PDF) as reader:
        drawn = reader.render_page(0, dpi=300, max_pixels=25_000_000)
    assert drawn.pixels <= 25_000_000 and drawn.image.size == (5000, 5000)


def test_pages_with_nothing_to_read_fail_with_a_reason_and_the_job_completes(
    api_client: Any, alice: Any, matter: Any, worker: Any
) -> None:
    client = api_client(alice)
    shapes = Image.new("L", (800, 600), 255)
    ImageDraw.Draw(shapes).ellipse((100, 100, 400, 400), fill=0)
    blank_job = upload(client, matter, "blank.png", png(Image.new("L", (800, 600), 255)))
    shapes_job = upload(client, matter, "logo.png", png(shapes))
    worker()

    for job, reason in (
        (blank_job, "The page is blank"),
        (shapes_job, "No text was found on the page image."),
    ):
        assert status_of(client, job)["status"] == "COMPLETED"
        (page,) = pages_of(job.document)
        assert page.ocr_status == "failed" and page.ocr_note.startswith(reason)
        assert page.source == "text_layer" and page.text == ""
        assert (ocr_run(job).items_done, ocr_run(job).items_total) == (1, 1)


def _page_rows(document: Document) -> list[tuple[Any, ...]]:
    """Every column of the document's pages, with PostgreSQL's ``xmin``: any UPDATE changes it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT xmin::text, page_number, text, source, ocr_status, ocr_confidence, ocr_note"
            " FROM processing_documentpage WHERE document_id = %s ORDER BY page_number",
            [document.pk],
        )
        return cursor.fetchall()


def test_running_ocr_again_reads_nothing_and_changes_no_row(
    api_client: Any, alice: Any, matter: Any, worker: Any, settings: Any
) -> None:
    client = api_client(alice)
    first = upload(client, matter, "lease.pdf", pdf([TEXT_PAGES[0], SCAN]))
    worker()
    assert status_of(client, first)["status"] == "COMPLETED"
    before = _page_rows(first.document)
    assert [row[4] for row in before] == ["not_needed", "recognised"]

    # Without Tesseract, any page the second run tried to read would fail the stage.
    settings.OCR_COMMAND = "/nonexistent/tesseract"
    again = lifecycle.create_job(first.document, by=alice)
    worker()

    assert status_of(client, again)["status"] == "COMPLETED"
    assert _page_rows(first.document) == before  # not rewritten, not even with the same values
    run = ocr_run(again)
    assert (run.items_done, run.items_total) == (2, 2)  # all done before it started


def test_text_formats_have_nothing_to_read(
    api_client: Any, alice: Any, matter: Any, worker: Any
) -> None:
    client = api_client(alice)
    job = upload(client, matter, "notes.txt", b"Short.\f\fThird page, after a blank one.\n")
    worker()
    assert status_of(client, job)["status"] == "COMPLETED"
    assert [p.ocr_status for p in pages_of(job.document)] == ["not_needed"] * 3
    # Nothing to OCR in a text file: the stage shows zero items, not three pages of work.
    assert (ocr_run(job).items_done, ocr_run(job).items_total) == (0, 0)
    assert ocr_run(job).status == "COMPLETED"


def test_without_tesseract_the_job_waits_for_a_retry_and_no_page_is_marked(
    api_client: Any, alice: Any, matter: Any, worker: Any, settings: Any
) -> None:
    settings.OCR_COMMAND = "/nonexistent/tesseract"
    client = api_client(alice)
    job = upload(client, matter, "lease.pdf", pdf([TEXT_PAGES[0], SCAN]))
    worker()

    body = status_of(client, job)
    assert body["status"] == "QUEUED" and body["next_attempt_at"]
    assert body["error_code"] == "SERVICE_UNAVAILABLE" and "OCR" in body["error"]
    assert "tesseract-ocr" in ocr_run(job).error_detail  # staff see what to install
    text_page, scanned = pages_of(job.document)
    assert text_page.ocr_status == "not_needed"  # written before the first scanned page
    assert scanned.ocr_status == "" and scanned.text == ""


def test_an_image_over_the_pixel_limit_fails_as_too_complex(
    api_client: Any, alice: Any, matter: Any, worker: Any, settings: Any
) -> None:
    settings.IMAGE_MAX_PIXELS = 1_000_000
    client = api_client(alice)
    job = upload(client, matter, "poster.png", png(Image.new("L", (2000, 1000), 255)))
    worker()
    body = status_of(client, job)
    assert body["status"] == "FAILED" and body["error_code"] == "DOCUMENT_TOO_COMPLEX"


def test_a_multi_page_tiff_is_read_page_by_page(
    api_client: Any, alice: Any, matter: Any, worker: Any
) -> None:
    client = api_client(alice)
    frames = [
        text_image(["Exhibit A: the Thornbury contract"], (1000, 200)),
        text_image(["Exhibit B: the Whitcombe letter"], (1000, 200)),
    ]
    out = io.BytesIO()
    frames[0].save(out, format="TIFF", save_all=True, append_images=frames[1:])
    job = upload(client, matter, "exhibits.tif", out.getvalue())
    worker()
    assert status_of(client, job)["status"] == "COMPLETED"
    first, second = pages_of(job.document)
    assert "Thornbury" in first.text and "Whitcombe" in second.text


@pytest.mark.corpus
def test_the_scanned_opinion_in_the_corpus_is_read(
    api_client: Any, alice: Any, matter: Any, worker: Any
) -> None:
    client = api_client(alice)
    content = (CORPUS / "image-pdf-2.pdf").read_bytes()
    job = upload(client, matter, "image-pdf-2.pdf", content)
    worker()
    assert status_of(client, job)["status"] == "COMPLETED"
    (page,) = pages_of(job.document)
    assert page.source == "ocr" and "morristown" in page.text.lower()
    assert "Morristown Driver" in page.text  # words keep their spaces


# --- what counts as a page without text --------------------------------------------------


def test_a_thin_text_layer_needs_ocr() -> None:
    thin = [
        "",
        "   \n\n  ",
        "Page 3",  # a stamped page number on a scan
        "\x03\x04\x05\x06 " * 40 + "abc",  # a font without a Unicode map
        "\ue001\ue002\ue003" * 30 + "Some words",
    ]
    real = [TEXT_PAGES[0], "わたくしといふ現象は仮定された有機交流電燈のひとつの青い照明です"]
    assert [needs_ocr(text, min_chars=20) for text in thin] == [True] * len(thin)
    assert [needs_ocr(text, min_chars=20) for text in real] == [False] * len(real)
