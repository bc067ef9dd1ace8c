"""Acting on jobs from the pages: each role's buttons, each action allowed and refused,
reasons in the audit trail, the bulk actions, and the buttons of a pushed row."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from processing.jobs import actions, lifecycle
from processing.jobs.states import JobStatus
from processing.live import messages
from processing.models import AuditEvent, Matter, ProcessingJob, Role
from processing.permissions import Action
from processing.web.job_actions import outcome_words
from tests.conftest import failed_job, stored_document

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def team(make_user: Any, make_matter: Any, alice: Any) -> Matter:
    """Alice owns the matter; Bob is a member, Vera a viewer; Mallory is on no matter."""
    make_user("bob")
    make_user("vera")
    make_user("mallory")
    matter: Matter = make_matter(alice, "Acme merger", bob=Role.MEMBER, vera=Role.VIEWER)
    return matter


def user(name: str) -> Any:
    return get_user_model().objects.get(username=name)


def browser_of(name: str) -> Client:
    client = Client()
    client.force_login(user(name))
    return client


def queued(matter: Matter, by: Any, name: str = "a.pdf") -> ProcessingJob:
    return lifecycle.create_job(stored_document(matter, by, name), by=by)


def buttons(html: str, job: ProcessingJob) -> list[str]:
    """The labels of the buttons in the job's row."""
    start = html.index(f'<li id="job-{job.pk}"')
    actions = html.index('class="job-actions"', start)
    part = html[actions : html.index("</div>", actions)]
    return [unescape(b) for b in re.findall(r"<summary>(.*?)</summary>", part)]


def status_of(job: ProcessingJob) -> str:
    return ProcessingJob.objects.get(pk=job.pk).status


# --- which buttons each role sees ---------------------------------------------------------


def test_each_role_sees_the_buttons_its_role_allows_on_the_dashboard_and_job_page(
    team: Matter, alice: Any
) -> None:
    bob = user("bob")
    broken = failed_job(team, alice)
    alices = queued(team, alice, "alice.pdf")
    bobs = queued(team, bob, "bob.pdf")
    page = f"/matters/{team.pk}/"

    owner = browser_of("alice").get(page).content.decode()
    assert buttons(owner, broken) == ["Retry", "Skip this stage", "Skip"]
    assert buttons(owner, alices) == ["Prioritise", "Cancel"]
    member = browser_of("bob").get(page).content.decode()
    assert buttons(member, broken) == []
    assert buttons(member, alices) == []
    assert buttons(member, bobs) == ["Cancel"]  # their own upload
    viewer = browser_of("vera").get(page).content.decode()
    assert all(buttons(viewer, job) == [] for job in (broken, alices, bobs))
    assert "<form hx-post" not in viewer

    job_page = browser_of("alice").get(f"/jobs/{broken.pk}/").content.decode()
    assert buttons(job_page, broken) == ["Retry", "Skip this stage", "Skip"]


def test_a_finished_job_offers_nothing_and_a_prioritised_one_no_second_prioritise(
    team: Matter, alice: Any
) -> None:
    job = queued(team, alice)
    client = browser_of("alice")
    assert client.post(f"/jobs/{job.pk}/prioritize").status_code == 200
    assert buttons(client.get(f"/matters/{team.pk}/").content.decode(), job) == ["Cancel"]
    client.post(f"/jobs/{job.pk}/cancel")
    assert buttons(client.get(f"/matters/{team.pk}/").content.decode(), job) == []


# --- each action, allowed and refused -----------------------------------------------------

# Each action from the status it is offered in, by each role: the owner may; a member
# may not on someone else's upload (their own: below), a viewer may not; someone not on
# the matter does not see the job at all.
OFFERED_FROM = {
    "retry": ("failed", JobStatus.QUEUED),
    "skip": ("failed", JobStatus.SKIPPED),
    "skip-stage": ("failed", JobStatus.QUEUED),  # on to the next stage
    "cancel": ("queued", JobStatus.CANCELLED),
    "prioritize": ("queued", JobStatus.QUEUED),
}
ANSWER = {"alice": 200, "bob": 403, "vera": 403, "mallory": 404}
CASES = [
    (action, before, who, expected, after if expected == 200 else before.upper())
    for action, (before, after) in OFFERED_FROM.items()
    for who, expected in ANSWER.items()
] + [
    # action, the job's status before, who, expected HTTP status, status after
    ("retry", "queued", "alice", 409, JobStatus.QUEUED),  # not failed
    ("skip-stage", "queued", "alice", 409, JobStatus.QUEUED),
    ("cancel", "failed", "alice", 409, JobStatus.FAILED),  # finished
    ("prioritize", "failed", "alice", 409, JobStatus.FAILED),
]


@pytest.mark.parametrize(("action", "before", "who", "expected", "after"), CASES)
def test_an_action_from_the_page_is_taken_or_refused_as_the_role_allows(
    team: Matter, alice: Any, action: str, before: str, who: str, expected: int, after: str
) -> None:
    job = failed_job(team, alice) if before == "failed" else queued(team, alice)
    events = AuditEvent.objects.filter(job=job).count()
    response = browser_of(who).post(
        f"/jobs/{job.pk}/{action}", {"reason": "checked with the client"}, REMOTE_ADDR="10.0.0.7"
    )
    assert response.status_code == expected
    assert status_of(job) == after
    if expected == 200:
        event = AuditEvent.objects.filter(job=job).latest("created_at")
        assert event.actor == user(who)
        assert (event.reason, event.client_address) == ("checked with the client", "10.0.0.7")
        assert (event.status_before, event.status_after) == (before.upper(), after)
    else:
        assert AuditEvent.objects.filter(job=job).count() == events
    if expected != 404:
        body = unescape(response.content.decode())
        assert f'id="job-{job.pk}"' in body  # the row as it now stands, swapped in
        assert 'id="action-result"' in body
        if expected == 409:
            assert "could not be changed: it " in body
        elif expected == 403:
            assert "does not allow you to" in body and "data-shows-refusals" in body


def test_a_member_cancels_their_own_upload_from_the_page(team: Matter) -> None:
    bob = user("bob")
    job = queued(team, bob)
    response = browser_of("bob").post(f"/jobs/{job.pk}/cancel")
    assert response.status_code == 200
    assert status_of(job) == JobStatus.CANCELLED
    assert "“a.pdf” was cancelled." in unescape(response.content.decode())
    assert f"jt:job-{job.pk}" in response.headers["HX-Trigger"]  # the timeline refetches


def test_a_reason_too_long_is_refused_and_nothing_changes(team: Matter, alice: Any) -> None:
    job = failed_job(team, alice)
    response = browser_of("alice").post(f"/jobs/{job.pk}/retry", {"reason": "x" * 1001})
    assert response.status_code == 400
    assert "at most 1000 characters" in response.content.decode()
    assert status_of(job) == JobStatus.FAILED


def test_an_unknown_action_is_not_found(team: Matter, alice: Any) -> None:
    job = failed_job(team, alice)
    assert browser_of("alice").post(f"/jobs/{job.pk}/explode").status_code == 404
    assert browser_of("alice").get(f"/jobs/{job.pk}/retry").status_code == 405


# --- bulk ---------------------------------------------------------------------------------


def test_the_owner_retries_all_failed_after_a_confirmation_with_the_count(
    team: Matter, alice: Any
) -> None:
    broken = [failed_job(team, alice, f"broken-{n}.pdf") for n in range(3)]
    waiting = queued(team, alice, "waiting.pdf")
    client = browser_of("alice")
    page = unescape(client.get(f"/matters/{team.pk}/?status=FAILED").content.decode())
    assert "Retry all failed (3)" in page and "Retry 3 failed documents?" in page
    assert "Cancel all pending" not in page  # not on the list of failed jobs

    response = client.post(
        f"/matters/{team.pk}/bulk", {"action": "retry", "reason": "parser fixed"}
    )
    assert response.status_code == 200
    assert "3 retried" in response.content.decode()
    assert all(status_of(job) == JobStatus.QUEUED for job in broken)
    assert status_of(waiting) == JobStatus.QUEUED
    reasons = AuditEvent.objects.filter(job__in=broken, action="retried").values_list(
        "reason", flat=True
    )
    assert list(reasons) == ["parser fixed"] * 3


def test_the_owner_cancels_all_pending_and_only_owners_see_or_run_bulk(
    team: Matter, alice: Any
) -> None:
    pending = [queued(team, alice, f"p{n}.pdf") for n in range(2)]
    broken = failed_job(team, alice)
    for name in ("bob", "vera"):
        page = browser_of(name).get(f"/matters/{team.pk}/").content.decode()
        assert "Cancel all pending" not in page and "Retry all failed" not in page
        refused = browser_of(name).post(f"/matters/{team.pk}/bulk", {"action": "cancel"})
        assert refused.status_code == 403
    assert all(status_of(job) == JobStatus.QUEUED for job in pending)

    client = browser_of("alice")
    page = unescape(client.get(f"/matters/{team.pk}/").content.decode())
    assert "Cancel all pending (2)" in page and "Retry all failed (1)" in page
    response = client.post(f"/matters/{team.pk}/bulk", {"action": "cancel"})
    assert "2 cancelled" in response.content.decode()
    assert all(status_of(job) == JobStatus.CANCELLED for job in pending)
    assert status_of(broken) == JobStatus.FAILED
    assert client.post(f"/matters/{team.pk}/bulk", {"action": "explode"}).status_code == 400


def test_a_bulk_action_over_allowed_and_refused_jobs_says_what_was_refused_and_why(
    team: Matter, alice: Any
) -> None:
    retryable = [failed_job(team, alice, f"b{n}.pdf") for n in range(2)]
    running = queued(team, alice, "running.pdf")
    started = lifecycle.begin_stage(running.pk, running.dispatch_id)
    assert started is not None
    targets = actions.bulk_targets(team, job_ids=[str(j.pk) for j in (*retryable, running)])
    outcome = actions.perform_each(targets, Action.RETRY, by=alice, reason="batch")
    assert outcome_words(Action.RETRY, outcome) == "2 retried · 1 refused: it is already running"
    assert status_of(running) == JobStatus.PROCESSING


# --- a pushed row ---------------------------------------------------------------------------


def test_a_pushed_row_carries_no_buttons_and_fetches_its_readers_own(
    team: Matter, alice: Any
) -> None:
    job = failed_job(team, alice)
    html = messages.build_update(team.pk, [ProcessingJob.objects.get(pk=job.pk)])["html"]
    assert "<form" not in html  # the same for everyone on the matter
    assert f'hx-get="/jobs/{job.pk}/actions"' in html and 'hx-trigger="load"' in html

    owners = browser_of("alice").get(f"/jobs/{job.pk}/actions").content.decode()
    assert [unescape(b) for b in re.findall(r"<summary>(.*?)</summary>", owners)] == [
        "Retry",
        "Skip this stage",
        "Skip",
    ]
    assert "hx-preserve" not in owners  # swapped in itself, not kept from before
    viewers = browser_of("vera").get(f"/jobs/{job.pk}/actions").content.decode()
    assert "<summary>" not in viewers
    assert browser_of("mallory").get(f"/jobs/{job.pk}/actions").status_code == 404
