"""Accepting an upload: check it, detect its type from its bytes, store it, create its job."""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from pathlib import PurePath

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from processing.documents import (
    PDF,
    SNIFF_BYTES,
    SUPPORTED_FORMATS,
    detect_content_type,
    detect_file,
    open_document,
    supported_description,
)
from processing.errors import StageError
from processing.jobs import lifecycle
from processing.models import Document, Matter, ProcessingJob
from processing.permissions import Person, account


class UploadRejected(Exception):
    """The upload was refused; ``code`` is the API error code, ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400, **details: object) -> None:
        self.code, self.message, self.status, self.details = code, message, status, details
        super().__init__(message)


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
    matter: Matter, upload: UploadedFile | None, *, by: Person
) -> tuple[Document, ProcessingJob]:
    """Validate and store ``upload`` in ``matter`` and create its processing job."""
    if upload is None:
        raise UploadRejected("VALIDATION_ERROR", "Choose a file to upload.", field="file")
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
    name = sanitize_filename(upload.name or "document")
    with transaction.atomic():
        document = Document(
            id=uuid.uuid4(),
            matter=matter,
            uploaded_by=account(by),
            original_name=(upload.name or name)[:255],
            content_type=content_type,
            size=upload.size,
            sha256=_sha256(upload),
        )
        document.file.save(name, upload, save=False)
        document.page_count = _quick_page_count(document)
        document.save(force_insert=True)
        job = lifecycle.create_job(document, by=by)
    return document, job


def _quick_page_count(document: Document) -> int | None:
    """The page count when the file opens cheaply now (it decides the queue); else None."""
    if document.content_type != PDF:
        return None
    try:
        with open_document(document.file.path, document.content_type, max_pages=10**9) as reader:
            return reader.page_count
    except StageError:
        return None
