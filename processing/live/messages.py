"""Group names and what one push carries: the one place that decides both.

A push for a matter goes to the group ``matter-<id>``, which both websockets of
the matter join. It carries the changed jobs' full current state twice over:
rendered as the same fragments the pages render (for the dashboard, swapped in
by id with htmx's ``hx-swap-oob``), and as the API's job objects (for the event
feed); and the matter's summary, as the banner fragment and, when it changed,
as a ``matter.summary`` event.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.template.loader import render_to_string
from django.utils import timezone

from processing import selectors
from processing.jobs import estimates
from processing.models import Document, ProcessingJob
from processing.payloads import job_detail_payload, job_payload
from processing.web.display import job_view, summary_view

_HISTORY = ("stage_history", "audit")

UPDATE = "live.update"
"""The channel-layer message type of a push (the consumers' ``live_update``)."""


def group(matter_id: uuid.UUID | str) -> str:
    """The channel-layer group of a matter's websockets."""
    return f"matter-{matter_id}"


def build_update(
    matter_id: uuid.UUID | str,
    job_ids: Iterable[uuid.UUID | str],
    *,
    committed: ProcessingJob | None = None,
    previous_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One push for ``matter_id``: the jobs' current state and the matter's summary.

    ``committed`` is a job as a status change committed it: it is pushed as it
    was then (not as the database holds it now, maybe a status later), with its
    stage history and audit trail for its job page. The other jobs are read as
    they are now. ``previous_summary`` is the summary last pushed for the matter: a
    ``matter.summary`` event is included only when the summary differs.
    """
    now = timezone.now()
    jobs = ProcessingJob.objects.filter(pk__in=list(job_ids), matter_id=matter_id)
    if committed is not None:
        committed.document = Document.objects.get(pk=committed.document_id)
        jobs = jobs.exclude(pk=committed.pk)
    others = list(jobs.select_related("document"))
    found = estimates.for_jobs([*([committed] if committed else []), *others], now=now)
    shown = [job_payload(job, now=now, estimate=found[job.pk]) for job in others]
    if committed is not None:
        shown.insert(0, job_detail_payload(committed, estimate=found[committed.pk]))
    payloads = [{k: v for k, v in job.items() if k not in _HISTORY} for job in shown]
    summary = selectors.matter_summary(uuid.UUID(str(matter_id)))
    html = render_to_string(
        "processing/_live_update.html",
        {
            "jobs": [job_view(job, now) for job in shown],
            "summary": summary_view(summary),
            "matter_id": matter_id,
            "oob": True,
        },
    )
    events: list[dict[str, Any]] = [{"type": "job.updated", "job": p} for p in payloads]
    if summary != previous_summary:
        events.append({"type": "matter.summary", "summary": summary})
    return {"type": UPDATE, "html": html, "events": events, "summary": summary}
