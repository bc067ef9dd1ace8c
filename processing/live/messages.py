"""Group names and what one push carries: the one place that decides both.

A push for a matter goes to the group ``matter-<id>``, which both websockets of
the matter join. There are two kinds, each a channel-layer message of type
``live.update`` with ``html`` (for the page, swapped in by id with htmx's
``hx-swap-oob``; the same fragments the pages render) and ``events`` (for the
event feed; each one JSON text already, so a consumer sends it as it is):

- an **update**: changed jobs' full current state, as the job rows and as
  ``job.updated`` events with the API's job objects;
- a **summary**: the matter's banner (when what it reads changed) and a
  ``matter.summary`` event (when its counts changed).

A job page's timeline and audit trail are not pushed: the page fetches them
again when its job's row arrives with a new status or stage (static/js/app.js).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.template.loader import render_to_string
from django.utils import timezone

from processing import selectors
from processing.jobs import estimates
from processing.models import Document, ProcessingJob
from processing.payloads import job_payload
from processing.web.display import job_view, summary_view

TEMPLATE = "processing/_live_update.html"
"""What a push's html is rendered from (the pages' own partials)."""
UPDATE = "live.update"
"""The channel-layer message type of a push (the consumers' ``live_update``)."""


def group(matter_id: uuid.UUID | str) -> str:
    """The channel-layer group of a matter's websockets."""
    return f"matter-{matter_id}"


def build_update(matter_id: uuid.UUID | str, jobs: list[ProcessingJob]) -> dict[str, Any]:
    """The push of ``jobs``, each as its change committed it, in order.

    Each is sent as it was then (not as the database holds it now, maybe a change
    later) to the event feed, and to the page, which htmx swaps in one after the
    other, so the stepper passes every stage.
    """
    now = timezone.now()
    documents = Document.objects.in_bulk({job.document_id for job in jobs})
    for job in jobs:
        job.document = documents[job.document_id]
    found = estimates.for_jobs(jobs, now=now)
    shown = [job_payload(job, now=now, estimate=found[job.pk]) for job in jobs]
    html = render_to_string(
        TEMPLATE,
        {"jobs": [job_view(job, now) for job in shown], "matter_id": matter_id},
    )
    events = [{"type": "job.updated", "job": job} for job in shown]
    return _message(html, events)


COUNTS = (
    *("queued", "processing", "completed", "failed", "cancelled", "skipped"),
    *("documents", "indexed", "entities"),
)
"""The figures of a summary whose change is a ``matter.summary`` event (CONTRACT.md:
"when counts change"); the active jobs' progress and ETA ride along."""


def build_summary(
    matter_id: uuid.UUID | str, previous: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The push of the matter's summary, and the summary itself.

    Compared with ``previous`` (the one last worked out), the push carries the banner
    only if what it reads changed, and the ``matter.summary`` event only if the counts
    changed; it is None when neither did: there is nothing to send.
    """
    summary = selectors.matter_summary(uuid.UUID(str(matter_id)))
    view = summary_view(summary)
    before = summary_view(previous) if previous is not None else None
    reads_the_same = before is not None and all(view[k] == before[k] for k in ("banner", *COUNTS))
    counts_same = previous is not None and all(summary[k] == previous[k] for k in COUNTS)
    if reads_the_same and counts_same:
        return None, summary
    html = ""
    if not reads_the_same:
        html = render_to_string(TEMPLATE, {"summary": view, "matter_id": matter_id})
    events = [] if counts_same else [{"type": "matter.summary", "summary": summary}]
    return _message(html, events), summary


def _message(html: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": UPDATE,
        "html": html,
        "events": [json.dumps(event, cls=DjangoJSONEncoder) for event in events],
    }
