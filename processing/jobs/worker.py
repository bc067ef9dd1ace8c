"""The RQ worker class: RQ's forking worker, with the stage code loaded before it forks.

``manage.py rqworker`` sets Django up but does not import ``processing.jobs.tasks``
or the stages, so RQ's forking worker would import them again in every work
horse, for every stage (the document readers pull in pypdfium2, pypdf,
python-docx, lxml and eyecite: a few hundred milliseconds). Loading them once
in the parent makes each fork start warm, and so does whatever else a stage
would otherwise work out again in every work horse (see :class:`Worker`).
settings.RQ["WORKER_CLASS"] names it.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import rq
from django.db import DatabaseError
from rq.utils import get_version

logger = logging.getLogger(__name__)


def preload() -> None:
    """Import the stage runner and every registered pipeline's stages; warm lazy imports."""
    from django.db import connection

    import processing.jobs.tasks  # noqa: F401 - what every work horse runs
    from processing.jobs import statements
    from processing.pipeline.entity_finder import find_entities
    from processing.pipeline.registry import get_pipeline, job_types

    for job_type in job_types():
        for stage in get_pipeline(job_type).stages:
            stage.load()
    # eyecite loads its reporter tables on first use.
    find_entities("See Roe v. Wade, 410 U.S. 113 (1973), decided 22 January 1973.")
    # Django caches per-process lookups on a first connection (PostgreSQL type OIDs),
    # and psycopg the parsed form of the lifecycle's statements; the connection itself
    # is closed so no socket is shared across forks. A worker started while PostgreSQL
    # is away (restarting) starts all the same: each work horse connects for itself.
    try:
        connection.ensure_connection()
        statements.prepare()
    except DatabaseError as exc:
        logger.warning("Started without a warm database connection: %s", exc)
    finally:
        connection.close()


class Worker(rq.Worker):
    """RQ's forking worker (one process per stage: a crash costs one stage, not the worker)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        preload()
        # RQ asks the server its version (INFO) the first time a connection enqueues,
        # and remembers it on the connection: ask now, so work horses inherit it
        # instead of asking once per stage.
        get_version(self.connection)
        # What is loaded now lives as long as the worker: keep the cycle collector of
        # each work horse from walking it (and copying every page it touches).
        gc.freeze()
