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

UPDATE = "live.update"
"""The channel-layer message type of a push (the consumers' ``live_update``)."""


def group(matter_id: uuid.UUID | str) -> str:
    """The channel-layer group of a matter's websockets."""
    return f"matter-{matter_id}"


def build_update(
    matter_id: uuid.UUID | str,
    job_ids: Iterable[uuid.UUID | str],
    *,
    committed: list[ProcessingJob] | None = None,
    summary: dict[str, Any] | None = None,
    previous_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One push for ``matter_id``: ``{"push": <the channel-layer message>, "summary": …}``.

    ``committed`` are jobs as status changes committed them, in order: each is
    sent as it was then (not as the database holds it now, maybe a status later),
    to the event feed and to the page, with its stage history and audit trail.
    ``job_ids`` are jobs whose progress moved: they are read as they are now.
    ``summary`` is the matter's summary if the caller has a recent one, else it is
    worked out again; ``previous_summary`` is the one last pushed: a
    ``matter.summary`` event goes out only when it changed.
    """
    now = timezone.now()
    committed = committed or []
    moving = {str(job_id) for job_id in job_ids}
    current = list(
        ProcessingJob.objects.filter(pk__in=moving, matter_id=matter_id).select_related("document")
    )
    documents = Document.objects.in_bulk({job.document_id for job in committed})
    for job in committed:
        job.document = documents[job.document_id]
    found = estimates.for_jobs([*committed, *current], now=now)
    # The feed: every status change in order, then the latest counters.
    events: list[dict[str, Any]] = [
        {"type": "job.updated", "job": job_payload(job, now=now, estimate=found[job.pk])}
        for job in [*committed, *current]
    ]
    # The page: each status change in order too (htmx swaps them one after the other,
    # so the stepper passes every stage), with the job's history; then the latest
    # counters of the jobs whose progress moved.
    shown = [job_detail_payload(job, estimate=found[job.pk]) for job in committed]
    shown += [job_payload(job, now=now, estimate=found[job.pk]) for job in current]
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
