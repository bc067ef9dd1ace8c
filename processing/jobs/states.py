"""Statuses of jobs and stage runs, and the transitions allowed between them.

This module is the one place that says which status may follow which.
:mod:`processing.jobs.lifecycle` asks it before every change and raises
:class:`InvalidTransition` for anything not declared here.

Job transitions::

    QUEUED      -> PROCESSING   a worker starts a stage
    QUEUED      -> CANCELLED    cancelled before it ran
    PROCESSING  -> QUEUED       a transient failure waits for its next automatic attempt
    PROCESSING  -> QUEUED       recovery took over the stage of a lost worker (WORKER_LOST)
    PROCESSING  -> QUEUED       a worker shutting down handed its stage back
    PROCESSING  -> COMPLETED    the last stage finished
    PROCESSING  -> FAILED       a permanent error, or the last automatic retry failed (or
                                its worker was lost on the last one)
    PROCESSING  -> CANCELLED    cancelled while running; the stage stops at its next item
    FAILED      -> QUEUED       retried by a person; resumes from the failed stage
    FAILED      -> QUEUED       its failed stage skipped by a person; goes on with the next one
    FAILED      -> COMPLETED    its failed stage, the last one, skipped by a person
    FAILED      -> SKIPPED      given up by a person; the document stays incompletely processed

Stage-run transitions::

    PENDING     -> IN_PROGRESS | SKIPPED
    IN_PROGRESS -> COMPLETED | FAILED | SKIPPED
"""

from __future__ import annotations

from django.db import models


class JobStatus(models.TextChoices):
    """Where a processing job stands."""

    QUEUED = "QUEUED", "Queued"
    """Waiting for a worker: new, retried, or waiting for its next automatic attempt."""
    PROCESSING = "PROCESSING", "Processing"
    """A worker is running (or is about to run) one of its stages."""
    COMPLETED = "COMPLETED", "Completed"
    """Every stage finished."""
    FAILED = "FAILED", "Failed"
    """Stopped on an error; a person may retry or skip it."""
    CANCELLED = "CANCELLED", "Cancelled"
    """Stopped by a person before it finished."""
    SKIPPED = "SKIPPED", "Skipped"
    """Failed and given up on; the document is incompletely processed."""


class StageStatus(models.TextChoices):
    """Where one attempt at one stage stands."""

    PENDING = "PENDING", "Pending"
    """Not started yet."""
    IN_PROGRESS = "IN_PROGRESS", "In progress"
    """A worker is running it."""
    COMPLETED = "COMPLETED", "Completed"
    """Finished; its results are stored."""
    FAILED = "FAILED", "Failed"
    """Ended on an error."""
    SKIPPED = "SKIPPED", "Skipped"
    """Not run to the end: the job was cancelled or skipped, or a person skipped this stage."""


JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    JobStatus.QUEUED: frozenset({JobStatus.PROCESSING, JobStatus.CANCELLED}),
    JobStatus.PROCESSING: frozenset(
        {JobStatus.QUEUED, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED, JobStatus.COMPLETED, JobStatus.SKIPPED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
    JobStatus.SKIPPED: frozenset(),
}

STAGE_TRANSITIONS: dict[str, frozenset[str]] = {
    StageStatus.PENDING: frozenset({StageStatus.IN_PROGRESS, StageStatus.SKIPPED}),
    StageStatus.IN_PROGRESS: frozenset(
        {StageStatus.COMPLETED, StageStatus.FAILED, StageStatus.SKIPPED}
    ),
    StageStatus.COMPLETED: frozenset(),
    StageStatus.FAILED: frozenset(),
    StageStatus.SKIPPED: frozenset(),
}

ACTIVE_JOB_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING})
FINISHED_JOB_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SKIPPED}
)
"""Statuses after which nothing happens on its own (FAILED waits for a person)."""


class InvalidTransition(Exception):
    """A status change that is not allowed from the current status."""

    def __init__(self, current: str, target: str, what: str = "job") -> None:
        self.current = str(current)
        self.target = str(target)
        super().__init__(f"A {what} that is {self.current} cannot become {self.target}.")


def check_job_transition(current: str, target: str) -> None:
    """Raise :class:`InvalidTransition` unless a job may go from ``current`` to ``target``."""
    if target not in JOB_TRANSITIONS[current]:
        raise InvalidTransition(current, target)


def check_stage_transition(current: str, target: str) -> None:
    """Raise :class:`InvalidTransition` unless a stage run may go from ``current`` to ``target``."""
    if target not in STAGE_TRANSITIONS[current]:
        raise InvalidTransition(current, target, what="stage")
