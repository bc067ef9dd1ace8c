"""The ``extract`` stage: the text of every page, one checkpoint row per page."""

from __future__ import annotations

import time

from django.conf import settings

from processing.documents import open_document
from processing.models import Document, DocumentPage
from processing.pipeline.checkpoints import save_rows
from processing.pipeline.context import StageContext

FLUSH_PAGES = 64
FLUSH_SECONDS = 0.5


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL characters; some PDFs put them in their text.
    return text.replace("\x00", "")


def extract(ctx: StageContext) -> None:
    """Read each page's text from the stored file and save it as a ``DocumentPage``.

    Pages that already have a row (from an earlier attempt) are not read again.
    New rows are written in small batches (every ``FLUSH_PAGES`` pages or
    ``FLUSH_SECONDS``, whichever comes first), each batch its own transaction,
    with COPY (:func:`save_rows`), so a crash loses at most a moment's work and
    a large document never sits in memory.
    """
    document = ctx.document
    with open_document(
        ctx.path,
        document.content_type,
        max_pages=settings.DOCUMENT_MAX_PAGES,
        max_text_bytes=settings.DOCUMENT_MAX_TEXT_BYTES,
        max_image_pixels=settings.IMAGE_MAX_PIXELS,
    ) as reader:
        total = reader.page_count
        if document.page_count != total:
            Document.objects.filter(pk=document.pk).update(page_count=total)
            document.page_count = total
        finished = set(
            DocumentPage.objects.filter(document=document).values_list("page_number", flat=True)
        )
        done = len(finished)
        ctx.progress(done, total)
        columns = ("document", "page_number", "text", "char_count", "source")
        source = DocumentPage.Source.TEXT_LAYER.value
        batch: list[tuple[object, ...]] = []
        last_flush = time.monotonic()

        def flush() -> None:
            nonlocal last_flush
            save_rows(DocumentPage, columns, batch)
            batch.clear()
            last_flush = time.monotonic()
            ctx.progress(done, total)

        for index in range(total):
            number = index + 1
            if number in finished:
                continue
            ctx.stop_if_asked()
            text = _clean(reader.page_text(index))
            batch.append((document.pk, number, text, len(text), source))
            done += 1
            if len(batch) >= FLUSH_PAGES or time.monotonic() - last_flush >= FLUSH_SECONDS:
                flush()
        flush()
