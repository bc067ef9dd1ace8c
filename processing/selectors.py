"""Read-side queries. Everything a user sees is scoped here to their matters."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, QuerySet

from processing.models import Matter, ProcessingJob

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
    return ProcessingJob.objects.filter(matter__memberships__user=user).select_related(
        "document"
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
