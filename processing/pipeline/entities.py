"""The ``entities`` stage: dates, amounts, emails, phone numbers and case citations per page."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import Count, Q

from processing.models import DocumentPage, Entity
from processing.pipeline.entity_finder import Found, find_entities_by_window

if TYPE_CHECKING:
    from processing.jobs.context import StageContext

FLUSH_PAGES = 32
FLUSH_SECONDS = 0.5


def page_cap_note(limit: int) -> str:
    """The note on a page whose entities stopped being counted at ``limit``."""
    return f"Entities on this page: counting stopped at {limit:,}, the limit per page."


def document_cap_note(limit: int) -> str:
    """The note on each page left unscanned once the document had ``limit`` entities."""
    return (
        f"Not scanned for entities: the document reached its limit of {limit:,} entities "
        "on an earlier page."
    )


def entities(ctx: StageContext) -> None:
    """Find the entities on each page not yet scanned and save them as ``Entity`` rows.

    A page's entities and its ``entities_done`` flag are written in the same
    transaction (fenced on the stage's lease: :meth:`StageContext.fenced`), a small
    batch of pages at a time (every ``FLUSH_PAGES`` pages or ``FLUSH_SECONDS``), so a
    rerun skips the pages already scanned and a crash mid-batch leaves those pages to
    be scanned again, never half-saved. Progress counts pages; a long page is searched
    a window at a time, with the cancel check and a progress report between windows.

    Counting is bounded (``ENTITIES_MAX_PER_PAGE``, ``ENTITIES_MAX_PER_DOCUMENT``):
    past a cap the stage stops counting and says so in the page's
    ``entities_note``, where the document page shows it. A hostile page of
    back-to-back addresses and numbers costs at most a cap's worth of rows.
    """
    document = ctx.document
    counts = DocumentPage.objects.filter(document=document).aggregate(
        total=Count("id"), done=Count("id", filter=Q(entities_done=True))
    )
    total, done = counts["total"], counts["done"]
    ctx.progress(done, total)
    if done >= total:
        return
    per_page: int = settings.ENTITIES_MAX_PER_PAGE
    per_document: int = settings.ENTITIES_MAX_PER_DOCUMENT
    counted = Entity.objects.filter(document=document).count()

    found: list[Entity] = []
    scanned: list[int] = []
    capped: list[int] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        if scanned:
            with ctx.fenced():
                Entity.objects.bulk_create(found, ignore_conflicts=True, batch_size=500)
                DocumentPage.objects.filter(pk__in=scanned).update(entities_done=True)
                if capped:
                    DocumentPage.objects.filter(pk__in=capped).update(
                        entities_note=page_cap_note(per_page)
                    )
            found.clear()
            scanned.clear()
            capped.clear()
        last_flush = time.monotonic()
        ctx.progress(done, total)

    pages = (
        DocumentPage.objects.filter(document=document, entities_done=False)
        .order_by("page_number")
        .only("id", "page_number", "text")
    )
    for page in pages.iterator(chunk_size=FLUSH_PAGES):
        if counted >= per_document:
            break
        ctx.stop_if_asked()
        on_page = _page_entities(ctx, page.text, min(per_page, per_document - counted), done, total)
        if len(on_page) >= per_page:
            capped.append(page.pk)
        found.extend(
            Entity(
                document_id=document.pk,
                matter_id=document.matter_id,
                kind=item.kind,
                text=item.text,
                value=item.value,
                page_number=page.page_number,
                start=item.start,
                end=item.end,
            )
            for item in on_page
        )
        counted += len(on_page)
        scanned.append(page.pk)
        done += 1
        if len(scanned) >= FLUSH_PAGES or time.monotonic() - last_flush >= FLUSH_SECONDS:
            flush()
    flush()
    if counted >= per_document and done < total:
        # The rest is not scanned; saying so is what makes the result honest.
        with ctx.fenced():
            DocumentPage.objects.filter(document=document, entities_done=False).update(
                entities_done=True, entities_note=document_cap_note(per_document)
            )
        done = total
        ctx.progress(done, total)


def _page_entities(ctx: StageContext, text: str, limit: int, done: int, total: int) -> list[Found]:
    """At most ``limit`` entities of one page, in order; a cancel stops between windows."""
    kept: list[Found] = []
    for index, window in enumerate(find_entities_by_window(text)):
        if index:
            ctx.progress(done, total)  # a long page: the write also says whether to stop
            ctx.stop_if_asked()
        kept.extend(window[: limit - len(kept)])
        if len(kept) >= limit:
            break
    return kept
