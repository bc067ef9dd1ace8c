"""The RQ worker class: RQ's forking worker, with the stage code loaded before it forks.

``manage.py rqworker`` sets Django up but does not import ``processing.tasks``
or the stages, so RQ's forking worker would import them again in every work
horse, for every stage (the document readers pull in pypdfium2, pypdf,
python-docx, lxml and eyecite: a few hundred milliseconds). Loading them once
in the parent makes each fork start warm. settings.RQ["WORKER_CLASS"] names it.
"""

from __future__ import annotations

from typing import Any

import rq


def preload() -> None:
    """Import the stage runner and every registered pipeline's stages; warm lazy imports."""
    from django.db import connection

    import processing.tasks  # noqa: F401 - what every work horse runs
    from processing.entities_find import find_entities
    from processing.pipeline import job_types

    job_types()
    # eyecite loads its reporter tables on first use.
    find_entities("See Roe v. Wade, 410 U.S. 113 (1973), decided 22 January 1973.")
    # Django caches per-process lookups on a first connection (PostgreSQL type OIDs);
    # the connection itself is closed so no socket is shared across forks.
    connection.ensure_connection()
    connection.close()


class Worker(rq.Worker):
    """RQ's forking worker (one process per stage: a crash costs one stage, not the worker)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        preload()
