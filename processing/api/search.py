"""``GET /api/matters/{matter_id}/search``: the JSON face of :mod:`processing.search`.

Mounted on ``/matters`` next to the other routers there (ninja allows several
routers on one prefix).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema
from pydantic import Field

from processing.api.base import ApiError, json_response, matter_or_404
from processing.api.schemas import SearchEnvelope, refusals
from processing.search import (
    MAX_QUERY_CHARS,
    InvalidSearchLanguage,
    InvalidSearchQuery,
    search_matter,
)

router = Router(tags=["search"])


class SearchFilters(Schema):
    """What to search for, and how many hits at most."""

    # Checked by search_matter (its refusal names the field); the schema only says so.
    q: str = Field(
        description="Words or a phrase; not blank.",
        json_schema_extra={"minLength": 1, "maxLength": MAX_QUERY_CHARS, "pattern": r"\S"},
    )
    limit: int = Field(20, ge=1, le=100)


@router.get(
    "/{matter_id}/search",
    response={200: SearchEnvelope, **refusals(400, 401, 404)},
    summary="Full-text search over the matter's documents",
)
def search_documents(
    request: HttpRequest, matter_id: str, filters: Query[SearchFilters]
) -> HttpResponse:
    """Hits best first: ``{"data": [{"document_id", "document_name", "page", "snippet",
    "rank"}…]}``; the snippet is HTML-escaped text with matches in ``<mark>``."""
    matter, _role = matter_or_404(request, matter_id)
    try:
        hits = search_matter(matter, filters.q, limit=filters.limit)
    except InvalidSearchQuery as exc:
        raise ApiError(400, "VALIDATION_ERROR", str(exc), field="q") from exc
    except InvalidSearchLanguage as exc:
        raise ApiError(400, "VALIDATION_ERROR", exc.message, field="search_language") from exc
    return json_response({"data": hits})
