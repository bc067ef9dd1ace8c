"""The membership service: a matter keeps an owner even when two owners act at once.

Each change runs in its own thread with its own PostgreSQL connection. Its
transaction is held open a moment after the change (as a slow request's would
be), so that without the lock on the matter both changes would see two owners,
both would go through, and the matter would be left with none.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction

from processing import matters
from processing.models import Matter, Membership, Role

pytestmark = pytest.mark.django_db(transaction=True)


def demote(matter: Matter, username: str) -> None:
    matters.set_member(matter, username, Role.MEMBER)


def remove(matter: Matter, username: str) -> None:
    matters.remove_member(matter, username)


def at_the_same_moment(
    matter: Matter, changes: list[tuple[Callable[[Matter, str], None], str]]
) -> dict[str, str]:
    """Run each (change, username) in its own thread and connection, started together;
    how each ended: "done" or "refused"."""
    start = threading.Barrier(len(changes))
    all_changed = threading.Barrier(len(changes), timeout=1)  # only if nothing serialises
    outcomes: dict[str, str] = {}

    def run(change: Callable[[Matter, str], None], username: str) -> None:
        try:
            with transaction.atomic():
                start.wait()
                try:
                    change(matter, username)
                except matters.LastOwner:
                    outcomes[username] = "refused"
                    return
                with contextlib.suppress(threading.BrokenBarrierError):
                    all_changed.wait()
            outcomes[username] = "done"
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=change) for change in changes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return outcomes


@pytest.mark.parametrize(
    "first, second",
    [(demote, demote), (remove, remove), (demote, remove)],
    ids=["both-demoted", "both-removed", "one-demoted-one-removed"],
)
def test_of_the_last_two_owners_acting_at_once_exactly_one_is_refused(
    make_user: Any, make_matter: Any, alice: Any, first: Any, second: Any
) -> None:
    make_user("bob")
    matter = make_matter(alice, bob=Role.OWNER)

    outcomes = at_the_same_moment(matter, [(first, "alice"), (second, "bob")])

    assert sorted(outcomes.values()) == ["done", "refused"]
    owners = Membership.objects.filter(matter=matter, role=Role.OWNER)
    assert owners.count() == 1
    refused = next(username for username, outcome in outcomes.items() if outcome == "refused")
    assert owners.get().user.username == refused


def test_an_unknown_username_or_role_is_refused_with_a_sentence(alice: Any, matter: Matter) -> None:
    with pytest.raises(matters.UnknownUser, match="No one has the username “nobody”"):
        matters.set_member(matter, "nobody", Role.MEMBER)
    with pytest.raises(matters.MembershipRefused, match="viewer, member or owner"):
        matters.set_member(matter, "alice", "admin")
    assert list(Membership.objects.values_list("user__username", "role")) == [("alice", "owner")]
