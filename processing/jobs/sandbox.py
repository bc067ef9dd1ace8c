"""What a document can cost the worker: a memory budget per work horse, and a horse's crash
attributed to the document it was reading.

RQ's forking worker runs each stage in a work horse of its own, so the horse is the
sandbox: :func:`limit_work_horse` caps its address space before the stage runs.
A stage that needs more gets a ``MemoryError`` (``malloc`` fails; the kernel's OOM
killer, which on a shared host may pick PostgreSQL instead, never gets involved),
which :mod:`processing.jobs.tasks` records as :func:`out_of_memory`: permanent
``DOCUMENT_TOO_COMPLEX``, since the same file would need the same again. A parser
that aborts the process instead (pdfium on a decompression bomb: SIGABRT, SIGSEGV,
…) cannot be caught inside the horse; its worker sees the horse die and
:func:`attribute_crash` fails the stage the same way. A horse killed by SIGKILL (the
OOM killer, RQ's stop-job command after a cancel, a cold shutdown) says nothing
about the document and stays with the lease rescue and the cancel path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection

from processing.errors import DocumentTooComplex
from processing.jobs import lifecycle

logger = logging.getLogger(__name__)

CRASH_SIGNALS = frozenset(
    {
        signal.SIGABRT,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGFPE,
        # pdfium's CHECK failures end in Chromium's IMMEDIATE_CRASH (int3; ud2).
        signal.SIGILL,
        signal.SIGTRAP,
    }
)
"""Signals by which a parser, not the machine or a person, ends a work horse."""

RUN_STAGE = "processing.jobs.tasks.run_stage"


def size_words(size: int) -> str:
    """``size`` bytes as a person reads it: "1 GB", "1.5 GB", "300 MB"."""
    if size >= 1024**3:
        return f"{size / 1024**3:.1f}".removesuffix(".0") + " GB"
    return f"{round(size / 1024**2)} MB"


def out_of_memory() -> DocumentTooComplex:
    """The error of a stage that needed more than ``STAGE_MEMORY_LIMIT``."""
    return DocumentTooComplex(
        f"This document needed more than {size_words(settings.STAGE_MEMORY_LIMIT)} "
        "of memory to read, the most one document may use."
    )


def crashed() -> DocumentTooComplex:
    """The error of a stage whose work horse a parser brought down."""
    return DocumentTooComplex(
        "Reading this document made the program reading it crash, "
        "so it could not be processed. Trying again would crash it again."
    )


def mapped_bytes() -> int:
    """The address space this process maps now (VmSize)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def limit_work_horse() -> None:
    """In a new work horse, before its stage runs: cap its address space, and its core dumps.

    The cap is what the horse already maps *plus* ``STAGE_MEMORY_LIMIT``: a forked
    horse maps everything its worker preloaded (Django, the readers, pdfium, eyecite's
    tables; several hundred MB of address space, most of it shared with the worker and
    never touched), and that is not the document's doing. Only the soft limit is set,
    so :func:`lift_memory_limit` can give the stage's outcome room to be recorded.
    Core dumps are off: a parser aborting on a bomb would otherwise write gigabytes.
    """
    budget = int(settings.STAGE_MEMORY_LIMIT)
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if budget > 0:
            _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            limit = mapped_bytes() + budget
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (OSError, ValueError) as exc:
        logger.warning("Could not limit the work horse's memory: %s", exc)


def lift_memory_limit() -> None:
    """After a stage ran out of memory: lift the cap so its failure can be recorded."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def attribute_crash(rq_job: Any, wait_status: int | None, *, peak_kb: int | None = None) -> bool:
    """In the worker, once its work horse died: fail the stage it ran if a parser killed it.

    ``wait_status`` is the horse's status from ``wait4`` (None when RQ killed it
    itself, past the job's timeout). Only a stage entry (``run_stage(job_id,
    dispatch_id)``) ended by one of :data:`CRASH_SIGNALS` counts; the lifecycle then
    fails the stage only while the job is still running under that dispatch.
    Returns True when it did.
    """
    if wait_status is None or not os.WIFSIGNALED(wait_status):
        return False
    signum = os.WTERMSIG(wait_status)
    if signum not in CRASH_SIGNALS or getattr(rq_job, "func_name", None) != RUN_STAGE:
        return False
    job_id, dispatch_id = rq_job.args[:2]
    name = signal.Signals(signum).name
    detail = f"The work horse running this stage was killed by {name}"
    if peak_kb:
        detail += f" (peak resident memory {peak_kb // 1024} MB)"
    try:
        failed = lifecycle.fail_crashed_stage(job_id, dispatch_id, crashed(), detail=detail + ".")
    except DatabaseError:
        # Its lease runs out instead, and recovery rescues it (WORKER_LOST).
        logger.exception("Could not record the crash of job %s", job_id)
        return False
    finally:
        # The worker forks its next horse from here: no connection may be shared with it.
        connection.close()
    if failed:
        logger.warning("Job %s failed: its document crashed its work horse (%s)", job_id, name)
    return failed is not None
