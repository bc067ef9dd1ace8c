"""Documents: uploading one into a matter (``POST /api/matters/{id}/documents``), and
reading a document's results (``GET /api/documents/{id}…``): its metadata and processing
state, its pages' text, its entities and its original bytes.

Every read goes through :func:`processing.api.base.document_or_404`, so a document
outside the caller's matters is ``DOCUMENT_NOT_FOUND`` whatever its id.
"""

from __future__ import annotations

from typing import Annotated, Any

from django.db.models.functions import Left, Length
from django.http import FileResponse, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from ninja import File, Query, Router, Schema
from ninja.files import UploadedFile
from pydantic import Field, WithJsonSchema

from processing import selectors
from processing.api.base import (
    ApiError,
    document_or_404,
    json_response,
    matter_or_404,
    page_slice,
    require,
)
from processing.api.schemas import (
    RETRY_AFTER,
    DocumentEnvelope,
    EntitiesEnvelope,
    PagesEnvelope,
    UploadEnvelope,
    refusals,
)
from processing.models import DocumentPage, Entity, ProcessingJob
from processing.payloads import document_payload, job_payload
from processing.permissions import Action
from processing.pipeline.registry import DOCUMENT_PROCESSING, job_types
from processing.uploads import accept_upload, sanitize_filename

router = Router(tags=["documents"])
"""Mounted on ``/matters``: uploads."""
documents = Router(tags=["documents"])
"""Mounted on ``/documents``: a document's results."""

PAGES_PER_PAGE_MAX = 20
"""Pages of text in one answer at most."""
PAGE_TEXT_MAX_CHARS = 50_000
"""Characters of one page's text in an answer at most (``text_truncated`` says when
cut): one page of a plain-text file can be the whole 50 MB file, and an answer must
stay small. The whole text is in the original file."""
ENTITIES_PER_PAGE_MAX = 100
"""Entities in one answer at most."""

COMMON_ERRORS = refusals(401, 404)
"""What every document endpoint may refuse with: no credentials, a document not visible."""


# --- filters ------------------------------------------------------------------------------


class PageFilters(Schema):
    """Which page of a document's pages."""

    page: int = Field(1, ge=1)
    per_page: int = Field(10, ge=1, le=PAGES_PER_PAGE_MAX)


class EntityFilters(Schema):
    """Which entities: of one kind, or all; and which page of them."""

    kind: Entity.Kind | None = None
    page: int = Field(1, ge=1)
    per_page: int = Field(50, ge=1, le=ENTITIES_PER_PAGE_MAX)


# --- uploads -----------------------------------------------------------------------------


AFile = Annotated[UploadedFile | None, WithJsonSchema({"type": "string", "format": "binary"})]
"""The upload's ``file``: documented as bytes (never null) and required (``openapi_extra``
below); optional in Python so that a missing file reaches
:func:`~processing.uploads.accept_upload`, whose refusal names the field."""


@router.post(
    "/{matter_id}/documents",
    response={
        200: UploadEnvelope,
        201: UploadEnvelope,
        # 403: the role allows no upload, or a session without its CSRF token; 413: over
        # UPLOAD_MAX_BYTES; 429: too many uploads (with Retry-After).
        **refusals(400, 401, 403, 404, 413, 429),
    },
    summary="Upload a document; creates and enqueues its job, unless the matter has its bytes",
    description="201 with the new document and job; 200 with `duplicate: true` and the ones "
    "already there when the matter has these bytes (unless `allow_duplicate`).",
    openapi_extra={
        "requestBody": {
            "content": {"multipart/form-data": {"schema": {"required": ["file"]}}},
        },
        "responses": {
            429: {"headers": {"Retry-After": RETRY_AFTER}},
        },
    },
)
def upload_document(
    request: HttpRequest,
    matter_id: str,
    allow_duplicate: bool = False,
    job_type: str = DOCUMENT_PROCESSING,
    file: AFile = File(None),
) -> HttpResponse:
    """``job_type`` picks the pipeline (``DOCUMENT_PROCESSING``, or e.g. ``EXTERNAL_REVIEW``,
    whose review stage an outside service reports through the callback)."""
    matter, role = matter_or_404(request, matter_id)
    require(role, Action.UPLOAD)
    if job_type not in job_types():
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"Unknown job type; use one of: {', '.join(sorted(job_types()))}.",
            field="job_type",
        )
    accepted = accept_upload(
        matter, file, by=request.user, allow_duplicate=allow_duplicate, job_type=job_type
    )
    job = ProcessingJob.objects.select_related("document").get(pk=accepted.job.pk)
    return json_response(
        {
            "data": {
                "document": document_payload(accepted.document),
                "job": job_payload(job),
                "duplicate": accepted.duplicate,
            }
        },
        status=200 if accepted.duplicate else 201,
    )


# --- a document's results ----------------------------------------------------------------


@documents.get(
    "/{document_id}",
    response={200: DocumentEnvelope, **COMMON_ERRORS},
    summary="One document: metadata, processing state, its latest job",
)
def get_document(request: HttpRequest, document_id: str) -> HttpResponse:
    document = document_or_404(request, document_id)
    data = document_payload(document)
    latest = selectors.latest_job_of(document)
    data["job"] = (
        {
            "job_id": str(latest.pk),
            "status": latest.status,
            "url": reverse("api:get_job", args=[latest.pk]),
        }
        if latest is not None
        else None
    )
    return json_response({"data": data})


@documents.get(
    "/{document_id}/pages",
    response={200: PagesEnvelope, **refusals(400), **COMMON_ERRORS},
    summary="A document's pages: text, source (text layer or OCR), OCR confidence; paginated",
)
def list_pages(request: HttpRequest, document_id: str, filters: Query[PageFilters]) -> HttpResponse:
    """Pages in order; each page's text at most :data:`PAGE_TEXT_MAX_CHARS` characters."""
    document = document_or_404(request, document_id)
    pages = DocumentPage.objects.filter(document=document)
    total = pages.count()
    rows: list[dict[str, Any]] = []
    window = page_slice(filters.page, filters.per_page, total)
    if window is not None:
        found = (
            pages.order_by("page_number")
            .annotate(excerpt=Left("text", PAGE_TEXT_MAX_CHARS), length=Length("text"))
            .values("page_number", "excerpt", "length", "source", "ocr_status", "ocr_confidence")
        )[window[0] : window[1]]
        rows = [
            {
                "page": row["page_number"],
                "text": row["excerpt"],
                "text_truncated": row["length"] > PAGE_TEXT_MAX_CHARS,
                "char_count": row["length"],
                "source": row["source"],
                "ocr_status": row["ocr_status"],
                "ocr_confidence": row["ocr_confidence"],
            }
            for row in found
        ]
    meta = {"total": total, "page": filters.page, "per_page": filters.per_page}
    return json_response({"data": rows, "meta": meta})


@documents.get(
    "/{document_id}/entities",
    response={200: EntitiesEnvelope, **refusals(400), **COMMON_ERRORS},
    summary="A document's entities (one row per kind and value, with its pages); paginated",
)
def list_entities(
    request: HttpRequest, document_id: str, filters: Query[EntityFilters]
) -> HttpResponse:
    """Grouped by kind (in the order of ``Entity.Kind``), then by first page."""
    document = document_or_404(request, document_id)
    kind = str(filters.kind) if filters.kind else None
    total = selectors.entity_value_count(document, kind=kind)
    window = page_slice(filters.page, filters.per_page, total)
    rows = selectors.entity_values(document, kind=kind, window=window) if window else []
    meta = {"total": total, "page": filters.page, "per_page": filters.per_page}
    return json_response({"data": rows, "meta": meta})


@documents.get(
    "/{document_id}/file",
    response=COMMON_ERRORS,
    summary="The original bytes, as an attachment",
    openapi_extra={
        "responses": {
            200: {
                "description": "The file as uploaded (Content-Disposition: attachment).",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            }
        }
    },
)
def download_file(request: HttpRequest, document_id: str) -> HttpResponseBase:
    """Streamed from storage; ``nosniff`` so a browser never runs an uploaded HTML file."""
    document = document_or_404(request, document_id)
    try:
        handle = document.file.open("rb")
    except FileNotFoundError as exc:
        raise ApiError(
            404, "DOCUMENT_NOT_FOUND", "The file of this document is no longer stored."
        ) from exc
    response = FileResponse(
        handle,
        as_attachment=True,
        filename=sanitize_filename(document.original_name),
        content_type=document.content_type or "application/octet-stream",
    )
    response["X-Content-Type-Options"] = "nosniff"
    return response
