"""What the API answers, as schemas: one per object of docs/api.md, reused by every
endpoint that answers it.

They describe the answers in the OpenAPI document (``response=`` on each route) and let
tests validate real answers; the endpoints build their JSON with
:mod:`processing.payloads` and do not pass it through these. Objects forbid fields they
do not declare, so a field added to a payload and not here fails the schemathesis run
(``tests/test_openapi_fuzz.py``) instead of going undocumented.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from ninja import Schema
from pydantic import ConfigDict, Field

from processing.jobs.states import JobStatus, StageStatus

RoleName = Literal["viewer", "member", "owner"]
"""A person's role on a matter."""


class Out(Schema):
    """An object the API answers: exactly the fields it declares."""

    model_config = ConfigDict(extra="forbid")


# --- errors and pagination -------------------------------------------------------------


class ErrorBody(Schema):
    """What went wrong: a stable ``code``, a sentence for a person, and ``details``."""

    code: str
    message: str
    details: dict[str, Any]


class ErrorOut(Schema):
    """The error envelope every refusal under /api/ answers (for the OpenAPI document)."""

    error: ErrorBody


class PageMeta(Out):
    """Where a paginated list stands: its ``total`` rows, this ``page``, rows ``per_page``."""

    total: int
    page: int
    per_page: int


# --- matters -------------------------------------------------------------------------------


class StatusCounts(Out):
    """A matter's jobs by status: every status, 0 when none."""

    QUEUED: int
    PROCESSING: int
    COMPLETED: int
    FAILED: int
    CANCELLED: int
    SKIPPED: int


class ReadyCounts(Out):
    """What of a matter is already processed and usable."""

    documents: int
    pages: int
    entities: int


class MatterOut(Out):
    """The matter object; ``role`` is the caller's role on it."""

    id: uuid.UUID
    name: str
    role: RoleName
    created_at: datetime
    counts: StatusCounts
    ready: ReadyCounts


class MatterEnvelope(Out):
    """``{"data": matter}``."""

    data: MatterOut


class MattersEnvelope(Out):
    """``{"data": [matter…]}``."""

    data: list[MatterOut]


class MemberOut(Out):
    """A person on a matter and their role."""

    username: str
    role: RoleName


class MemberEnvelope(Out):
    """``{"data": member}``."""

    data: MemberOut


class MembersEnvelope(Out):
    """``{"data": [member…]}``."""

    data: list[MemberOut]


# --- jobs --------------------------------------------------------------------------------


class StageState(Out):
    """One stage of a job's pipeline, as the stepper shows it."""

    name: str
    label: str
    status: StageStatus


class JobOut(Out):
    """The job object (docs/api.md, "The job object")."""

    job_id: uuid.UUID
    id: uuid.UUID = Field(description="The same as job_id.")
    matter_id: uuid.UUID
    document_id: uuid.UUID
    document_name: str
    job_type: str
    status: JobStatus
    error: str | None = Field(description="The safe, user-facing message of the last error.")
    error_code: str | None
    current_stage: str = Field(description="The stage's name; '' before the first.")
    stage_index: int = Field(description="1-based.")
    total_stages: int
    stages: list[StageState]
    progress: int = Field(ge=0, le=100)
    items_total: int
    items_done: int
    page_count: int | None
    eta_seconds: int | None = Field(description="Null when there is nothing to estimate from.")
    estimated_completion: datetime | None
    queue_position: int | None = Field(description="1 is next; null when not waiting.")
    retry_count: int
    max_retries: int
    next_attempt_at: datetime | None
    priority: str = Field(description="high, default or low.")
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    result_url: str | None = Field(description="The document's page, once COMPLETED.")
    result_api_url: str | None = Field(description="GET /api/documents/{id}, once COMPLETED.")


class StageRunOut(Out):
    """One attempt at one stage of a job."""

    stage: str
    stage_index: int
    attempt: int
    status: StageStatus
    items_done: int
    items_total: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    error_code: str | None
    error: str | None


class AuditEventOut(Out):
    """One event of a job's audit trail."""

    action: str
    status_before: JobStatus | None
    status_after: JobStatus | None
    from_status: JobStatus | None = Field(description="The older name of status_before.")
    to_status: JobStatus | None = Field(description="The older name of status_after.")
    actor: str | None = Field(description="The username; null for the system.")
    reason: str
    details: dict[str, Any]
    at: datetime


class JobDetailOut(JobOut):
    """The job object with its ``stage_history`` and ``audit``."""

    stage_history: list[StageRunOut]
    audit: list[AuditEventOut]


class JobEnvelope(Out):
    """``{"data": job}``."""

    data: JobOut


class JobDetailEnvelope(Out):
    """``{"data": job with stage_history and audit}``."""

    data: JobDetailOut


class MatterJobsEnvelope(Out):
    """A page of a matter's jobs."""

    data: list[JobOut]
    meta: PageMeta


class RecentMeta(Out):
    """How many recent jobs were asked for and how many came."""

    limit: int
    count: int


class RecentJobsEnvelope(Out):
    """The caller's recent jobs, newest first."""

    data: list[JobOut]
    meta: RecentMeta


class BulkRefusal(Out):
    """A job a bulk action left alone, and why (an error code)."""

    job_id: str
    code: str


class BulkResult(Out):
    """What a bulk action did."""

    done: int
    refused: list[BulkRefusal]


class BulkEnvelope(Out):
    """``{"data": bulk result}``."""

    data: BulkResult


class StageFigures(Out):
    """What a stage has recently cost, as the ETA prices it (null: no completed run yet)."""

    label: str
    seconds_per_item: float | None = Field(description="Seconds per page of the document.")
    seconds_per_run: float | None = Field(description="Seconds every run costs, whatever its size.")


class JobStats(Out):
    """A matter's jobs in figures."""

    queued: int
    processing: int
    completed: int
    failed: int
    cancelled: int
    skipped: int
    avg_processing_time_ms: int | None = Field(
        description="From start to completion, over the matter's COMPLETED jobs."
    )
    stages: dict[str, StageFigures]


class JobStatsEnvelope(Out):
    """``{"data": stats}``."""

    data: JobStats


# --- documents -------------------------------------------------------------------------


class JobRef(Out):
    """The document's latest job, in short; ``url`` is its full status."""

    job_id: str
    status: JobStatus
    url: str


class DocumentFields(Out):
    """The document object as an upload answers it (its job comes beside it)."""

    id: uuid.UUID
    matter_id: uuid.UUID
    name: str
    content_type: str
    size: int
    sha256: str
    page_count: int | None
    processing_state: Literal["PENDING", "PROCESSED", "INCOMPLETE"]
    created_at: datetime
    pages_url: str
    entities_url: str
    file_url: str


class DocumentOut(DocumentFields):
    """The document object, with its latest job."""

    job: JobRef | None = Field(description="The document's latest job; null if none.")


class DocumentEnvelope(Out):
    """``{"data": document}``."""

    data: DocumentOut


class UploadOut(Out):
    """What an upload led to: the new document and job, or the ones already there."""

    document: DocumentFields
    job: JobOut
    duplicate: bool = Field(description="True: the matter had these bytes; nothing new.")


class UploadEnvelope(Out):
    """``{"data": upload result}``."""

    data: UploadOut


class PageOut(Out):
    """One page's text and where it came from."""

    page: int = Field(description="1-based page number.")
    text: str
    text_truncated: bool = Field(description="Cut at the answer's limit of characters.")
    char_count: int = Field(description="Characters of the page's whole text.")
    source: str = Field(description="text_layer or ocr.")
    ocr_status: str = Field(description="'' (not looked at yet), not_needed, recognised, failed.")
    ocr_confidence: float | None = Field(description="Mean word confidence 0-100, if OCR read it.")


class PagesEnvelope(Out):
    """A page of a document's pages."""

    data: list[PageOut]
    meta: PageMeta


class EntityOut(Out):
    """One distinct value of one kind found in the document, with every page it is on."""

    kind: str
    value: str = Field(description="Normalised (ISO date, 'USD 1200.00', lower-case email…).")
    text: str = Field(description="As first written in the document.")
    pages: list[int]
    count: int = Field(description="How many times it was found.")


class EntitiesEnvelope(Out):
    """A page of a document's entities."""

    data: list[EntityOut]
    meta: PageMeta


# --- search ------------------------------------------------------------------------------


class SearchHit(Out):
    """A page of a document that matches; ``snippet`` is escaped HTML, matches in <mark>."""

    document_id: uuid.UUID
    document_name: str
    page: int
    snippet: str
    rank: float


class SearchEnvelope(Out):
    """Hits best first."""

    data: list[SearchHit]


def refusals(*statuses: int) -> dict[int, Any]:
    """``{status: ErrorOut}`` for each status an endpoint may refuse with, for ``response=``."""
    return dict.fromkeys(statuses, ErrorOut)


RETRY_AFTER = {
    "description": "Seconds until the caller may try again.",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}
"""The ``Retry-After`` header of a 429, for an operation's ``openapi_extra``."""

ETAG = {
    "description": "The job's version; send it back as If-None-Match to get 304 until it moves.",
    "required": True,
    "schema": {"type": "string"},
}
"""The ``ETag`` header of ``GET /api/jobs/{job_id}``."""

CACHE_CONTROL = {
    "description": "private, no-cache: revalidate with If-None-Match every time.",
    "required": True,
    "schema": {"type": "string"},
}
"""The ``Cache-Control`` header of ``GET /api/jobs/{job_id}``."""

IF_NONE_MATCH = {
    "in": "header",
    "name": "If-None-Match",
    "required": False,
    "description": "ETags from earlier answers (comma-separated); a match answers 304.",
    "schema": {"type": "string"},
}
"""The ``If-None-Match`` request header of ``GET /api/jobs/{job_id}``."""
