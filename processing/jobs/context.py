"""What a stage gets to work with: its job, its document, progress and stop checks."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from processing.errors import StageCancelled
from processing.jobs import lifecycle
from processing.models import Document, ProcessingJob, StageRun


@dataclass
class StageContext:
    """Passed to every stage function.

    ``progress`` writes are throttled to one per ``PROGRESS_WRITE_INTERVAL``
    seconds (the last one always goes through when the stage ends), and each
    write also tells whether the job is still ours to run, so ``should_stop``
    asks the database only when no write answered within ``CANCEL_CHECK_INTERVAL``.
    """

    job: ProcessingJob
    stage_run: StageRun
    items_done: int = 0
    items_total: int = 0
    # begin_stage has just written the counters and checked the token.
    _last_write: float = field(default_factory=time.monotonic, repr=False)
    # When the database last said whether the job is still ours (a write or a check).
    _last_check: float = field(default_factory=time.monotonic, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def document(self) -> Document:
        """The document being processed (loaded on first use, then kept)."""
        return self.job.document

    @property
    def dispatch_id(self) -> uuid.UUID:
        """The token of the queue entry this stage runs under."""
        return self.job.dispatch_id

    @property
    def path(self) -> Path:
        """Where the document's file is on disk."""
        return Path(self.document.file.path)

    def progress(self, done: int, total: int) -> None:
        """Record that ``done`` of ``total`` items are finished."""
        self.items_done, self.items_total = done, total
        now = time.monotonic()
        if now - self._last_write < settings.PROGRESS_WRITE_INTERVAL:
            return
        self._last_write = self._last_check = now
        still_ours = lifecycle.record_progress(self.job, self.stage_run, done=done, total=total)
        if not still_ours:
            self._stopped = True

    def should_stop(self) -> bool:
        """True once the job was cancelled (or taken over): stop at the next item.

        Asked between items. The answer is at most ``CANCEL_CHECK_INTERVAL``
        seconds old (a query costs about a millisecond, too much for every one
        of a thousand quick items), so a stage whose items take longer stops at
        the first item after a cancel.
        """
        now = time.monotonic()
        if not self._stopped and now - self._last_check >= settings.CANCEL_CHECK_INTERVAL:
            self._last_check = now
            self._stopped = not lifecycle.still_running(self.job)
        return self._stopped

    def stop_if_asked(self) -> None:
        """Raise :class:`StageCancelled` when :meth:`should_stop` says so."""
        if self.should_stop():
            raise StageCancelled()
