"""What a stage gets to work with: its job, its document, progress and stop checks.

It also keeps the stage's lease alive (:class:`Heartbeat`), fences the stage's
result writes on it (:meth:`StageContext.fenced`), and hands the stage back when
its worker is shutting down (:func:`request_hand_back`).
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import Error as DatabaseError
from django.db import connection, transaction

from processing.errors import StageCancelled, StageHandedBack
from processing.jobs import lifecycle
from processing.models import Document, ProcessingJob, StageRun

logger = logging.getLogger(__name__)

# Set in a work horse whose worker is shutting down (a deploy's SIGTERM): the stage stops
# at its next item and goes back to its queue. An Event, so a signal handler may set it.
_hand_back = threading.Event()


def request_hand_back(*_signal: object) -> None:
    """Have the running stage stop at its next item and hand itself back (a signal handler)."""
    _hand_back.set()


def hand_back_requested() -> bool:
    """True once this process was asked to hand its stage back."""
    return _hand_back.is_set()


@dataclass
class StageContext:
    """Passed to every stage function.

    ``progress`` writes are throttled to one per ``PROGRESS_WRITE_INTERVAL``
    seconds (the last one always goes through when the stage ends), and each
    write also tells whether the job is still ours to run, so ``should_stop``
    asks the database only when no write answered within ``CANCEL_CHECK_INTERVAL``.
    Each write also renews the stage's lease.
    """

    job: ProcessingJob
    stage_run: StageRun
    items_done: int = 0
    items_total: int = 0
    # begin_stage has just written the counters, checked the token and taken the lease.
    _last_write: float = field(default_factory=time.monotonic, repr=False)
    # When the database last said whether the job is still ours (a write or a check).
    _last_check: float = field(default_factory=time.monotonic, repr=False)
    # When the lease was last renewed (a write, or the heartbeat).
    _last_renewal: float = field(default_factory=time.monotonic, repr=False)
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
        self._last_write = self._last_check = self._last_renewal = now
        still_ours = lifecycle.record_progress(self.job, self.stage_run, done=done, total=total)
        if not still_ours:
            self._stopped = True

    def should_stop(self) -> bool:
        """True once the job was cancelled (or taken over), or the worker is shutting down.

        Asked between items. The answer is at most ``CANCEL_CHECK_INTERVAL``
        seconds old (a query costs about a millisecond, too much for every one
        of a thousand quick items), so a stage whose items take longer stops at
        the first item after a cancel. A shutdown is known at once (no query).
        """
        if _hand_back.is_set():
            return True
        now = time.monotonic()
        if not self._stopped and now - self._last_check >= settings.CANCEL_CHECK_INTERVAL:
            self._last_check = now
            self._stopped = not lifecycle.still_running(self.job)
        return self._stopped

    def stop_if_asked(self) -> None:
        """Raise :class:`StageCancelled` when :meth:`should_stop` says so.

        :class:`StageHandedBack` (a kind of it) when the worker is shutting down
        and the stage is still its own to give back.
        """
        if self.should_stop():
            if _hand_back.is_set() and not self._stopped:
                raise StageHandedBack()
            raise StageCancelled()

    def fence(self) -> None:
        """Inside a transaction: hold the stage's job row, or raise :class:`StageCancelled`.

        Call it first in a transaction that writes results (see :meth:`fenced`);
        the caller's transaction must then be rolled back when it raises.
        """
        if not lifecycle.hold_stage(self.job):
            self._stopped = True
            raise StageCancelled()

    @contextlib.contextmanager
    def fenced(self) -> Iterator[None]:
        """A transaction for the stage's result writes that commits only while the stage is
        still its worker's.

        It starts by locking the job row ``FOR SHARE`` under the stage's token
        (:func:`lifecycle.hold_stage`): a rescue, cancel or hand-back waits for it
        to commit, and once one has committed the block is never run: it raises
        :class:`StageCancelled` and nothing is written. A work horse whose stage was
        taken over (it lost its lease, and is still alive) therefore never stores a
        result beside the new attempt's. Do not record progress inside it (the
        progress write of another thread could wait for this lock while this
        transaction waits for it).
        """
        with transaction.atomic():
            self.fence()
            yield


class Heartbeat:
    """Renews a stage's lease while the stage writes no progress, from a thread of its own.

    Most stages write progress (which renews the lease) or end well within
    ``LEASE_RENEW_SECONDS``, so the thread usually only waits and never opens a
    database connection. When one is due it renews the lease with one conditional
    UPDATE on the thread's own connection (a thread gets its own from Django),
    closed when the thread ends. A refused renewal means the stage was taken over
    (rescued, cancelled): the context's ``should_stop`` turns True.
    """

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self._done = threading.Event()
        self._renewing = False

    def __enter__(self) -> Heartbeat:
        # A bare thread: threading.Thread.start() and join() each wait for the other
        # thread to be scheduled, half a millisecond per stage on a busy machine. Nothing
        # waits for this one: once told to stop it ends at once, and a renewal still in
        # flight after the stage ended is refused (the token or the status changed).
        _thread.start_new_thread(self._run, ())
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()

    def _run(self) -> None:
        interval = float(settings.LEASE_RENEW_SECONDS)
        try:
            while True:
                due = interval - (time.monotonic() - self.ctx._last_renewal)
                if due > 0:
                    if self._done.wait(due):
                        return
                    continue
                if self.ctx._stopped:
                    return
                self.ctx._last_renewal = time.monotonic()
                self._renewing = True
                try:
                    ours = lifecycle.renew_lease(self.ctx.job)
                except DatabaseError as exc:
                    # PostgreSQL away: try again at the next beat; should the lease run
                    # out meanwhile, recovery rescues the stage and the fence stops it.
                    logger.warning("Could not renew the lease of job %s: %s", self.ctx.job.pk, exc)
                    with contextlib.suppress(DatabaseError):
                        connection.close()
                    continue
                if not ours:
                    self.ctx._stopped = True
                    return
        finally:
            if self._renewing:
                with contextlib.suppress(DatabaseError):
                    connection.close()  # this thread's own
