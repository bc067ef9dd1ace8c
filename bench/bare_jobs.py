"""The baselines' RQ jobs: the bare stack doing what our code does, minus the tracking.

* ``bare_step``: one link of a chain of plain RQ jobs, each enqueuing the next with the
  options the app's dispatch uses (bench/tracking_overhead.py).
* ``bare_step_update``: the same plus one autocommitted PostgreSQL ``UPDATE`` per step,
  the "tracking at its cheapest" reference of BASELINES.md.
* ``bare_extract``: pypdfium2 reading every page's text of a file (bench/end_to_end.py).
"""

from __future__ import annotations

import pypdfium2
from rq import Queue, get_current_job

TABLE = "bench_chain"
OPTIONS = {
    "job_timeout": 1800,
    "result_ttl": 24 * 3600,
    "failure_ttl": 7 * 24 * 3600,
}


def _enqueue_next(function: str, chain: int, step: int, total: int) -> None:
    job = get_current_job()
    queue = Queue(job.origin, connection=job.connection)
    queue.enqueue(function, chain, step + 1, total, description=f"bench chain {chain}", **OPTIONS)


def bare_step(chain: int, step: int, total: int) -> str:
    """One link of the bare chain: enqueue the next link, if any."""
    if step < total:
        _enqueue_next("bare_jobs.bare_step", chain, step, total)
    return "ok"


def bare_step_update(chain: int, step: int, total: int) -> str:
    """One link of the bare chain with one autocommitted UPDATE of a tracking row."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET step = %s, updated_at = now() WHERE id = %s", [step, chain]
        )
    if step < total:
        _enqueue_next("bare_jobs.bare_step_update", chain, step, total)
    return "ok"


def bare_extract(path: str) -> int:
    """Every page's text of the PDF at ``path``; returns the characters read."""
    pdf = pypdfium2.PdfDocument(path)
    chars = 0
    try:
        for index in range(len(pdf)):
            page = pdf[index]
            textpage = page.get_textpage()
            chars += len(textpage.get_text_range())
            textpage.close()
            page.close()
    finally:
        pdf.close()
    return chars
