"""Read-side queries. Everything a user sees is scoped here to their matters."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import connection
from django.db.models import Count, QuerySet, Sum

from processing.jobs import estimates
from processing.models import (
    Document,
    Entity,
    Matter,
    Membership,
    ProcessingJob,
    ProcessingState,
)
from processing.permissions import Person, account


def parse_id(value: object) -> uuid.UUID | None:
    """A UUID from a path segment, or None when it is not one (callers answer 404)."""
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        return None


def memberships_of(person: Person) -> QuerySet[Membership]:
    """The person's memberships, with their matters, by matter name."""
    user = account(person)
    if user is None:
        return Membership.objects.none()
    return Membership.objects.filter(user=user).select_related("matter").order_by("matter__name")


def members_of(matter: Matter) -> QuerySet[Membership]:
    """The people on ``matter`` with their roles, by username."""
    return matter.memberships.select_related("user").order_by("user__username")


def jobs_for(person: Person) -> QuerySet[ProcessingJob]:
    """Jobs in the matters ``person`` belongs to, with what the job object needs."""
    user = account(person)
    if user is None:
        return ProcessingJob.objects.none()
    return ProcessingJob.objects.filter(matter__memberships__user=user).select_related("document")


def matter_for(person: Person, matter_id: object) -> tuple[Matter, str] | None:
    """The matter with this id and the person's role on it, in one query.

    None when the id is malformed, or the matter is not one of theirs (the
    caller answers 404 either way, so a matter's existence does not leak).
    """
    parsed = parse_id(matter_id)
    if parsed is None:
        return None
    membership = memberships_of(person).filter(matter_id=parsed).first()
    return (membership.matter, membership.role) if membership else None


def job_for(
    person: Person, job_id: object, *, matter: Matter | None = None
) -> ProcessingJob | None:
    """The job with this id if it is in one of the person's matters (and in ``matter``)."""
    parsed = parse_id(job_id)
    if parsed is None:
        return None
    jobs = jobs_for(person)
    if matter is not None:
        jobs = jobs.filter(matter=matter)
    return jobs.filter(pk=parsed).first()


def document_for(person: Person, document_id: object) -> Document | None:
    """The document with this id if it is in one of the person's matters."""
    parsed = parse_id(document_id)
    user = account(person)
    if parsed is None or user is None:
        return None
    return (
        Document.objects.filter(pk=parsed, matter__memberships__user=user)
        .select_related("matter")
        .first()
    )


def matter_status_counts(matter_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """Job counts by status for each matter, in one query."""
    counts: dict[uuid.UUID, dict[str, int]] = {m: {} for m in matter_ids}
    rows = (
        ProcessingJob.objects.filter(matter_id__in=matter_ids)
        .values("matter_id", "status")
        .annotate(n=Count("id"))
    )
    for row in rows:
        counts[row["matter_id"]][row["status"]] = row["n"]
    return counts


def matter_ready_counts(matter_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """What each matter already offers: its processed documents, their pages and entities.

    Counts only documents whose processing finished (``PROCESSED``), so the
    three figures agree with each other while other documents are still in
    the pipeline. Two queries, whatever the number of matters.
    """
    ready = {m: {"documents": 0, "pages": 0, "entities": 0} for m in matter_ids}
    if not matter_ids:
        return ready
    documents = (
        Document.objects.filter(
            matter_id__in=matter_ids, processing_state=ProcessingState.PROCESSED
        )
        .values("matter_id")
        .annotate(documents=Count("id"), page_total=Sum("page_count"))
    )
    for counted in documents:
        ready[counted["matter_id"]].update(
            documents=counted["documents"], pages=counted["page_total"] or 0
        )
    entities = (
        Entity.objects.filter(
            matter_id__in=matter_ids, document__processing_state=ProcessingState.PROCESSED
        )
        .values("matter_id")
        .annotate(n=Count("id"))
    )
    for found in entities:
        ready[found["matter_id"]]["entities"] = found["n"]
    return ready


MATTER_COUNTS = """
    SELECT
        COUNT(*) FILTER (WHERE status = 'QUEUED'),
        COUNT(*) FILTER (WHERE status = 'PROCESSING'),
        COUNT(*) FILTER (WHERE status = 'COMPLETED'),
        COUNT(*) FILTER (WHERE status = 'FAILED'),
        COUNT(*) FILTER (WHERE status = 'CANCELLED'),
        COUNT(*) FILTER (WHERE status = 'SKIPPED'),
        AVG(progress) FILTER (WHERE status IN ('QUEUED', 'PROCESSING')),
        (SELECT COUNT(*) FROM processing_document WHERE matter_id = %(matter)s),
        (SELECT COUNT(*) FROM processing_document
            WHERE matter_id = %(matter)s AND processing_state = 'PROCESSED'),
        (SELECT COUNT(*) FROM processing_entity WHERE matter_id = %(matter)s)
    FROM processing_processingjob
    WHERE matter_id = %(matter)s
"""
"""A matter's figures in one statement: its jobs by status and the active ones' average
progress, its documents, those processed (hence searchable), its entities."""

_COUNTED = ("queued", "processing", "completed", "failed", "cancelled", "skipped")


def matter_summary(matter_id: uuid.UUID) -> dict[str, Any]:
    """What a matter's banner and counts show, and the ``matter.summary`` event carries.

    Its figures come from one aggregate statement (:data:`MATTER_COUNTS`), whatever
    the size of the matter; the ETA is the latest of its active jobs' (see
    :func:`processing.jobs.estimates.matter_eta`). Written out rather than built by
    the ORM: the relay works it out for every busy matter every few seconds, and
    building three aggregates cost more than running them.
    """
    with connection.cursor() as cursor:
        cursor.execute(MATTER_COUNTS, {"matter": matter_id})
        row = cursor.fetchone()
    counts = dict(zip(_COUNTED, row[:6], strict=True))
    progress, documents, indexed, entities = row[6:]
    active = counts["queued"] + counts["processing"]
    return {
        **counts,
        "progress": round(progress or 0),
        "eta_seconds": estimates.matter_eta(matter_id) if active else None,
        "documents": documents,
        "indexed": indexed,
        "entities": entities,
    }


ENTITY_ROWS_PER_KIND = 50
ENTITY_PAGES_SHOWN = 20


def entities_by_kind(
    document: Document,
    screens: dict[str, int] | None = None,
    *,
    per_kind: int = ENTITY_ROWS_PER_KIND,
) -> list[dict[str, Any]]:
    """The document's entities for its result page, a bounded screen of each kind, in one query.

    One group per kind (in ``Entity.Kind`` order, empty kinds left out); in a
    group, one row per distinct value in order of first appearance, with the
    text as first written and the first ``ENTITY_PAGES_SHOWN`` pages it is on.
    ``screens`` picks, per kind, which screen of ``per_kind`` rows to show
    (1-based; the first by default), so that a document with 200,000 entities
    still gives a page of bounded size.
    """
    screens = screens or {}
    skips = [(kind, max(screens.get(kind, 1), 1) - 1) for kind in Entity.Kind.values]
    values_sql = ", ".join(["(%s, %s)"] * len(skips))
    params: list[Any] = [
        ENTITY_PAGES_SHOWN,
        document.pk,
        *(item for kind, screen in skips for item in (kind, screen * per_kind)),
        per_kind,
    ]
    sql = f"""
        WITH distinct_values AS (
            SELECT kind, value,
                   (array_agg(text ORDER BY page_number, start))[1] AS text,
                   (array_agg(DISTINCT page_number ORDER BY page_number))[1:%s] AS pages,
                   count(DISTINCT page_number) AS page_total,
                   count(*) AS occurrences,
                   min(page_number::bigint * 4294967296 + start) AS first_place
            FROM {Entity._meta.db_table}
            WHERE document_id = %s
            GROUP BY kind, value
        ), ranked AS (
            SELECT *, row_number() OVER (PARTITION BY kind ORDER BY first_place) AS position,
                   count(*) OVER (PARTITION BY kind) AS value_total,
                   sum(occurrences) OVER (PARTITION BY kind) AS kind_total
            FROM distinct_values
        )
        SELECT ranked.kind, value, text, pages, page_total, value_total, kind_total, skip
        FROM ranked JOIN (VALUES {values_sql}) AS screens (kind, skip) USING (kind)
        WHERE position > skip AND position <= skip + %s
        ORDER BY position
    """
    groups: dict[str, dict[str, Any]] = {}
    labels = dict(Entity.Kind.choices)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    for kind, value, text, pages, page_total, value_total, kind_total, skip in rows:
        group = groups.setdefault(
            kind,
            {
                "kind": kind,
                "label": labels.get(kind, kind),
                "entities": [],
                "count": int(kind_total),
                "values": int(value_total),
                "screen": skip // per_kind + 1,
                "screens": -(-int(value_total) // per_kind),
            },
        )
        group["entities"].append(
            {"value": value, "text": text, "pages": pages, "more_pages": page_total - len(pages)}
        )
    return [groups[kind] for kind in Entity.Kind.values if kind in groups]


def latest_job_of(document: Document) -> ProcessingJob | None:
    """The document's most recent job (a document uploaded again has one job per upload)."""
    return document.jobs.order_by("-created_at", "-id").first()


def entity_value_count(document: Document, *, kind: str | None = None) -> int:
    """How many distinct (kind, value) pairs :func:`entity_values` lists for the document."""
    entities = Entity.objects.filter(document=document)
    if kind is not None:
        entities = entities.filter(kind=kind)
    return entities.values("kind", "value").distinct().count()


_ENTITY_VALUES_SQL = f"""
    SELECT kind, value, (array_agg(text ORDER BY page_number, start))[1],
        array_agg(DISTINCT page_number ORDER BY page_number), COUNT(*)
    FROM {Entity._meta.db_table}
    WHERE document_id = %(document)s AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
    GROUP BY kind, value
    ORDER BY array_position(%(kinds)s::text[], kind::text), MIN(page_number), value
    LIMIT %(limit)s OFFSET %(offset)s
"""


def entity_values(
    document: Document, *, kind: str | None = None, window: tuple[int, int] = (0, 100)
) -> list[dict[str, Any]]:
    """The document's entities, one row per kind and normalised value, rows
    ``window[0]`` to ``window[1]``: the value as first written, every page it is on, and
    how often it was found. By kind (in ``Entity.Kind`` order), then first page. One query.
    """
    start, stop = window
    with connection.cursor() as cursor:
        cursor.execute(
            _ENTITY_VALUES_SQL,
            {
                "document": document.pk,
                "kind": kind,
                "kinds": list(Entity.Kind.values),
                "limit": stop - start,
                "offset": start,
            },
        )
        rows = cursor.fetchall()
    return [
        {"kind": k, "value": value, "text": text, "pages": list(pages), "count": count}
        for k, value, text, pages, count in rows
    ]


MATTER_JOB_STATS = f"""
    SELECT
        COUNT(*) FILTER (WHERE status = 'QUEUED'),
        COUNT(*) FILTER (WHERE status = 'PROCESSING'),
        COUNT(*) FILTER (WHERE status = 'COMPLETED'),
        COUNT(*) FILTER (WHERE status = 'FAILED'),
        COUNT(*) FILTER (WHERE status = 'CANCELLED'),
        COUNT(*) FILTER (WHERE status = 'SKIPPED'),
        AVG(EXTRACT(EPOCH FROM completed_at - started_at) * 1000) FILTER (
            WHERE status = 'COMPLETED' AND started_at IS NOT NULL AND completed_at IS NOT NULL
        ),
        COALESCE(array_agg(DISTINCT job_type ORDER BY job_type), '{{}}')
    FROM {ProcessingJob._meta.db_table}
    WHERE matter_id = %(matter)s
"""
"""A matter's jobs by status, their average processing time and their job types, in one
aggregate whatever the number of jobs."""


def matter_job_stats(matter_id: uuid.UUID) -> tuple[dict[str, Any], list[str]]:
    """A matter's job counts (lower-case statuses) and ``avg_processing_time_ms`` (from
    start to completion, over its COMPLETED jobs; None without one), and the job types
    its jobs run. One query."""
    with connection.cursor() as cursor:
        cursor.execute(MATTER_JOB_STATS, {"matter": matter_id})
        row = cursor.fetchone()
    stats: dict[str, Any] = dict(zip(_COUNTED, row[:6], strict=True))
    average = row[6]
    stats["avg_processing_time_ms"] = None if average is None else int(round(average))
    return stats, [t for t in row[7] if t is not None]
