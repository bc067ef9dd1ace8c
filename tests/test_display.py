"""What the pages say about a job and a matter, in words (processing.web.display)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from processing.web.display import about, ago, job_view, ordinal, summary_view

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
STAGES = [("extract", "Extracting"), ("ocr", "Reading scanned pages"), ("chunk", "Chunking")]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def job(status: str, stage_statuses: list[str], **fields: Any) -> dict[str, Any]:
    """A job object as the API builds it, with only what the display reads."""
    return {
        "status": status,
        "stages": [
            {"name": n, "label": label, "status": s}
            for (n, label), s in zip(STAGES, stage_statuses, strict=True)
        ],
        "started_at": None,
        "created_at": iso(NOW - timedelta(minutes=3)),
        "updated_at": iso(NOW - timedelta(minutes=1)),
        "completed_at": None,
        "next_attempt_at": None,
        "queue_position": None,
        "eta_seconds": None,
        "estimated_completion": None,
        "error_code": None,
        "current_stage": "",
        "retry_count": 0,
        "priority": "default",
        **fields,
    }


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (10, "less than a minute"),
        (80, "about 1 min"),
        (240, "about 4 min"),
        (3600, "about 1 h"),
        (7500, "about 2 h 5 min"),
    ],
)
def test_durations_read_as_people_say_them(seconds: float, words: str) -> None:
    assert about(seconds) == words


def test_places_in_line_are_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th",
    ]  # fmt: skip


def test_times_read_as_how_long_ago() -> None:
    assert ago(iso(NOW - timedelta(seconds=5)), NOW) == "just now"
    assert ago(iso(NOW - timedelta(minutes=2)), NOW) == "2 min ago"
    assert ago(iso(NOW - timedelta(hours=3)), NOW) == "3 h ago"
    assert ago(None, NOW) == ""


def test_a_new_job_is_third_in_line_and_estimating() -> None:
    view = job_view(job("QUEUED", ["PENDING"] * 3, queue_position=3), NOW)
    assert [(s.label, s.state) for s in view["steps"]] == [
        ("Queued", "current"),
        ("Extracting", "waiting"),
        ("Reading scanned pages", "waiting"),
        ("Chunking", "waiting"),
        ("Done", "waiting"),
    ]
    assert (view["status_word"], view["position_text"]) == ("Queued", "3rd in line")
    assert view["eta_text"] == "estimating…" and view["eta_until"] is None
    assert view["created_ago"] == "3 min ago"
    assert not view["finished"]


def test_a_running_job_counts_down_to_its_estimate() -> None:
    done_at = iso(NOW + timedelta(seconds=130))
    view = job_view(
        job(
            "PROCESSING",
            ["COMPLETED", "IN_PROGRESS", "PENDING"],
            started_at=iso(NOW),
            eta_seconds=130,
            estimated_completion=done_at,
        ),
        NOW,
    )
    assert [s.state for s in view["steps"]] == ["done", "done", "current", "waiting", "waiting"]
    assert view["steps"][2].words == "in progress"
    assert (view["eta_text"], view["eta_until"]) == ("about 2 min left", done_at)


def test_a_job_waiting_for_its_next_attempt_says_when() -> None:
    due = iso(NOW + timedelta(seconds=40))
    view = job_view(
        job(
            "QUEUED",
            ["COMPLETED", "PENDING", "PENDING"],
            started_at=iso(NOW - timedelta(minutes=1)),
            next_attempt_at=due,
            queue_position=1,
            error_code="TIMEOUT",
        ),
        NOW,
    )
    assert view["steps"][0].state == "done"  # it started before
    assert (view["retry_text"], view["retry_until"]) == ("next attempt in 40 s", due)
    assert view["position_text"] == ""  # the wait is the retry's, not the queue's


def test_a_failed_job_says_what_to_do_and_its_steps_say_failed_in_words() -> None:
    view = job_view(job("FAILED", ["FAILED", "PENDING", "PENDING"], error_code="CORRUPT_DOCUMENT"))
    assert view["status_word"] == "Failed" and view["finished"]
    assert [(s.state, s.words, s.icon) for s in view["steps"][1:2]] == [("failed", "failed", "✕")]
    assert "upload a good copy" in view["suggestion"]
    assert view["eta_text"] == ""


def test_a_completed_job_reads_done() -> None:
    view = job_view(job("COMPLETED", ["COMPLETED"] * 3, completed_at=iso(NOW)), NOW)
    assert view["status_word"] == "Done"
    assert all(step.state == "done" for step in view["steps"])
    assert view["completed_ago"] == "just now"


def test_a_job_completed_past_a_skipped_stage_says_so_and_shows_the_step_skipped() -> None:
    stages = ["COMPLETED", "SKIPPED", "COMPLETED"]
    view = job_view(job("COMPLETED", stages, completed_at=iso(NOW)), NOW)
    assert view["status_word"] == "Completed with a skipped stage"
    assert [(s.label, s.state) for s in view["steps"]] == [
        ("Queued", "done"),
        ("Extracting", "done"),
        ("Reading scanned pages", "skipped"),
        ("Chunking", "done"),
        ("Done", "done"),
    ]
    two = job_view(job("COMPLETED", ["SKIPPED", "SKIPPED", "COMPLETED"], completed_at=iso(NOW)))
    assert two["status_word"] == "Completed with 2 skipped stages"


def test_the_banner_shows_while_anything_is_active() -> None:
    counts = {"queued": 2, "processing": 1, "completed": 5, "failed": 0}
    busy = summary_view({**counts, "progress": 41, "eta_seconds": 240})
    assert busy["banner"] == "Processing 3 documents — 41% complete · about 4 min left"
    one = summary_view({**counts, "queued": 0, "progress": 10, "eta_seconds": None})
    assert one["banner"] == "Processing 1 document — 10% complete"
    idle = summary_view(
        {**counts, "queued": 0, "processing": 0, "progress": 0, "eta_seconds": None}
    )
    assert idle["banner"] == ""


def test_a_later_state_of_a_job_has_a_higher_version() -> None:
    earlier = job_view(job("QUEUED", ["PENDING"] * 3), NOW)
    later = job_view(job("QUEUED", ["PENDING"] * 3, updated_at=iso(NOW)), NOW)
    assert 0 < earlier["version"] < later["version"]
