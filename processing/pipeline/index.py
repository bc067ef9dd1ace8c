"""The ``index`` stage: each chunk's full-text search vector, in its matter's language."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.postgres.search import SearchVector

from processing.models import DocumentChunk
from processing.search import search_config

if TYPE_CHECKING:
    from processing.jobs.context import StageContext

BATCH_CHUNKS = 500


def index(ctx: StageContext) -> None:
    """Fill ``search_vector`` of the document's chunks that have none yet.

    A chunk's vector is its checkpoint: each batch is one UPDATE of up to
    ``BATCH_CHUNKS`` chunks whose vector is NULL, setting it to
    ``to_tsvector(language::regconfig, text)`` computed by PostgreSQL, so a
    rerun updates nothing already indexed. Progress is counted in chunks.

    The language is the matter's ``search_language`` as it is now (written to
    each chunk it indexes), checked against PostgreSQL's text-search
    configurations first: a bad value fails the stage permanently with a
    message saying so, and once staff correct it a retry indexes with the
    corrected one.
    """
    chunks = DocumentChunk.objects.filter(document=ctx.document)
    total = chunks.count()
    pending = chunks.filter(search_vector__isnull=True)
    done = total - pending.count()
    ctx.progress(done, total)
    if done == total:
        return
    language = search_config(ctx.document.matter.search_language)
    vector = SearchVector("text", config=language)
    while True:
        ctx.stop_if_asked()
        batch = pending.order_by("index").values("pk")[:BATCH_CHUNKS]
        with ctx.fenced():
            updated = DocumentChunk.objects.filter(pk__in=batch, search_vector__isnull=True).update(
                language=language, search_vector=vector
            )
        done += updated
        ctx.progress(min(done, total), total)
        if updated < BATCH_CHUNKS:
            break
