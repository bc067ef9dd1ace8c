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
from typing import Any

from django.template.loader import render_to_string
from django.utils import timezone

from processing import selectors
from processing.jobs import estimates
from processing.models import Document, ProcessingJob
from processing.payloads import job_detail_payload, job_payload
from processing.web.display import job_view, summary_view

UPDATE = "live.update"
"""The channel-layer message type of a push (the consumers' ``live_update``)."""


def group(matter_id: uuid.UUID | str) -> str:
    """The channel-layer group of a matter's websockets."""
    return f"matter-{matter_id}"


def build_update(
    matter_id: uuid.UUID | str,
    changes: list[tuple[ProcessingJob, bool]],
    *,
    summary: dict[str, Any] | None = None,
    previous_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One push for ``matter_id``: ``{"push": <the channel-layer message>, "summary": …}``.

    ``changes`` are jobs as their changes committed them, in order, each with
    whether it was a status change. Each is sent as it was then (not as the
    database holds it now, maybe a change later) to the event feed, and to the
    page, which htmx swaps in one after the other, so the stepper passes every
    stage; a status change comes with the job's stage history and audit trail.
    ``summary`` is the matter's summary if the caller has a recent one, else it is
    worked out again; ``previous_summary`` is the one last pushed: a
    ``matter.summary`` event goes out only when it changed.
    """
    now = timezone.now()
    jobs = [job for job, _ in changes]
    documents = Document.objects.in_bulk({job.document_id for job in jobs})
    for job in jobs:
        job.document = documents[job.document_id]
    found = estimates.for_jobs(jobs, now=now)
    shown = [
        job_detail_payload(job, estimate=found[job.pk])
        if status
        else job_payload(job, now=now, estimate=found[job.pk])
        for job, status in changes
    ]
    events: list[dict[str, Any]] = [
        {"type": "job.updated", "job": {k: v for k, v in job.items() if k not in _HISTORY}}
        for job in shown
    ]
    if summary is None:
        summary = selectors.matter_summary(uuid.UUID(str(matter_id)))
    html = render_to_string(
        "processing/_live_update.html",
        {
            "jobs": [job_view(job, now) for job in shown],
            "summary": summary_view(summary),
            "matter_id": matter_id,
        },
    )
    if summary != previous_summary:
        events.append({"type": "matter.summary", "summary": summary})
    return {"push": {"type": UPDATE, "html": html, "events": events}, "summary": summary}


_HISTORY = ("stage_history", "audit")
