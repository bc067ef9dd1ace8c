"""Accepting an upload: check it, detect its type from its bytes, store it, create its job.

The same bytes (by SHA-256) uploaded again to the same matter are not stored or
processed again: the upload answers with the document already there, unless it
is let through on purpose (``allow_duplicate``). Two identical uploads at the
same moment take a PostgreSQL advisory lock on (matter, SHA-256) inside their
transaction, so the second waits for the first to commit and then finds it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import PurePath

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import connection, transaction

from processing.documents import (
    SNIFF_BYTES,
    SUPPORTED_FORMATS,
    detect_content_type,
    detect_file,
    supported_description,
)
from processing.jobs import lifecycle
from processing.models import Document, Matter, ProcessingJob
from processing.permissions import Person, account
from processing.pipeline.registry import DOCUMENT_PROCESSING


class UploadRejected(Exception):
    """The upload was refused; ``code`` is the API error code, ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400, **details: object) -> None:
        self.code, self.message, self.status, self.details = code, message, status, details
        super().__init__(message)


@dataclass(frozen=True)
class Accepted:
    """What an upload led to: its document and job, or, for a ``duplicate``, the ones
    already in the matter with the same bytes."""

    document: Document
    job: ProcessingJob
    duplicate: bool = False


def sanitize_filename(name: str) -> str:
    """A safe file name: no directories, no control or odd characters, bounded length."""
    name = PurePath(name.replace("\\", "/")).name
    name = unicodedata.normalize("NFKC", name)
    name = re.sub(r"[^\w.\- ()]+", "_", name, flags=re.UNICODE).strip(" ._")
    name = re.sub(r"\s+", " ", name)
    if not name:
        name = "document"
    stem, dot, ext = name.rpartition(".")
    if dot and len(ext) <= 10:
        return f"{stem[:120]}.{ext}" if stem else f"document.{ext}"
    return name[:130]


def _file_type(upload: UploadedFile) -> str | None:
    temp_path = getattr(upload, "temporary_file_path", None)
    if temp_path is not None:
        return detect_file(temp_path())
    upload.seek(0)
    head = upload.read(SNIFF_BYTES)
    upload.seek(0)
    content_type = detect_content_type(head, filename=upload.name or "")
    if content_type is None and head[:2] == b"PK":
        # A ZIP: whether it is a DOCX is in its directory, at the end of the file.
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".bin") as tmp:
            for chunk in upload.chunks():
                tmp.write(chunk)
            tmp.flush()
            content_type = detect_file(tmp.name)
        upload.seek(0)
    return content_type


def _sha256(upload: UploadedFile) -> str:
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


def accept_upload(
    matter: Matter,
    upload: UploadedFile | None,
    *,
    by: Person,
    allow_duplicate: bool = False,
    job_type: str = DOCUMENT_PROCESSING,
) -> Accepted:
    """Validate and store ``upload`` in ``matter`` and create its processing job.

    When the matter already has a document with the same bytes, nothing is stored and
    that document and its latest job are answered as a duplicate, unless
    ``allow_duplicate``.
    """
    if upload is None:
        raise UploadRejected("VALIDATION_ERROR", "Choose a file to upload.", field="file")
    content_type = _check(upload)
    sha256 = _sha256(upload)
    with transaction.atomic():
        _lock_same_bytes(matter, sha256)
        existing = None if allow_duplicate else _latest_job_with_bytes(matter, sha256)
        if existing is not None:
            return Accepted(existing.document, existing, duplicate=True)
        document = _store(matter, upload, content_type, sha256, by=by)
        job = lifecycle.create_job(document, by=by, job_type=job_type)
    return Accepted(document, job)


def upload_again(document: Document, name: str, *, by: Person) -> Accepted:
    """Upload the stored bytes of ``document`` once more as ``name``, duplicate or not.

    The matter page's "Upload anyway": its form cannot send the file a second time,
    but the bytes are the same as the stored document's, by their SHA-256.
    """
    with document.file.open("rb") as handle:
        upload = UploadedFile(handle, name=name or document.original_name, size=document.size)
        return accept_upload(document.matter, upload, by=by, allow_duplicate=True)


def _check(upload: UploadedFile) -> str:
    """The upload's detected content type; UploadRejected when it cannot be accepted."""
    if upload.size is not None and upload.size > settings.UPLOAD_MAX_BYTES:
        limit_mb = settings.UPLOAD_MAX_BYTES / (1024 * 1024)
        raise UploadRejected(
            "FILE_TOO_LARGE",
            f"This file is larger than the {limit_mb:g} MB limit.",
            status=413,
            max_bytes=settings.UPLOAD_MAX_BYTES,
            size=upload.size,
        )
    if not upload.size:
        raise UploadRejected("EMPTY_FILE", "This file is empty.")
    content_type = _file_type(upload)
    if content_type is None:
        raise UploadRejected(
            "UNSUPPORTED_FILE_TYPE",
            f"This kind of file is not supported. Upload a {supported_description()} file.",
            supported=list(SUPPORTED_FORMATS),
        )
    return content_type


def _lock_same_bytes(matter: Matter, sha256: str) -> None:
    """Hold, until the transaction ends, a lock that only uploads of these same bytes to
    this matter contend for; other uploads to the matter do not wait."""
    key = hashlib.sha256(f"upload:{matter.pk}:{sha256}".encode()).digest()[:8]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(key, "big", signed=True)]
        )


def _latest_job_with_bytes(matter: Matter, sha256: str) -> ProcessingJob | None:
    """The newest job of a document in ``matter`` with these bytes, with its document."""
    return (
        ProcessingJob.objects.filter(matter=matter, document__sha256=sha256)
        .select_related("document")
        .order_by("-created_at", "-id")
        .first()
    )


def _store(
    matter: Matter, upload: UploadedFile, content_type: str, sha256: str, *, by: Person
) -> Document:
    """Save the file and its document row."""
    name = sanitize_filename(upload.name or "document")
    document = Document(
        id=uuid.uuid4(),
        matter=matter,
        uploaded_by=account(by),
        original_name=(upload.name or name)[:255],
        content_type=content_type,
        size=upload.size or 0,  # never 0 here: _check refuses an empty file
        sha256=sha256,
    )
    # Its pages are counted by the first stage, in a worker: the web process never opens
    # a document (a parser that aborts on a hostile file would take the server down).
    document.file.save(name, upload, save=False)
    document.save(force_insert=True)
    return document
