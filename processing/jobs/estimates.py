"""Progress, ETA and queue position: the one place their formulas live.

How the work is taken, which the formula follows: workers take stages from the
queues in the order high, default, low; each queue is first in, first out; and a
finished stage puts the job's next stage at the *back* of its queue. So the jobs
of one queue take turns, one stage each, and a job is done once the queues taken
before its own are empty and every other job of its own queue has run as many
stages as it has left (all of them, if it has fewer).

For a QUEUED or PROCESSING job J with ``m`` stages left (its current one included)::

    cost(K, stage) = seconds_per_page(stage) × pages(K)
    own(J)         = the current stage's items left at its own pace
                     (elapsed / items_done × items left) once it has done some,
                     else cost(J, stage) × the share of its items left;
                     + cost(J, s) for every stage s after it
    others(J)      = Σ over the other due QUEUED/PROCESSING jobs K of J's queue:
                         the cost of K's next min(m_K, m) stages
                   + Σ over those of the queues taken before J's: all K's stages left
    eta(J)         = max(own(J), (own(J) + others(J)) / workers)
                     + the wait for J's next automatic attempt, if it waits for one

``seconds_per_page(stage)`` is the total seconds of the last ``HISTORY_RUNS``
completed runs of the stage over their documents' total pages (a document of
unknown or no pages counts one): weighting by pages is steadier than a mean of
per-run ratios, and makes a 300-page job's estimate a hundred times a 3-page
one's. Every stage is priced per page, OCR included: its cost is in the few
pages that need reading, but the pass over the others is cheap, so its per-page
average is what a mix of documents costs (``bench/eta_accuracy.py`` measures
how far that goes). ``workers`` is the number of RQ workers, 1 when Redis cannot
be asked. The current stage's partial share of the other jobs is priced from
their counters, never their pace. A stage with no history counts nothing, and
with neither history nor a pace of its own the ETA is None rather than a guess.

The queue position of a QUEUED job is its place among the due QUEUED jobs in the
order workers take them (queue, then time enqueued).

:func:`for_jobs` estimates a whole page of jobs in a fixed number of queries
(the history, cached for ``HISTORY_CACHE_SECONDS``; the queue positions; the
work of the active jobs, summed per queue and stage) and one call to Redis.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from processing.jobs import queues
from processing.jobs.states import ACTIVE_JOB_STATUSES, JobStatus, StageStatus
from processing.models import Document, ProcessingJob, StageRun
from processing.pipeline.registry import Pipeline, get_pipeline, job_types

HISTORY_RUNS = 50
"""Completed runs per stage that its seconds per page are learned from."""
HISTORY_CACHE_SECONDS = 30.0
"""How long a process keeps the learned figures before asking the database again."""
QUEUE_ORDER = {name: rank for rank, name in enumerate(queues.QUEUES)}
"""Rank of each queue in the order workers take them; an unknown queue ranks as default."""
_DEFAULT_RANK = QUEUE_ORDER[queues.DEFAULT]


@dataclass(frozen=True)
class Estimate:
    """What the job object shows of a job's wait and remaining time."""

    queue_position: int | None
    eta_seconds: int | None
    estimated_completion: datetime | None


NO_ESTIMATE = Estimate(None, None, None)


# --- history ---------------------------------------------------------------------------

_history: tuple[float, dict[str, float]] | None = None

_HISTORY_SQL = f"""
    SELECT s.stage,
        SUM(EXTRACT(EPOCH FROM r.finished_at - r.started_at)),
        SUM(GREATEST(COALESCE(d.page_count, 1), 1))
    FROM unnest(%(stages)s::text[]) AS s(stage)
    CROSS JOIN LATERAL (
        SELECT run.job_id, run.started_at, run.finished_at
        FROM {StageRun._meta.db_table} run
        WHERE run.stage = s.stage AND run.status = %(completed)s
            AND run.started_at IS NOT NULL AND run.finished_at IS NOT NULL
        ORDER BY run.finished_at DESC
        LIMIT %(runs)s
    ) r
    JOIN {ProcessingJob._meta.db_table} j ON j.id = r.job_id
    JOIN {Document._meta.db_table} d ON d.id = j.document_id
    GROUP BY s.stage
"""


def seconds_per_page() -> dict[str, float]:
    """Recent seconds per page of every stage that has completed runs (one query, cached)."""
    global _history
    now = time.monotonic()
    if _history is not None and now - _history[0] < HISTORY_CACHE_SECONDS:
        return _history[1]
    stages = sorted({s.name for t in job_types() for s in get_pipeline(t).stages})
    with connection.cursor() as cursor:
        cursor.execute(
            _HISTORY_SQL,
            {"stages": stages, "completed": StageStatus.COMPLETED, "runs": HISTORY_RUNS},
        )
        rates = {stage: float(seconds) / int(pages) for stage, seconds, pages in cursor.fetchall()}
    _history = (now, rates)
    return rates


def clear_history() -> None:
    """Forget the cached figures (tests, or after a bulk import of history)."""
    global _history
    _history = None


# --- queue positions -------------------------------------------------------------------

_RANK_SQL = (
    "CASE queue_name "
    + " ".join(f"WHEN '{name}' THEN {rank}" for name, rank in QUEUE_ORDER.items())
    + f" ELSE {_DEFAULT_RANK} END"
)

_POSITIONS_SQL = f"""
    WITH due AS (
        SELECT id, enqueued_at, {_RANK_SQL} AS rank
        FROM {ProcessingJob._meta.db_table}
        WHERE status = %(queued)s AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s)
    ), placed AS (
        SELECT id, RANK() OVER (ORDER BY rank, enqueued_at) AS position FROM due
    )
    SELECT id, position FROM placed WHERE id = ANY(%(ids)s)
    UNION ALL
    SELECT waiting.id, 1 + (
        SELECT COUNT(*) FROM due
        WHERE due.rank < waiting.rank
            OR (due.rank = waiting.rank AND due.enqueued_at < waiting.enqueued_at)
    )
    FROM (
        SELECT id, enqueued_at, {_RANK_SQL} AS rank
        FROM {ProcessingJob._meta.db_table}
        WHERE id = ANY(%(ids)s) AND status = %(queued)s AND next_attempt_at > %(now)s
    ) waiting
"""


def queue_positions(jobs: Iterable[ProcessingJob], *, now: datetime) -> dict[uuid.UUID, int]:
    """The 1-based place of each QUEUED job among the due ones, in one query.

    A job waiting for its next automatic attempt gets the place it would take now.
    """
    ids = [job.pk for job in jobs if job.status == JobStatus.QUEUED]
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_POSITIONS_SQL, {"queued": JobStatus.QUEUED, "now": now, "ids": ids})
        return {job_id: int(position) for job_id, position in cursor.fetchall()}


def queue_position(job: ProcessingJob) -> int | None:
    """1-based place of a QUEUED job among the jobs waiting for a worker, else None."""
    return queue_positions([job], now=timezone.now()).get(job.pk)


# --- the work of the active jobs -------------------------------------------------------

_pages_sql = "GREATEST(COALESCE(d.page_count, 1), 1)"
_share_left_sql = (
    "CASE WHEN j.items_total > 0 "
    "THEN GREATEST(j.items_total - j.items_done, 0)::float / j.items_total ELSE 1 END"
)
_WORK_SQL = f"""
    SELECT j.job_type, j.queue_name, j.current_stage,
        SUM({_pages_sql}), SUM({_pages_sql} * {_share_left_sql})
    FROM {ProcessingJob._meta.db_table} j
    JOIN {Document._meta.db_table} d ON d.id = j.document_id
    WHERE j.status = ANY(%(active)s)
        AND (j.next_attempt_at IS NULL OR j.next_attempt_at <= %(now)s)
    GROUP BY j.job_type, j.queue_name, j.current_stage
"""


@dataclass(frozen=True)
class _Work:
    """The due active jobs of one job type, queue and current stage, summed."""

    pipeline: Pipeline
    rank: int
    stage: int
    """0-based index of their current stage in ``pipeline``."""
    pages: float
    pages_left: float
    """Their pages times the share of the current stage's items left."""

    def cost(self, stages: int | None, rates: dict[str, float]) -> float:
        """Seconds of their next ``stages`` stages (None: all they have left)."""
        names = [s.name for s in self.pipeline.stages[self.stage :]][:stages]
        if not names:
            return 0.0
        rest = sum(rates.get(name, 0.0) for name in names[1:])
        return rates.get(names[0], 0.0) * self.pages_left + rest * self.pages


def _active_work(now: datetime) -> list[_Work]:
    with connection.cursor() as cursor:
        cursor.execute(_WORK_SQL, {"active": list(ACTIVE_JOB_STATUSES), "now": now})
        rows = cursor.fetchall()
    out = []
    for job_type, queue_name, stage, pages, pages_left in rows:
        try:
            pipeline = get_pipeline(job_type)
        except KeyError:
            continue
        names = [s.name for s in pipeline.stages]
        out.append(
            _Work(
                pipeline=pipeline,
                rank=QUEUE_ORDER.get(queue_name, _DEFAULT_RANK),
                stage=names.index(stage) if stage in names else 0,
                pages=float(pages),
                pages_left=float(pages_left),
            )
        )
    return out


def _worker_count() -> int:
    from django_rq import get_connection
    from rq import Worker

    try:
        return max(Worker.count(connection=get_connection("default")), 1)
    except Exception:  # Redis down: the estimate is still worth something.
        return 1


# --- one job ---------------------------------------------------------------------------


def _own(job: ProcessingJob, rates: dict[str, float], now: datetime) -> tuple[float, float, bool]:
    """The job's own remaining seconds; the same priced from history alone (as
    :data:`_WORK_SQL` counts it among the others); and whether there was any basis."""
    pipeline = get_pipeline(job.job_type)
    names = [s.name for s in pipeline.stages]
    current = names.index(job.current_stage) if job.current_stage in names else 0
    pages = max(job.document.page_count or 1, 1)
    share_left = (
        max(job.items_total - job.items_done, 0) / job.items_total if job.items_total > 0 else 1.0
    )
    later = [rates[n] * pages for n in names[current + 1 :] if n in rates]
    by_history = sum(later) + rates.get(names[current], 0.0) * pages * share_left
    basis = bool(later) or names[current] in rates
    if job.status == JobStatus.PROCESSING and job.items_done > 0 and job.stage_started_at:
        elapsed = (now - job.stage_started_at).total_seconds()
        pace = elapsed / job.items_done * max(job.items_total - job.items_done, 0)
        return sum(later) + pace, by_history, True
    return by_history, by_history, basis


def _eta(
    job: ProcessingJob,
    *,
    rates: dict[str, float],
    work: list[_Work],
    workers: int,
    now: datetime,
) -> int | None:
    own, own_by_history, basis = _own(job, rates, now)
    if not basis:
        return None
    pipeline = get_pipeline(job.job_type)
    names = [s.name for s in pipeline.stages]
    left = len(names) - (names.index(job.current_stage) if job.current_stage in names else 0)
    rank = QUEUE_ORDER.get(job.queue_name, _DEFAULT_RANK)
    others = 0.0
    for group in work:
        if group.rank < rank:
            others += group.cost(None, rates)
        elif group.rank == rank:
            others += group.cost(left, rates)
    waiting = job.next_attempt_at is not None and job.next_attempt_at > now
    if not waiting:
        others -= own_by_history  # the job itself is in ``work``
    remaining = max(own, (own + max(others, 0.0)) / workers)
    if job.status == JobStatus.QUEUED and waiting and job.next_attempt_at:
        remaining += (job.next_attempt_at - now).total_seconds()
    return int(round(remaining))


# --- the entry points ------------------------------------------------------------------


def for_jobs(jobs: Iterable[ProcessingJob], *, now: datetime | None = None) -> dict[Any, Estimate]:
    """The estimate of each job, by id, in a fixed number of queries whatever their number.

    The jobs should have their ``document`` select_related.
    """
    jobs = list(jobs)
    now = now or timezone.now()
    active = [job for job in jobs if job.status in (JobStatus.QUEUED, JobStatus.PROCESSING)]
    out = {job.pk: NO_ESTIMATE for job in jobs}
    if not active:
        return out
    positions = queue_positions(active, now=now)
    rates = seconds_per_page()
    work = _active_work(now) if rates else []
    workers = _worker_count()
    for job in active:
        eta = _eta(job, rates=rates, work=work, workers=workers, now=now)
        out[job.pk] = Estimate(
            queue_position=positions.get(job.pk),
            eta_seconds=eta,
            estimated_completion=estimated_completion(eta, now),
        )
    return out


def estimate(job: ProcessingJob, *, now: datetime | None = None) -> Estimate:
    """The estimate of one job (see :func:`for_jobs`)."""
    return for_jobs([job], now=now)[job.pk]


def estimated_completion(eta: int | None, now: datetime) -> datetime | None:
    """The wall-clock time ``eta`` seconds from ``now``."""
    return None if eta is None else now + timedelta(seconds=eta)
