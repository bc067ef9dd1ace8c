"""Upload-to-COMPLETED latency of a 20-page PDF through the real app, over HTTP.

Starts daphne on a free port and two ``manage.py rqworker high default low`` processes
(the forking worker, as in production), all on the bench database and Redis db. Creates
a user, an API token and a matter, then UPLOADS times, one after the other, each once the
workers are idle: POST /api/matters/{id}/documents (multipart), then GET /api/jobs/{id}
every 20 ms until the job is COMPLETED.

ours:     time COMPLETED was observed - time the upload response arrived (client side);
          also completed_at - created_at of the job (server side), split into the wait for
          a worker (created_at -> started_at) and the stage (started_at -> completed_at).
baseline: the bare stack doing the same work: an RQ job that reads the same 20 pages with
          pypdfium2 (bench/bare_jobs.py), enqueued on its own queue, run by two forking
          workers of its own (bench/_worker.py, which imports the job module before
          forking), its status polled in Redis every 20 ms; time finished was observed -
          time the enqueue returned.

One untimed warm-up of each first. Every process started here is stopped at the end,
also on error.

    .venv/bin/python bench/end_to_end.py [--uploads 10] [--pages 20]
        [--worker-class rq.Worker|rq.SimpleWorker]

--worker-class is passed to manage.py rqworker (default: settings.RQ["WORKER_CLASS"]);
the results then go to a file named after the class.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import _setup

NAME = "end_to_end"
TARGET_S = 2.0
POLL_S = 0.020
TIMEOUT_S = 120.0
BARE_QUEUE = "bench_bare"
LOG_DIR = _setup.RESULTS_DIR / "logs"


class Processes:
    """Child processes, each logging to a file; all stopped by ``stop``."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with open(LOG_DIR / f"{NAME}-{name}.log", "wb") as log:
            proc = subprocess.Popen(
                args,
                env=_setup.child_env(),
                cwd=_setup.ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise SystemExit(
                    f"{name} exited with {proc.returncode}; see {LOG_DIR}/{NAME}-{name}.log"
                )

    def stop(self) -> None:
        for _name, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for _name, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Api:
    """A keep-alive HTTP connection to the app with a bearer token."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, Any]:
        all_headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        try:
            self.conn.request(method, path, body=body, headers=all_headers)
            response = self.conn.getresponse()
        except (http.client.HTTPException, ConnectionError):
            self.conn.close()  # the server closed a kept-alive connection: once more
            self.conn.request(method, path, body=body, headers=all_headers)
            response = self.conn.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else None)

    def upload(self, matter_id: str, name: str, content: bytes) -> tuple[int, Any]:
        boundary = uuid.uuid4().hex
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        body = head + content + f"\r\n--{boundary}--\r\n".encode()
        return self.request(
            "POST",
            f"/api/matters/{matter_id}/documents?allow_duplicate=1",  # the same PDF each time
            body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )

    def close(self) -> None:
        self.conn.close()


def _wait_until(predicate, timeout: float, what: str, procs: Processes) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check()
        if predicate():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def _workers_idle(redis, expected: int) -> bool:  # noqa: ANN001
    from rq import Queue, Worker

    workers = Worker.all(connection=redis)
    if len(workers) < expected or any(w.get_state() != "idle" for w in workers):
        return False
    return all(
        Queue(name, connection=redis).count == 0 for name in ("high", "default", "low", BARE_QUEUE)
    )


def _poll_sleep(last: float) -> None:
    delay = last + POLL_S - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def run_ours(api: Api, matter_id: str, pdf: bytes, number: int) -> dict:
    from processing.models import ProcessingJob, StageRun

    sent = time.perf_counter()
    status, body = api.upload(matter_id, f"bench-e2e-{number}.pdf", pdf)
    answered = time.perf_counter()
    if status != 201:
        raise SystemExit(f"upload answered {status}: {body}")
    job_id = body["data"]["job"]["job_id"]
    polls = 0
    while True:
        last = time.perf_counter()
        status, job = api.request("GET", f"/api/jobs/{job_id}")
        polls += 1
        if status != 200:
            raise SystemExit(f"GET /api/jobs/{job_id} answered {status}: {job}")
        if job["status"] == "COMPLETED":
            observed = time.perf_counter()
            break
        if job["status"] in ("FAILED", "CANCELLED", "SKIPPED") or last - answered > TIMEOUT_S:
            raise SystemExit(f"job {job_id} ended {job['status']}: {job.get('error')}")
        _poll_sleep(last)
    row = ProcessingJob.objects.get(pk=job_id)
    stages, previous_end = {}, row.created_at
    for run in StageRun.objects.filter(job_id=job_id).order_by("started_at"):
        stages[run.stage] = {
            # from the previous stage's end (or the job's creation) to this one's start:
            # the queue, the fork, and what the work horse does before begin_stage
            "gap_s": (run.started_at - previous_end).total_seconds(),
            "run_s": (run.finished_at - run.started_at).total_seconds(),
        }
        previous_end = run.finished_at
    return {
        "job_id": job_id,
        "upload_s": answered - sent,
        "latency_s": observed - answered,
        "server_s": (row.completed_at - row.created_at).total_seconds(),
        "queue_wait_s": (row.started_at - row.created_at).total_seconds(),
        "stages_s": (row.completed_at - row.started_at).total_seconds(),
        "stages": stages,
        "polls": polls,
        "pages": row.items_total,
    }


def run_baseline(redis, path: str) -> dict:  # noqa: ANN001
    from rq import Queue
    from rq.job import Job

    queue = Queue(BARE_QUEUE, connection=redis)
    job = queue.enqueue("bare_jobs.bare_extract", path, result_ttl=3600)
    enqueued = time.perf_counter()
    key = f"rq:job:{job.id}"
    while True:
        last = time.perf_counter()
        status = redis.hget(key, "status")
        if status == b"finished":
            observed = time.perf_counter()
            break
        if status == b"failed" or last - enqueued > TIMEOUT_S:
            raise SystemExit(f"baseline job {job.id}: {status}")
        _poll_sleep(last)
    job = Job.fetch(job.id, connection=redis)
    return {
        "latency_s": observed - enqueued,
        "server_s": (job.ended_at - job.enqueued_at).total_seconds(),
        "queue_wait_s": (job.started_at - job.enqueued_at).total_seconds(),
        "chars": job.return_value(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=10)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--words", type=int, default=300, help="words per page")
    parser.add_argument(
        "--worker-class",
        default="",
        help="passed to manage.py rqworker (e.g. rq.Worker, rq.SimpleWorker); default: "
        "settings.RQ['WORKER_CLASS'] (processing.jobs.worker.Worker)",
    )
    args = parser.parse_args()
    suffix = "" if not args.worker_class else "_" + args.worker_class.replace(".", "_")

    info = _setup.prepare()
    from django.db import connections

    from processing.tokens import create_token

    user, matter = _setup.make_owner()
    _token, raw_token = create_token(user, name="bench")
    matter_id = str(matter.pk)
    pdf = _setup.make_text_pdf(args.pages, args.words)
    bare_pdf = _setup.MEDIA_ROOT / "bench-bare.pdf"
    bare_pdf.write_bytes(pdf)
    redis = _setup.redis()
    connections.close_all()

    worker_class = ["--worker-class", args.worker_class] if args.worker_class else []
    port = _setup.free_port()
    procs = Processes()
    api = Api(port, raw_token)
    ours: list[dict] = []
    bare: list[dict] = []
    warmup: dict[str, Any] = {}
    try:
        procs.start(  # the web server as the Procfile runs it: daphne, uploads bounded
            "daphne",
            [sys.executable, "-m", "jobtracker.serve", "-b", "127.0.0.1", "-p", str(port),
             "jobtracker.asgi:application"],
        )  # fmt: skip
        for i in (1, 2):
            procs.start(
                f"rqworker{i}",
                [
                    sys.executable,
                    "manage.py",
                    "rqworker",
                    *worker_class,
                    "high",
                    "default",
                    "low",
                ],  # fmt: skip
            )
            procs.start(
                f"bare-worker{i}",
                [sys.executable, str(_setup.BENCH_DIR / "_worker.py"), "--worker-class",
                 "rq.Worker", "--queues", BARE_QUEUE, "--no-burst", "--logging-level", "INFO"],
            )  # fmt: skip
        _wait_until(lambda: _setup.server_up(port, "/api/jobs"), 60, "daphne", procs)
        _wait_until(lambda: _workers_idle(redis, 4), 60, "the workers", procs)
        command = " ".join(["manage.py rqworker", *worker_class, "high default low"])
        print(
            f"daphne on 127.0.0.1:{port}, 2 x {command}, 2 baseline workers; "
            f"{args.pages}-page PDF, {len(pdf) / 1024:.0f} KiB\n"
        )

        _wait_until(lambda: _workers_idle(redis, 4), 60, "idle workers", procs)
        warmup["ours"] = run_ours(api, matter_id, pdf, 0)
        _wait_until(lambda: _workers_idle(redis, 4), 60, "idle workers", procs)
        warmup["baseline"] = run_baseline(redis, str(bare_pdf))
        for number in range(1, args.uploads + 1):
            _wait_until(lambda: _workers_idle(redis, 4), 60, "idle workers", procs)
            ours.append(run_ours(api, matter_id, pdf, number))
            _wait_until(lambda: _workers_idle(redis, 4), 60, "idle workers", procs)
            bare.append(run_baseline(redis, str(bare_pdf)))
            o, b = ours[-1], bare[-1]
            print(
                f"  upload {number:2}: COMPLETED seen {o['latency_s'] * 1000:6.0f} ms after "
                f"the upload answered (upload {o['upload_s'] * 1000:.0f} ms; server "
                f"{o['server_s'] * 1000:.0f} ms = wait {o['queue_wait_s'] * 1000:.0f} + stages "
                f"{o['stages_s'] * 1000:.0f}); baseline {b['latency_s'] * 1000:4.0f} ms",
                flush=True,
            )
        procs.check()
    finally:
        api.close()
        procs.stop()
        connections.close_all()

    def stats(rows: list[dict], key: str) -> tuple[float, float]:
        values = [r[key] for r in rows]
        return _setup.median(values), max(values)

    lat_med, lat_max = stats(ours, "latency_s")
    srv_med, srv_max = stats(ours, "server_s")
    wait_med, wait_max = stats(ours, "queue_wait_s")
    stage_med, stage_max = stats(ours, "stages_s")
    up_med, up_max = stats(ours, "upload_s")
    base_med, base_max = stats(bare, "latency_s")
    base_srv_med, base_srv_max = stats(bare, "server_s")
    ratio = base_med / lat_med
    print()
    print(
        _setup.table(
            ["seconds", "median", "worst"],
            [
                ["upload request (POST, 201)", up_med, up_max],
                ["ours: COMPLETED observed after upload answered", lat_med, lat_max],
                ["ours: server completed_at - created_at", srv_med, srv_max],
                ["  of which waiting for a worker", wait_med, wait_max],
                ["  of which the stages (started_at -> completed_at)", stage_med, stage_max],
                ["baseline: bare RQ job finished, observed", base_med, base_max],
                ["baseline: RQ ended_at - enqueued_at", base_srv_med, base_srv_max],
            ],
        )
    )
    names = list(ours[0]["stages"])
    print()
    print(
        _setup.table(
            ["per stage, ms (median)", "before it: queue, fork, set-up", "the stage run"],
            [
                [
                    name,
                    1000 * _setup.median([o["stages"][name]["gap_s"] for o in ours]),
                    1000 * _setup.median([o["stages"][name]["run_s"] for o in ours]),
                ]
                for name in names
            ],
        )
    )
    stage_summary = {
        name: {
            "gap_median_s": _setup.median([o["stages"][name]["gap_s"] for o in ours]),
            "run_median_s": _setup.median([o["stages"][name]["run_s"] for o in ours]),
        }
        for name in names
    }
    verdict = "met" if lat_max < TARGET_S else "MISSED"
    print(
        f"\nworst {lat_max:.3f} s, median {lat_med:.3f} s (target < {TARGET_S} s: {verdict}); "
        f"baseline/ours (medians) {ratio:.2f}; warm-up: ours "
        f"{warmup['ours']['latency_s']:.3f} s, baseline {warmup['baseline']['latency_s']:.3f} s"
    )
    out = _setup.write_results(
        NAME + suffix,
        {
            "versions": info,
            "config": {
                "uploads": args.uploads,
                "pages": args.pages,
                "words_per_page": args.words,
                "poll_interval_s": POLL_S,
                "workers": "2 x manage.py rqworker high default low "
                + (f"--worker-class {args.worker_class}" if args.worker_class else ""),
            },
            "warmup": warmup,
            "ours": ours,
            "baseline": bare,
            "summary": {
                "latency_median_s": lat_med,
                "latency_worst_s": lat_max,
                "server_median_s": srv_med,
                "server_worst_s": srv_max,
                "queue_wait_median_s": wait_med,
                "stages_median_s": stage_med,
                "per_stage": stage_summary,
                "upload_median_s": up_med,
                "baseline_latency_median_s": base_med,
                "baseline_latency_worst_s": base_max,
                "ratio_baseline_over_ours": ratio,
            },
            "target_s": TARGET_S,
            "target_met": lat_max < TARGET_S,
        },
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
