"""Domain models: matters and their members, documents, processing jobs and their history.

Status fields are written only by :mod:`processing.jobs.lifecycle`; everything else
reads them. Results the pipeline writes (one row per item under a unique key)
are the stages' checkpoints: a rerun skips the items that already have a row.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models import Q
from django.utils import timezone

from processing.jobs.states import ACTIVE_JOB_STATUSES, JobStatus, StageStatus


class Role(models.TextChoices):
    """What a person may do on a matter."""

    VIEWER = "viewer", "Viewer"
    """Sees the matter's documents and jobs."""
    MEMBER = "member", "Member"
    """Also uploads, and cancels their own uploads."""
    OWNER = "owner", "Owner"
    """Everything on the matter: retry, skip, cancel, prioritise, manage members."""


class Matter(models.Model):
    """A shared workspace (a case, a deal) whose members see each other's documents."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    search_language = models.CharField(
        max_length=32, default="english", help_text="PostgreSQL text-search configuration."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="matters"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A person's role on one matter."""

    matter = models.ForeignKey(Matter, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["matter", "user"], name="membership_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} on {self.matter}"


class ProcessingState(models.TextChoices):
    """How far a document's processing got, as its readers see it."""

    PENDING = "PENDING", "Not processed yet"
    """Its job has not finished."""
    PROCESSED = "PROCESSED", "Processed"
    """Every stage of its job completed."""
    INCOMPLETE = "INCOMPLETE", "Incompletely processed"
    """Its job was skipped or cancelled, or finished with a stage skipped: some results
    are missing."""


def document_upload_path(document: Document, filename: str) -> str:
    """Store each document under its matter and its own id, with its sanitised name."""
    return f"documents/{document.matter_id}/{document.id}/{filename}"


class Document(models.Model):
    """An uploaded file, as stored, with what was detected about it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    matter = models.ForeignKey(Matter, on_delete=models.CASCADE, related_name="documents")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    original_name = models.CharField(max_length=255)
    file = models.FileField(upload_to=document_upload_path, max_length=500)
    content_type = models.CharField(max_length=128)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    page_count = models.IntegerField(null=True, blank=True)
    processing_state = models.CharField(
        max_length=16, choices=ProcessingState.choices, default=ProcessingState.PENDING
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["matter", "-created_at"], name="document_matter_recent"),
            # Finds an upload's duplicate; not unique, since an upload may be let through
            # on purpose (``allow_duplicate``).
            models.Index(fields=["matter", "sha256"], name="document_matter_sha256"),
        ]

    def __str__(self) -> str:
        return self.original_name


class ProcessingJobQuerySet(models.QuerySet["ProcessingJob"]):
    """Filters on jobs, named for what they select."""

    def active(self) -> ProcessingJobQuerySet:
        """Jobs that are queued or running."""
        return self.filter(status__in=ACTIVE_JOB_STATUSES)

    def failed(self) -> ProcessingJobQuerySet:
        """Jobs that stopped on an error and wait for a person."""
        return self.filter(status=JobStatus.FAILED)

    def queued(self) -> ProcessingJobQuerySet:
        """Jobs waiting for a worker."""
        return self.filter(status=JobStatus.QUEUED)


class ProcessingJob(models.Model):
    """One document's trip through a pipeline: the row every client watches."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Both are the first column of composite indexes below, which serve their lookups.
    matter = models.ForeignKey(
        Matter, on_delete=models.CASCADE, related_name="jobs", db_index=False
    )
    document = models.ForeignKey(
        Document, on_delete=models.CASCADE, related_name="jobs", db_index=False
    )
    job_type = models.CharField(max_length=64, default="DOCUMENT_PROCESSING")
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    error = models.TextField(null=True, blank=True, help_text="Safe to show the user.")
    error_code = models.CharField(max_length=64, null=True, blank=True)
    error_detail = models.TextField(blank=True, default="", help_text="Staff only.")

    current_stage = models.CharField(max_length=64, blank=True, default="")
    stage_index = models.PositiveSmallIntegerField(default=1, help_text="1-based.")
    total_stages = models.PositiveSmallIntegerField(default=1)
    items_total = models.IntegerField(default=0)
    items_done = models.IntegerField(default=0)
    progress = models.PositiveSmallIntegerField(default=0)

    stage_attempt = models.PositiveIntegerField(
        default=0, help_text="Attempts at the current stage so far (its StageRun.attempt)."
    )
    skipped_stages = ArrayField(
        models.CharField(max_length=64),
        default=list,
        blank=True,
        help_text="Stages a person skipped after they failed; the job went on without them.",
    )
    retry_count = models.PositiveIntegerField(default=0)
    auto_retries = models.PositiveIntegerField(
        default=0, help_text="Automatic retries since the last manual action."
    )
    max_retries = models.PositiveIntegerField(default=3)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    priority = models.CharField(max_length=16, default="default")
    queue_name = models.CharField(max_length=16, default="default")
    dispatch_id = models.UUIDField(
        default=uuid.uuid4,
        help_text="Token of the one queue entry allowed to run the current stage.",
    )
    enqueued_at = models.DateTimeField(default=timezone.now)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    # The lease on the running stage: who holds it and until when. Workers renew it with
    # their progress writes (and a heartbeat); recovery rescues a stage whose lease ran out.
    # The token of the lease is ``dispatch_id``: every worker write is conditional on it.
    lease_expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="While PROCESSING: the stage's worker (or the next stage's enqueue) is "
        "presumed lost after this.",
    )
    lease_holder = models.CharField(
        max_length=200, blank=True, default="", help_text="The worker running the stage."
    )

    objects = ProcessingJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["matter", "status"], name="job_matter_status"),
            models.Index(fields=["document", "status"], name="job_document_status"),
            models.Index(fields=["matter", "-created_at"], name="job_matter_recent"),
            models.Index(fields=["matter", "job_type", "-created_at"], name="job_matter_type"),
            models.Index(fields=["-created_at"], name="job_recent"),
            models.Index(
                fields=["queue_name", "enqueued_at"],
                name="job_queued_order",
                condition=Q(status="QUEUED"),
            ),
            # The estimates read every active job; finished ones pile up by the 100,000.
            models.Index(
                fields=["status"],
                name="job_active",
                condition=Q(status__in=["QUEUED", "PROCESSING"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_type} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        """True once nothing more will happen to the job without a person."""
        return self.status not in ACTIVE_JOB_STATUSES


class StageRun(models.Model):
    """One attempt at one stage of one job: its history row."""

    # The first column of the stagerun_job index, which serves its lookups.
    job = models.ForeignKey(
        ProcessingJob, on_delete=models.CASCADE, related_name="stage_runs", db_index=False
    )
    stage = models.CharField(max_length=64)
    stage_index = models.PositiveSmallIntegerField()
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(
        max_length=16, choices=StageStatus.choices, default=StageStatus.PENDING
    )
    items_total = models.IntegerField(default=0)
    items_done = models.IntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, default="")
    error_code = models.CharField(max_length=64, null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)
    error_detail = models.TextField(blank=True, default="", help_text="Staff only.")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["job", "created_at"], name="stagerun_job"),
            models.Index(
                fields=["stage", "-finished_at"],
                name="stagerun_completed",
                condition=Q(status="COMPLETED"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.stage} #{self.attempt} ({self.status})"

    @property
    def duration_ms(self) -> int | None:
        """How long the attempt ran, once it has ended."""
        if self.started_at and self.finished_at:
            return int((self.finished_at - self.started_at).total_seconds() * 1000)
        return None


class AuditTrailIsAppendOnly(Exception):
    """An attempt to change or delete an audit event: the trail only grows."""

    def __init__(self, what: str) -> None:
        super().__init__(f"Audit events cannot be {what}: the audit trail is append-only.")


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    """Audit events, read and added, never changed or deleted in bulk either."""

    def update(self, **kwargs: Any) -> int:
        """Refused: :class:`AuditTrailIsAppendOnly`."""
        raise AuditTrailIsAppendOnly("changed")

    def delete(self) -> tuple[int, dict[str, int]]:
        """Refused: :class:`AuditTrailIsAppendOnly`."""
        raise AuditTrailIsAppendOnly("deleted")


class AuditEvent(models.Model):
    """Who changed what about a job, when, why and from where; written with every transition.

    Append-only: a row is written once and never changed or deleted. The model
    and its queryset refuse it here, and a trigger of the database refuses any
    ``UPDATE`` or ``DELETE`` of the table (migration 0007), so raw SQL cannot
    either. What an event points at (its matter, job and actor) is protected in
    turn: deleting it is refused while it has audit events.
    """

    matter = models.ForeignKey(Matter, on_delete=models.PROTECT, related_name="audit_events")
    job = models.ForeignKey(
        ProcessingJob, null=True, blank=True, on_delete=models.PROTECT, related_name="audit"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=64)
    status_before = models.CharField(
        max_length=16, blank=True, default="", help_text="The job's status before; blank for new."
    )
    status_after = models.CharField(max_length=16, blank=True, default="")
    reason = models.TextField(blank=True, default="", help_text="Why, as the person gave it.")
    client_address = models.GenericIPAddressField(
        null=True, blank=True, help_text="Where the person's request came from."
    )
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["job", "created_at"], name="audit_job")]

    def __str__(self) -> str:
        who = self.actor or "system"
        return f"{self.action} by {who} at {self.created_at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Write a new event; an event already written is refused."""
        if not self._state.adding:
            raise AuditTrailIsAppendOnly("changed")
        # Never an UPDATE, even for a new event given an id that exists.
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        """Refused: :class:`AuditTrailIsAppendOnly`."""
        raise AuditTrailIsAppendOnly("deleted")


class DocumentPage(models.Model):
    """The text of one page of a document: the ``extract`` stage's checkpoint."""

    class Source(models.TextChoices):
        """Where the page's text came from."""

        TEXT_LAYER = "text_layer", "Text layer"
        """Read from the document's own text."""
        OCR = "ocr", "OCR"
        """Recognised from the page image."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="pages")
    page_number = models.PositiveIntegerField(help_text="1-based.")
    text = models.TextField(blank=True, default="")
    char_count = models.IntegerField(default=0)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.TEXT_LAYER)

    class OcrStatus(models.TextChoices):
        """What the ``ocr`` stage did with the page: its checkpoint."""

        PENDING = "", "Not looked at yet"
        """The ``ocr`` stage has not reached this page."""
        NOT_NEEDED = "not_needed", "Not needed"
        """The page has enough text of its own, or cannot be drawn (text formats)."""
        RECOGNISED = "recognised", "Recognised"
        """Read by Tesseract; the text and its confidence are stored."""
        FAILED = "failed", "Failed"
        """Tesseract could not read it; ``ocr_note`` says why."""

    ocr_status = models.CharField(
        max_length=16, choices=OcrStatus.choices, blank=True, default=OcrStatus.PENDING
    )
    ocr_confidence = models.FloatField(
        null=True, blank=True, help_text="Mean word confidence, 0-100."
    )
    ocr_note = models.CharField(max_length=500, blank=True, default="")
    entities_done = models.BooleanField(
        default=False, help_text="The entities stage's checkpoint for this page."
    )
    text_note = models.CharField(
        max_length=500, blank=True, default="", help_text="Why the text is incomplete, if it is."
    )
    entities_note = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text="Why the entities stage stopped counting on this page, if it did.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["document", "page_number"]
        constraints = [
            models.UniqueConstraint(fields=["document", "page_number"], name="page_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.document} p.{self.page_number}"


class DocumentChunk(models.Model):
    """A passage of a document's text, with its page span: what search finds.

    Written by the ``chunk`` stage under a unique (document, index) key; the
    ``index`` stage fills ``search_vector`` (its checkpoint: non-null).
    """

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    matter = models.ForeignKey(Matter, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField(help_text="0-based position in the document.")
    text = models.TextField()
    page_start = models.PositiveIntegerField()
    page_end = models.PositiveIntegerField()
    char_start = models.PositiveIntegerField(default=0, help_text="Offset in page_start's text.")
    search_vector = SearchVectorField(null=True, blank=True)
    language = models.CharField(max_length=32, default="english")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["document", "index"]
        constraints = [
            models.UniqueConstraint(fields=["document", "index"], name="chunk_unique_index")
        ]
        indexes = [
            GinIndex(fields=["search_vector"], name="chunk_search_gin"),
            models.Index(fields=["matter"], name="chunk_matter"),
        ]

    def __str__(self) -> str:
        return f"{self.document} chunk {self.index} (pp. {self.page_start}-{self.page_end})"


class Entity(models.Model):
    """A date, amount, email, phone number or case citation found on a page."""

    class Kind(models.TextChoices):
        """What sort of thing was found."""

        DATE = "date", "Date"
        """A calendar date; ``value`` is ISO 8601."""
        MONEY = "money", "Money"
        """An amount with its currency; ``value`` is like ``USD 1200.00``."""
        EMAIL = "email", "Email address"
        """``value`` is lower-cased."""
        PHONE = "phone", "Phone number"
        """``value`` is digits with a leading + where known."""
        CITATION = "citation", "Case citation"
        """A U.S. case citation (eyecite); ``value`` is its corrected form."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="entities")
    matter = models.ForeignKey(Matter, on_delete=models.CASCADE, related_name="entities")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    text = models.CharField(max_length=500, help_text="As it appears in the page.")
    value = models.CharField(max_length=500, help_text="Normalised.")
    page_number = models.PositiveIntegerField()
    start = models.PositiveIntegerField(help_text="Character offset in the page's text.")
    end = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["document", "page_number", "start"]
        constraints = [
            models.UniqueConstraint(
                fields=["document", "page_number", "kind", "start"], name="entity_unique_place"
            )
        ]
        indexes = [models.Index(fields=["matter", "kind"], name="entity_matter_kind")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.value} (p. {self.page_number})"


class ApiToken(models.Model):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="After this it is refused; empty: it does not expire."
    )
    revoked_at = models.DateTimeField(null=True, blank=True, help_text="Refused from then on.")

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    def usable(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


class CallbackNonce(models.Model):
    """A nonce an external processor sent with an accepted callback, so a replay is refused.

    Kept a day (:mod:`processing.jobs.retention` prunes older ones): a replay older
    than five minutes is refused for its timestamp anyway.
    """

    nonce = models.CharField(max_length=100, unique=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.nonce
