"""Errors a stage can raise, each with a stable code and a message safe to show users.

A stage raises a :class:`PermanentError` when retrying cannot help (the file is
corrupt, encrypted or too big) and a :class:`TransientError` for anything that
may pass (a lost service, a timeout). Anything else a stage raises is treated as
transient ``INTERNAL_ERROR``: its traceback goes to the log and to staff, never
to the user.
"""

from __future__ import annotations


class StageError(Exception):
    """Base class: an error with a stable ``code`` and a user-safe ``message``."""

    code = "INTERNAL_ERROR"
    permanent = False
    default_message = "Something went wrong while processing this document. It will be retried."

    def __init__(self, message: str | None = None, *, detail: str = "") -> None:
        self.message = message or self.default_message
        self.detail = detail
        super().__init__(self.message if not detail else f"{self.message} ({detail})")


class PermanentError(StageError):
    """Retrying cannot help: the job fails at once."""

    permanent = True


class TransientError(StageError):
    """May pass on its own: the job is retried with backoff up to ``max_retries``."""


class CorruptDocument(PermanentError):
    """The file cannot be opened or parsed, even by a tolerant reader."""

    code = "CORRUPT_DOCUMENT"
    default_message = (
        "This file is damaged or is not a valid document, so it could not be read. "
        "Try exporting or saving it again and upload the new copy."
    )


class EncryptedDocument(PermanentError):
    """The document needs a password to open."""

    code = "ENCRYPTED_DOCUMENT"
    default_message = (
        "This document is protected with a password, so it could not be read. "
        "Remove the password and upload it again."
    )


class DocumentTooComplex(PermanentError):
    """The document is over a configured limit (pages, size, pixels)."""

    code = "DOCUMENT_TOO_COMPLEX"
    default_message = (
        "This document is larger or more complex than we can process "
        "(too many pages or too much content). Split it into smaller files and upload those."
    )


class StageTimeout(TransientError):
    """The stage ran past its time limit."""

    code = "TIMEOUT"
    default_message = "Processing took longer than allowed. It will be retried."


class ServiceUnavailable(TransientError):
    """PostgreSQL, Redis or an external processor could not be reached."""

    code = "SERVICE_UNAVAILABLE"
    default_message = "A service we depend on was unavailable. Processing will be retried."


class WorkerLost(TransientError):
    """The worker running the stage died or stopped heartbeating."""

    code = "WORKER_LOST"
    default_message = (
        "The worker processing this document stopped unexpectedly. It will be retried."
    )


class InternalError(TransientError):
    """Anything unexpected; the traceback is for staff only."""

    code = "INTERNAL_ERROR"


class ExternalStageFailed(StageError):
    """An external processor reported failure through the callback; permanent as reported.

    Its own message is kept for staff (the stage run's and the job's ``error_detail``):
    it comes from outside, so users read :attr:`default_message` instead.
    """

    code = "EXTERNAL_STAGE_FAILED"
    default_message = "The outside service working on this document reported a failure."

    def __init__(self, reported: str = "", *, permanent: bool) -> None:
        self.permanent = permanent
        tail = " It will not be retried." if permanent else " It will be retried."
        super().__init__(self.default_message + tail, detail=reported)


class StageCancelled(Exception):
    """Raised inside a stage when the job was cancelled (or taken over); not an error."""


class StageHandedBack(StageCancelled):
    """Raised inside a stage whose worker is shutting down: the stage goes back to its queue."""


SUGGESTED_ACTIONS: dict[str, str] = {
    CorruptDocument.code: "Check that the file opens on your computer, then upload a good copy.",
    EncryptedDocument.code: "Remove the password (save an unprotected copy) and upload that.",
    DocumentTooComplex.code: "Split the document into smaller files and upload those.",
    StageTimeout.code: "Retry it; if it times out again, ask staff to look at it.",
    ServiceUnavailable.code: "Retry it in a few minutes.",
    WorkerLost.code: "Retry it; if it fails again, ask staff to look at it.",
    InternalError.code: "Retry it; if it fails again, ask staff to look at it.",
    "INVALID_SEARCH_LANGUAGE": "Ask staff to fix the matter's search language, then retry.",
    ExternalStageFailed.code: "Retry it, or ask whoever runs the external service.",
}
"""What a person can do about a job that failed with each code (shown beside its error)."""
