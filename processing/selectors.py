"""Read-side queries. Everything a user sees is scoped here to their matters."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, QuerySet, Sum

from processing.models import (
    Document,
    Entity,
    Matter,
    Membership,
    ProcessingJob,
    ProcessingState,
)

User = AbstractBaseUser | AnonymousUser


def parse_id(value: object) -> uuid.UUID | None:
    """A UUID from a path segment, or None when it is not one (callers answer 404)."""
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        return None


def matters_for(user: User) -> QuerySet[Matter]:
    """The matters ``user`` belongs to."""
    if not getattr(user, "is_authenticated", False):
        return Matter.objects.none()
    return Matter.objects.filter(memberships__user=user)


def jobs_for(user: User) -> QuerySet[ProcessingJob]:
    """Jobs in the matters ``user`` belongs to, with what the job object needs."""
    if not getattr(user, "is_authenticated", False):
        return ProcessingJob.objects.none()
    return ProcessingJob.objects.filter(matter__memberships__user=user).select_related("document")


def matter_for(user: User, matter_id: object) -> tuple[Matter, str] | None:
    """The matter with this id and the user's role on it, in one query.

    None when the id is malformed, or the matter is not one of the user's
    (the caller answers 404 either way, so a matter's existence does not leak).
    """
    parsed = parse_id(matter_id)
    if parsed is None or not getattr(user, "is_authenticated", False):
        return None
    membership = (
        Membership.objects.filter(matter_id=parsed, user=user).select_related("matter").first()
    )
    return (membership.matter, membership.role) if membership else None


def job_for(user: User, job_id: object, *, matter: Matter | None = None) -> ProcessingJob | None:
    """The job with this id if it is in one of the user's matters (and in ``matter``, if given)."""
    parsed = parse_id(job_id)
    if parsed is None:
        return None
    jobs = jobs_for(user)
    if matter is not None:
        jobs = jobs.filter(matter=matter)
    return jobs.filter(pk=parsed).first()


def document_for(user: User, document_id: object) -> Document | None:
    """The document with this id if it is in one of the user's matters."""
    parsed = parse_id(document_id)
    if parsed is None or not getattr(user, "is_authenticated", False):
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
        .annotate(documents=Count("id"), pages=Sum("page_count"))
    )
    for row in documents:
        ready[row["matter_id"]].update(documents=row["documents"], pages=row["pages"] or 0)
    entities = (
        Entity.objects.filter(
            matter_id__in=matter_ids, document__processing_state=ProcessingState.PROCESSED
        )
        .values("matter_id")
        .annotate(n=Count("id"))
    )
    for row in entities:
        ready[row["matter_id"]]["entities"] = row["n"]
    return ready


def entities_by_kind(document: Document) -> list[dict[str, Any]]:
    """The document's entities for its result page, in one query.

    One group per kind (in ``Entity.Kind`` order, empty kinds left out); in a
    group, one row per distinct value in order of first appearance, with the
    text as first written and every page it is on.
    """
    groups: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in Entity.Kind.values}
    rows = (
        Entity.objects.filter(document=document)
        .order_by("page_number", "start")
        .values_list("kind", "value", "text", "page_number")
    )
    for kind, value, text, page_number in rows:
        row = groups.setdefault(kind, {}).setdefault(
            value, {"value": value, "text": text, "pages": [], "count": 0}
        )
        row["count"] += 1
        if not row["pages"] or row["pages"][-1] != page_number:
            row["pages"].append(page_number)
    labels = dict(Entity.Kind.choices)
    return [
        {
            "kind": kind,
            "label": labels.get(kind, kind),
            "entities": list(rows_of.values()),
            "count": sum(r["count"] for r in rows_of.values()),
        }
        for kind, rows_of in groups.items()
        if rows_of
    ]
