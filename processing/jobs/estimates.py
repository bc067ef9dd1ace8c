"""Progress, ETA and queue position: the one place their formulas live.

How the work is taken, which the formula follows: workers take stages from the
queues in the order high, default, low; each queue is first in, first out; and a
finished stage puts the job's next stage at the *back* of its queue. So the jobs
of one queue take turns, one stage each, and a job is done once the queues taken
before its own are empty and every other job of its own queue has run as many
stages as it has left (all of them, if it has fewer).

For a QUEUED or PROCESSING job J with ``m`` stages left (its current one included)::

    cost(K, stage) = fixed(stage) + between + per_page(stage) × pages(K)
    own(J)         = the current stage's items left at its own pace
                     (elapsed / items_done × items left) once it has done some,
                     else cost(J, stage) × the share of its items left;
                     + cost(J, s) for every stage s after it
    others(J)      = Σ over the other due QUEUED/PROCESSING jobs K of J's queue:
                         the cost of K's next min(m_K, n) stages, where n is m, or
                         m - 1 once J's current stage has begun (it holds a worker)
                   + Σ over those of the queues taken before J's: all K's stages left
    eta(J)         = max(own(J), (own(J) + others(J)) / workers)
                     + the wait for J's next automatic attempt, if it waits for one

``fixed`` and ``per_page`` are the least-squares line through the seconds and
pages of the stage's last ``HISTORY_RUNS`` completed runs (a document of unknown
or no pages counts one); with one size of document only, or a line below zero,
it is their total seconds over their total pages. So a 300-page job's estimate
scales with its pages, while the tens of milliseconds every run costs whatever
its size are not lost on a 2-page one. ``between`` (:data:`BETWEEN_STAGES_SECONDS`)
is what the worker spends outside the run, which no row records. OCR is priced
per page like the rest: its cost is in the few pages that need reading, which
the history spreads over all pages (see ``bench/eta_accuracy.py`` for what that
costs a scanned document's early ETA). ``workers`` is the number of RQ workers,
1 when Redis cannot be asked. The other jobs' current stages too go at their
pace once they have one: a scan being read holds its worker for a while. A
stage with no history counts nothing, and with neither history nor a pace of
its own the ETA is None rather than a guess.

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

BETWEEN_STAGES_SECONDS = 0.04
"""What a worker spends on a stage outside its run's started/finished: taking the entry,
forking, the statements that begin and complete it, enqueueing the next. No row records
it; bench/eta_accuracy.py measured about 40 ms with the forking worker on 2 cores."""


@dataclass(frozen=True)
class StageCost:
    """A stage's learned seconds: ``fixed`` per run plus ``per_page`` per page."""

    fixed: float
    per_page: float

    def seconds(self, pages: float, runs: float = 1.0) -> float:
        """Seconds of ``runs`` runs over ``pages`` pages in all, with the worker's share."""
        return (self.fixed + BETWEEN_STAGES_SECONDS) * runs + self.per_page * pages


_history: tuple[float, dict[str, StageCost]] | None = None

_HISTORY_SQL = f"""
    SELECT s.stage,
        regr_intercept(r.seconds, r.pages), regr_slope(r.seconds, r.pages),
        SUM(r.seconds), SUM(r.pages), COUNT(*)
    FROM unnest(%(stages)s::text[]) AS s(stage)
    CROSS JOIN LATERAL (
        SELECT EXTRACT(EPOCH FROM run.finished_at - run.started_at)::float AS seconds,
            GREATEST(COALESCE(d.page_count, 1), 1)::float AS pages
        FROM {StageRun._meta.db_table} run
        JOIN {ProcessingJob._meta.db_table} j ON j.id = run.job_id
        JOIN {Document._meta.db_table} d ON d.id = j.document_id
        WHERE run.stage = s.stage AND run.status = %(completed)s
            AND run.started_at IS NOT NULL AND run.finished_at IS NOT NULL
        ORDER BY run.finished_at DESC
        LIMIT %(runs)s
    ) r
    GROUP BY s.stage
"""


def stage_costs() -> dict[str, StageCost]:
    """What each stage with completed runs has recently cost (one query, cached)."""
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
        rows = cursor.fetchall()
    costs = {}
    for stage, intercept, slope, seconds, pages, runs in rows:
        if intercept is None or slope is None or intercept < 0:  # one size: no line to fit
            costs[stage] = StageCost(0.0, seconds / pages)
        elif slope < 0:  # no sign that pages cost anything
            costs[stage] = StageCost(seconds / runs, 0.0)
        else:
            costs[stage] = StageCost(intercept, slope)
    _history = (now, costs)
    return costs


def clear_history() -> None:
    """Forget the cached figures (tests, or after a bulk import of history)."""
    global _history, _workers
    _history = None
    _workers = (float("-inf"), 1)


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
_paced_sql = "j.status = %(processing)s AND j.items_done > 0 AND j.stage_started_at IS NOT NULL"
_pace_left_sql = (
    "EXTRACT(EPOCH FROM %(now)s - j.stage_started_at)::float / j.items_done"
    " * GREATEST(j.items_total - j.items_done, 0)"
)
_WORK_SQL = f"""
    SELECT j.job_type, j.queue_name, j.current_stage, COUNT(*), SUM({_pages_sql}),
        SUM(CASE WHEN {_paced_sql} THEN 0 ELSE {_share_left_sql} END),
        SUM(CASE WHEN {_paced_sql} THEN 0 ELSE {_pages_sql} * {_share_left_sql} END),
        SUM(CASE WHEN {_paced_sql} THEN {_pace_left_sql} ELSE 0 END)
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
    jobs: float
    pages: float
    jobs_left: float
    """The number of jobs without a pace yet times the share of their stage's items left."""
    pages_left: float
    """Their pages times the share of the current stage's items left."""
    paced: float
    """Seconds left of the current stage of those with a pace, at their pace."""

    def cost(self, stages: int | None, costs: dict[str, StageCost]) -> float:
        """Seconds of their next ``stages`` stages (None: all they have left)."""
        total = self.paced if stages is None or stages > 0 else 0.0
        for n, stage in enumerate(self.pipeline.stages[self.stage :][:stages]):
            if stage.name in costs:
                cost = costs[stage.name]
                if n == 0:
                    total += cost.seconds(self.pages_left, self.jobs_left)
                else:
                    total += cost.seconds(self.pages, self.jobs)
        return total


def _active_work(now: datetime) -> list[_Work]:
    with connection.cursor() as cursor:
        cursor.execute(
            _WORK_SQL,
            {"active": list(ACTIVE_JOB_STATUSES), "now": now, "processing": JobStatus.PROCESSING},
        )
        rows = cursor.fetchall()
    out = []
    for job_type, queue_name, stage, jobs, pages, jobs_left, pages_left, paced in rows:
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
                jobs=float(jobs),
                pages=float(pages),
                jobs_left=float(jobs_left),
                pages_left=float(pages_left),
                paced=float(paced),
            )
        )
    return out


WORKER_COUNT_SECONDS = 5.0
"""How long a process reuses its count of the running workers."""
_workers: tuple[float, int] = (float("-inf"), 1)


def _worker_count() -> int:
    """The RQ workers running (at least 1), asked of Redis at most every few seconds."""
    global _workers
    from rq import Worker

    from processing.jobs.dispatch import redis_connection

    asked, count = _workers
    if time.monotonic() - asked < WORKER_COUNT_SECONDS:
        return count
    try:
        count = max(Worker.count(connection=redis_connection()), 1)
    except Exception:  # Redis down: the estimate is still worth something.
        count = 1
    _workers = (time.monotonic(), count)
    return count


# --- one job ---------------------------------------------------------------------------


def _own(
    job: ProcessingJob, costs: dict[str, StageCost], now: datetime
) -> tuple[list[float], bool]:
    """The seconds left of each of the job's stages left, its current one first, priced
    as :data:`_WORK_SQL` prices them among the others; and whether there was any basis."""
    pipeline = get_pipeline(job.job_type)
    names = [s.name for s in pipeline.stages]
    current = names.index(job.current_stage) if job.current_stage in names else 0
    pages = max(job.document.page_count or 1, 1)
    later = [costs[n].seconds(pages) if n in costs else 0.0 for n in names[current + 1 :]]
    basis = any(n in costs for n in names[current:])
    if job.status == JobStatus.PROCESSING and job.items_done > 0 and job.stage_started_at:
        elapsed = (now - job.stage_started_at).total_seconds()
        pace = elapsed / job.items_done * max(job.items_total - job.items_done, 0)
        return [pace, *later], True
    share_left = (
        max(job.items_total - job.items_done, 0) / job.items_total if job.items_total > 0 else 1.0
    )
    now_cost = costs.get(names[current])
    return [now_cost.seconds(pages) * share_left if now_cost else 0.0, *later], basis


def _eta(
    job: ProcessingJob,
    *,
    costs: dict[str, StageCost],
    work: list[_Work],
    workers: int,
    now: datetime,
) -> int | None:
    stages, basis = _own(job, costs, now)
    if not basis:
        return None
    own = sum(stages)
    # A stage that has begun holds its worker: only the stages after it queue again.
    running = job.status == JobStatus.PROCESSING and job.stage_attempt > 0
    queues_for = len(stages) - 1 if running else len(stages)
    rank = QUEUE_ORDER.get(job.queue_name, _DEFAULT_RANK)
    waiting = job.next_attempt_at is not None and job.next_attempt_at > now
    ahead: list[tuple[float, float]] = []  # (seconds, jobs) of each group
    for group in work:
        if group.rank < rank:
            ahead.append((group.cost(None, costs), group.jobs))
        elif group.rank == rank:
            seconds, jobs = group.cost(queues_for, costs), group.jobs
            if (
                not waiting
                and group.pipeline.job_type == job.job_type
                and (group.stage == len(group.pipeline.stages) - len(stages))
            ):  # the job itself is in this group
                seconds, jobs = seconds - sum(stages[:queues_for]), jobs - 1
            ahead.append((max(seconds, 0.0), jobs))
    remaining = _finish(own, ahead, workers)
    if job.status == JobStatus.QUEUED and waiting and job.next_attempt_at:
        remaining += (job.next_attempt_at - now).total_seconds()
    return int(round(remaining))


def _finish(own: float, ahead: list[tuple[float, float]], workers: int) -> float:
    """The T with T = max(own, (own + Σ min(seconds, jobs × T)) / workers).

    No job runs on two workers at once, so in the T seconds until this one is done a
    group of ``jobs`` jobs takes at most ``jobs × T`` of the workers' time: a long
    stage holding one worker leaves the others to the rest. Found by bisection.
    """

    def busy(t: float) -> float:
        return max(own, (own + sum(min(s, j * t) for s, j in ahead)) / workers)

    low, high = own, busy(own + sum(s for s, _ in ahead))
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if busy(middle) > middle else (low, middle)
    return high


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
    costs = stage_costs()
    work = _active_work(now) if costs else []
    workers = _worker_count()
    for job in active:
        eta = _eta(job, costs=costs, work=work, workers=workers, now=now)
        out[job.pk] = Estimate(
            queue_position=positions.get(job.pk),
            eta_seconds=eta,
            estimated_completion=estimated_completion(eta, now),
        )
    return out


def estimate(job: ProcessingJob, *, now: datetime | None = None) -> Estimate:
    """The estimate of one job (see :func:`for_jobs`)."""
    return for_jobs([job], now=now)[job.pk]


def matter_eta(matter_id: uuid.UUID | str, *, now: datetime | None = None) -> int | None:
    """Seconds until the last of a matter's active jobs is expected to finish.

    The latest estimate among the jobs that finish last: the matter's last queued job
    if it has one, else its least advanced running jobs (at most ten, so a matter with
    hundreds of jobs in flight costs no more).
    """
    jobs = ProcessingJob.objects.filter(matter_id=matter_id).select_related("document")
    last = list(jobs.filter(status=JobStatus.QUEUED).order_by("-enqueued_at")[:1]) or list(
        jobs.filter(status=JobStatus.PROCESSING).order_by("stage_index", "-created_at")[:10]
    )
    known = [e.eta_seconds for e in for_jobs(last, now=now).values() if e.eta_seconds is not None]
    return max(known) if known else None


def estimated_completion(eta: int | None, now: datetime) -> datetime | None:
    """The wall-clock time ``eta`` seconds from ``now``."""
    return None if eta is None else now + timedelta(seconds=eta)
