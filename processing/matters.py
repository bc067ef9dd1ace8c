"""Writing matters: the service both the API and the pages call."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from processing.models import Matter, Membership, Role


def create_matter(name: str, *, owner: Any) -> Matter:
    """Create a matter called ``name`` with ``owner`` as its first owner."""
    with transaction.atomic():
        matter = Matter.objects.create(name=name, created_by=owner)
        Membership.objects.create(matter=matter, user=owner, role=Role.OWNER)
    return matter
