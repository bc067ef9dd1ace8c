"""``POST /api/matters/{matter_id}/documents``: upload a document and start its job."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import File, Router
from ninja.files import UploadedFile

from processing.api.base import json_response, matter_or_404, require
from processing.models import Document, ProcessingJob
from processing.payloads import job_payload
from processing.permissions import Action
from processing.uploads import accept_upload

router = Router(tags=["documents"])


@router.post(
    "/{matter_id}/documents",
    summary="Upload a document; creates and enqueues its job, unless the matter has its bytes",
)
def upload_document(
    request: HttpRequest,
    matter_id: str,
    allow_duplicate: bool = False,
    file: UploadedFile | None = File(None),
) -> HttpResponse:
    matter, role = matter_or_404(request, matter_id)
    require(role, Action.UPLOAD)
    accepted = accept_upload(matter, file, by=request.user, allow_duplicate=allow_duplicate)
    job = ProcessingJob.objects.select_related("document").get(pk=accepted.job.pk)
    return json_response(
        {
            "data": {
                "document": _document_payload(accepted.document),
                "job": job_payload(job),
                "duplicate": accepted.duplicate,
            }
        },
        status=200 if accepted.duplicate else 201,
    )


def _document_payload(document: Document) -> dict[str, Any]:
    return {
        "id": str(document.id),
        "name": document.original_name,
        "content_type": document.content_type,
        "size": document.size,
        "sha256": document.sha256,
        "page_count": document.page_count,
    }
