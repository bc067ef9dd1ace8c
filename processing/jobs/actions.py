"""What people do to jobs, one or many: the API, the pages and admin all come here.

Each action is a lifecycle transition; who may take it is decided by
:mod:`processing.permissions` before this is called. Every action is audited
with the person (``by``), the reason they gave (``reason``, at most
:data:`REASON_MAX_LENGTH` characters: check it before calling) and where their
request came from (``address``: :func:`address_of` the request)::

    actions.perform(job, Action.SKIP_STAGE, by=request.user,
                    reason="OCR keeps timing out on this scan", address=address_of(request))
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest

from processing import selectors
from processing.jobs import lifecycle
from processing.jobs.states import InvalidTransition
from processing.models import Matter, ProcessingJob
from processing.permissions import Action

TRANSITIONS: dict[Action, Callable[..., ProcessingJob]] = {
    Action.RETRY: lifecycle.retry,
    Action.SKIP: lifecycle.skip,
    Action.SKIP_STAGE: lifecycle.skip_stage,
    Action.CANCEL: lifecycle.cancel,
    Action.PRIORITIZE: lifecycle.prioritize,
}
"""The lifecycle transition behind each action on a job."""

REASON_MAX_LENGTH = 1000
"""The longest reason a person may give for an action, in characters."""


def address_of(request: HttpRequest) -> str | None:
    """The IP address a request came from (``REMOTE_ADDR``); None when it is not one."""
    # A link-local IPv6 address may carry its zone ("fe80::1%eth0"), which PostgreSQL
    # does not store.
    candidate = (request.META.get("REMOTE_ADDR") or "").split("%")[0]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def perform(
    job: ProcessingJob,
    action: Action,
    *,
    by: Any,
    reason: str = "",
    address: str | None = None,
) -> ProcessingJob:
    """Take ``action`` on ``job``, audited with ``by``, ``reason`` and ``address``.

    :class:`InvalidTransition` if the job's status does not allow it.
    """
    return TRANSITIONS[action](job, by=by, reason=reason, address=address)


@dataclass
class Refusal:
    """One job an action over many was not taken on, and why."""

    job_id: str
    code: str
    message: str
    status: str | None = None  # the job's status that refused it, when it was found


@dataclass
class Outcome:
    """What an action over many jobs did."""

    done: int = 0
    refused: list[Refusal] = field(default_factory=list)


def perform_each(
    targets: Iterable[tuple[str, ProcessingJob | None]],
    action: Action,
    *,
    by: Any,
    reason: str = "",
    address: str | None = None,
) -> Outcome:
    """Take ``action`` on each target in turn; a target of None is a job not found.

    Each job is its own transaction: one that is refused does not undo the others.
    Each is audited as :func:`perform` audits it, with the same ``reason``.
    """
    outcome = Outcome()
    for job_id, job in targets:
        if job is None:
            outcome.refused.append(Refusal(job_id, "JOB_NOT_FOUND", "No such job."))
            continue
        try:
            perform(job, action, by=by, reason=reason, address=address)
        except InvalidTransition as exc:
            outcome.refused.append(
                Refusal(str(job.pk), "INVALID_TRANSITION", str(exc), status=exc.current)
            )
        else:
            outcome.done += 1
    return outcome


def bulk_targets(
    matter: Matter, *, job_ids: list[str] | None = None, status: str | None = None
) -> list[tuple[str, ProcessingJob | None]]:
    """The jobs of ``matter`` a bulk action names: by id (in the order given; an id
    that is malformed or not in the matter maps to None), or every job of ``status``."""
    jobs = ProcessingJob.objects.filter(matter=matter)
    if job_ids is None:
        return [(str(job.pk), job) for job in jobs.filter(status=status)]
    wanted = [(raw, selectors.parse_id(raw)) for raw in job_ids]
    found = {job.pk: job for job in jobs.filter(pk__in=[p for _, p in wanted if p])}
    return [(raw, found.get(parsed) if parsed else None) for raw, parsed in wanted]
