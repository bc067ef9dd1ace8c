"""``POST /api/matters/{matter_id}/documents``: upload a document and start its job."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from ninja import File, Router
from ninja.files import UploadedFile

from processing.api.base import json_response, matter_or_404, require
from processing.models import ProcessingJob
from processing.payloads import job_payload
from processing.permissions import Action
from processing.uploads import accept_upload

router = Router(tags=["documents"])


@router.post("/{matter_id}/documents", summary="Upload a document; creates and enqueues its job")
def upload_document(
    request: HttpRequest, matter_id: str, file: UploadedFile | None = File(None)
) -> HttpResponse:
    matter, role = matter_or_404(request, matter_id)
    require(role, Action.UPLOAD)
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
