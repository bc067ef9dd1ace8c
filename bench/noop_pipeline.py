"""The ``BENCH_NOOP5`` pipeline: five stages that do nothing (bench/tracking_overhead.py).

Importing this module registers it with the real registry; the worker runner
(bench/_worker.py) imports it, so each stage goes through run_stage -> begin_stage ->
stage -> complete_stage -> enqueue of the next stage, like any pipeline's.
"""

from __future__ import annotations

from processing.pipeline.registry import Stage, register

JOB_TYPE = "BENCH_NOOP5"
STAGES = 5


def _noop(ctx: object) -> None:
    return None


PIPELINE = register(
    JOB_TYPE, [Stage(f"noop{i}", f"No-op {i}", f"{__name__}._noop") for i in range(1, STAGES + 1)]
)
