"""What every endpoint shares: the error envelope, JSON responses, authentication,
and lookups scoped to the caller's matters.

Ids in paths are taken as strings and parsed by the selectors, so a malformed id
is the same 404 as an unknown one.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja.security import HttpBearer, SessionAuth

from processing import selectors, tokens
from processing.models import Document, Matter, ProcessingJob
from processing.permissions import Action, role_allows


def page_slice(page: int, per_page: int, total: int) -> tuple[int, int] | None:
    """The ``[start, stop)`` rows of a 1-based page, or None past the end.

    Past the end nothing is asked of the database: a huge page would overflow OFFSET.
    """
    start = (page - 1) * per_page
    return (start, start + per_page) if start < total else None


class ApiError(Exception):
    """An error with a stable code, answered in the contract's envelope."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        self.status, self.code, self.message, self.details = status, code, message, details
        super().__init__(message)


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JsonResponse:
    """The error envelope: ``{"error": {"code", "message", "details"}}``."""
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


# --- lookups that scope everything to the caller's matters -----------------------------


def matter_or_404(request: HttpRequest, matter_id: str) -> tuple[Matter, str]:
    """The matter and the caller's role on it; 404 when they are not a member."""
    found = selectors.matter_for(request.user, matter_id)
    if found is None:
        raise ApiError(404, "MATTER_NOT_FOUND", "No matter with this id is visible to you.")
    return found


def job_or_404(request: HttpRequest, job_id: str, matter: Matter | None = None) -> ProcessingJob:
    """The job, if it is in one of the caller's matters (and in ``matter``, if given)."""
    job = selectors.job_for(request.user, job_id, matter=matter)
    if job is None:
        raise ApiError(404, "JOB_NOT_FOUND", "No job with this id is visible to you.")
    return job


def document_or_404(request: HttpRequest, document_id: str) -> Document:
    """The document, if it is in one of the caller's matters."""
    document = selectors.document_for(request.user, document_id)
    if document is None:
        raise ApiError(404, "DOCUMENT_NOT_FOUND", "No document with this id is visible to you.")
    return document


def require(role: str | None, action: Action) -> None:
    """403 unless ``role`` allows ``action``."""
    if not role_allows(role, action):
        raise forbidden(action)


def forbidden(action: Action) -> ApiError:
    """The 403 for an action the caller's role does not allow."""
    return ApiError(403, "FORBIDDEN", f"Your role on this matter does not allow '{action}'.")
