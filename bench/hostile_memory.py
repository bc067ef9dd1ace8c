"""What a hostile document costs a worker, without the sandbox and with it.

Two hostile stages (bench/hostile_pipeline.py), each run once per variant on one
forking worker (bench/_worker.py, not in burst mode):

- ``memory``: a stage that takes ``--megabytes`` (1536) of memory, touching every page;
- ``abort``: a stage that aborts its process (SIGABRT), as pdfium does on a bomb.

Variants: ``before`` runs hostile_pipeline.UnsandboxedWorker (the production worker
without the memory budget and the crash attribution; ``manage.py upkeep`` runs beside
it, so a dead horse is rescued by its lease, as before); ``after`` runs the production
worker class (settings.RQ["WORKER_CLASS"]) with STAGE_MEMORY_LIMIT at its default (1 GiB)
unless ``--limit-mb`` says otherwise.

For each: the job's outcome (status, error code, stage runs), the wall time from the
job's creation to its final status, and the peak RSS of the worker's process tree
(the sum of VmRSS of the worker and its descendants, sampled every 20 ms) and the
highest VmHWM (the kernel's high-water mark) of any of them.

    .venv/bin/python bench/hostile_memory.py [--megabytes 1536] [--limit-mb 1024]
        [--only memory|abort] [--timeout 240]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

import _setup
from worker_memory import _descendants, _status_kb

NAME = "hostile_memory"
LOG_DIR = _setup.RESULTS_DIR / "logs"
SAMPLE_S = 0.02
UPKEEP = (
    "import _setup; _setup.django_setup(); import hostile_pipeline; "
    "from django.core.management import call_command; call_command('upkeep')"
)


def _start(name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = (LOG_DIR / f"{NAME}-{name}.log").open("wb")
    return subprocess.Popen(
        command, cwd=_setup.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _workers(redis: Any) -> int:
    from rq import Worker

    return len(Worker.all(connection=redis))


def _hostile_document(matter: Any, user: Any) -> Any:
    from django.core.files.base import ContentFile

    from processing.models import Document

    content = _setup.make_text_pdf(1)
    document = Document(
        matter=matter, uploaded_by=user, original_name="hostile.pdf",
        content_type="application/pdf", size=len(content), sha256=os.urandom(32).hex(),
    )  # fmt: skip
    document.file.save("hostile.pdf", ContentFile(content), save=False)
    document.save()
    return document


def run(kind: str, variant: str, args: argparse.Namespace, matter: Any, user: Any) -> dict:
    """One hostile job on a fresh worker; what it cost."""
    import hostile_pipeline
    from django.db import connections

    from processing.jobs import lifecycle
    from processing.models import ProcessingJob, StageRun

    env = _setup.child_env(BENCH_HOSTILE_MB=str(args.megabytes))
    if args.limit_mb:
        env["STAGE_MEMORY_LIMIT"] = str(args.limit_mb * 1024 * 1024)
    worker_class = "hostile_pipeline.UnsandboxedWorker" if variant == "before" else ""
    command = [sys.executable, str(_setup.BENCH_DIR / "_worker.py"), "--no-burst"]
    if worker_class:
        command += ["--worker-class", worker_class]
    redis = _setup.redis()
    redis.flushdb()
    worker = _start(f"{kind}-{variant}-worker", command, env)
    upkeep = None
    if variant == "before":
        # manage.py upkeep, knowing the hostile pipelines (a rescue reads the registry).
        upkeep = _start(f"{kind}-{variant}-upkeep", [sys.executable, "-c", UPKEEP], env)
    try:
        deadline = time.monotonic() + 60
        while _workers(redis) < 1:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start; see {LOG_DIR}")
            time.sleep(0.1)
        job_type = hostile_pipeline.MEMORY if kind == "memory" else hostile_pipeline.ABORT
        job = lifecycle.create_job(_hostile_document(matter, user), by=user, job_type=job_type)
        started = time.monotonic()
        peak_tree_kb = peak_hwm_kb = 0
        status = "QUEUED"
        while status not in ("COMPLETED", "FAILED"):
            if time.monotonic() - started > args.timeout:
                break
            pids = [worker.pid, *_descendants(worker.pid)]
            stats = [_status_kb(pid) for pid in pids]
            peak_tree_kb = max(peak_tree_kb, sum(s.get("VmRSS", 0) for s in stats))
            peak_hwm_kb = max([peak_hwm_kb, *(s.get("VmHWM", 0) for s in stats)])
            status = ProcessingJob.objects.values_list("status", flat=True).get(pk=job.pk)
            time.sleep(SAMPLE_S)
        wall = time.monotonic() - started
        job.refresh_from_db()
        runs = list(StageRun.objects.filter(job=job).values_list("status", "error_code"))
        alive = worker.poll() is None
    finally:
        connections.close_all()
        _stop(worker)
        if upkeep is not None:
            _stop(upkeep)
    return {
        "kind": kind,
        "variant": variant,
        "status": job.status if status in ("COMPLETED", "FAILED") else f"{job.status} (timed out)",
        "error_code": job.error_code,
        "stage_runs": runs,
        "wall_s": wall,
        "peak_tree_rss_mb": peak_tree_kb / 1024,
        "peak_hwm_mb": peak_hwm_kb / 1024,
        "worker_alive": alive,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1536)
    parser.add_argument("--limit-mb", type=int, default=0, help="STAGE_MEMORY_LIMIT, MB")
    parser.add_argument("--only", choices=["memory", "abort"])
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args()

    info = _setup.prepare()
    user, matter = _setup.make_owner()
    results = []
    for kind in [args.only] if args.only else ["memory", "abort"]:
        for variant in ("before", "after"):
            result = run(kind, variant, args, matter, user)
            results.append(result)
            print(f"{kind} {variant}: {result['status']} {result['error_code']}", flush=True)
    print()
    print(
        _setup.table(
            ["kind", "variant", "status", "code", "runs", "wall s", "tree RSS MB", "HWM MB",
             "worker alive"],
            [
                [r["kind"], r["variant"], r["status"], r["error_code"] or "-",
                 len(r["stage_runs"]), r["wall_s"], r["peak_tree_rss_mb"], r["peak_hwm_mb"],
                 "yes" if r["worker_alive"] else "no"]
                for r in results
            ],
        )
    )  # fmt: skip
    path = _setup.write_results(
        NAME, {"versions": info, "megabytes": args.megabytes, "results": results}
    )
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
