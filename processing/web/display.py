"""What the pages show of a job and of a matter: steps, status words, times, advice.

The job object of the API (:mod:`processing.payloads`) is the source; this adds
what a person reads. The pages and the live pushes both render through here,
so a job looks the same however it reached the browser.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from processing.errors import SUGGESTED_ACTIONS
from processing.jobs.states import JobStatus, StageStatus
from processing.permissions import OFFERED, Action

# The stepper's word for each state, for screen readers and for anyone who does not
# tell colours apart; the icon is decoration.
STEP_STATES = {
    "done": ("✓", "done"),
    "current": ("●", "in progress"),
    "waiting": ("○", "waiting"),
    "failed": ("✕", "failed"),
    "skipped": ("↷", "skipped"),
}
_STAGE_STEP = {
    StageStatus.COMPLETED: "done",
    StageStatus.IN_PROGRESS: "current",
    StageStatus.PENDING: "waiting",
    StageStatus.FAILED: "failed",
    StageStatus.SKIPPED: "skipped",
}
STATUS_WORDS = {
    JobStatus.QUEUED: ("⏳", "Queued"),
    JobStatus.PROCESSING: ("⚙", "Processing"),
    JobStatus.COMPLETED: ("✓", "Done"),
    JobStatus.FAILED: ("✕", "Failed"),
    JobStatus.CANCELLED: ("⊘", "Cancelled"),
    JobStatus.SKIPPED: ("↷", "Skipped"),
}


@dataclass(frozen=True)
class Step:
    """One step of a job's stepper."""

    label: str
    state: str

    @property
    def icon(self) -> str:
        """The step's symbol."""
        return STEP_STATES[self.state][0]

    @property
    def words(self) -> str:
        """The step's state in words."""
        return STEP_STATES[self.state][1]


def about(seconds: float) -> str:
    """A duration as people say it: "less than a minute", "about 4 min", "about 2 h 5 min"."""
    if seconds < 45:
        return "less than a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes} min" if minutes else f"about {hours} h"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th … 11th, 12th, 13th … 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def ago(iso: str | None, now: datetime) -> str:
    """An ISO time as "just now", "5 min ago", "3 h ago" or a date (pages refine it in the
    reader's own time zone)."""
    moment = parse_datetime(iso) if iso else None
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{round(seconds / 60)} min ago"
    if seconds < 86400:
        return f"{round(seconds / 3600)} h ago"
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _microseconds(iso: str | None) -> int:
    moment = parse_datetime(iso) if iso else None
    return 0 if moment is None else int(moment.timestamp() * 1_000_000)


def steps(job: dict[str, Any]) -> list[Step]:
    """Queued, each stage of the job's pipeline, then Done."""
    status = job["status"]
    never_started = status == JobStatus.QUEUED and job["started_at"] is None
    out = [Step("Queued", "current" if never_started else "done")]
    out += [Step(s["label"], _STAGE_STEP[s["status"]]) for s in job["stages"]]
    if status == JobStatus.COMPLETED:
        done = "done"
    elif status in (JobStatus.CANCELLED, JobStatus.SKIPPED):
        done = "skipped"
    else:
        done = "waiting"
    out.append(Step("Done", done))
    return out


def status_words(job: dict[str, Any]) -> tuple[str, str]:
    """The job's status as an icon and words; "Completed with a skipped stage" when a
    person skipped a stage that failed and the job finished without it."""
    icon, word = STATUS_WORDS[job["status"]]
    if job["status"] == JobStatus.COMPLETED:
        skipped = sum(1 for stage in job["stages"] if stage["status"] == StageStatus.SKIPPED)
        if skipped == 1:
            word = "Completed with a skipped stage"
        elif skipped:
            word = f"Completed with {skipped} skipped stages"
    return icon, word


_STEP_KEYS = ("status", "current_stage", "retry_count", "priority")
"""What a person may do to a job changes only with these."""


def job_view(
    job: dict[str, Any], now: datetime | None = None, actions: list[Action] | None = None
) -> dict[str, Any]:
    """The job object with what a person reads: steps, status in words, the wait, advice.

    A job object with ``stage_history`` and ``audit`` (the job page's) gets them
    in words too. ``actions`` are the buttons of the person the page is for (see
    :func:`processing.permissions.job_actions`); None for a push, which goes to
    everyone on the matter: the row then fetches its reader's buttons itself.
    """
    now = now or timezone.now()
    status = job["status"]
    icon, word = status_words(job)
    active = status in (JobStatus.QUEUED, JobStatus.PROCESSING)
    view = {
        **job,
        # Part of the id of the row's buttons (see the job-actions partial).
        "step": "-".join(str(job.get(key) or "") for key in _STEP_KEYS),
        "actions": None if actions is None else [action_view(a) for a in actions],
        "may_act": status in OFFERED,
        "steps": steps(job),
        "status_icon": icon,
        "status_word": word,
        "finished": not active,
        "position_text": "",
        "retry_text": "",
        "retry_until": None,
        "eta_text": "",
        "eta_until": None,
        "suggestion": SUGGESTED_ACTIONS.get(job["error_code"] or "", ""),
        "created_ago": ago(job["created_at"], now),
        # Every write of the lifecycle moves updated_at: what the page shows of a job
        # is only replaced by a newer state (see static/js/app.js).
        "version": _microseconds(job["updated_at"]),
        "completed_ago": ago(job["completed_at"], now),
    }
    due = parse_datetime(job["next_attempt_at"]) if job["next_attempt_at"] else None
    if status == JobStatus.QUEUED and due is not None and due > now:
        view["retry_text"] = f"next attempt in {round((due - now).total_seconds())} s"
        view["retry_until"] = job["next_attempt_at"]
    elif status == JobStatus.QUEUED and job["queue_position"]:
        view["position_text"] = f"{ordinal(job['queue_position'])} in line"
    if active:
        if job["eta_seconds"] is None:
            view["eta_text"] = "estimating…"
        else:
            view["eta_text"] = f"{about(job['eta_seconds'])} left"
            view["eta_until"] = job["estimated_completion"]
    if "stage_history" in job:
        recoveries = _recoveries(job["audit"])
        view["stage_history"] = [_run_view(run, job, recoveries) for run in job["stage_history"]]
        view["audit"] = [
            {
                **event,
                "words": _audit_words(event),
                "ago": ago(event["at"], now),
            }
            for event in job["audit"]
        ]
    return view


def clock(iso: str | None) -> str:
    """``HH:MM:SS`` of an ISO time, in the site's time zone ("" for none)."""
    when = parse_datetime(iso) if iso else None
    return timezone.localtime(when).strftime("%H:%M:%S") if when else ""


def _recoveries(audit: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """The audit events of stage runs taken over by the system (a lost worker, a worker
    shutting down), by the (stage, attempt) of the run they ended."""
    found = {}
    for event in audit:
        details = event["details"] or {}
        if details.get("cause") in ("worker_lost", "shutdown") and "stage_attempt" in details:
            found[(details["stage"], int(details["stage_attempt"]))] = event
    return found


def _recovery_words(run: dict[str, Any], recoveries: dict[tuple[str, int], dict[str, Any]]) -> str:
    """What happened to a run the system took over, or what the next run resumed from:
    "worker lost at 12:03:10, requeued at 12:03:31", "resumed from item 241 of 400"."""
    ended = recoveries.get((run["stage"], run["attempt"]))
    words = []
    if ended is not None:
        details = ended["details"]
        # A run handed back says so in its own message.
        if details["cause"] == "worker_lost":
            words.append(f"worker lost at {clock(details.get('last_seen'))}")
        if ended["action"] == "requeued":
            words.append(f"requeued at {clock(ended['at'])}")
    before = recoveries.get((run["stage"], run["attempt"] - 1))
    if before is not None and before["details"].get("items_done"):
        done, total = before["details"]["items_done"], before["details"].get("items_total", 0)
        if total and done < total:
            words.append(f"resumed from item {done + 1} of {total}")
    return ", ".join(words)


_AUDIT_WORDS = {
    "created": "uploaded it",
    "started": "started processing",
    "completed": "finished processing",
    "retry_scheduled": "scheduled an automatic retry",
    "failed": "stopped on an error",
    "retried": "retried it",
    "skipped": "skipped it",
    "cancelled": "cancelled it",
    "prioritized": "moved it to the front of the queue",
    "stage_stopped": "stopped the stage still running after the cancel",
    "stage_skipped": "skipped the failed stage and let it go on",
    "requeued": "put it back in its queue, whose entry was lost",
}
_REQUEUED_WORDS = {
    "worker_lost": "put it back in its queue: the worker running it was lost",
    "shutdown": "put it back in its queue: the worker running it was shutting down",
    "stranded": "put its next stage in its queue, whose entry was lost",
}


def _audit_words(event: dict[str, Any]) -> str:
    """An audit event in words: who did what (the cause of a system action, when known)."""
    cause = (event["details"] or {}).get("cause", "")
    if event["action"] == "requeued" and cause in _REQUEUED_WORDS:
        return _REQUEUED_WORDS[cause]
    if event["action"] == "failed" and cause == "worker_lost":
        return "stopped: the worker running it was lost on every attempt"
    return str(_AUDIT_WORDS.get(event["action"], event["action"]))


def _run_view(
    run: dict[str, Any],
    job: dict[str, Any],
    recoveries: dict[tuple[str, int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    labels = {stage["name"]: stage["label"] for stage in job["stages"]}
    took = run["duration_ms"]
    return {
        **run,
        "started_ago": ago(run["started_at"], timezone.now()),
        "label": labels.get(run["stage"], run["stage"]),
        "status_word": _run_words(run),
        "took": None if took is None else (f"{took} ms" if took < 1000 else f"{took / 1000:.1f} s"),
        "recovery": _recovery_words(run, recoveries or {}),
    }


def _run_words(run: dict[str, Any]) -> str:
    # A SKIPPED run that never started is a stage a person skipped; one that had
    # started was stopped by a cancel.
    if run["status"] == StageStatus.SKIPPED and run["started_at"] is None:
        return "skipped"
    return str(_STAGE_WORDS.get(run["status"], run["status"]))


_STAGE_WORDS = {
    StageStatus.PENDING: "waiting",
    StageStatus.IN_PROGRESS: "running",
    StageStatus.COMPLETED: "completed",
    StageStatus.FAILED: "failed",
    StageStatus.SKIPPED: "stopped",
}


def summary_view(summary: dict[str, Any]) -> dict[str, Any]:
    """The matter banner and counts: "Processing 3 documents — 41% complete · about 4 min left"."""
    active = summary["queued"] + summary["processing"]
    parts = []
    if active:
        parts.append(f"{summary['progress']}% complete")
        if summary["eta_seconds"] is not None:
            parts.append(f"{about(summary['eta_seconds'])} left")
    return {
        **summary,
        # Computed now, so a summary rendered later is the newer one (see static/js/app.js).
        "version": int(time.time() * 1_000_000),
        "active": active,
        "banner": (
            f"Processing {active} document{'s' if active != 1 else ''} — " + " · ".join(parts)
            if active
            else ""
        ),
    }


@dataclass(frozen=True)
class ActionWords:
    """How the pages name an action on a job."""

    label: str  # the button
    hint: str  # what it will do
    done: str  # what was done, after the document's name


ACTION_WORDS = {
    Action.RETRY: ActionWords(
        "Retry", "Runs it again from the failed stage; pages already done are kept.", "was retried"
    ),
    Action.SKIP_STAGE: ActionWords(
        "Skip this stage",
        "Goes on without the failed stage; the document ends incompletely processed.",
        "goes on without its failed stage",
    ),
    Action.SKIP: ActionWords(
        "Skip", "Gives up on it; the document stays incompletely processed.", "was skipped"
    ),
    Action.CANCEL: ActionWords(
        "Cancel", "Stops it; a running stage stops at its next page.", "was cancelled"
    ),
    Action.PRIORITIZE: ActionWords(
        "Prioritise", "Moves it to the front of the queue.", "was moved to the front of the queue"
    ),
}

REFUSED_BECAUSE = {
    JobStatus.QUEUED: "it is already queued",
    JobStatus.PROCESSING: "it is already running",
    JobStatus.COMPLETED: "it has finished",
    JobStatus.FAILED: "it has failed",
    JobStatus.CANCELLED: "it was cancelled",
    JobStatus.SKIPPED: "it was skipped",
}
"""Why an action was refused, by the status the job turned out to have."""


def action_view(action: Action) -> dict[str, str]:
    """One button of a job row: its words and the last part of its URL."""
    words = ACTION_WORDS[action]
    return {"slug": action.value.replace("_", "-"), "label": words.label, "hint": words.hint}
