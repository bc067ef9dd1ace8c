"""The RQ queues a job's stages go on, and which one a job goes to.

Workers take from the queues in the order of :data:`QUEUES`. This module
imports no Django models, so settings and the development launcher can read
the queue names from here too.
"""

from __future__ import annotations

HIGH = "high"
"""Small documents (fewer than ``settings.HIGH_QUEUE_MAX_PAGES`` pages) and prioritised jobs."""
DEFAULT = "default"
"""Everything else."""
LOW = "low"
"""Jobs whose priority is ``low``."""

QUEUES = (HIGH, DEFAULT, LOW)
"""Every queue, in the order workers take from them."""

SMALL_FILE_BYTES = 5 * 1024 * 1024
"""A document of unknown page count (it did not open at upload) under this size is small."""


def queue_for(*, priority: str, page_count: int | None, size: int, high_max_pages: int) -> str:
    """The queue for a job of ``priority`` on a document of ``page_count`` pages, ``size`` bytes.

    A priority of ``high`` or ``low`` picks its queue; otherwise a document of
    fewer than ``high_max_pages`` pages (or, its pages unknown, a small file)
    goes to ``high``, so short documents are not stuck behind long ones.
    """
    if priority in (HIGH, LOW):
        return priority
    if page_count is not None:
        return HIGH if page_count < high_max_pages else DEFAULT
    return HIGH if size < SMALL_FILE_BYTES else DEFAULT
