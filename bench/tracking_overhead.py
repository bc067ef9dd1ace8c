"""Stage transitions per second through the lifecycle against a bare RQ chain, 2 workers.

ours:        N jobs of BENCH_NOOP5 (five no-op stages, see noop_pipeline.py), each on its
             own document, created with lifecycle.create_job; each stage is one RQ job
             (run_stage: begin_stage, the stage, complete_stage, which enqueues the next
             stage after commit).
bare:        N chains of five plain RQ jobs, each enqueuing the next (the baseline,
             bare_jobs.bare_step).
bare+UPDATE: the bare chain plus one autocommitted PostgreSQL UPDATE per step (reference:
             "tracking at its cheapest", ~0.75 of bare in BASELINES.md).

All first stages are enqueued, then the worker processes (bench/_worker.py, burst mode,
queues high/default/low) are started; with rq.SimpleWorker and with the forking rq.Worker
(the production one). The rate is 5N transitions over the span from the first RQ job's
start to the last one's end, read from RQ's own job timestamps, so worker start-up
(identical for every variant) is left out; the wall time including it is reported too.

The machine is small and shared, so the rate moves with everyone else's load. The
workers' CPU time per transition (user+sys of the worker processes and their work
horses, less what workers with nothing to do spend starting and stopping) is steadier
and is reported beside it. Medians of ROUNDS rounds; the variants' order rotates.

    .venv/bin/python bench/tracking_overhead.py [--chains 200] [--rounds 3] [--workers 2]
        [--worker-class simple|fork|both] [--fork-class rq.Worker]

The forking class is the one ``manage.py rqworker`` uses (settings.RQ["WORKER_CLASS"]:
processing.jobs.worker.Worker, RQ's forking Worker with the stage code loaded before it
forks); --fork-class rq.Worker measures RQ's plain one (results then go to
tracking_overhead_rq_Worker.json).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import _setup

NAME = "tracking_overhead"
TARGET = 0.6
VARIANTS = ("bare", "bare+UPDATE", "ours")
LOG_DIR = _setup.RESULTS_DIR / "logs"
TIMEOUT_S = 900


def _parse(value: bytes) -> datetime:
    return datetime.fromisoformat(value.decode().rstrip("Z")).replace(tzinfo=UTC)


def _rq_span(redis, expected: int) -> float:  # noqa: ANN001
    """Seconds from the first RQ job's start to the last one's end (all must be finished)."""
    starts, ends = [], []
    for key in redis.scan_iter("rq:job:*", count=1000):
        if key.count(b":") != 2:
            continue
        started, ended, status = redis.hmget(key, "started_at", "ended_at", "status")
        if status == b"finished" and started and ended:
            starts.append(_parse(started))
            ends.append(_parse(ended))
    if len(ends) != expected:
        raise SystemExit(f"{len(ends)} RQ jobs finished, expected {expected}")
    return (max(ends) - min(starts)).total_seconds()


def _enqueue_bare(function: str, chains: int) -> None:
    import django_rq
    from bare_jobs import OPTIONS
    from noop_pipeline import STAGES

    queue = django_rq.get_queue("high", commit_mode="auto")
    for chain in range(1, chains + 1):
        queue.enqueue(function, chain, 1, STAGES, description=f"bench chain {chain}", **OPTIONS)


def _enqueue_ours(documents: list) -> list:
    from noop_pipeline import JOB_TYPE

    from processing.jobs import lifecycle

    return [lifecycle.create_job(document, job_type=JOB_TYPE).pk for document in documents]


def _reset_chain_table(chains: int) -> None:
    from bare_jobs import TABLE
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} "
            "(id integer PRIMARY KEY, step integer NOT NULL, updated_at timestamptz)"
        )
        cursor.execute(f"TRUNCATE {TABLE}")
        cursor.execute(
            f"INSERT INTO {TABLE} (id, step) SELECT g, 0 FROM generate_series(1, %s) g",
            [chains],
        )


def _run_workers(worker_class: str, count: int, tag: str) -> tuple[float, float]:
    """Start ``count`` burst workers, wait for them; (wall seconds, CPU seconds of them all)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    procs = []
    started = time.perf_counter()
    try:
        for i in range(count):
            with open(LOG_DIR / f"{NAME}-{tag}-w{i + 1}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(_setup.BENCH_DIR / "_worker.py"),
                            "--worker-class",
                            worker_class,
                            "--name",
                            f"bench-{tag}-{i + 1}",
                        ],
                        env=_setup.child_env(),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=_setup.ROOT,
                    )
                )
        cpu = 0.0
        deadline = time.monotonic() + TIMEOUT_S
        pending = list(procs)
        while pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"workers still running after {TIMEOUT_S} s ({tag})")
            for proc in list(pending):
                # wait4: the child's rusage, including the work horses it forked and reaped.
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    cpu += usage.ru_utime + usage.ru_stime
                    pending.remove(proc)
            time.sleep(0.005)
        wall = time.perf_counter() - started
    finally:
        for proc in procs:
            if proc.returncode is None and proc.poll() is None:
                proc.kill()
                proc.wait()
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"a worker failed; see {LOG_DIR}/{NAME}-{tag}-w*.log")
    return wall, cpu


def run_once(
    variant: str,
    worker_class: str,
    workers: int,
    documents: list,
    tag: str,
    idle_cpu: float,
) -> dict:
    from django.db import connections
    from noop_pipeline import STAGES

    from processing.models import ProcessingJob, StageRun

    chains = len(documents)
    redis = _setup.redis()
    redis.flushdb()
    job_ids = []
    if variant == "bare":
        _enqueue_bare("bare_jobs.bare_step", chains)
    elif variant == "bare+UPDATE":
        _reset_chain_table(chains)
        _enqueue_bare("bare_jobs.bare_step_update", chains)
    else:
        _setup.forget_jobs()  # all are JOB_TYPE's: its documents are made without jobs
        job_ids = _enqueue_ours(documents)
    connections.close_all()  # nothing of ours holds the database while the workers run

    wall, cpu = _run_workers(worker_class, workers, tag)
    transitions = chains * STAGES
    span = _rq_span(redis, transitions)
    if variant == "ours":
        done = ProcessingJob.objects.filter(pk__in=job_ids, status="COMPLETED").count()
        runs = StageRun.objects.filter(job_id__in=job_ids, status="COMPLETED").count()
        if done != chains or runs != transitions:
            raise SystemExit(f"ours: {done}/{chains} jobs completed, {runs} stage runs")
    elif variant == "bare+UPDATE":
        from bare_jobs import TABLE
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {TABLE} WHERE step = %s", [STAGES])
            if cursor.fetchone()[0] != chains:
                raise SystemExit("bare+UPDATE: not every chain reached its last step")
    return {
        "variant": variant,
        "span_s": span,
        "wall_s": wall,
        "transitions": transitions,
        "per_s": transitions / span,
        "wall_per_s": transitions / wall,
        "worker_cpu_s": cpu,
        "cpu_ms_per_transition": 1000 * max(cpu - idle_cpu, 0.0) / transitions,
        "load_1min_after": _setup.load(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=200, help="jobs (chains of 5 stages)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--worker-class",
        choices=["simple", "fork", "both"],
        default="both",
        help="which worker classes to measure",
    )
    parser.add_argument(
        "--fork-class",
        default="",
        help="the forking worker class (default: settings.RQ['WORKER_CLASS'], what "
        "manage.py rqworker runs)",
    )
    args = parser.parse_args()

    info = _setup.prepare()
    import noop_pipeline  # noqa: F401 - BENCH_NOOP5 for create_job in this process

    from processing.models import Document

    user, matter = _setup.make_owner()
    documents = [
        Document.objects.create(
            matter=matter,
            uploaded_by=user,
            original_name=f"noop-{i}.txt",
            file=f"bench/noop-{i}.txt",
            content_type="text/plain",
            size=1,
            sha256="0" * 64,
        )
        for i in range(args.chains)
    ]
    from django_rq.workers import get_worker_class

    fork_class = args.fork_class
    if not fork_class:
        configured = get_worker_class()
        fork_class = f"{configured.__module__}.{configured.__qualname__}"
    classes = {}
    if args.worker_class in ("simple", "both"):
        classes["SimpleWorker"] = "rq.SimpleWorker"
    if args.worker_class in ("fork", "both"):
        classes[f"forking {fork_class}"] = fork_class
    print(
        f"{args.chains} chains x 5 stages = {args.chains * 5} transitions, "
        f"{args.workers} workers, {args.rounds} rounds" + "\n"
    )

    results: dict[str, dict[str, list[dict]]] = {c: {v: [] for v in VARIANTS} for c in classes}
    for round_no in range(args.rounds):
        order = VARIANTS[round_no % 3 :] + VARIANTS[: round_no % 3]
        for label, path in classes.items():
            short = path.rsplit(".", 1)[1]
            _setup.flush_redis()
            _wall, idle_cpu = _run_workers(path, args.workers, f"{short}-idle-r{round_no + 1}")
            for variant in order:
                tag = f"{short}-{variant.replace('+', '_')}-r{round_no + 1}"
                run = run_once(variant, path, args.workers, documents, tag, idle_cpu)
                results[label][variant].append(run)
                print(
                    f"  round {round_no + 1} {label:33} {variant:12} "
                    f"{run['per_s']:7.1f} transitions/s  {run['cpu_ms_per_transition']:5.2f} "
                    f"worker-CPU ms/transition  (span {run['span_s']:.2f} s, "
                    f"wall {run['wall_s']:.2f} s, load {run['load_1min_after']})",
                    flush=True,
                )
    print()

    summary = {}
    rows = []
    for label in classes:
        runs = results[label]
        med = {v: _setup.median([r["per_s"] for r in runs[v]]) for v in VARIANTS}
        wall = {v: _setup.median([r["wall_per_s"] for r in runs[v]]) for v in VARIANTS}
        cpu = {v: _setup.median([r["cpu_ms_per_transition"] for r in runs[v]]) for v in VARIANTS}
        ratio = _setup.median(
            [o["per_s"] / b["per_s"] for o, b in zip(runs["ours"], runs["bare"], strict=True)]
        )
        upd_ratio = _setup.median(
            [
                u["per_s"] / b["per_s"]
                for u, b in zip(runs["bare+UPDATE"], runs["bare"], strict=True)
            ]
        )
        cpu_ratio = cpu["bare"] / cpu["ours"] if cpu["ours"] else float("nan")
        summary[label] = {
            "median_per_s": med,
            "median_wall_per_s": wall,
            "median_worker_cpu_ms_per_transition": cpu,
            "ratio_ours_bare": ratio,
            "ratio_ours_bare_wall": wall["ours"] / wall["bare"],
            "ratio_update_bare": upd_ratio,
            "cpu_ratio_bare_over_ours": cpu_ratio,
            "target_met": ratio >= TARGET,
        }
        rows.append(
            [
                label,
                med["bare"],
                med["bare+UPDATE"],
                med["ours"],
                upd_ratio,
                ratio,
                f"{cpu['bare']:.2f} / {cpu['bare+UPDATE']:.2f} / {cpu['ours']:.2f}",
            ]
        )
    print(
        _setup.table(
            [
                "transitions/s (median)",
                "bare",
                "bare+UPDATE",
                "ours",
                "UPDATE/bare",
                "ours/bare",
                "worker CPU ms/transition bare / +UPDATE / ours",
            ],
            rows,
        )
    )
    for label, s in summary.items():
        verdict = "met" if s["target_met"] else "MISSED"
        print(
            f"{label}: ours/bare {s['ratio_ours_bare']:.2f} (target >= {TARGET}: {verdict}); "
            f"with worker start-up {s['ratio_ours_bare_wall']:.2f}; "
            f"by worker CPU {s['cpu_ratio_bare_over_ours']:.2f}"
        )
    out = _setup.write_results(
        NAME + ("_" + args.fork_class.replace(".", "_") if args.fork_class else ""),
        {
            "versions": info,
            "config": {
                "chains": args.chains,
                "stages": 5,
                "workers": args.workers,
                "rounds": args.rounds,
                "worker_classes": classes,
            },
            "runs": results,
            "summary": summary,
            "target_ratio": TARGET,
        },
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
