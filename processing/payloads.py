"""The job and matter objects of docs/api.md, built once for the API and the pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.urls import reverse
from django.utils import timezone

from processing.jobs import estimates
from processing.jobs.states import JobStatus, StageStatus
from processing.models import Document, Matter, ProcessingJob
from processing.pipeline.registry import get_pipeline


def iso(value: datetime | None) -> str | None:
    """An ISO 8601 UTC timestamp ending in Z, or None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# How the stepper shows the stage a job stands at, by the job's status.
_CURRENT_STAGE: dict[str, StageStatus] = {
    JobStatus.PROCESSING: StageStatus.IN_PROGRESS,
    JobStatus.FAILED: StageStatus.FAILED,
    JobStatus.SKIPPED: StageStatus.SKIPPED,
    JobStatus.CANCELLED: StageStatus.SKIPPED,
}


def stage_states(job: ProcessingJob) -> list[dict[str, str]]:
    """Each stage of the job's pipeline with the status the stepper shows.

    A stage a person skipped after it failed is SKIPPED once the job has gone past it.
    """
    pipeline = get_pipeline(job.job_type)
    skipped = set(job.skipped_stages)
    out = []
    for position, stage in enumerate(pipeline.stages, start=1):
        if job.status == JobStatus.COMPLETED or position < job.stage_index:
            status = StageStatus.SKIPPED if stage.name in skipped else StageStatus.COMPLETED
        elif position > job.stage_index:
            status = StageStatus.SKIPPED if job.status == JobStatus.SKIPPED else StageStatus.PENDING
        else:
            status = _CURRENT_STAGE.get(job.status, StageStatus.PENDING)
        out.append({"name": stage.name, "label": stage.label, "status": str(status)})
    return out


def job_payload(
    job: ProcessingJob,
    *,
    now: datetime | None = None,
    estimate: estimates.Estimate | None = None,
) -> dict[str, Any]:
    """The flat job object (``job.document`` should be select_related).

    A list passes each job's ``estimate`` from one :func:`estimates.for_jobs` call
    (made with the same ``now``); without it, the job is estimated on its own.
    """
    now = now or timezone.now()
    if estimate is None:
        estimate = estimates.estimate(job, now=now)
    document = job.document
    completed = job.status == JobStatus.COMPLETED
    return {
        "job_id": str(job.id),
        "id": str(job.id),
        "matter_id": str(job.matter_id),
        "document_id": str(job.document_id),
        "document_name": document.original_name,
        "job_type": job.job_type,
        "status": job.status,
        "error": job.error,
        "error_code": job.error_code,
        "current_stage": job.current_stage,
        "stage_index": job.stage_index,
        "total_stages": job.total_stages,
        "stages": stage_states(job),
        "progress": job.progress,
        "items_total": job.items_total,
        "items_done": job.items_done,
        "page_count": document.page_count,
        "eta_seconds": estimate.eta_seconds,
        "estimated_completion": iso(estimate.estimated_completion),
        "queue_position": estimate.queue_position,
        "retry_count": job.retry_count,
        "max_retries": job.max_retries,
        "next_attempt_at": iso(job.next_attempt_at),
        "priority": job.priority,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "completed_at": iso(job.completed_at),
        "updated_at": iso(job.updated_at),
        "result_url": (reverse("document-detail", args=[job.document_id]) if completed else None),
        "result_api_url": document_api_url(job.document_id) if completed else None,
    }


def document_api_url(document_id: Any) -> str:
    """Where an integrator reads a document's results: ``GET /api/documents/{id}``."""
    return reverse("api:get_document", args=[document_id])


def document_payload(document: Document) -> dict[str, Any]:
    """The document object: what was uploaded, and how far its processing got."""
    api_url = document_api_url(document.pk)
    return {
        "id": str(document.id),
        "matter_id": str(document.matter_id),
        "name": document.original_name,
        "content_type": document.content_type,
        "size": document.size,
        "sha256": document.sha256,
        "page_count": document.page_count,
        "processing_state": document.processing_state,
        "created_at": iso(document.created_at),
        "pages_url": f"{api_url}/pages",
        "entities_url": f"{api_url}/entities",
        "file_url": f"{api_url}/file",
    }


def job_detail_payload(
    job: ProcessingJob, *, estimate: estimates.Estimate | None = None
) -> dict[str, Any]:
    """The job object plus its ``stage_history`` and ``audit``."""
    data = job_payload(job, estimate=estimate)
    data["stage_history"] = [
        {
            "stage": run.stage,
            "stage_index": run.stage_index,
            "attempt": run.attempt,
            "status": run.status,
            "items_done": run.items_done,
            "items_total": run.items_total,
            "started_at": iso(run.started_at),
            "finished_at": iso(run.finished_at),
            "duration_ms": run.duration_ms,
            "error_code": run.error_code,
            "error": run.error_message,
        }
        for run in job.stage_runs.all()
    ]
    data["audit"] = [
        {
            "action": event.action,
            "status_before": event.status_before or None,
            "status_after": event.status_after or None,
            # The names these had first, kept for the clients that read them.
            "from_status": event.status_before or None,
            "to_status": event.status_after or None,
            "actor": event.actor.get_username() if event.actor else None,
            "reason": event.reason,
            "details": event.details,
            "at": iso(event.created_at),
        }
        for event in job.audit.select_related("actor").all()
    ]
    return data


def matter_payload(
    matter: Matter, role: str, counts: dict[str, int], ready: dict[str, int] | None = None
) -> dict[str, Any]:
    """The matter object: ``role`` is the caller's, ``counts`` its jobs by status.

    ``ready`` is what :func:`processing.selectors.matter_ready_counts` gives for it.
    """
    ready = ready or {}
    return {
        "id": str(matter.id),
        "name": matter.name,
        "role": role,
        "created_at": iso(matter.created_at),
        "counts": {status: counts.get(status, 0) for status in JobStatus.values},
        "ready": {key: ready.get(key, 0) for key in ("documents", "pages", "entities")},
    }
