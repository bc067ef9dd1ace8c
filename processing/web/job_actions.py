"""What people do to jobs from the pages: one job's buttons, and the bulk actions.

Every action goes through :mod:`processing.jobs.actions` (the lifecycle) after
:mod:`processing.permissions` said yes; the answer is the job's row as its reader
now sees it, and a sentence in the page's ``#action-result`` of what was done or
why not. A refusal keeps the HTTP status the API would give (403, 409, 400), and is
marked so that the page swaps it in all the same (static/js/app.js).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from processing import selectors
from processing.jobs import actions
from processing.jobs.states import InvalidTransition, JobStatus
from processing.models import ProcessingJob
from processing.payloads import job_payload
from processing.permissions import Action, job_actions, may_act_on_job, role_allows
from processing.web.display import ACTION_WORDS, REFUSED_BECAUSE, job_view

BY_SLUG = {action.value.replace("_", "-"): action for action in ACTION_WORDS}
"""The actions on one job, by the last part of their URL (as in the API)."""


def job_and_role(request: HttpRequest, job_id: str) -> tuple[ProcessingJob, str]:
    job = selectors.job_for(request.user, job_id)
    found = selectors.matter_for(request.user, job.matter_id) if job is not None else None
    if job is None or found is None:
        raise Http404("No such job.")
    return job, found[1]


def row_view(request: HttpRequest, job: ProcessingJob, role: str) -> dict[str, Any]:
    """The job's row as this reader sees it, with their buttons."""
    return job_view(job_payload(job), actions=job_actions(request.user, role, job))


@login_required
@require_GET
def job_buttons(request: HttpRequest, job_id: str) -> HttpResponse:
    """The reader's buttons for a job, which a pushed row fetches (it carries none)."""
    job, role = job_and_role(request, job_id)
    return render(
        request,
        "processing/matter_detail.html#job-actions",
        {"job": row_view(request, job, role), "fetched": True},
    )


@login_required
@require_POST
def act(request: HttpRequest, job_id: str, action: str) -> HttpResponse:
    """Retry, skip, skip a stage, cancel or prioritise one job, with an optional reason."""
    job, role = job_and_role(request, job_id)
    chosen = BY_SLUG.get(action)
    if chosen is None:
        raise Http404("No such action.")
    name = job.document.original_name
    words = ACTION_WORDS[chosen]
    reason = request.POST.get("reason", "").strip()
    if not may_act_on_job(request.user, role, job, chosen):
        problem = f"Your role on this matter does not allow you to {words.label.lower()} it."
        return _answer(request, job, role, problem=problem, status=403)
    if len(reason) > actions.REASON_MAX_LENGTH:
        problem = f"A reason can be at most {actions.REASON_MAX_LENGTH} characters long."
        return _answer(request, job, role, problem=problem, status=400)
    try:
        job = actions.perform(
            job, chosen, by=request.user, reason=reason, address=actions.address_of(request)
        )
    except InvalidTransition as exc:
        job.refresh_from_db()
        why = REFUSED_BECAUSE.get(JobStatus(exc.current), "its status does not allow it")
        problem = f"“{name}” could not be changed: {why}."
        return _answer(request, job, role, problem=problem, status=409)
    return _answer(request, job, role, done=f"“{name}” {words.done}.")


def _answer(
    request: HttpRequest,
    job: ProcessingJob,
    role: str,
    *,
    done: str = "",
    problem: str = "",
    status: int = 200,
) -> HttpResponse:
    response = render(
        request,
        "processing/_job_action.html",
        {
            "job": row_view(request, job, role),
            "action_done": done,
            "action_problem": problem,
            "swap_oob": True,
        },
        status=status,
    )
    # The job page's timeline fetches itself again (see static/js/app.js).
    return trigger_client_event(response, f"jt:job-{job.pk}")


BULK = {
    "retry": (Action.RETRY, (JobStatus.FAILED,)),
    "cancel": (Action.CANCEL, (JobStatus.QUEUED, JobStatus.PROCESSING)),
}
"""The matter page's bulk actions: what each does, to the jobs of which statuses."""


def bulk_offers(role: str, summary: dict[str, Any], status: str) -> list[dict[str, Any]]:
    """The bulk buttons of the matter page for this role, with how many jobs each takes:
    "Retry all failed" on the list of all or of failed jobs, "Cancel all pending"
    (queued or processing) on the list of all, queued or processing jobs."""
    if not role_allows(role, Action.BULK):
        return []
    offers = []
    failed = summary["failed"]
    if failed and status in ("", JobStatus.FAILED):
        offers.append(
            {
                "action": "retry",
                "label": "Retry all failed",
                "count": failed,
                "question": f"Retry {failed} failed document{'s' if failed != 1 else ''}?",
                "confirm": f"Retry {failed}",
            }
        )
    pending = summary["queued"] + summary["processing"]
    if pending and status in ("", JobStatus.QUEUED, JobStatus.PROCESSING):
        offers.append(
            {
                "action": "cancel",
                "label": "Cancel all pending",
                "count": pending,
                "question": f"Cancel {pending} document{'s' if pending != 1 else ''} "
                "that are queued or processing?",
                "confirm": f"Cancel {pending}",
            }
        )
    return offers


@login_required
@require_POST
def bulk(request: HttpRequest, matter_id: str) -> HttpResponse:
    """Retry every failed job of the matter, or cancel every pending one (owners)."""
    found = selectors.matter_for(request.user, matter_id)
    if found is None:
        raise Http404("No such matter.")
    matter, role = found
    chosen = BULK.get(request.POST.get("action", ""))
    reason = request.POST.get("reason", "").strip()
    if chosen is None:
        return _result(request, problem="Choose retry or cancel.", status=400)
    if not role_allows(role, Action.BULK):
        return _result(
            request,
            problem="Only owners of this matter can act on many documents at once.",
            status=403,
        )
    if len(reason) > actions.REASON_MAX_LENGTH:
        problem = f"A reason can be at most {actions.REASON_MAX_LENGTH} characters long."
        return _result(request, problem=problem, status=400)
    action, statuses = chosen
    targets = [t for s in statuses for t in actions.bulk_targets(matter, status=s)]
    outcome = actions.perform_each(
        targets, action, by=request.user, reason=reason, address=actions.address_of(request)
    )
    return _result(request, done=outcome_words(action, outcome))


def outcome_words(action: Action, outcome: actions.Outcome) -> str:
    """ "2 retried · 1 refused: it is already running"."""
    done = {Action.RETRY: "retried", Action.CANCEL: "cancelled"}[action]
    parts = [f"{outcome.done} {done}"]
    reasons = Counter(
        REFUSED_BECAUSE.get(JobStatus(r.status), r.message) if r.status else r.message
        for r in outcome.refused
    )
    parts += [f"{count} refused: {why}" for why, count in reasons.items()]
    return " · ".join(parts)


def _result(
    request: HttpRequest, *, done: str = "", problem: str = "", status: int = 200
) -> HttpResponse:
    return render(
        request,
        "processing/_action_result.html",
        {"action_done": done, "action_problem": problem},
        status=status,
    )
