"""The matter page with 20,000 jobs in one matter: time and queries of GET /matters/<id>/.

Inserts a matter with JOBS jobs (bulk_create of Document and ProcessingJob rows: most
COMPLETED, some FAILED, 30 PROCESSING, a few hundred QUEUED, the queued ones the most
recent uploads, as after a batch upload) and, as the baseline in the same run, a matter
with 10 jobs (5 COMPLETED, 1 FAILED, 2 PROCESSING, 2 QUEUED); plus 50 completed stage
runs per stage, so that the ETA has a history to work from, as it would in use.

For each page (the first page of the big matter, the first page filtered to QUEUED, its
last page, and the small matter's page), logged in as the matter's owner:

- in-process: Django's test Client, REQUESTS timed requests after 3 untimed ones, and the
  queries of one request (django.test.utils.CaptureQueriesContext), summarised by shape
  (literals replaced by ?) to show which repeat;
- over HTTP: one daphne process on 127.0.0.1, the same session cookie, REQUESTS
  sequential requests on one keep-alive connection.

Target: p95 < 300 ms with 20,000 jobs, and the same query count as with 10 jobs.

    .venv/bin/python bench/matter_page.py [--jobs 20000] [--requests 50]
"""

from __future__ import annotations

import argparse
import http.client
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import _setup

NAME = "matter_page"
LOG_DIR = _setup.RESULTS_DIR / "logs"
TARGET_P95_S = 0.300
PROCESSING = 30
QUEUED = 300
FAILED_SHARE = 0.03


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def insert_jobs(matter: Any, user: Any, statuses: list[str], start: Any) -> None:
    """Documents and jobs in bulk, one a second from ``start``, in the order given."""
    from processing.models import Document, ProcessingJob
    from processing.pipeline.registry import DOCUMENT_PROCESSING, get_pipeline

    stages = get_pipeline(DOCUMENT_PROCESSING).stages
    documents, jobs = [], []
    for number, status in enumerate(statuses):
        created = start + timedelta(seconds=number)
        name = f"doc-{number:05}.pdf"
        document = Document(
            id=uuid.uuid4(),
            matter=matter,
            uploaded_by=user,
            original_name=name,
            file=f"x/{name}",
            content_type="application/pdf",
            size=10_000,
            sha256=f"{number:064x}",
            page_count=12,
            created_at=created,
            processing_state="PROCESSED" if status == "COMPLETED" else "PENDING",
        )
        documents.append(document)
        done = status == "COMPLETED"
        index = 3 if status == "PROCESSING" else (len(stages) if done else 1)
        if status == "FAILED":
            index = 2
        jobs.append(
            ProcessingJob(
                matter=matter,
                document=document,
                status=status,
                current_stage=stages[index - 1].name,
                stage_index=index,
                total_stages=len(stages),
                progress=100 if done else (50 if status == "PROCESSING" else 20 * (index - 1)),
                items_total=12 if status == "PROCESSING" else 0,
                items_done=5 if status == "PROCESSING" else 0,
                error="The document could not be read." if status == "FAILED" else None,
                error_code="DOCUMENT_UNREADABLE" if status == "FAILED" else None,
                queue_name="default",
                created_by=user,
                created_at=created,
                enqueued_at=created,
                started_at=None if status == "QUEUED" else created + timedelta(seconds=1),
                stage_started_at=(
                    created + timedelta(seconds=5) if status == "PROCESSING" else None
                ),
                completed_at=created + timedelta(seconds=20) if done else None,
                finished_at=(
                    created + timedelta(seconds=20) if status in ("COMPLETED", "FAILED") else None
                ),
                updated_at=created + timedelta(seconds=20),
            )
        )
    Document.objects.bulk_create(documents, batch_size=2000)
    ProcessingJob.objects.bulk_create(jobs, batch_size=2000)


def insert_history(matter: Any, start: Any) -> None:
    """50 completed stage runs per stage, on the matter's completed jobs (the ETA's basis)."""
    from processing.models import ProcessingJob, StageRun
    from processing.pipeline.registry import DOCUMENT_PROCESSING, get_pipeline

    jobs = list(ProcessingJob.objects.filter(matter=matter, status="COMPLETED")[:50])
    runs = []
    for position, stage in enumerate(get_pipeline(DOCUMENT_PROCESSING).stages, start=1):
        for job in jobs:
            began = start + timedelta(seconds=position)
            runs.append(
                StageRun(
                    job=job,
                    stage=stage.name,
                    stage_index=position,
                    attempt=1,
                    status="COMPLETED",
                    items_total=12,
                    items_done=12,
                    created_at=began,
                    started_at=began,
                    finished_at=began + timedelta(seconds=3),
                )
            )
    StageRun.objects.bulk_create(runs)


def mix(total: int) -> list[str]:
    """Oldest first: COMPLETED with FAILED among them, then PROCESSING, then QUEUED."""
    if total <= 10:
        return (
            ["COMPLETED"] * 3 + ["FAILED"] + ["COMPLETED"] * 2 + ["PROCESSING"] * 2 + ["QUEUED"] * 2
        )
    older = total - PROCESSING - QUEUED
    every = round(1 / FAILED_SHARE)
    head = ["FAILED" if i % every == every - 1 else "COMPLETED" for i in range(older)]
    return head + ["PROCESSING"] * PROCESSING + ["QUEUED"] * QUEUED


_LITERALS = re.compile(r"'[^']*'|\b\d+\b")


def shape(sql: str) -> str:
    """The SQL with its literals replaced by ?, whitespace folded, cut to 150 characters."""
    return re.sub(r"\s+", " ", _LITERALS.sub("?", sql))[:150]


def in_process(client: Any, path: str, requests: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
    times = []
    for _ in range(requests):
        began = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - began)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as queries:
        client.get(path)
    shapes = Counter(shape(q["sql"]) for q in queries.captured_queries)
    return {
        "p50_ms": round(1000 * percentile(times, 50), 1),
        "p95_ms": round(1000 * percentile(times, 95), 1),
        "max_ms": round(1000 * max(times), 1),
        "queries": len(queries.captured_queries),
        "sql_ms": round(1000 * sum(float(q["time"]) for q in queries.captured_queries), 1),
        "bytes": len(response.content),
        "query_shapes": [{"count": n, "sql": sql} for sql, n in shapes.most_common()],
        "slowest": [
            {"ms": round(1000 * float(q["time"]), 1), "sql": shape(q["sql"])}
            for q in sorted(queries.captured_queries, key=lambda q: -float(q["time"]))[:4]
        ],
    }


def over_http(port: int, cookie: str, path: str, requests: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Cookie": f"sessionid={cookie}"}

    def get() -> int:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status

    for _ in range(3):
        assert get() == 200, path
    times = []
    for _ in range(requests):
        began = time.perf_counter()
        status = get()
        times.append(time.perf_counter() - began)
        assert status == 200
    conn.close()
    return {
        "p50_ms": round(1000 * percentile(times, 50), 1),
        "p95_ms": round(1000 * percentile(times, 95), 1),
        "max_ms": round(1000 * max(times), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    started = time.monotonic()

    info = _setup.prepare()
    from django.db import connection, connections
    from django.test import Client
    from django.utils import timezone

    from processing.jobs import estimates
    from processing.matters import create_matter

    user, big = _setup.make_owner()
    small = create_matter("Bench matter, 10 jobs", owner=user)
    start = timezone.now() - timedelta(days=30)
    began = time.perf_counter()
    insert_jobs(big, user, mix(args.jobs), start)
    insert_jobs(small, user, mix(10), start + timedelta(days=1))
    insert_history(big, start)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"inserted {args.jobs} + 10 jobs in {time.perf_counter() - began:.1f} s\n", flush=True)

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    cookie = client.cookies["sessionid"].value
    pages = [
        (f"{args.jobs} jobs: page 1", f"/matters/{big.pk}/"),
        (f"{args.jobs} jobs: QUEUED, page 1", f"/matters/{big.pk}/?status=QUEUED"),
        # get_page() takes numbers only ("last" would be page 1): the oldest, all finished.
        (f"{args.jobs} jobs: last page", f"/matters/{big.pk}/?page={-(-args.jobs // 50)}"),
        ("10 jobs (baseline)", f"/matters/{small.pk}/"),
    ]
    results: dict[str, Any] = {}
    for name, path in pages:
        estimates.clear_history()
        results[name] = {"path": path, "in_process": in_process(client, path, args.requests)}
    connections.close_all()

    port = _setup.free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / f"{NAME}-daphne.log", "wb") as log:
        daphne = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "jobtracker.asgi:application",
            ],
            env=_setup.child_env(),
            cwd=_setup.ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not _setup.server_up(port):
            if daphne.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"daphne did not start; see {LOG_DIR}/{NAME}-daphne.log")
            time.sleep(0.1)
        for name, path in pages:
            results[name]["daphne"] = over_http(port, cookie, path, args.requests)
    finally:
        daphne.terminate()
        try:
            daphne.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daphne.kill()

    rows = [
        [
            name,
            r["in_process"]["p50_ms"],
            r["in_process"]["p95_ms"],
            r["in_process"]["max_ms"],
            r["daphne"]["p50_ms"],
            r["daphne"]["p95_ms"],
            r["in_process"]["queries"],
            r["in_process"]["sql_ms"],
        ]
        for name, r in results.items()
    ]
    print(
        _setup.table(
            [
                "GET /matters/<id>/",
                "test Client p50 ms",
                "p95 ms",
                "max ms",
                "daphne p50 ms",
                "daphne p95 ms",
                "queries",
                "SQL ms",
            ],
            rows,
        )
    )
    for name, r in results.items():
        repeated = [s for s in r["in_process"]["query_shapes"] if s["count"] > 1]
        print(f"\n{name}: {r['in_process']['queries']} queries; repeated shapes:")
        for s in repeated or [{"count": 0, "sql": "(none)"}]:
            print(f"  {s['count']:4} x {s['sql']}")
        print("  slowest:")
        for s in r["in_process"]["slowest"]:
            print(f"  {s['ms']:6.1f} ms {s['sql']}")
    big_page = results[pages[0][0]]
    small_page = results[pages[-1][0]]
    p95 = max(big_page["in_process"]["p95_ms"], big_page["daphne"]["p95_ms"])
    same_queries = big_page["in_process"]["queries"] == small_page["in_process"]["queries"]
    met = p95 < TARGET_P95_S * 1000 and same_queries
    print(
        f"\n{args.jobs} jobs, page 1: p95 {p95} ms (target < {TARGET_P95_S * 1000:.0f} ms), "
        f"{big_page['in_process']['queries']} queries vs {small_page['in_process']['queries']} "
        f"with 10 jobs: target {'met' if met else 'MISSED'}; "
        f"wall {time.monotonic() - started:.0f} s"
    )
    out = _setup.write_results(
        NAME,
        {
            "versions": info,
            "config": {
                "jobs": args.jobs,
                "requests": args.requests,
                "mix": dict(Counter(mix(args.jobs))),
            },
            "pages": results,
            "target_p95_ms": TARGET_P95_S * 1000,
            "target_met": met,
        },
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
