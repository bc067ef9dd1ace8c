"""``/api/matters``: the caller's matters, and their members."""

from __future__ import annotations

from typing import Literal

from django.http import HttpRequest, HttpResponse
from ninja import Router, Schema
from pydantic import Field

from processing import matters as matter_service
from processing import selectors
from processing.api.base import ApiError, json_response, matter_or_404, require
from processing.api.schemas import (
    MatterEnvelope,
    MattersEnvelope,
    MemberEnvelope,
    MembersEnvelope,
    refusals,
)
from processing.models import Role
from processing.payloads import matter_payload
from processing.permissions import Action

router = Router(tags=["matters"])


class MatterIn(Schema):
    """A new matter."""

    name: str = Field(min_length=1, max_length=200)


class MemberIn(Schema):
    """A person to add to a matter, or whose role to change."""

    username: str = Field(min_length=1, max_length=150)
    role: Literal["viewer", "member", "owner"]


@router.get(
    "", response={200: MattersEnvelope, **refusals(401)}, summary="Matters the caller belongs to"
)
def list_matters(request: HttpRequest) -> HttpResponse:
    memberships = list(selectors.memberships_of(request.user))
    ids = [m.matter_id for m in memberships]
    counts, ready = selectors.matter_status_counts(ids), selectors.matter_ready_counts(ids)
    data = [
        matter_payload(m.matter, m.role, counts[m.matter_id], ready[m.matter_id])
        for m in memberships
    ]
    return json_response({"data": data})


# 403 on unsafe methods: a session request without its CSRF token.
@router.post(
    "",
    response={201: MatterEnvelope, **refusals(400, 401, 403)},
    summary="Create a matter; the caller becomes its owner",
)
def create_matter(request: HttpRequest, payload: MatterIn) -> HttpResponse:
    name = payload.name.strip()
    if not name:
        raise ApiError(400, "VALIDATION_ERROR", "A matter needs a name.", field="name")
    matter = matter_service.create_matter(name, owner=request.user)
    return json_response({"data": matter_payload(matter, Role.OWNER, {})}, status=201)


@router.get(
    "/{matter_id}/members",
    response={200: MembersEnvelope, **refusals(401, 404)},
    summary="People on the matter and their roles",
)
def list_members(request: HttpRequest, matter_id: str) -> HttpResponse:
    matter, _role = matter_or_404(request, matter_id)
    rows = selectors.members_of(matter)
    return json_response(
        {"data": [{"username": m.user.get_username(), "role": m.role} for m in rows]}
    )


@router.post(
    "/{matter_id}/members",
    response={201: MemberEnvelope, **refusals(400, 401, 403, 404, 409)},
    summary="Add a member or change their role (owners)",
)
def add_member(request: HttpRequest, matter_id: str, payload: MemberIn) -> HttpResponse:
    matter, role = matter_or_404(request, matter_id)
    require(role, Action.MANAGE_MEMBERS)
    try:
        membership = matter_service.set_member(matter, payload.username, payload.role)
    except matter_service.UnknownUser as exc:
        raise ApiError(400, "VALIDATION_ERROR", exc.message, field="username") from exc
    except matter_service.LastOwner as exc:
        raise _last_owner(exc) from exc
    except matter_service.MembershipRefused as exc:
        raise ApiError(400, "VALIDATION_ERROR", exc.message, field="role") from exc
    return json_response(
        {"data": {"username": payload.username, "role": membership.role}}, status=201
    )


@router.delete(
    "/{matter_id}/members/{username}",
    response={204: None, **refusals(401, 403, 404, 409)},
    summary="Remove a member (owners)",
)
def remove_member(request: HttpRequest, matter_id: str, username: str) -> HttpResponse:
    matter, role = matter_or_404(request, matter_id)
    require(role, Action.MANAGE_MEMBERS)
    try:
        matter_service.remove_member(matter, username)
    except matter_service.NotAMember as exc:
        raise ApiError(404, "NOT_FOUND", exc.message) from exc
    except matter_service.LastOwner as exc:
        raise _last_owner(exc) from exc
    return HttpResponse(status=204)


def _last_owner(exc: matter_service.LastOwner) -> ApiError:
    return ApiError(409, "INVALID_TRANSITION", exc.message, current_status="last_owner")
