"""Writing matters and their members: the rules the API, the pages and admin share.

A matter always keeps at least one owner. Every change to a matter's members
locks the matter's row first, so two owners demoting or removing each other at
the same moment are serialised and the second one sees the first one's change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from processing.models import Matter, Membership, Role


class MembershipRefused(Exception):
    """A change to a matter's members that its rules do not allow."""

    code = "VALIDATION_ERROR"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class UnknownUser(MembershipRefused):
    """No account has the username given."""


class NotAMember(MembershipRefused):
    """The person is not a member of the matter."""


class LastOwner(MembershipRefused):
    """The change would leave the matter without an owner."""


def create_matter(name: str, *, owner: Any) -> Matter:
    """Create a matter called ``name`` with ``owner`` as its first owner."""
    with transaction.atomic():
        matter = Matter.objects.create(name=name, created_by=owner)
        Membership.objects.create(matter=matter, user=owner, role=Role.OWNER)
    return matter


def set_member(matter: Matter, username: str, role: str) -> Membership:
    """Add ``username`` to the matter as ``role``, or change their role if they are on it."""
    if role not in Role.values:
        raise MembershipRefused("Choose one of the roles: viewer, member or owner.")
    if not username:
        raise UnknownUser("Give the username of the person to add.")
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise UnknownUser(f"No one has the username “{username}”; check its spelling.")
    with transaction.atomic():
        _lock(matter)
        membership = Membership.objects.filter(matter=matter, user=user).first()
        if membership is not None and membership.role == Role.OWNER and role != Role.OWNER:
            _refuse_last_owner(matter)
        membership, _ = Membership.objects.update_or_create(
            matter=matter, user=user, defaults={"role": role}
        )
    return membership


def remove_member(matter: Matter, username: str) -> None:
    """Take ``username`` off the matter."""
    with transaction.atomic():
        _lock(matter)
        membership = Membership.objects.filter(matter=matter, user__username=username).first()
        if membership is None:
            raise NotAMember(f"“{username}” is not a member of this matter.")
        if membership.role == Role.OWNER:
            _refuse_last_owner(matter)
        membership.delete()


def check_owners_remain(matter: Matter, roles_after: Iterable[str]) -> None:
    """Refuse a change that leaves the matter no owner; ``roles_after`` are the roles of
    everyone on the matter once it is made.

    For admin, which edits all of a matter's members in one form: it locks the
    matter's row like the changes above, so they cannot interleave with it.
    """
    if matter.pk is not None:
        _lock(matter)
    if Role.OWNER not in set(roles_after):
        raise LastOwner("A matter must keep at least one owner.")


def _lock(matter: Matter) -> None:
    Matter.objects.select_for_update().filter(pk=matter.pk).first()


def _refuse_last_owner(matter: Matter) -> None:
    if Membership.objects.filter(matter=matter, role=Role.OWNER).count() <= 1:
        raise LastOwner("A matter must keep at least one owner.")
