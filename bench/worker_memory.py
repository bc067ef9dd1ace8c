"""Peak resident memory of a production worker taking a 500-page text PDF through all stages.

A 500-page text PDF (stage_throughput's pages: ~300 words with dates, amounts, emails,
phone numbers and case citations) is uploaded with processing.uploads.accept_upload, then
one ``manage.py rqworker high default low --burst`` is started: settings.RQ["WORKER_CLASS"],
processing.jobs.worker.Worker, RQ's forking worker with the stage code preloaded, so each
stage runs in its own forked work horse. Until the job is COMPLETED (and the burst worker
has exited, or a few seconds more), every INTERVAL seconds this process reads, for the
worker and every descendant (the work horses; Tesseract if a page needed OCR):

- RSS and the kernel's high-water mark of RSS (VmRSS, VmHWM in /proc/<pid>/status): the
  high-water mark catches a peak that falls between two samples;
- PSS (/proc/<pid>/smaps_rollup, every PSS_EVERY-th sample: it costs ~3 ms): RSS with
  pages shared between processes (a work horse shares its parent's pages copy-on-write
  after the fork) divided among them, so the sum of PSS is what the worker really
  occupies, and the sum of RSS counts shared pages twice;
- the job's current stage and status (one query).

Each work horse is attributed to the stage the job was at when it was first seen (the
previous stage moves the job on before its horse exits, and the next horse is forked
after that). Reported: per stage, the work horse's peak RSS and high-water mark, how much
it grew over its first sample (what the stage itself allocated), the peak
sum of RSS and of PSS of the worker and its descendants while that horse lived, and the
stage's duration (its StageRun); overall, the same peaks and the total time. Target: the
sum stays under 500 MB.

Runs on its own database (``jobtracker_bench_memory``), media folder and, unless
BENCH_REDIS_DB is set, Redis db 12, so it does not disturb the other benchmarks'.

    .venv/bin/python bench/worker_memory.py [--pages 500] [--interval 0.025] [--pss-every 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Not the Redis db the other benchmarks flush (13): set before _setup reads it.
os.environ.setdefault("BENCH_REDIS_DB", "12")

import _setup  # noqa: E402
import stage_throughput  # noqa: E402

NAME = "worker_memory"
TARGET_MB = 500.0
LOG_DIR = _setup.RESULTS_DIR / "logs"
MB = 1024 * 1024
AFTER_COMPLETED_S = 5.0


# --- /proc ---------------------------------------------------------------------------------


def _status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB ({} once it is gone)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    except (OSError, ValueError):
        return {}
    return out


def _pss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _descendants(pid: int) -> list[int]:
    """The pids of ``pid``'s children, theirs, and so on (/proc/<pid>/task/<tid>/children)."""
    out: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                text = Path(f"/proc/{current}/task/{tid}/children").read_text()
            except OSError:
                continue
            kids = [int(value) for value in text.split()]
            out.extend(kids)
            pending.extend(kids)
    return out


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class Tracked:
    """What was seen of one process."""

    def __init__(self, pid: int, role: str, stage: str, seen: float) -> None:
        self.pid, self.role, self.stage = pid, role, stage
        self.first_seen = self.last_seen = seen
        self.peak_rss_kb = self.hwm_kb = self.peak_pss_kb = 0
        self.first_rss_kb: int | None = None
        self.samples = 0

    def as_dict(self, t0: float) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "role": self.role,
            "stage": self.stage,
            "first_seen_s": self.first_seen - t0,
            "last_seen_s": self.last_seen - t0,
            "samples": self.samples,
            "first_rss_mb": (self.first_rss_kb or 0) / 1024,
            "peak_rss_mb": self.peak_rss_kb / 1024,
            "hwm_mb": self.hwm_kb / 1024,
            "peak_pss_mb": self.peak_pss_kb / 1024,
        }


class Monitor:
    """Samples the worker process tree and the job's stage."""

    def __init__(self, worker_pid: int, job_id: Any, pss_every: int) -> None:
        self.worker_pid = worker_pid
        self.job_id = job_id
        self.pss_every = max(1, pss_every)
        self.tracked: dict[int, Tracked] = {}
        self.samples: list[dict[str, Any]] = []
        self.costs: list[float] = []
        if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
            raise SystemExit("this kernel has no /proc/<pid>/task/<tid>/children")

    def job_state(self) -> tuple[str, str]:
        from processing.models import ProcessingJob

        return tuple(  # type: ignore[return-value]
            ProcessingJob.objects.filter(pk=self.job_id)
            .values_list("current_stage", "status")
            .get()
        )

    def sample(self, t0: float) -> dict[str, Any]:
        started = time.monotonic()
        with_pss = len(self.samples) % self.pss_every == 0
        pids = [self.worker_pid, *_descendants(self.worker_pid)]
        stage, status = self.job_state()  # after listing: a horse seen is at this stage
        now = time.monotonic()
        rows = []
        for pid in pids:
            kb = _status_kb(pid)
            if not kb:
                continue
            pss = _pss_kb(pid) if with_pss else None
            tracked = self.tracked.get(pid)
            if tracked is None:
                if pid == self.worker_pid:
                    role = "worker"
                else:
                    parent = _parent(pid)
                    if parent is None:
                        continue
                    role = "horse" if parent == self.worker_pid else "descendant"
                tracked = self.tracked[pid] = Tracked(pid, role, stage, now)
            tracked.last_seen = now
            tracked.samples += 1
            if tracked.first_rss_kb is None:
                tracked.first_rss_kb = kb.get("VmRSS", 0)
            tracked.peak_rss_kb = max(tracked.peak_rss_kb, kb.get("VmRSS", 0))
            tracked.hwm_kb = max(tracked.hwm_kb, kb.get("VmHWM", 0))
            tracked.peak_pss_kb = max(tracked.peak_pss_kb, pss or 0)
            rows.append((tracked, kb.get("VmRSS", 0), pss))
        horses = [t for t, _, _ in rows if t.role == "horse"]
        record = {
            "t": now - t0,
            "stage": stage,
            "status": status,
            "horse_stage": horses[0].stage if horses else None,
            "procs": len(rows),
            "max_rss_kb": max((rss for _, rss, _ in rows), default=0),
            "sum_rss_kb": sum(rss for _, rss, _ in rows),
            "sum_pss_kb": sum(pss or 0 for _, _, pss in rows) if with_pss else None,
            "worker_rss_kb": next((rss for t, rss, _ in rows if t.role == "worker"), 0),
            "horse_rss_kb": sum(rss for t, rss, _ in rows if t.role != "worker"),
        }
        self.samples.append(record)
        self.costs.append(time.monotonic() - started)
        return record


# --- main ----------------------------------------------------------------------------------


def _mb_or_none(values: list[int | None]) -> float | None:
    """The largest of ``values`` (KiB) in MiB; None when none was read (PSS is not always)."""
    read = [v for v in values if v]
    return max(read) / 1024 if read else None


def _stage_runs(job_id: Any) -> dict[str, dict[str, Any]]:
    from processing.models import StageRun

    out: dict[str, dict[str, Any]] = {}
    for run in StageRun.objects.filter(job_id=job_id).order_by("id"):
        seconds = None
        if run.started_at and run.finished_at:
            seconds = (run.finished_at - run.started_at).total_seconds()
        out[run.stage] = {
            "status": run.status,
            "attempt": run.attempt,
            "s": seconds,
            "items_done": run.items_done,
            "items_total": run.items_total,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--words", type=int, default=300, help="words per page")
    parser.add_argument("--interval", type=float, default=0.025, help="seconds between samples")
    parser.add_argument(
        "--pss-every", type=int, default=4, help="read PSS every Nth sample (smaps_rollup: ~3 ms)"
    )
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()

    stage_throughput.isolate("memory")
    info = _setup.prepare()
    from processing.models import ProcessingJob
    from processing.pipeline.registry import DOCUMENT_PROCESSING, get_pipeline

    stages = [stage.name for stage in get_pipeline(DOCUMENT_PROCESSING).stages]
    user, matter = _setup.make_owner()
    pdf_bytes = stage_throughput.make_text_pdf(args.pages, args.words)
    from django.core.files.uploadedfile import SimpleUploadedFile

    from processing.uploads import accept_upload

    accepted = accept_upload(
        matter,
        SimpleUploadedFile(f"memory-{args.pages}.pdf", pdf_bytes, "application/pdf"),
        by=user,
        allow_duplicate=True,
    )
    job = accepted.job
    queued = _setup.redis().llen(f"rq:queue:{job.queue_name}")
    print(
        f"document: {args.pages} pages x ~{len(stage_throughput.page_text(1).split())} words, "
        f"{len(pdf_bytes) / MB:.1f} MB, job {job.id} on queue {job.queue_name!r} "
        f"({queued} entry); stages: {' -> '.join(stages)}"
    )

    command = ["manage.py", "rqworker", "high", "default", "low", "--burst"]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{NAME}-rqworker.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, *command],
            env=_setup.child_env(),
            cwd=_setup.ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    monitor = Monitor(worker.pid, job.id, args.pss_every)
    completed_at: float | None = None
    worker_exit: float | None = None
    try:
        while True:
            tick = time.monotonic()
            record = monitor.sample(t0)
            if record["status"] == "COMPLETED" and completed_at is None:
                completed_at = tick
            if worker.poll() is not None:
                worker_exit = time.monotonic()
                break
            if completed_at is not None and tick - completed_at > AFTER_COMPLETED_S:
                break
            if record["status"] in ("FAILED", "CANCELLED"):
                break
            if tick - t0 > args.timeout:
                raise SystemExit(f"not COMPLETED after {args.timeout:.0f} s; see {log_path}")
            time.sleep(max(0.0, args.interval - (time.monotonic() - tick)))
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    job = ProcessingJob.objects.get(pk=job.id)
    runs = _stage_runs(job.id)
    if job.status != "COMPLETED":
        raise SystemExit(
            f"job ended {job.status} at {job.current_stage}: {job.error_code} {job.error}\n"
            f"{job.error_detail}\nsee {log_path}"
        )
    samples = monitor.samples
    horses = [t for t in monitor.tracked.values() if t.role == "horse"]
    worker_proc = monitor.tracked[worker.pid]

    def while_alive(tracked: Tracked) -> list[dict[str, Any]]:
        return [s for s in samples if tracked.first_seen - t0 <= s["t"] <= tracked.last_seen - t0]

    per_stage: dict[str, dict[str, Any]] = {}
    for stage in stages:
        mine = [h for h in horses if h.stage == stage]
        alive = [s for h in mine for s in while_alive(h)]
        run = runs.get(stage, {})
        per_stage[stage] = {
            "horses": len(mine),
            "samples": len(alive),
            "horse_peak_rss_mb": max((h.peak_rss_kb for h in mine), default=0) / 1024,
            # How much the horse grew over its first sample (just after the fork).
            "horse_growth_mb": max(
                (max(h.peak_rss_kb, h.hwm_kb) - (h.first_rss_kb or 0) for h in mine), default=0
            )
            / 1024,
            "horse_hwm_mb": max((h.hwm_kb for h in mine), default=0) / 1024,
            "horse_peak_pss_mb": _mb_or_none([h.peak_pss_kb for h in mine]),
            "peak_sum_rss_mb": max((s["sum_rss_kb"] for s in alive), default=0) / 1024,
            "peak_sum_pss_mb": _mb_or_none([s["sum_pss_kb"] for s in alive]),
            "stage_s": run.get("s"),
            "items": run.get("items_total"),
        }
    descendants = [t for t in monitor.tracked.values() if t.role == "descendant"]
    overall = {
        "peak_single_rss_mb": max(s["max_rss_kb"] for s in samples) / 1024,
        "peak_single_hwm_mb": max(t.hwm_kb for t in monitor.tracked.values()) / 1024,
        "peak_sum_rss_mb": max(s["sum_rss_kb"] for s in samples) / 1024,
        "peak_sum_pss_mb": max(s["sum_pss_kb"] or 0 for s in samples) / 1024,
        # No single moment, but a bound no sample can miss: parent's and largest horse's peaks.
        "hwm_worker_plus_largest_horse_mb": (
            worker_proc.hwm_kb + max((h.hwm_kb for h in horses), default=0)
        )
        / 1024,
        "worker_parent_peak_rss_mb": worker_proc.peak_rss_kb / 1024,
        "worker_parent_hwm_mb": worker_proc.hwm_kb / 1024,
        "worker_parent_rss_at_first_horse_mb": next(
            (s["worker_rss_kb"] / 1024 for s in samples if s["procs"] > 1), None
        ),
        "horses": len(horses),
        "other_descendants": len(descendants),
    }
    first_horse = min((h.first_seen for h in horses), default=None)
    timing = {
        "worker_start_to_completed_observed_s": (completed_at or time.monotonic()) - t0,
        "worker_start_to_first_horse_s": None if first_horse is None else first_horse - t0,
        "worker_start_to_exit_s": None if worker_exit is None else worker_exit - t0,
        "job_created_to_completed_s": (job.completed_at - job.created_at).total_seconds(),
        "job_started_to_completed_s": (job.completed_at - job.started_at).total_seconds(),
        "sum_of_stage_runs_s": sum(r["s"] or 0 for r in runs.values()),
    }
    costs = sorted(monitor.costs)
    sampling = {
        "interval_s": args.interval,
        "samples": len(samples),
        "mean_gap_ms": 1000 * (samples[-1]["t"] - samples[0]["t"]) / max(len(samples) - 1, 1),
        "median_sample_cost_ms": 1000 * costs[len(costs) // 2],
        "max_sample_cost_ms": 1000 * costs[-1],
    }

    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    rows = [
        [
            stage,
            mb(m["horse_peak_rss_mb"]),
            mb(m["horse_hwm_mb"]),
            f"{m['horse_growth_mb']:.1f}",
            mb(m["horse_peak_pss_mb"]),
            mb(m["peak_sum_rss_mb"]),
            mb(m["peak_sum_pss_mb"]),
            "-" if m["stage_s"] is None else f"{m['stage_s']:.2f}",
            "-" if not m["stage_s"] else f"{args.pages / m['stage_s']:.0f}",
            m["samples"],
        ]
        for stage, m in per_stage.items()
    ]
    rows.append(
        [
            "whole run",
            mb(max((h.peak_rss_kb for h in horses), default=0) / 1024),
            mb(max((h.hwm_kb for h in horses), default=0) / 1024),
            f"{max((m['horse_growth_mb'] for m in per_stage.values()), default=0):.1f}",
            mb(max((h.peak_pss_kb for h in horses), default=0) / 1024),
            mb(overall["peak_sum_rss_mb"]),
            mb(overall["peak_sum_pss_mb"]),
            f"{timing['sum_of_stage_runs_s']:.2f}",
            "",
            len(samples),
        ]
    )
    print()
    print(
        _setup.table(
            [
                "stage",
                "horse RSS MB",
                "horse HWM MB",
                "horse growth MB",
                "horse PSS MB",
                "sum RSS MB",
                "sum PSS MB",
                "stage s",
                "pages/s",
                "samples",
            ],
            rows,
        )
    )
    peak_sum = overall["peak_sum_rss_mb"]
    verdict = (
        "met"
        if max(peak_sum, overall["hwm_worker_plus_largest_horse_mb"]) < TARGET_MB
        else "MISSED"
    )
    print(
        f"\nworker parent: RSS {mb(overall['worker_parent_rss_at_first_horse_mb'])} MB when the "
        f"first horse forked, high-water {mb(overall['worker_parent_hwm_mb'])} MB; largest single "
        f"process {mb(overall['peak_single_rss_mb'])} MB sampled, "
        f"{mb(overall['peak_single_hwm_mb'])} MB high-water"
    )
    print(
        f"peak sum over worker + horses: RSS {peak_sum:.0f} MB (shared pages counted twice), "
        f"PSS {overall['peak_sum_pss_mb']:.0f} MB; bound from high-water marks "
        f"{overall['hwm_worker_plus_largest_horse_mb']:.0f} MB; target < {TARGET_MB:.0f} MB: "
        f"{verdict}"
    )
    timing_line = (
        "time: worker start -> COMPLETED seen {worker_start_to_completed_observed_s:.1f} s "
        "(first horse at {worker_start_to_first_horse_s:.1f} s); job created -> completed "
        "{job_created_to_completed_s:.1f} s, started -> completed "
        "{job_started_to_completed_s:.1f} s; stage runs {sum_of_stage_runs_s:.1f} s"
    )
    print(timing_line.format(**{k: v or 0.0 for k, v in timing.items()}))
    print(
        f"sampling: {sampling['samples']} samples, one every {sampling['mean_gap_ms']:.0f} ms "
        f"(PSS every {args.pss_every}th; a sample costs {sampling['median_sample_cost_ms']:.1f} "
        f"ms, max {sampling['max_sample_cost_ms']:.1f}); {len(horses)} work horses, "
        f"{len(descendants)} other descendants; log {log_path}"
    )
    timeline = samples[:: max(1, len(samples) // 400)]
    path_out = _setup.write_results(
        NAME,
        {
            "versions": info,
            "config": {
                "pages": args.pages,
                "words_per_page": args.words,
                "interval_s": args.interval,
                "command": " ".join(command),
                "worker_class": "settings.RQ['WORKER_CLASS'] (processing.jobs.worker.Worker)",
                "pdf_bytes": len(pdf_bytes),
            },
            "per_stage": per_stage,
            "overall": overall,
            "timing": timing,
            "sampling": sampling,
            "stage_runs": runs,
            "processes": [t.as_dict(t0) for t in monitor.tracked.values()],
            "target_mb": TARGET_MB,
            "target_met": verdict == "met",
            "timeline": timeline,
        },
    )
    print(f"results: {path_out}")


if __name__ == "__main__":
    main()
