"""One recovery pass with 100,000 finished jobs and 1,000 live ones: its time and query plan.

Inserts FINISHED jobs (bulk_create: COMPLETED, a few FAILED and CANCELLED) and LIVE
QUEUED jobs, past the grace period, each with its RQ entry enqueued on the benchmarks'
Redis database (so every one is live and the pass rescues nothing: the cost paid every
RECOVERY_INTERVAL seconds in normal running). Then:

- ``recovery.recover()`` in-process, ROUNDS times: median and worst in ms, and the
  queries it made;
- ``EXPLAIN`` of the queries that read the candidates: QUEUED jobs, and PROCESSING
  jobs whose lease ran out (each must use an index, not a sequential scan of the jobs
  table);
- after a FLUSHDB of the benchmarks' Redis database, one pass that re-enqueues all
  LIVE jobs (what Redis losing its data costs), in ms.

As a baseline in the same run: one Redis pipeline of LIVE HGETs alone (the least a pass
that asks Redis about every queued job can cost).

Target: median well under RECOVERY_INTERVAL (5 s); we aim < 100 ms.

    .venv/bin/python bench/recovery_pass.py [--finished 100000] [--live 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import timedelta
from typing import Any

import _setup

NAME = "recovery_pass"
TARGET_MS = 100.0


def insert_jobs(matter: Any, user: Any, statuses: list[str], start: Any) -> list[Any]:
    """Documents and jobs in bulk, one a second from ``start``; returns the jobs."""
    from processing.models import Document, ProcessingJob
    from processing.pipeline.registry import DOCUMENT_PROCESSING, get_pipeline

    stages = get_pipeline(DOCUMENT_PROCESSING).stages
    documents, jobs = [], []
    for number, status in enumerate(statuses):
        created = start + timedelta(seconds=number)
        document = Document(
            id=uuid.uuid4(),
            matter=matter,
            uploaded_by=user,
            original_name=f"doc-{number:06}.pdf",
            file=f"x/doc-{number:06}.pdf",
            content_type="application/pdf",
            size=10_000,
            sha256=f"{number:064x}",
            page_count=12,
            created_at=created,
        )
        documents.append(document)
        finished = status != "QUEUED"
        jobs.append(
            ProcessingJob(
                matter=matter,
                document=document,
                status=status,
                current_stage=stages[-1 if finished else 0].name,
                stage_index=len(stages) if finished else 1,
                total_stages=len(stages),
                progress=100 if status == "COMPLETED" else 0,
                queue_name="default",
                created_by=user,
                created_at=created,
                enqueued_at=created,
                finished_at=created + timedelta(seconds=20) if finished else None,
                updated_at=created + timedelta(seconds=20) if finished else created,
            )
        )
    Document.objects.bulk_create(documents, batch_size=2000)
    return ProcessingJob.objects.bulk_create(jobs, batch_size=2000)


def mix(total: int) -> list[str]:
    return [
        "FAILED" if n % 50 == 0 else "CANCELLED" if n % 77 == 0 else "COMPLETED"
        for n in range(total)
    ]


def timed_pass() -> tuple[float, Any, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from processing.jobs import recovery

    with CaptureQueriesContext(connection) as queries:
        began = time.perf_counter()
        report = recovery.recover()
        elapsed = (time.perf_counter() - began) * 1000
    return elapsed, report, len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--live", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    started = time.monotonic()

    info = _setup.prepare()
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone
    from rq.job import Job

    from processing.jobs import dispatch, recovery

    user, matter = _setup.make_owner()
    start = timezone.now() - timedelta(days=10)
    began = time.perf_counter()
    insert_jobs(matter, user, mix(args.finished), start)
    live = insert_jobs(matter, user, ["QUEUED"] * args.live, timezone.now() - timedelta(hours=1))
    for job in live:
        assert dispatch.enqueue_stage(job.id, job.dispatch_id, job.queue_name)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(
        f"inserted {args.finished} finished + {args.live} queued jobs (entries enqueued) "
        f"in {time.perf_counter() - began:.1f} s\n",
        flush=True,
    )

    cutoff = timezone.now() - timedelta(seconds=float(settings.RECOVERY_GRACE_SECONDS))
    plan = recovery.candidates(cutoff).values_list("id", "dispatch_id", "enqueued_at")[
        : recovery.BATCH
    ]
    explained = plan.explain()
    leases = recovery.leases_run_out(timezone.now()).values_list(
        "id", "dispatch_id", "stage_attempt"
    )
    explained_leases = leases.explain()
    uses_index = all(
        "Index" in text and "Seq Scan on processing_processingjob" not in text
        for text in (explained, explained_leases)
    )

    timed_pass()  # warm: connections, prepared lookups
    passes = [timed_pass() for _ in range(args.rounds)]
    times = [elapsed for elapsed, _, _ in passes]
    assert all(report.rescued == 0 for _, report, _ in passes), "a live job was rescued"

    redis = dispatch.redis_connection()
    keys = [Job.key_for(dispatch.rq_job_id(job.id, job.dispatch_id)) for job in live]
    bare = []
    for _ in range(args.rounds):
        began = time.perf_counter()
        pipe = redis.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "status")
        pipe.execute()
        bare.append((time.perf_counter() - began) * 1000)

    _setup.flush_redis()
    flush_ms, flush_report, flush_queries = timed_pass()
    assert len(flush_report.requeued) == args.live, flush_report.lines()

    rows = [
        [
            f"pass, {args.live} live (median of {args.rounds})",
            round(_setup.median(times), 1),
            round(max(times), 1),
            passes[0][2],
        ],
        [
            f"bare: one pipeline of {args.live} HGETs",
            round(_setup.median(bare), 1),
            round(max(bare), 1),
            0,
        ],
        [
            f"pass after FLUSHDB: {args.live} re-enqueued (once)",
            round(flush_ms, 1),
            "",
            flush_queries,
        ],
    ]
    print(
        _setup.table(
            ["with " + f"{args.finished} finished jobs", "ms", "worst ms", "queries"], rows
        )
    )
    print("\nquery plan of the candidates' query:\n" + explained)
    print("\nquery plan of the expired leases' query:\n" + explained_leases)
    median = _setup.median(times)
    met = median < TARGET_MS and uses_index
    print(
        f"\none pass: median {median:.1f} ms (target < {TARGET_MS:.0f} ms), "
        f"index used: {uses_index}: target {'met' if met else 'MISSED'}; "
        f"wall {time.monotonic() - started:.0f} s"
    )
    out = _setup.write_results(
        NAME,
        {
            "versions": info,
            "config": {"finished": args.finished, "live": args.live, "rounds": args.rounds},
            "pass_ms": times,
            "pass_median_ms": median,
            "pass_queries": passes[0][2],
            "bare_pipeline_ms": bare,
            "flush_pass_ms": flush_ms,
            "flush_pass_queries": flush_queries,
            "plan": explained,
            "leases_plan": explained_leases,
            "uses_index": uses_index,
            "target_ms": TARGET_MS,
            "target_met": met,
        },
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
