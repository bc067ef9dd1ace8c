"""The ``extract`` stage: the text of every page, one checkpoint row per page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from django.conf import settings

from processing.documents import PackageLimits, open_document
from processing.models import Document, DocumentPage
from processing.pipeline.checkpoints import stream_rows

if TYPE_CHECKING:
    from processing.jobs.context import StageContext

FLUSH_SECONDS = 0.5
FLUSH_CHARS = 4 * 1024 * 1024


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL characters; some PDFs put them in their text.
    return text.replace("\x00", "")


def extract(ctx: StageContext) -> None:
    """Read each page's text from the stored file and save it as a ``DocumentPage``.

    Pages that already have a row (from an earlier attempt) are not read again.
    Rows go to the database as pages are read (:func:`stream_rows`, COPY), so
    PostgreSQL stores some pages while the next are read. They are committed
    every ``FLUSH_SECONDS``, so a crash loses at most that much work, or sooner
    once a batch holds ``FLUSH_CHARS`` characters of text, so a large document never sits
    in memory. Progress and the cancel check come between batches, when the
    connection is free. A page a reader could read only part of (a budget cut it
    short) gets the reader's note in ``text_note``, which the document page shows.
    """
    document = ctx.document
    with open_document(
        ctx.path,
        document.content_type,
        max_pages=settings.DOCUMENT_MAX_PAGES,
        max_text_bytes=settings.DOCUMENT_MAX_TEXT_BYTES,
        max_image_pixels=settings.IMAGE_MAX_PIXELS,
        max_html_nodes=settings.HTML_MAX_NODES,
        max_decoded_pixels=settings.IMAGE_MAX_DECODED_PIXELS,
        docx_limits=PackageLimits(
            max_members=settings.DOCX_MAX_PARTS,
            max_unpacked_bytes=settings.DOCX_MAX_UNPACKED_BYTES,
            max_xml_elements=settings.DOCX_MAX_XML_ELEMENTS,
        ),
    ) as reader:
        total = reader.page_count
        if document.page_count != total:
            with ctx.fenced():
                Document.objects.filter(pk=document.pk).update(page_count=total)
            document.page_count = total
        finished = set(
            DocumentPage.objects.filter(document=document).values_list("page_number", flat=True)
        )
        done = len(finished)
        ctx.progress(done, total)
        source = DocumentPage.Source.TEXT_LAYER.value

        def pages() -> Iterator[tuple[object, ...]]:
            nonlocal done
            for index in range(total):
                if index + 1 in finished:
                    continue
                text = _clean(reader.page_text(index))
                done += 1
                note = reader.page_note(index)[:500]
                yield (document.pk, index + 1, text, len(text), source, note)

        def between_batches() -> None:
            ctx.progress(done, total)
            ctx.stop_if_asked()

        try:
            stream_rows(
                DocumentPage,
                ("document", "page_number", "text", "char_count", "source", "text_note"),
                pages(),
                seconds=FLUSH_SECONDS,
                max_size=FLUSH_CHARS,
                size=lambda row: row[3],
                after_batch=between_batches,
                fence=ctx.fence,
            )
        finally:
            # What the stage run reports, also when a page failed (no write here).
            ctx.items_done, ctx.items_total = done, total
        ctx.progress(done, total)
