"""Crash recovery: how long a killed worker's stage, and a Redis that lost its data, take
to come back.

With the production settings (lease, heartbeat, recovery interval as ``./dev run`` has
them), a ``manage.py upkeep`` process and RQ workers started as the Procfile starts them
(``manage.py rqworker high default low --with-scheduler``), on the benchmarks' database
and Redis db:

- **SIGKILL -> resumption**, TRIALS times: one job of a scanned PDF of PAGES pages (OCR
  takes about a second a page, long enough to be caught in the middle); once its ``ocr``
  stage has read some pages, SIGKILL the worker and its work horse together (the machine
  or container is gone) and start a new worker at once. Measured: kill ->
  the stage run closed as ``WORKER_LOST`` (noticed), and kill -> a new run of the same
  stage began on the new worker (resumed); and the page it resumed from.
- **FLUSHALL -> re-enqueued**, TRIALS times: JOBS jobs, one worker busy with one of them
  and the rest QUEUED; ``FLUSHDB`` of the app's Redis database (everything the app keeps
  in Redis; FLUSHALL would also empty other databases of a shared server). Measured:
  flush -> every waiting job (QUEUED, or PROCESSING between stages) has a live RQ entry
  again (queued, scheduled, started or deferred), polled every 50 ms; a stage running on a
  live worker under its lease needs none.

Target (issue: crash safety): both within 30 s, worst case included.

    .venv/bin/python bench/crash_recovery.py [--trials 10] [--pages 12] [--jobs 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _setup

NAME = "crash_recovery"
TARGET_S = 30.0
LOG_DIR = _setup.RESULTS_DIR / "logs" / NAME


class Processes:
    """upkeep and workers, each in a session of its own, logs under bench/results/logs."""

    def __init__(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.count = 0

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (LOG_DIR / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=_setup.ROOT,
            env=_setup.child_env(LOG_LEVEL="INFO"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running[name] = process
        return process

    def start_worker(self) -> str:
        self.count += 1
        name = f"worker-{self.count}"
        self.start(name, "rqworker", "high", "default", "low", "--with-scheduler")
        return name

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.terminate()
        time.sleep(0.2)
        for process in self.running.values():
            if process.poll() is None:
                process.terminate()
        for process in self.running.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def wait_for(condition: Any, seconds: float, what: str, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"waited {seconds:g} s for {what}; logs in {LOG_DIR}")
        time.sleep(poll)


def workers_ready(count: int) -> bool:
    from rq import Worker

    return len(Worker.all(connection=_setup.redis())) >= count


def upload(matter: Any, user: Any, name: str, content: bytes) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from processing import uploads

    file = SimpleUploadedFile(name, content, "application/pdf")
    return uploads.accept_upload(matter, file, by=user, allow_duplicate=True).job


def scanned_pdf(pages: int) -> bytes:
    """A PDF of ``pages`` scanned pages: images of a few lines of text, no text layer."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw, ImageFont

    pdf = FPDF()
    font = ImageFont.load_default(size=40)
    for number in range(1, pages + 1):
        image = Image.new("L", (1240, 1754), 255)
        draw = ImageDraw.Draw(image)
        for line in range(12):
            draw.text(
                (90, 120 + line * 80), f"Page {number}, line {line}: paid $1,200.00", font=font
            )
        pdf.add_page()
        pdf.image(image, x=0, y=0, w=pdf.w, h=pdf.h)
    return bytes(pdf.output())


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def kill_trial(processes: Processes, matter: Any, user: Any, pdf: bytes, n: int) -> dict:
    """One SIGKILL of the worker running an extract stage mid-way; what it cost."""
    from processing.jobs.states import JobStatus, StageStatus
    from processing.models import StageRun

    job = upload(matter, user, f"trial-{n}.pdf", pdf)
    run = wait_for(
        lambda: StageRun.objects.filter(
            job=job, stage="ocr", status=StageStatus.IN_PROGRESS, items_done__gt=0
        ).first(),
        120,
        "the ocr stage to read some pages",
        poll=0.01,
    )
    horse = int(run.worker.rpartition(":")[2])
    worker = parent_of(horse)
    by_pid = {p.pid: name for name, p in processes.running.items()}
    assert worker in by_pid, (run.worker, worker, by_pid)
    killed_at = time.time()
    os.kill(worker, signal.SIGKILL)
    os.kill(horse, signal.SIGKILL)
    processes.running.pop(by_pid[worker]).wait(5)
    processes.start_worker()

    def closed() -> float | None:
        run.refresh_from_db()
        return run.finished_at.timestamp() if run.status != StageStatus.IN_PROGRESS else None

    def resumed() -> Any:
        return (
            StageRun.objects.filter(job=job, stage="ocr", attempt__gt=run.attempt)
            .exclude(started_at=None)
            .first()
        )

    noticed = wait_for(closed, 120, "the lost stage to be noticed")
    again = wait_for(resumed, 120, "the stage to resume")
    read_at_kill = run.items_done
    wait_for(
        lambda: job.__class__.objects.filter(pk=job.pk, status=JobStatus.COMPLETED).exists(),
        300,
        "the job to complete",
        poll=0.2,
    )
    return {
        "noticed_s": round(noticed - killed_at, 2),
        "resumed_s": round(again.started_at.timestamp() - killed_at, 2),
        "error_code": run.error_code,
        "pages_read_before_the_kill": read_at_kill,
        "pages": job.document.page_count,
    }


def without_entry(jobs: list[Any]) -> int:
    """How many of ``jobs`` that wait (QUEUED, or PROCESSING between stages) have no live RQ
    entry for their current dispatch. A stage running on a live worker (its lease held)
    needs none: it is not in a queue, it is being worked."""
    from django.utils import timezone
    from rq.job import Job, JobStatus

    from processing.jobs import dispatch
    from processing.models import ProcessingJob

    live = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED}
    rows = (
        ProcessingJob.objects.filter(pk__in=[j.pk for j in jobs])
        .active()
        .exclude(stage_attempt__gt=0, lease_expires_at__gt=timezone.now())
    )
    ids = [dispatch.rq_job_id(j.pk, j.dispatch_id) for j in rows]
    statuses = Job.fetch_many(ids, connection=_setup.redis())
    found = sum(1 for job in statuses if job is not None and job.get_status() in live)
    return len(ids) - found


def flush_trial(matter: Any, user: Any, pdf: bytes, jobs: int, n: int) -> dict:
    """One FLUSHDB while a worker runs a stage and the rest wait; time to re-enqueue all."""
    from processing.jobs.states import StageStatus
    from processing.models import ProcessingJob, StageRun

    made = [upload(matter, user, f"flush-{n}-{i}.pdf", pdf) for i in range(jobs)]
    wait_for(
        lambda: StageRun.objects.filter(job__in=made, status=StageStatus.IN_PROGRESS).exists(),
        120,
        "a stage to run",
        poll=0.01,
    )
    active = ProcessingJob.objects.filter(pk__in=[j.pk for j in made]).active().count()
    flushed_at = time.time()
    _setup.redis().flushdb()
    wait_for(lambda: without_entry(made) == 0, 120, "every active job to be queued again")
    back = time.time() - flushed_at
    return {"requeued_s": round(back, 2), "active_at_flush": active}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--pages", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()

    info = _setup.prepare()
    from django.conf import settings

    from processing.models import ProcessingJob

    user, matter = _setup.make_owner()
    big = scanned_pdf(args.pages)
    small = _setup.make_text_pdf(20)
    print(
        f"lease {settings.LEASE_SECONDS} s (renewed every {settings.LEASE_RENEW_SECONDS} s), "
        f"recovery every {settings.RECOVERY_INTERVAL} s; {args.trials} trials each"
    )
    processes = Processes()
    try:
        processes.start("upkeep", "upkeep")
        processes.start_worker()
        wait_for(lambda: workers_ready(1), 60, "the worker")
        kills = []
        for n in range(args.trials):
            kills.append(kill_trial(processes, matter, user, big, n))
            print(f"  kill {n + 1}: {kills[-1]}")
        flushes = []
        for n in range(args.trials):
            flushes.append(flush_trial(matter, user, small, args.jobs, n))
            print(f"  flush {n + 1}: {flushes[-1]}")
            wait_for(lambda: not ProcessingJob.objects.active().exists(), 600, "the jobs")
    finally:
        processes.stop()

    rows = []
    for label, values in (
        ("SIGKILL -> lost stage noticed", [k["noticed_s"] for k in kills]),
        ("SIGKILL -> stage resumed", [k["resumed_s"] for k in kills]),
        ("FLUSHDB -> every job re-enqueued", [f["requeued_s"] for f in flushes]),
    ):
        rows.append([label, len(values), _setup.median(values), max(values)])
    print()
    print(_setup.table(["what", "trials", "median s", "worst s"], rows))
    worst = max(max(k["resumed_s"] for k in kills), max(f["requeued_s"] for f in flushes))
    verdict = "met" if worst < TARGET_S else "MISSED"
    print(f"worst {worst:.1f} s (target < {TARGET_S:.0f} s: {verdict})")
    path = _setup.write_results(NAME, {"info": info, "kills": kills, "flushes": flushes})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
