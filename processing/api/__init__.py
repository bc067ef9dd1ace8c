"""The JSON API (django-ninja: typed inputs and an OpenAPI document), one module per resource.

- ``base``: the error envelope, JSON responses, authentication, scoped lookups;
- ``schemas``: what each endpoint answers (one schema per object), for the OpenAPI document;
- ``matters``: matters and their members; ``documents``: uploads, and a document's
  results (metadata, pages, entities, the original file);
- ``jobs``: a matter's jobs, the actions on them, and the caller's jobs;
- ``search``: full-text search over a matter;
- ``callbacks``: an external stage's signed callback (no token: the signature is the
  credential);
- ``middleware``: keeps unknown routes and methods under /api/ in the envelope.

Every error leaves as ``{"error": {"code", "message", "details"}}``; the
handlers below turn each kind of exception into it. ``docs/api.md`` describes
the whole API for integrators.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from processing.api import callbacks, documents, jobs, matters, search
from processing.api.base import ApiError, BearerToken, SessionLogin, error_response
from processing.jobs.states import InvalidTransition
from processing.uploads import UploadRejected

api = NinjaAPI(
    title="Jobtracker API",
    version="1",
    description="Track document-processing jobs. See docs/api.md.",
    auth=[BearerToken(), SessionLogin()],
    urls_namespace="api",
    # The interactive docs and the OpenAPI document: on in development, and in
    # production only if API_DOCS says so.
    docs_url="/docs" if settings.API_DOCS else None,
    openapi_url="/openapi.json" if settings.API_DOCS else None,
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


api.add_router("/matters", matters.router)
api.add_router("/matters", documents.router)
api.add_router("/matters", jobs.matter_jobs)
api.add_router("/matters", search.router)
api.add_router("/jobs", jobs.jobs)
api.add_router("/jobs", callbacks.router)
api.add_router("/documents", documents.documents)
