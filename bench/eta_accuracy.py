"""How right the ETA is: 30 documents of mixed size through 2 real workers.

Starts two ``manage.py rqworker high default low`` processes (the forking worker, as in
production) on the bench database and Redis db. First SEEDS the history: 4 documents
(a 3-, 40- and 150-page text PDF and a 2-page scan) run through and complete, unmeasured,
so the measured jobs have stage runs to learn from (the first jobs of a fresh install
have none: their ETA is null). Then creates the measured documents in ONE transaction,
so their jobs queue together: 27 text PDFs of 1-200 pages (fixed seed) and 3 PDFs of
page images with no text layer (2, 4 and 6 pages, drawn with Pillow) that the ocr stage
reads with Tesseract. Their queue entries go in shuffled order, as uploads would.

Every POLL_S the job rows are read and estimated together by
``estimates.for_jobs`` (what the job lists of the API and the pages call), and each
job's (time, status, progress, eta_seconds) is recorded. At the end, for every job, the
ETA observed when its progress first reached >= 10 %, 50 %, 80 % and 90 % (while it was
still QUEUED or PROCESSING) is compared with the time it actually had left, completed_at
minus that observation: error = |eta - actual| / actual. Also the ETA of each job when
first seen QUEUED. Progress moves a stage at a time for most of these documents (a stage
shorter than PROGRESS_WRITE_INTERVAL writes none before it ends), so 10 % is seen at 20 %
(extract done), 50 % at 60 % (chunk done), 80 % as the last stage waits or starts, and
90 % only for the few whose last stage runs long enough; the ETA is whole seconds, so a
job a fraction of a second from the end shows 0 and a 100 % error there. Reported: the
median (and 90th percentile) absolute error in percent at each point, over the jobs that
have one; the target is a median under 25 % at 50 %.

    .venv/bin/python bench/eta_accuracy.py [--documents 30] [--max-pages 200] [--seed 15]

Own database ``jobtracker_bench_eta``, media ``bench-media-eta`` and Redis db 11.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

# Not the Redis db the other benchmarks flush (13, 12): set before _setup reads it.
os.environ.setdefault("BENCH_REDIS_DB", "11")

import _setup  # noqa: E402
from stage_throughput import isolate, make_scanned_pdf  # noqa: E402

NAME = "eta_accuracy"
TARGET_PERCENT = 25.0
POLL_S = 0.25
TIMEOUT_S = 600.0
POINTS = (10, 50, 80, 90)
"""Progress points; 80 % is the start of the last stage, the last point most jobs show
(a stage shorter than PROGRESS_WRITE_INTERVAL writes no progress before it ends)."""
SCANNED_PAGES = (2, 4, 6)
LOG_DIR = _setup.RESULTS_DIR / "logs"


class Workers:
    """Two ``manage.py rqworker`` processes, logging to files; all stopped by ``stop``."""

    def __init__(self, count: int) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        for number in range(1, count + 1):
            with open(LOG_DIR / f"{NAME}-rqworker{number}.log", "wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "manage.py", "rqworker", "high", "default", "low"],
                        env=_setup.child_env(),
                        cwd=_setup.ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )

    def check(self) -> None:
        for number, proc in enumerate(self.procs, start=1):
            if proc.poll() is not None:
                raise SystemExit(f"rqworker{number} exited; see {LOG_DIR}/{NAME}-rqworker*.log")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for_workers(workers: Workers, count: int) -> None:
    from rq import Worker

    deadline = time.monotonic() + 60
    while Worker.count(connection=_setup.redis()) < count:
        workers.check()
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the workers to register")
        time.sleep(0.1)


def documents(count: int, max_pages: int, seed: int) -> list[tuple[str, bytes, int, bool]]:
    """(name, content, pages, scanned) for the measured documents, in upload order."""
    rng = random.Random(seed)
    text_count = count - len(SCANNED_PAGES)
    # Mixed sizes: a third short (1-20 pages), the rest anywhere up to max_pages.
    sizes = [rng.randint(1, 20) for _ in range(text_count // 3)]
    sizes += [rng.randint(1, max_pages) for _ in range(text_count - len(sizes))]
    out = [
        (f"text-{i:02}-{pages}p.pdf", _setup.make_text_pdf(pages), pages, False)
        for i, pages in enumerate(sizes)
    ]
    for i, pages in enumerate(SCANNED_PAGES):
        content, _font, _texts = make_scanned_pdf(pages)
        out.append((f"scan-{i}-{pages}p.pdf", content, pages, True))
    rng.shuffle(out)
    return out


def create_jobs(matter: Any, user: Any, docs: list[tuple[str, bytes, int, bool]]) -> list[Any]:
    """Upload every document in one transaction: the jobs are enqueued together at commit."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import transaction

    from processing.uploads import accept_upload

    ids = []
    with transaction.atomic():
        for name, content, _pages, _scanned in docs:
            job = accept_upload(
                matter,
                SimpleUploadedFile(name, content, "application/pdf"),
                by=user,
                allow_duplicate=True,
            ).job
            ids.append(job.pk)
    return ids


def run_until_done(ids: list[Any], workers: Workers, *, observe: bool) -> dict[Any, list]:
    """Poll the jobs until none is active; with ``observe``, estimate them at every poll."""
    from django.utils import timezone

    from processing.jobs import estimates
    from processing.jobs.states import ACTIVE_JOB_STATUSES
    from processing.models import ProcessingJob

    seen: dict[Any, list] = {job_id: [] for job_id in ids}
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        started = time.perf_counter()
        jobs = list(ProcessingJob.objects.filter(pk__in=ids).select_related("document"))
        if observe:
            now = timezone.now()
            found = estimates.for_jobs(jobs, now=now)
            for job in jobs:
                if job.status in ACTIVE_JOB_STATUSES:
                    estimate = found[job.pk]
                    seen[job.pk].append(
                        (now, job.status, job.progress, estimate.eta_seconds, job.current_stage)
                    )
        if not any(job.status in ACTIVE_JOB_STATUSES for job in jobs):
            return seen
        workers.check()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {TIMEOUT_S:.0f} s waiting for the jobs")
        time.sleep(max(0.0, POLL_S - (time.perf_counter() - started)))


def error_percent(eta: int, actual: float) -> float:
    return abs(eta - actual) / actual * 100 if actual > 0 else float("inf")


def first_observation(rows: list, predicate: Any) -> tuple | None:
    return next((row for row in rows if predicate(row) and row[3] is not None), None)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=30)
    parser.add_argument("--max-pages", type=int, default=200)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    isolate("eta")
    info = _setup.prepare()
    from django.db import connections

    from processing.jobs import estimates
    from processing.models import ProcessingJob

    user, matter = _setup.make_owner()
    started = time.monotonic()
    docs = documents(args.documents, args.max_pages, args.seed)
    seed_docs = [
        ("seed-3p.pdf", _setup.make_text_pdf(3), 3, False),
        ("seed-40p.pdf", _setup.make_text_pdf(40), 40, False),
        ("seed-150p.pdf", _setup.make_text_pdf(150), 150, False),
        ("seed-scan-2p.pdf", make_scanned_pdf(2)[0], 2, True),
    ]
    print(
        f"{len(docs)} documents made in {time.monotonic() - started:.1f} s: "
        f"{sum(d[2] for d in docs)} pages, {sum(d[2] for d in docs if d[3])} of them scanned"
    )
    connections.close_all()

    workers = Workers(args.workers)
    try:
        wait_for_workers(workers, args.workers)
        seeded = time.monotonic()
        run_until_done(create_jobs(matter, user, seed_docs), workers, observe=False)
        print(f"history seeded: {len(seed_docs)} documents in {time.monotonic() - seeded:.1f} s")
        estimates.clear_history()

        measured = time.monotonic()
        ids = create_jobs(matter, user, docs)
        seen = run_until_done(ids, workers, observe=True)
        wall = time.monotonic() - measured
    finally:
        workers.stop()

    jobs = {j.pk: j for j in ProcessingJob.objects.filter(pk__in=ids).select_related("document")}
    per_job = []
    errors: dict[str, list[float]] = {"queued": [], **{f"{p}%": [] for p in POINTS}}
    for job_id, (name, _content, pages, scanned) in zip(ids, docs, strict=True):
        job = jobs[job_id]
        row: dict[str, Any] = {"document": name, "pages": pages, "scanned": scanned}
        row["status"] = job.status
        row["queue"] = job.queue_name
        row["observations"] = len(seen[job_id])
        if job.completed_at is None:
            per_job.append(row)
            continue
        points: dict[str, Any] = {"queued": lambda r: r[1] == "QUEUED"}
        points.update({f"{p}%": (lambda r, p=p: r[2] >= p) for p in POINTS})
        for label, predicate in points.items():
            found = first_observation(seen[job_id], predicate)
            if found is None:
                row[label] = None
                continue
            at: datetime = found[0]
            actual = (job.completed_at - at).total_seconds()
            error = error_percent(found[3], actual)
            row[label] = {
                "progress": found[2],
                "stage": found[4],
                "eta_s": found[3],
                "actual_s": round(actual, 2),
                "error_percent": round(error, 1),
            }
            errors[label].append(error)
        per_job.append(row)

    summary = {}
    for label, values in errors.items():
        summary[label] = {
            "jobs": len(values),
            "median_error_percent": round(_setup.median(values), 1) if values else None,
            "p90_error_percent": round(percentile(values, 0.9), 1) if values else None,
        }

    print(f"\n{len(ids)} jobs, {args.workers} workers, {wall:.1f} s from upload to the last\n")
    headers = ["document", "queue", "queued: eta/actual s"]
    headers += [f"{p}%: eta/actual s" for p in POINTS]

    def cell(point: Any) -> str:
        if not point:
            return "-"
        return f"{point['eta_s']}/{point['actual_s']:.1f} ({point['error_percent']:.0f} %)"

    rows = [
        [r["document"], r["queue"], cell(r.get("queued")), *(cell(r.get(f"{p}%")) for p in POINTS)]
        for r in per_job
    ]
    print(_setup.table(headers, rows))
    print()
    print(
        _setup.table(
            ["ETA observed", "jobs", "median |error| %", "p90 |error| %"],
            [
                [label, s["jobs"], s["median_error_percent"], s["p90_error_percent"]]
                for label, s in summary.items()
            ],
        )
    )
    at_half = summary["50%"]["median_error_percent"]
    verdict = "meets" if at_half is not None and at_half < TARGET_PERCENT else "misses"
    print(f"\nmedian error at 50 %: {at_half} % ({verdict} the target < {TARGET_PERCENT:.0f} %)")
    path = _setup.write_results(
        NAME,
        {
            "versions": info,
            "documents": len(docs),
            "workers": args.workers,
            "poll_s": POLL_S,
            "seed": args.seed,
            "history": "seeded with " + ", ".join(d[0] for d in seed_docs),
            "wall_s": round(wall, 1),
            "target_median_error_percent_at_50": TARGET_PERCENT,
            "summary": summary,
            "jobs": per_job,
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
