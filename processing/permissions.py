"""Who may do what on a matter: the one place that decides."""

from __future__ import annotations

from enum import StrEnum

from django.contrib.auth.models import AnonymousUser, User

from processing.jobs import queues
from processing.jobs.states import JobStatus
from processing.models import ProcessingJob, Role

Person = User | AnonymousUser
"""Whoever makes a request: a signed-in account, or nobody (``request.user``)."""


def account(person: Person | None) -> User | None:
    """The signed-in account behind ``person``; None for nobody."""
    return person if isinstance(person, User) and person.is_authenticated else None


class Action(StrEnum):
    """Things a person can do on a matter."""

    VIEW = "view"
    UPLOAD = "upload"
    CANCEL_OWN = "cancel_own"
    RETRY = "retry"
    SKIP = "skip"
    SKIP_STAGE = "skip_stage"
    CANCEL = "cancel"
    PRIORITIZE = "prioritize"
    BULK = "bulk"
    MANAGE_MEMBERS = "manage_members"


ALLOWED: dict[str, frozenset[Action]] = {
    Role.VIEWER: frozenset({Action.VIEW}),
    Role.MEMBER: frozenset({Action.VIEW, Action.UPLOAD, Action.CANCEL_OWN}),
    Role.OWNER: frozenset(Action),
}


def role_allows(role: str | None, action: Action) -> bool:
    """True if ``role`` may perform ``action``."""
    return role is not None and action in ALLOWED.get(role, frozenset())


def may_act_on_job(user: Person, role: str | None, job: ProcessingJob, action: Action) -> bool:
    """True if the user may perform ``action`` on ``job`` (members may cancel their own)."""
    if role_allows(role, action):
        return True
    return (
        action == Action.CANCEL
        and role_allows(role, Action.CANCEL_OWN)
        and job.created_by_id is not None
        and job.created_by_id == getattr(user, "pk", None)
    )


OFFERED: dict[str, tuple[Action, ...]] = {
    JobStatus.FAILED: (Action.RETRY, Action.SKIP_STAGE, Action.SKIP),
    JobStatus.QUEUED: (Action.PRIORITIZE, Action.CANCEL),
    JobStatus.PROCESSING: (Action.CANCEL,),
}
"""What can be done to a job in each status; a finished job offers nothing."""


def job_actions(user: Person, role: str | None, job: ProcessingJob) -> list[Action]:
    """The actions the user may take on ``job`` as it stands: the buttons the pages show."""
    offered = OFFERED.get(job.status, ())
    if job.priority == queues.HIGH:  # prioritised already
        offered = tuple(action for action in offered if action != Action.PRIORITIZE)
    return [action for action in offered if may_act_on_job(user, role, job, action)]
