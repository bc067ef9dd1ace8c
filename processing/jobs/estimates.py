"""Progress, ETA and queue position: the one place their formulas live.

ETA = what is left of the current stage at the pace it has run so far, plus,
for each stage still to come, the recent average time per item of that stage
(from completed stage runs) times the document's pages. A queued job adds its
wait: the jobs ahead of it at the recent average job time, shared among the
workers. With no history and no pace yet there is nothing to estimate from,
and the ETA is None rather than a guess.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from processing.jobs import queues
from processing.jobs.states import JobStatus, StageStatus
from processing.models import ProcessingJob, StageRun
from processing.pipeline.registry import get_pipeline

HISTORY_RUNS = 50
HISTORY_CACHE_SECONDS = 30.0
QUEUE_ORDER = {name: rank for rank, name in enumerate(queues.QUEUES)}

_history: dict[str, tuple[float, float | None]] = {}


def seconds_per_item(stage: str) -> float | None:
    """Recent average seconds per item of ``stage`` (a stage with no items counts one)."""
    cached = _history.get(stage)
    now = time.monotonic()
    if cached and now - cached[0] < HISTORY_CACHE_SECONDS:
        return cached[1]
    runs = list(
        StageRun.objects.filter(stage=stage, status=StageStatus.COMPLETED)
        .exclude(started_at=None)
        .order_by("-finished_at")
        .values_list("started_at", "finished_at", "items_total")[:HISTORY_RUNS]
    )
    value: float | None = None
    if runs:
        per_item = [
            (end - start).total_seconds() / max(items, 1)
            for start, end, items in runs
            if start and end
        ]
        value = sum(per_item) / len(per_item) if per_item else None
    _history[stage] = (now, value)
    return value


def clear_history() -> None:
    """Forget cached averages (tests, or after a bulk import of history)."""
    _history.clear()


def queue_position(job: ProcessingJob) -> int | None:
    """1-based place of a QUEUED job among the jobs waiting for a worker, else None."""
    if job.status != JobStatus.QUEUED:
        return None
    rank = QUEUE_ORDER.get(job.queue_name, 1)
    earlier_queues = [q for q, r in QUEUE_ORDER.items() if r < rank]
    ahead = (
        ProcessingJob.objects.queued()
        .exclude(next_attempt_at__gt=timezone.now())
        .filter(
            Q(queue_name__in=earlier_queues)
            | Q(queue_name=job.queue_name, enqueued_at__lt=job.enqueued_at)
        )
        .count()
    )
    return ahead + 1


def eta_seconds(job: ProcessingJob, *, now: datetime, position: int | None = None) -> int | None:
    """Seconds until the job is expected to finish, or None when there is no basis."""
    if job.status not in (JobStatus.QUEUED, JobStatus.PROCESSING):
        return None
    pipeline = get_pipeline(job.job_type)
    pages = max(job.document.page_count or 1, 1) if job.document_id else 1
    names = [s.name for s in pipeline.stages]
    current = names.index(job.current_stage) if job.current_stage in names else 0
    remaining = 0.0
    basis = False
    # The current stage: its own pace if it has one, else history.
    if job.status == JobStatus.PROCESSING and job.items_done > 0 and job.stage_started_at:
        elapsed = (now - job.stage_started_at).total_seconds()
        remaining += elapsed / job.items_done * max(job.items_total - job.items_done, 0)
        basis = True
    else:
        per_item = seconds_per_item(names[current])
        if per_item is not None:
            remaining += per_item * pages
            basis = True
    for name in names[current + 1 :]:
        per_item = seconds_per_item(name)
        if per_item is not None:
            remaining += per_item * pages
            basis = True
    if job.status == JobStatus.QUEUED:
        if job.next_attempt_at and job.next_attempt_at > now:
            remaining += (job.next_attempt_at - now).total_seconds()
        if position and position > 1:
            per_job = _seconds_per_job(names)
            if per_job is not None:
                remaining += per_job * (position - 1) / _worker_count()
    return int(round(remaining)) if basis else None


def _seconds_per_job(names: list[str]) -> float | None:
    values = [seconds_per_item(n) for n in names]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _worker_count() -> int:
    from django_rq import get_connection
    from rq import Worker

    try:
        return max(Worker.count(connection=get_connection("default")), 1)
    except Exception:  # Redis down: the estimate is still worth something.
        return 1


def matter_eta(matter_id: uuid.UUID | str, *, now: datetime | None = None) -> int | None:
    """Seconds until the last of a matter's active jobs is expected to finish.

    The running jobs (at most one per worker) and the matter's last queued job,
    whose wait counts everything ahead of it.
    """
    now = now or timezone.now()
    jobs = ProcessingJob.objects.filter(matter_id=matter_id).select_related("document")
    last_queued = jobs.filter(status=JobStatus.QUEUED).order_by("-enqueued_at").first()
    candidates = [*jobs.filter(status=JobStatus.PROCESSING), last_queued]
    etas = [
        eta_seconds(job, now=now, position=queue_position(job))
        for job in candidates
        if job is not None
    ]
    known = [eta for eta in etas if eta is not None]
    return max(known) if known else None


def estimated_completion(eta: int | None, now: datetime) -> datetime | None:
    """The wall-clock time ``eta`` seconds from ``now``."""
    return None if eta is None else now + timedelta(seconds=eta)
