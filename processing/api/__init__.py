"""The JSON API of CONTRACT.md (django-ninja: typed inputs and an OpenAPI document).

Every error leaves as ``{"error": {"code", "message", "details"}}``. Ids in
paths are taken as strings and parsed here, so a malformed id is the same 404
as an unknown one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from django.contrib.auth import get_user_model
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import File, NinjaAPI, Query, Router, Schema
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.files import UploadedFile
from ninja.security import HttpBearer, SessionAuth
from pydantic import Field

from processing import selectors, tokens
from processing.jobs import lifecycle
from processing.jobs.states import InvalidTransition, JobStatus
from processing.matters import create_matter as new_matter
from processing.models import Matter, Membership, ProcessingJob, Role
from processing.payloads import job_detail_payload, job_payload, matter_payload
from processing.permissions import Action, may_act_on_job, role_allows, role_on
from processing.uploads import UploadRejected, accept_upload


class ApiError(Exception):
    """An error with a stable code, answered in the contract's envelope."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        self.status, self.code, self.message, self.details = status, code, message, details
        super().__init__(message)


def error_response(
    status: int, code: str, message: str, details: dict | None = None
) -> JsonResponse:
    """The error envelope."""
    return JsonResponse(
        {"error": {"code": code, "message": message, "details": details or {}}}, status=status
    )


def json_response(data: Any, status: int = 200, **headers: str) -> HttpResponse:
    """A JSON response of ``data`` (already plain dicts and lists)."""
    response = HttpResponse(
        json.dumps(data, cls=DjangoJSONEncoder), status=status, content_type="application/json"
    )
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


# --- authentication ------------------------------------------------------------------


class BearerToken(HttpBearer):
    """``Authorization: Bearer <token>`` with a token from ``create_api_token``."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        user = tokens.user_for_token(token)
        if user is not None:
            request.user = user
        return user


class SessionLogin(SessionAuth):
    """Django session login, with CSRF checked on unsafe methods.

    The CSRF check only guards a signed-in session: a caller with no session
    (an integrator whose token is missing or wrong) gets the contract's 401,
    not a CSRF 403.
    """

    def _get_key(self, request: HttpRequest) -> str | None:
        if not request.user.is_authenticated:
            return None
        return super()._get_key(request)


api = NinjaAPI(
    title="Jobtracker API",
    version="1",
    description="Track document-processing jobs. See CONTRACT.md.",
    auth=[BearerToken(), SessionLogin()],
    urls_namespace="api",
)


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return error_response(exc.status, exc.code, exc.message, exc.details)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(
        401,
        "AUTHENTICATION_REQUIRED",
        "Sign in, or send an API token as 'Authorization: Bearer …'.",
    )


@api.exception_handler(NinjaValidationError)
def _invalid(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    errors = [
        {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e.get("msg", "")}
        for e in exc.errors
    ]
    return error_response(400, "VALIDATION_ERROR", "The request is not valid.", {"errors": errors})


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 403:
        return error_response(403, "FORBIDDEN", str(exc))
    if exc.status_code == 404:
        return error_response(404, "NOT_FOUND", "Not found.")
    return error_response(exc.status_code, "VALIDATION_ERROR", str(exc))


@api.exception_handler(InvalidTransition)
def _invalid_transition(request: HttpRequest, exc: InvalidTransition) -> HttpResponse:
    return error_response(
        409,
        "INVALID_TRANSITION",
        str(exc),
        {"current_status": exc.current, "requested": exc.target},
    )


@api.exception_handler(UploadRejected)
def _upload_rejected(request: HttpRequest, exc: UploadRejected) -> HttpResponse:
    return error_response(exc.status, exc.code, exc.message, dict(exc.details))


# --- lookups that scope everything to the caller's matters -----------------------------


def _matter(request: HttpRequest, matter_id: str) -> tuple[Matter, str]:
    """The matter and the caller's role on it; 404 when they are not a member."""
    parsed = selectors.parse_id(matter_id)
    matter = selectors.matters_for(request.user).filter(pk=parsed).first() if parsed else None
    role = role_on(request.user, matter.pk) if matter else None
    if matter is None or role is None:
        raise ApiError(404, "MATTER_NOT_FOUND", "No matter with this id is visible to you.")
    return matter, role


def _job(request: HttpRequest, job_id: str, matter: Matter | None = None) -> ProcessingJob:
    parsed = selectors.parse_id(job_id)
    jobs = selectors.jobs_for(request.user)
    if matter is not None:
        jobs = jobs.filter(matter=matter)
    job = jobs.filter(pk=parsed).first() if parsed else None
    if job is None:
        raise ApiError(404, "JOB_NOT_FOUND", "No job with this id is visible to you.")
    return job


def _require(role: str | None, action: Action) -> None:
    if not role_allows(role, action):
        raise ApiError(403, "FORBIDDEN", f"Your role on this matter does not allow '{action}'.")


# --- schemas (for validation and the OpenAPI document) ---------------------------------


class MatterIn(Schema):
    """A new matter."""

    name: str = Field(min_length=1, max_length=200)


class MemberIn(Schema):
    """A person to add to a matter, or whose role to change."""

    username: str = Field(min_length=1, max_length=150)
    role: Literal["viewer", "member", "owner"]


class BulkIn(Schema):
    """Retry or cancel several jobs: by ids, or every job of a status."""

    action: Literal["retry", "cancel"]
    job_ids: list[str] | None = None
    status: Literal["QUEUED", "PROCESSING", "FAILED"] | None = None


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


# --- matters and members ---------------------------------------------------------------

matters = Router(tags=["matters"])
jobs = Router(tags=["jobs"])


@matters.get("", summary="Matters the caller belongs to")
def list_matters(request: HttpRequest) -> HttpResponse:
    memberships = list(
        Membership.objects.filter(user=request.user)
        .select_related("matter")
        .order_by("matter__name")
    )
    ids = [m.matter_id for m in memberships]
    counts, ready = selectors.matter_status_counts(ids), selectors.matter_ready_counts(ids)
    data = [
        matter_payload(m.matter, m.role, counts[m.matter_id], ready[m.matter_id])
        for m in memberships
    ]
    return json_response({"data": data})


@matters.post("", summary="Create a matter; the caller becomes its owner")
def create_matter(request: HttpRequest, payload: MatterIn) -> HttpResponse:
    name = payload.name.strip()
    if not name:
        raise ApiError(400, "VALIDATION_ERROR", "A matter needs a name.", field="name")
    matter = new_matter(name, owner=request.user)
    return json_response({"data": matter_payload(matter, Role.OWNER, {})}, status=201)


@matters.get("/{matter_id}/members", summary="People on the matter and their roles")
def list_members(request: HttpRequest, matter_id: str) -> HttpResponse:
    matter, _role = _matter(request, matter_id)
    rows = matter.memberships.select_related("user").order_by("user__username")
    return json_response(
        {"data": [{"username": m.user.get_username(), "role": m.role} for m in rows]}
    )


@matters.post("/{matter_id}/members", summary="Add a member or change their role (owners)")
def add_member(request: HttpRequest, matter_id: str, payload: MemberIn) -> HttpResponse:
    matter, role = _matter(request, matter_id)
    _require(role, Action.MANAGE_MEMBERS)
    user = get_user_model().objects.filter(username=payload.username).first()
    if user is None:
        raise ApiError(400, "VALIDATION_ERROR", "No user has this username.", field="username")
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(matter=matter, user=user).first()
        if membership and membership.role == Role.OWNER and payload.role != Role.OWNER:
            _refuse_last_owner(matter, membership)
        membership, _ = Membership.objects.update_or_create(
            matter=matter, user=user, defaults={"role": payload.role}
        )
    return json_response(
        {"data": {"username": user.get_username(), "role": membership.role}}, status=201
    )


def _refuse_last_owner(matter: Matter, membership: Membership) -> None:
    owners = matter.memberships.select_for_update().filter(role=Role.OWNER).count()
    if owners <= 1:
        raise ApiError(
            409,
            "INVALID_TRANSITION",
            "A matter must keep at least one owner.",
            current_status="last_owner",
        )


@matters.delete("/{matter_id}/members/{username}", summary="Remove a member (owners)")
def remove_member(request: HttpRequest, matter_id: str, username: str) -> HttpResponse:
    matter, role = _matter(request, matter_id)
    _require(role, Action.MANAGE_MEMBERS)
    with transaction.atomic():
        membership = (
            Membership.objects.select_for_update()
            .filter(matter=matter, user__username=username)
            .first()
        )
        if membership is None:
            raise ApiError(404, "NOT_FOUND", "This person is not a member of the matter.")
        if membership.role == Role.OWNER:
            _refuse_last_owner(matter, membership)
        membership.delete()
    return HttpResponse(status=204)


# --- documents -------------------------------------------------------------------------


@matters.post("/{matter_id}/documents", summary="Upload a document; creates and enqueues its job")
def upload_document(
    request: HttpRequest, matter_id: str, file: UploadedFile | None = File(None)
) -> HttpResponse:
    matter, role = _matter(request, matter_id)
    _require(role, Action.UPLOAD)
    document, job = accept_upload(matter, file, by=request.user)
    job = ProcessingJob.objects.select_related("document").get(pk=job.pk)
    return json_response(
        {
            "data": {
                "document": {
                    "id": str(document.id),
                    "name": document.original_name,
                    "content_type": document.content_type,
                    "size": document.size,
                    "sha256": document.sha256,
                    "page_count": document.page_count,
                },
                "job": job_payload(job),
            }
        },
        status=201,
    )


# --- jobs ------------------------------------------------------------------------------


@matters.get("/{matter_id}/jobs", summary="A matter's jobs, filtered and paginated")
def list_matter_jobs(
    request: HttpRequest, matter_id: str, filters: Query[JobFilters]
) -> HttpResponse:
    matter, _role = _matter(request, matter_id)
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
            "data": [job_payload(j) for j in page],
            "meta": {"total": total, "page": filters.page, "per_page": filters.per_page},
        }
    )


# Declared before the `/{matter_id}/jobs/{job_id}` routes: Django tries URL patterns in
# order, and `{job_id}` would otherwise take "bulk" and answer 405 to its POST.
@matters.post("/{matter_id}/jobs/bulk", summary="Retry or cancel several jobs (owners)")
def bulk_action(request: HttpRequest, matter_id: str, payload: BulkIn) -> HttpResponse:
    matter, role = _matter(request, matter_id)
    _require(role, Action.BULK)
    if (payload.job_ids is None) == (payload.status is None):
        raise ApiError(400, "VALIDATION_ERROR", "Give either 'job_ids' or 'status'.")
    transition = lifecycle.retry if payload.action == "retry" else lifecycle.cancel
    if payload.job_ids is not None:
        if len(payload.job_ids) > 1000:
            raise ApiError(400, "VALIDATION_ERROR", "At most 1,000 jobs at a time.")
        wanted = [(raw, selectors.parse_id(raw)) for raw in payload.job_ids]
        found = {
            j.pk: j
            for j in ProcessingJob.objects.filter(matter=matter, pk__in=[p for _, p in wanted if p])
        }
        targets = [(raw, found.get(parsed)) for raw, parsed in wanted]
    else:
        targets = [
            (str(j.pk), j)
            for j in ProcessingJob.objects.filter(matter=matter, status=payload.status)
        ]
    done, refused = 0, []
    for raw, job in targets:
        if job is None:
            refused.append({"job_id": raw, "code": "JOB_NOT_FOUND"})
            continue
        try:
            transition(job, by=request.user)
            done += 1
        except InvalidTransition:
            refused.append({"job_id": str(job.pk), "code": "INVALID_TRANSITION"})
    return json_response({"data": {"done": done, "refused": refused}})


@matters.get("/{matter_id}/jobs/{job_id}", summary="One job with its stage history and audit")
def get_matter_job(request: HttpRequest, matter_id: str, job_id: str) -> HttpResponse:
    matter, _role = _matter(request, matter_id)
    job = _job(request, job_id, matter)
    return json_response({"data": job_detail_payload(job)})


def _act(request: HttpRequest, matter_id: str, job_id: str, action: Action) -> HttpResponse:
    matter, role = _matter(request, matter_id)
    job = _job(request, job_id, matter)
    if not may_act_on_job(request.user, role, job, action):
        raise ApiError(403, "FORBIDDEN", f"Your role on this matter does not allow '{action}'.")
    transition = {
        Action.RETRY: lifecycle.retry,
        Action.SKIP: lifecycle.skip,
        Action.CANCEL: lifecycle.cancel,
        Action.PRIORITIZE: lifecycle.prioritize,
    }[action]
    transition(job, by=request.user)
    job = ProcessingJob.objects.select_related("document").get(pk=job.pk)
    return json_response({"data": job_payload(job)})


@matters.post("/{matter_id}/jobs/{job_id}/retry", summary="FAILED -> QUEUED, from the failed stage")
def retry_job(request: HttpRequest, matter_id: str, job_id: str) -> HttpResponse:
    return _act(request, matter_id, job_id, Action.RETRY)


@matters.post("/{matter_id}/jobs/{job_id}/skip", summary="FAILED -> SKIPPED")
def skip_job(request: HttpRequest, matter_id: str, job_id: str) -> HttpResponse:
    return _act(request, matter_id, job_id, Action.SKIP)


@matters.post("/{matter_id}/jobs/{job_id}/cancel", summary="QUEUED or PROCESSING -> CANCELLED")
def cancel_job(request: HttpRequest, matter_id: str, job_id: str) -> HttpResponse:
    return _act(request, matter_id, job_id, Action.CANCEL)


@matters.post("/{matter_id}/jobs/{job_id}/prioritize", summary="Front of the high-priority queue")
def prioritize_job(request: HttpRequest, matter_id: str, job_id: str) -> HttpResponse:
    return _act(request, matter_id, job_id, Action.PRIORITIZE)


@jobs.get("", summary="Recent jobs across the caller's matters, newest first")
def list_recent_jobs(request: HttpRequest, filters: Query[RecentFilters]) -> HttpResponse:
    qs = selectors.jobs_for(request.user)
    if filters.status:
        qs = qs.filter(status=filters.status)
    page = list(qs.order_by("-created_at", "-id")[: filters.limit])
    return json_response(
        {
            "data": [job_payload(j) for j in page],
            "meta": {"limit": filters.limit, "count": len(page)},
        }
    )


@jobs.get("/{job_id}", summary="One job's status, flat; ETag / If-None-Match gives 304")
def get_job(request: HttpRequest, job_id: str) -> HttpResponse:
    job = _job(request, job_id)
    etag = _etag(job)
    if etag in _if_none_match(request):
        response = HttpResponse(status=304)
        response["ETag"] = etag
        return response
    return json_response(job_payload(job), ETag=etag, Cache_Control="private, no-cache")


def _etag(job: ProcessingJob) -> str:
    # Every write through the lifecycle moves updated_at; queue position moves on its own.
    from processing.jobs.estimates import queue_position

    basis = f"{job.pk}:{job.updated_at.isoformat()}:{queue_position(job)}"
    return '"' + hashlib.sha1(basis.encode(), usedforsecurity=False).hexdigest()[:20] + '"'


def _if_none_match(request: HttpRequest) -> set[str]:
    header = request.headers.get("If-None-Match", "")
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


api.add_router("/matters", matters)
api.add_router("/jobs", jobs)
api.add_router("/matters", "processing.api.search.router")
