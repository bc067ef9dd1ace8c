"""Pages per second of the ``extract`` stage against pypdfium2 alone, on one 300-page PDF.

ours:     tasks.run_stage(job_id, dispatch_id) in this process: begin_stage -> the real
          extract stage with a real StageContext (open_document, a DocumentPage row per
          page streamed into COPY, committed every 0.5 s; throttled progress) -> complete_stage.
baseline: pypdfium2 on the same stored file: open, and for each page
          get_textpage().get_text_range().

The document is uploaded with processing.uploads.accept_upload; each round deletes its
pages and gives it a new job, so every run extracts all pages. One untimed warm-up of
each, then ROUNDS rounds (default 9; baseline first in odd rounds, ours first in even
ones); medians of the per-round figures.

The machine is small and shared, so wall time moves with everyone else's load. The CPU
time each side used is reported too (ours: this process plus its PostgreSQL backend,
from /proc/<pid>/schedstat; baseline: this process): steadier, and it counts the
database's share of the work.

    .venv/bin/python bench/extract_throughput.py [--pages 300] [--rounds 9]
"""

from __future__ import annotations

import argparse
import time

import _setup

NAME = "extract_throughput"
TARGET = 0.9


def _cpu(pids: list[int | None]) -> float | None:
    values = [_setup.cpu_seconds(pid) for pid in pids]
    return None if any(v is None for v in values) else sum(values)


def baseline(path: str) -> dict:
    """pypdfium2 alone: seconds, CPU seconds and characters for every page's text."""
    from bare_jobs import bare_extract

    cpu_before = _cpu([None])
    started = time.perf_counter()
    chars = bare_extract(path)
    elapsed = time.perf_counter() - started
    cpu_after = _cpu([None])
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {"s": elapsed, "cpu_s": cpu, "chars": chars}


def ours(document) -> dict:  # noqa: ANN001
    """One whole extract stage through the lifecycle: seconds, CPU, characters, queries.

    ``extract`` is the first stage of DOCUMENT_PROCESSING: run_stage runs it, and
    complete_stage then enqueues the next stage, which nobody runs here (the queue is
    flushed, and the job deleted before the next round).
    """
    from django.db import connection
    from django.db.models import Sum

    from processing.jobs import lifecycle, tasks
    from processing.models import DocumentPage, ProcessingJob, StageRun

    _setup.forget_jobs()  # the only document's jobs: the benchmark made no others
    DocumentPage.objects.filter(document=document).delete()
    job = lifecycle.create_job(document)
    _setup.flush_redis()  # the queue entry create_job made: this process runs the stage itself
    if job.current_stage != "extract":
        raise SystemExit(f"the pipeline starts with {job.current_stage!r}, not 'extract'")
    backend = _setup.backend_pid()
    counter = _setup.QueryCounter()
    cpu_before = _cpu([None, backend])
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        outcome = tasks.run_stage(str(job.id), str(job.dispatch_id))
    elapsed = time.perf_counter() - started
    cpu_after = _cpu([None, backend])
    cpu = None
    if cpu_before is not None and cpu_after is not None and _setup.backend_pid() == backend:
        cpu = cpu_after - cpu_before
    _setup.flush_redis()  # the next stage, enqueued by complete_stage
    run = StageRun.objects.filter(job_id=job.pk, stage="extract").last()
    if outcome != "completed" or run is None or run.status != "COMPLETED":
        job = ProcessingJob.objects.get(pk=job.pk)
        raise SystemExit(f"extract did not complete: {outcome}, {job.status}, {job.error_detail}")
    chars = DocumentPage.objects.filter(document=document).aggregate(n=Sum("char_count"))["n"]
    return {"s": elapsed, "cpu_s": cpu, "chars": chars or 0, "queries": counter.count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--words", type=int, default=300, help="words per page")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()

    info = _setup.prepare()
    from django.core.files.uploadedfile import SimpleUploadedFile

    from processing.models import DocumentPage
    from processing.uploads import accept_upload

    pdf_bytes = _setup.make_text_pdf(args.pages, args.words)
    user, matter = _setup.make_owner()
    document = accept_upload(
        matter,
        SimpleUploadedFile(f"bench-{args.pages}.pdf", pdf_bytes, "application/pdf"),
        by=user,
        allow_duplicate=True,
    ).document
    path = document.file.path
    print(f"document: {args.pages} pages x ~{args.words} words, {len(pdf_bytes) / 1024:.0f} KiB")

    # Warm-up (imports, caches, the first connection); not counted.
    baseline(path)
    ours(document)

    runs = []
    for round_no in range(1, args.rounds + 1):
        # Alternate which goes first, so neither always runs right after the other's
        # work (the database still writing the last round's pages, a warm cache).
        if round_no % 2:
            base = baseline(path)
            our = ours(document)
        else:
            our = ours(document)
            base = baseline(path)
        stored = DocumentPage.objects.filter(document=document).count()
        if stored != args.pages:
            raise SystemExit(f"round {round_no}: {stored} pages stored, expected {args.pages}")
        cpu_ratio = None
        if base["cpu_s"] is not None and our["cpu_s"]:
            cpu_ratio = base["cpu_s"] / our["cpu_s"]
        runs.append(
            {
                "round": round_no,
                "baseline_s": base["s"],
                "baseline_cpu_s": base["cpu_s"],
                "baseline_pages_per_s": args.pages / base["s"],
                "baseline_chars": base["chars"],
                "ours_s": our["s"],
                "ours_cpu_s": our["cpu_s"],
                "ours_pages_per_s": args.pages / our["s"],
                "ours_chars": our["chars"],
                "ours_queries": our["queries"],
                "ratio": base["s"] / our["s"],
                "cpu_ratio": cpu_ratio,
                "load_1min": _setup.load(),
            }
        )

    def med(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return _setup.median(values) if values else None

    ratio = med("ratio")
    cpu_ratio = med("cpu_ratio")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{1000 * value:.0f}"

    rows = [
        [
            f"round {r['round']}",
            r["baseline_pages_per_s"],
            r["ours_pages_per_s"],
            r["ratio"],
            f"{ms(r['baseline_cpu_s'])} / {ms(r['ours_cpu_s'])}",
            "-" if r["cpu_ratio"] is None else f"{r['cpu_ratio']:.2f}",
            r["ours_queries"],
        ]
        for r in runs
    ]
    rows.append(
        [
            "median",
            med("baseline_pages_per_s"),
            med("ours_pages_per_s"),
            ratio,
            f"{ms(med('baseline_cpu_s'))} / {ms(med('ours_cpu_s'))}",
            "-" if cpu_ratio is None else f"{cpu_ratio:.2f}",
            "",
        ]
    )
    print(
        _setup.table(
            [
                "extract",
                "pypdfium2 pages/s",
                "run_stage pages/s",
                "ours/baseline",
                "CPU ms baseline / ours",
                "by CPU",
                "SQL queries",
            ],
            rows,
        )
    )
    verdict = "met" if ratio >= TARGET else "MISSED"
    print(
        f"\nratio {ratio:.2f} (target >= {TARGET}: {verdict}); by CPU "
        f"{'-' if cpu_ratio is None else f'{cpu_ratio:.2f}'}; characters: baseline "
        f"{runs[-1]['baseline_chars']}, stored {runs[-1]['ours_chars']}"
    )
    path_out = _setup.write_results(
        NAME,
        {
            "versions": info,
            "config": {"pages": args.pages, "words_per_page": args.words, "rounds": args.rounds},
            "runs": runs,
            "median": {
                "baseline_pages_per_s": med("baseline_pages_per_s"),
                "ours_pages_per_s": med("ours_pages_per_s"),
                "ratio": ratio,
                "baseline_cpu_s": med("baseline_cpu_s"),
                "ours_cpu_s": med("ours_cpu_s"),
                "cpu_ratio": cpu_ratio,
            },
            "target_ratio": TARGET,
            "target_met": ratio >= TARGET,
        },
    )
    print(f"results: {path_out}")


if __name__ == "__main__":
    main()
