"""The ``entities`` stage: dates, amounts, emails, phone numbers and case citations per page."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.db.models import Count, Q

from processing.models import DocumentPage, Entity
from processing.pipeline.entity_finder import find_entities

if TYPE_CHECKING:
    from processing.jobs.context import StageContext

FLUSH_PAGES = 32
FLUSH_SECONDS = 0.5


def entities(ctx: StageContext) -> None:
    """Find the entities on each page not yet scanned and save them as ``Entity`` rows.

    A page's entities and its ``entities_done`` flag are written in the same
    transaction (fenced on the stage's lease: :meth:`StageContext.fenced`), a small
    batch of pages at a time (every ``FLUSH_PAGES`` pages or ``FLUSH_SECONDS``), so a
    rerun skips the pages already scanned and a crash mid-batch leaves those pages
    to be scanned again, never half-saved.
    Progress counts pages.
    """
    document = ctx.document
    counts = DocumentPage.objects.filter(document=document).aggregate(
        total=Count("id"), done=Count("id", filter=Q(entities_done=True))
    )
    total, done = counts["total"], counts["done"]
    ctx.progress(done, total)
    if done >= total:
        return

    found: list[Entity] = []
    scanned: list[int] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        if scanned:
            with ctx.fenced():
                Entity.objects.bulk_create(found, ignore_conflicts=True, batch_size=500)
                DocumentPage.objects.filter(pk__in=scanned).update(entities_done=True)
            found.clear()
            scanned.clear()
        last_flush = time.monotonic()
        ctx.progress(done, total)

    pages = (
        DocumentPage.objects.filter(document=document, entities_done=False)
        .order_by("page_number")
        .only("id", "page_number", "text")
    )
    for page in pages.iterator(chunk_size=FLUSH_PAGES):
        ctx.stop_if_asked()
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
            for item in find_entities(page.text)
        )
        scanned.append(page.pk)
        done += 1
        if len(scanned) >= FLUSH_PAGES or time.monotonic() - last_flush >= FLUSH_SECONDS:
            flush()
    flush()
