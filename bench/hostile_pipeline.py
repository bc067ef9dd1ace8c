"""Pipelines of hostile documents for bench/hostile_memory.py, and a worker without the sandbox.

``BENCH_HOSTILE_MEMORY``: one stage that takes ``BENCH_HOSTILE_MB`` (environment, default
1536) of memory, 16 MB at a time, touching every page, as a parser inflating a bomb
would. ``BENCH_HOSTILE_ABORT``: one stage that aborts its process (SIGABRT), as pdfium
does on a bomb. The worker runner (bench/_worker.py) imports this module, so every work
horse has them.

:class:`UnsandboxedWorker` is the production worker class as it was before the sandbox:
no memory budget in the work horse, and a horse's death left to the lease (the
"before" of the benchmark).
"""

from __future__ import annotations

import os

import rq
from rq.job import Job
from rq.queue import Queue

from processing.jobs.worker import Worker
from processing.pipeline.registry import Stage, register

MEMORY = "BENCH_HOSTILE_MEMORY"
ABORT = "BENCH_HOSTILE_ABORT"
CHUNK = 16 * 1024 * 1024


def inflate(ctx: object) -> None:
    """Take BENCH_HOSTILE_MB megabytes, touching every page."""
    wanted = int(os.environ.get("BENCH_HOSTILE_MB", "1536")) * 1024 * 1024
    held = []
    while len(held) * CHUNK < wanted:
        held.append(b"\x01" * CHUNK)


def abort(ctx: object) -> None:
    """End the process as a parser's failed assertion does."""
    os.abort()


register(MEMORY, [Stage("inflate", "Inflating", f"{__name__}.inflate")])
register(ABORT, [Stage("parse", "Parsing", f"{__name__}.abort")])


class UnsandboxedWorker(Worker):
    """The production worker without the sandbox: RQ's own horse start and death handling."""

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        rq.Worker.main_work_horse(self, job, queue)

    def handle_work_horse_killed(self, job: Job, retpid: int, ret_val: int, rusage: object) -> None:
        rq.Worker.handle_work_horse_killed(self, job, retpid, ret_val, rusage)
