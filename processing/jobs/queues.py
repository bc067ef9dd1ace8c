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


def queue_for(
    *,
    priority: str,
    page_count: int | None,
    size: int,
    high_max_pages: int,
    high_max_bytes: int,
) -> str:
    """The queue for a job of ``priority`` on a document of ``page_count`` pages, ``size`` bytes.

    A priority of ``high`` or ``low`` picks its queue; otherwise a document of
    fewer than ``high_max_pages`` pages goes to ``high``, so short documents are
    not stuck behind long ones. Its pages unknown (no stage has counted them yet:
    the upload never opens a document), a file under ``high_max_bytes`` counts as
    short.
    """
    if priority in (HIGH, LOW):
        return priority
    if page_count is not None:
        return HIGH if page_count < high_max_pages else DEFAULT
    return HIGH if size < high_max_bytes else DEFAULT
