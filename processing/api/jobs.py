"""Jobs: a matter's jobs and the actions on them (``/api/matters/{id}/jobs…``), and the
caller's jobs across matters (``/api/jobs…``)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from ninja import Query, Router, Schema
from pydantic import BaseModel, Field

from processing import selectors
from processing.api.base import (
    ApiError,
    forbidden,
    job_or_404,
    json_response,
    matter_or_404,
    require,
)
from processing.api.schemas import (
    CACHE_CONTROL,
    ETAG,
    IF_NONE_MATCH,
    BulkEnvelope,
    JobDetailEnvelope,
    JobEnvelope,
    JobOut,
    JobStatsEnvelope,
    MatterJobsEnvelope,
    RecentJobsEnvelope,
    refusals,
)
from processing.jobs import actions, estimates
from processing.jobs.estimates import queue_position
from processing.jobs.states import JobStatus
from processing.models import ProcessingJob
from processing.payloads import job_detail_payload, job_payload
from processing.permissions import Action, may_act_on_job
from processing.pipeline.registry import get_pipeline, job_types

matter_jobs = Router(tags=["jobs"])
"""Mounted on ``/matters``."""
jobs = Router(tags=["jobs"])
"""Mounted on ``/jobs``."""

BULK_MAX_JOBS = 1000


class JobFilters(Schema):
    """Filters for a matter's job list."""

    status: JobStatus | None = None
    job_type: str | None = None
    page: int = Field(1, ge=1)
    per_page: int = Field(20, ge=1, le=100)


class RecentFilters(Schema):
    """Filters for the recent-jobs list."""

    status: JobStatus | None = None
    limit: int = Field(20, ge=1, le=100)


Reason = Annotated[
    str, Field(max_length=actions.REASON_MAX_LENGTH, description="Why, for the audit trail.")
]
"""A reason for an action, as a person gives it (optional: blank when not given)."""


class ReasonIn(BaseModel):
    """The optional body of an action on a job: why the caller takes it.

    A plain pydantic model rather than a ninja ``Schema``: a ``Schema`` reads
    attributes off whatever it is given, so a list or a number sent as the body
    would pass as "no reason" instead of being refused.
    """

    reason: Reason = ""


class BulkIn(Schema):
    """Retry or cancel several jobs: by ids, or every job of a status."""

    action: Literal["retry", "cancel"]
    job_ids: list[str] | None = None
    status: Literal["QUEUED", "PROCESSING", "FAILED"] | None = None
    reason: Reason = ""


# --- a matter's jobs -------------------------------------------------------------------


@matter_jobs.get(
    "/{matter_id}/jobs",
    response={200: MatterJobsEnvelope, **refusals(400, 401, 404)},
    summary="A matter's jobs, filtered and paginated",
)
def list_matter_jobs(
    request: HttpRequest, matter_id: str, filters: Query[JobFilters]
) -> HttpResponse:
    matter, _role = matter_or_404(request, matter_id)
    qs = ProcessingJob.objects.filter(matter=matter).select_related("document")
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.job_type:
        qs = qs.filter(job_type=filters.job_type)
    total = qs.count()
    start = (filters.page - 1) * filters.per_page
    # A page past the end is empty; asking the database would overflow OFFSET for a huge one.
    page = (
        list(qs.order_by("-created_at", "-id")[start : start + filters.per_page])
        if start < total
        else []
    )
    return json_response(
        {
            "data": _job_payloads(page),
            "meta": {"total": total, "page": filters.page, "per_page": filters.per_page},
        }
    )


def _job_payloads(page: list[ProcessingJob]) -> list[dict[str, Any]]:
    """The job objects of a list, estimated together: the same queries for 1 or 100."""
    now = timezone.now()
    found = estimates.for_jobs(page, now=now)
    return [job_payload(j, now=now, estimate=found[j.pk]) for j in page]


# Declared before the `/{matter_id}/jobs/{job_id}` routes: `{job_id}` would take "stats".
@matter_jobs.get(
    "/{matter_id}/jobs/stats",
    response={200: JobStatsEnvelope, **refusals(401, 404)},
    summary="A matter's jobs by status, average processing time, per-stage figures",
)
def job_stats(request: HttpRequest, matter_id: str) -> HttpResponse:
    """Any member of the matter may read it. Its counts and average are one aggregate
    over the matter's jobs; the stages' figures are the ETA's own
    (:func:`processing.jobs.estimates.stage_costs`, learned from recent runs)."""
    matter, _role = matter_or_404(request, matter_id)
    stats, types = selectors.matter_job_stats(matter.pk)
    costs = estimates.stage_costs()
    stages: dict[str, dict[str, Any]] = {}
    known = set(job_types())
    for job_type in types:
        if job_type not in known:
            continue  # a pipeline no longer registered has no stages to show
        for stage in get_pipeline(job_type).stages:
            cost = costs.get(stage.name)
            stages[stage.name] = {
                "label": stage.label,
                "seconds_per_item": cost.per_page if cost else None,
                "seconds_per_run": cost.seconds(0.0) if cost else None,
            }
    return json_response({"data": {**stats, "stages": stages}})


# Declared before the `/{matter_id}/jobs/{job_id}` routes: Django tries URL patterns in
# order, and `{job_id}` would otherwise take "bulk" and answer 405 to its POST.
@matter_jobs.post(
    "/{matter_id}/jobs/bulk",
    response={200: BulkEnvelope, **refusals(400, 401, 403, 404)},
    summary="Retry or cancel several jobs (owners)",
)
def bulk_action(request: HttpRequest, matter_id: str, payload: BulkIn) -> HttpResponse:
    matter, role = matter_or_404(request, matter_id)
    require(role, Action.BULK)
    if (payload.job_ids is None) == (payload.status is None):
        raise ApiError(400, "VALIDATION_ERROR", "Give either 'job_ids' or 'status'.")
    if payload.job_ids is not None and len(payload.job_ids) > BULK_MAX_JOBS:
        raise ApiError(400, "VALIDATION_ERROR", f"At most {BULK_MAX_JOBS:,} jobs at a time.")
    targets = actions.bulk_targets(matter, job_ids=payload.job_ids, status=payload.status)
    outcome = actions.perform_each(
        targets,
        Action(payload.action),
        by=request.user,
        reason=payload.reason,
        address=actions.address_of(request),
    )
    refused = [{"job_id": r.job_id, "code": r.code} for r in outcome.refused]
    return json_response({"data": {"done": outcome.done, "refused": refused}})


@matter_jobs.get(
    "/{matter_id}/jobs/{job_id}",
    response={200: JobDetailEnvelope, **refusals(401, 404)},
    summary="One job with its stage history and audit",
)
def get_matter_job(request: HttpRequest, matter_id: str, job_id: str) -> HttpResponse:
    matter, _role = matter_or_404(request, matter_id)
    job = job_or_404(request, job_id, matter)
    return json_response({"data": job_detail_payload(job)})


def _act(
    request: HttpRequest, matter_id: str, job_id: str, action: Action, payload: ReasonIn | None
) -> HttpResponse:
    """Take ``action`` on the job, audited with the caller, their reason and address."""
    matter, role = matter_or_404(request, matter_id)
    job = job_or_404(request, job_id, matter)
    if not may_act_on_job(request.user, role, job, action):
        raise forbidden(action)
    actions.perform(
        job,
        action,
        by=request.user,
        reason=payload.reason if payload else "",
        address=actions.address_of(request),
    )
    job = ProcessingJob.objects.select_related("document").get(pk=job.pk)
    return json_response({"data": job_payload(job)})


# Each action's body is optional (no body, or {"reason": "…"}). 403: the role does not
# allow the action (or a session request without its CSRF token); 409: the job's status
# does not allow it.
ACTION_ANSWERS = {200: JobEnvelope, **refusals(400, 401, 403, 404, 409)}


@matter_jobs.post(
    "/{matter_id}/jobs/{job_id}/retry",
    response=ACTION_ANSWERS,
    summary="FAILED -> QUEUED, from the failed stage",
)
def retry_job(
    request: HttpRequest, matter_id: str, job_id: str, payload: ReasonIn | None = None
) -> HttpResponse:
    return _act(request, matter_id, job_id, Action.RETRY, payload)


@matter_jobs.post(
    "/{matter_id}/jobs/{job_id}/skip", response=ACTION_ANSWERS, summary="FAILED -> SKIPPED"
)
def skip_job(
    request: HttpRequest, matter_id: str, job_id: str, payload: ReasonIn | None = None
) -> HttpResponse:
    return _act(request, matter_id, job_id, Action.SKIP, payload)


@matter_jobs.post(
    "/{matter_id}/jobs/{job_id}/skip-stage",
    response=ACTION_ANSWERS,
    summary="FAILED -> QUEUED past the failed stage (SKIPPED); COMPLETED if it was the last",
)
def skip_stage_job(
    request: HttpRequest, matter_id: str, job_id: str, payload: ReasonIn | None = None
) -> HttpResponse:
    return _act(request, matter_id, job_id, Action.SKIP_STAGE, payload)


@matter_jobs.post(
    "/{matter_id}/jobs/{job_id}/cancel",
    response=ACTION_ANSWERS,
    summary="QUEUED or PROCESSING -> CANCELLED",
)
def cancel_job(
    request: HttpRequest, matter_id: str, job_id: str, payload: ReasonIn | None = None
) -> HttpResponse:
    return _act(request, matter_id, job_id, Action.CANCEL, payload)


@matter_jobs.post(
    "/{matter_id}/jobs/{job_id}/prioritize",
    response=ACTION_ANSWERS,
    summary="Front of the high-priority queue",
)
def prioritize_job(
    request: HttpRequest, matter_id: str, job_id: str, payload: ReasonIn | None = None
) -> HttpResponse:
    return _act(request, matter_id, job_id, Action.PRIORITIZE, payload)


# --- the caller's jobs across matters ----------------------------------------------------


@jobs.get(
    "",
    response={200: RecentJobsEnvelope, **refusals(400, 401)},
    summary="Recent jobs across the caller's matters, newest first",
)
def list_recent_jobs(request: HttpRequest, filters: Query[RecentFilters]) -> HttpResponse:
    qs = selectors.jobs_for(request.user)
    if filters.status:
        qs = qs.filter(status=filters.status)
    page = list(qs.order_by("-created_at", "-id")[: filters.limit])
    return json_response(
        {
            "data": _job_payloads(page),
            "meta": {"limit": filters.limit, "count": len(page)},
        }
    )


@jobs.get(
    "/{job_id}",
    response={200: JobOut, 304: None, **refusals(401, 404)},
    summary="One job's status, flat; ETag / If-None-Match gives 304",
    openapi_extra={
        "parameters": [IF_NONE_MATCH],
        "responses": {
            200: {"headers": {"ETag": ETAG, "Cache-Control": CACHE_CONTROL}},
            304: {"description": "Not modified: the ETag matches.", "headers": {"ETag": ETAG}},
        },
    },
)
def get_job(request: HttpRequest, job_id: str) -> HttpResponse:
    job = job_or_404(request, job_id)
    etag = _etag(job)
    if etag in _if_none_match(request):
        response = HttpResponse(status=304)
        response["ETag"] = etag
        return response
    return json_response(job_payload(job), ETag=etag, Cache_Control="private, no-cache")


def _etag(job: ProcessingJob) -> str:
    # Every write through the lifecycle moves updated_at; queue position moves on its own.
    basis = f"{job.pk}:{job.updated_at.isoformat()}:{queue_position(job)}"
    return '"' + hashlib.sha1(basis.encode(), usedforsecurity=False).hexdigest()[:20] + '"'


def _if_none_match(request: HttpRequest) -> set[str]:
    header = request.headers.get("If-None-Match", "")
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
