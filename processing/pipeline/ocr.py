"""The ``ocr`` stage: read the text of pages that have no usable text layer.

Every page of the document gets an ``ocr_status``; '' means "not looked at
yet" and is the checkpoint. A page whose text layer holds real text becomes
``not_needed`` without being drawn: those are written a batch at a time, so a
born-digital 500-page PDF passes in a few queries. A thin page (see
:func:`needs_ocr`) is drawn as a grayscale image within ``OCR_MAX_PIXELS``,
read by Tesseract and saved at once in its own UPDATE (``recognised``, with
``source='ocr'``, the mean word confidence and a note on the image size),
because each takes seconds and a retry must not redo it. A page that cannot
be read becomes ``failed`` with a note saying why, and the stage goes on: one
bad page does not fail a 300-page scan.

Text, HTML and DOCX have no page images: the stage has nothing to do for
them and completes at once with zero items (its pages are marked
``not_needed`` in one UPDATE). The text pages of a PDF or the frames of an
image do count as done items.

Tesseract missing, or without its language data, is the machine's fault, not
the document's: the stage raises SERVICE_UNAVAILABLE, a transient error, so
the job is retried with backoff (installing ``tesseract-ocr``, or another
worker that has it, fixes it) and no page is marked failed for it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.db.models import Count, Q

from processing.documents import (
    PAGE_IMAGE_TYPES,
    DocumentReader,
    RenderError,
    open_document,
    tesseract,
)
from processing.errors import ServiceUnavailable
from processing.models import DocumentPage

if TYPE_CHECKING:
    from processing.jobs.context import StageContext

logger = logging.getLogger(__name__)

OcrStatus = DocumentPage.OcrStatus

READ_PAGES = 200
"""Pages read from the database at a time while looking for thin ones."""
FLUSH_PAGES = 1000
"""At most this many ``not_needed`` pages are held before they are written."""

_LETTERS = re.compile(r"[^\W_]")
# Controls, private-use code points and U+FFFD: what a font without a Unicode
# map extracts as.
_GARBAGE = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ue000-\uf8ff\ufffd]")
_BLANK_CONTRAST = 16
"""A page image whose darkest and lightest pixels differ by less than this is blank."""
_NOTE_LENGTH = 500


def needs_ocr(text: str, min_chars: int) -> bool:
    """True when a page's text layer is too thin to be its text.

    Thin means fewer than ``min_chars`` letters or digits (of any script), or
    more unreadable characters than letters.
    """
    letters = len(_LETTERS.findall(text))
    return letters < min_chars or len(_GARBAGE.findall(text)) > letters


def ocr(ctx: StageContext) -> None:
    """Give every page an ``ocr_status``, reading the thin ones with Tesseract."""
    document = ctx.document
    pages = DocumentPage.objects.filter(document=document)
    if document.content_type not in PAGE_IMAGE_TYPES:
        # Nothing here can be an image of text: zero items, done at once.
        with ctx.fenced():
            pages.filter(ocr_status=OcrStatus.PENDING).update(ocr_status=OcrStatus.NOT_NEEDED)
        ctx.progress(0, 0)
        return
    counts = pages.aggregate(
        total=Count("pk"), done=Count("pk", filter=~Q(ocr_status=OcrStatus.PENDING))
    )
    total, done = counts["total"], counts["done"]
    ctx.progress(done, total)
    if done == total:
        return

    started = time.monotonic()
    outcomes = {OcrStatus.NOT_NEEDED: 0, OcrStatus.RECOGNISED: 0, OcrStatus.FAILED: 0}
    passed: list[int] = []
    reader: DocumentReader | None = None

    def pass_over() -> None:
        """Write the held text pages as ``not_needed``, in one UPDATE."""
        nonlocal done
        if passed:
            with ctx.fenced():
                written = DocumentPage.objects.filter(
                    pk__in=passed, ocr_status=OcrStatus.PENDING
                ).update(ocr_status=OcrStatus.NOT_NEEDED)
            done += written
            outcomes[OcrStatus.NOT_NEEDED] += written
            passed.clear()
        ctx.progress(done, total)

    try:
        for page in _pending_pages(document.pk):
            if not needs_ocr(page.text, settings.OCR_MIN_TEXT_CHARS):
                passed.append(page.pk)
                if len(passed) >= FLUSH_PAGES:
                    pass_over()
                continue
            pass_over()  # the checkpoints stay in page order
            ctx.stop_if_asked()
            if reader is None:
                _check_engine()
                reader = open_document(
                    ctx.path,
                    document.content_type,
                    max_pages=settings.DOCUMENT_MAX_PAGES,
                    max_image_pixels=settings.IMAGE_MAX_PIXELS,
                    max_decoded_pixels=settings.IMAGE_MAX_DECODED_PIXELS,
                )
            fields = _read_page(reader, page.page_number - 1)
            with ctx.fenced():
                written = DocumentPage.objects.filter(
                    pk=page.pk, ocr_status=OcrStatus.PENDING
                ).update(**fields)
            if written:
                done += 1
                outcomes[fields["ocr_status"]] += 1
            ctx.progress(done, total)
        pass_over()
    finally:
        if reader is not None:
            reader.close()
    logger.info(
        "ocr %s: %d pages, %d passed over, %d recognised, %d failed, in %.1f s",
        document.pk,
        total,
        outcomes[OcrStatus.NOT_NEEDED],
        outcomes[OcrStatus.RECOGNISED],
        outcomes[OcrStatus.FAILED],
        time.monotonic() - started,
    )


def _pending_pages(document_id: Any) -> Iterator[DocumentPage]:
    """The pages not looked at yet, in page order, fetched ``READ_PAGES`` at a time."""
    after = 0
    while True:
        batch = list(
            DocumentPage.objects.filter(
                document_id=document_id, ocr_status=OcrStatus.PENDING, page_number__gt=after
            )
            .order_by("page_number")
            .only("pk", "page_number", "text")[:READ_PAGES]
        )
        yield from batch
        if len(batch) < READ_PAGES:
            return
        after = batch[-1].page_number


def _check_engine() -> None:
    try:
        tesseract.check_engine(settings.OCR_COMMAND, settings.OCR_LANG)
    except tesseract.OcrUnavailable as error:
        raise _unavailable(error) from error


def _unavailable(error: tesseract.OcrUnavailable) -> ServiceUnavailable:
    return ServiceUnavailable(
        "Text recognition (OCR) is not available on the server right now. "
        "Processing will be retried.",
        detail=str(error),
    )


def _read_page(reader: DocumentReader, index: int) -> dict[str, Any]:
    """Draw and read page ``index``; the fields to save, whatever the outcome."""
    try:
        rendered = reader.render_page(
            index, dpi=settings.OCR_DPI, max_pixels=settings.OCR_MAX_PIXELS
        )
    except RenderError as error:
        logger.info("page %d could not be drawn: %r", index + 1, error.__cause__ or error)
        return _failed(str(error))
    # Pages are drawn in grayscale ("L"): one band, so one (lowest, highest) pair.
    low, high = cast(tuple[int, int], rendered.image.getextrema())
    if high - low < _BLANK_CONTRAST:
        return _failed("The page is blank: there is no text to read.", rendered.describe())
    try:
        result = tesseract.recognise(
            rendered.image,
            command=settings.OCR_COMMAND,
            languages=settings.OCR_LANG,
            timeout=settings.OCR_TIMEOUT,
            dpi=rendered.dpi,
        )
    except tesseract.OcrFailed as error:
        logger.warning("page %d could not be read: %s", index + 1, error)
        return _failed(error.message, rendered.describe())
    except tesseract.OcrUnavailable as error:
        raise _unavailable(error) from error
    if not _LETTERS.search(result.text):
        return _failed("No text was found on the page image.", rendered.describe())
    return {
        "text": result.text,
        "char_count": len(result.text),
        "source": DocumentPage.Source.OCR,
        "ocr_status": OcrStatus.RECOGNISED,
        "ocr_confidence": result.confidence,
        "ocr_note": rendered.describe()[:_NOTE_LENGTH],
    }


def _failed(reason: str, how: str = "") -> dict[str, Any]:
    """A failed page keeps whatever text layer it had; the note says why."""
    note = f"{reason} {how}".strip()
    return {"ocr_status": OcrStatus.FAILED, "ocr_note": note[:_NOTE_LENGTH]}
