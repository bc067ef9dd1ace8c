"""Django admin, as staff use it: actions go through the lifecycle and are audited with
the staff user; nothing the lifecycle owns can be edited; the record cannot be changed."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from processing.jobs import lifecycle
from processing.jobs.states import JobStatus
from processing.models import (
    AuditEvent,
    Document,
    DocumentPage,
    Matter,
    Membership,
    ProcessingJob,
    ProcessingState,
    Role,
)
from tests.conftest import failed_job, stored_document

pytestmark = pytest.mark.django_db(transaction=True)

JOBS = "/admin/processing/processingjob/"


@pytest.fixture
def staff() -> Any:
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456789")


@pytest.fixture
def admin_client(staff: Any) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def _job(matter: Matter, alice: Any, name: str = "a.pdf") -> ProcessingJob:
    return lifecycle.create_job(stored_document(matter, alice, name), by=alice)


def _run_action(client: Client, action: str, *jobs: ProcessingJob) -> Any:
    return client.post(
        JOBS,
        {"action": action, "_selected_action": [str(j.pk) for j in jobs]},
        follow=True,
    )


def _messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_retry_in_admin_requeues_the_job_and_audits_the_staff_user(
    admin_client: Client, staff: Any, matter: Matter, alice: Any
) -> None:
    job = failed_job(matter, alice)
    response = _run_action(admin_client, "retry_jobs", job)
    assert response.status_code == 200
    assert "Retry: 1 job(s)." in _messages(response)
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.retry_count == 1
    last = AuditEvent.objects.filter(job=job).last()
    assert last is not None
    assert (last.action, last.actor, last.status_before) == ("retried", staff, JobStatus.FAILED)


def test_an_action_the_status_does_not_allow_is_refused_by_name_and_changes_nothing(
    admin_client: Client, matter: Matter, alice: Any
) -> None:
    queued = _job(matter, alice, "waiting.pdf")
    failed = failed_job(matter, alice)
    response = _run_action(admin_client, "skip_jobs", queued, failed)
    shown = _messages(response)
    assert "Skip: 1 job(s)." in shown
    assert any(line.startswith("waiting.pdf: ") and "QUEUED" in line for line in shown)
    queued.refresh_from_db()
    failed.refresh_from_db()
    assert queued.status == JobStatus.QUEUED
    assert failed.status == JobStatus.SKIPPED
    assert Document.objects.get(pk=failed.document_id).processing_state == (
        ProcessingState.INCOMPLETE
    )


def test_cancel_and_prioritise_in_admin(
    admin_client: Client, staff: Any, matter: Matter, alice: Any
) -> None:
    first, second = _job(matter, alice, "one.pdf"), _job(matter, alice, "two.pdf")
    _run_action(admin_client, "prioritize_jobs", second)
    _run_action(admin_client, "cancel_jobs", first)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == JobStatus.CANCELLED
    assert second.status == JobStatus.QUEUED and second.priority == "high"
    actions = list(
        AuditEvent.objects.filter(actor=staff).order_by("id").values_list("action", flat=True)
    )
    assert actions == ["prioritized", "cancelled"]


# admin action, the status it starts from, the status it leads to, the audit event it writes
ADMIN_ACTIONS = [
    ("retry_jobs", JobStatus.FAILED, JobStatus.QUEUED, "retried"),
    ("skip_jobs", JobStatus.FAILED, JobStatus.SKIPPED, "skipped"),
    ("skip_stage_jobs", JobStatus.FAILED, JobStatus.QUEUED, "stage_skipped"),
    ("cancel_jobs", JobStatus.QUEUED, JobStatus.CANCELLED, "cancelled"),
    ("prioritize_jobs", JobStatus.QUEUED, JobStatus.QUEUED, "prioritized"),
]


@pytest.mark.parametrize(("action", "start", "after", "recorded"), ADMIN_ACTIONS)
def test_every_admin_action_is_audited_with_the_staff_user_and_their_address(
    admin_client: Client,
    staff: Any,
    matter: Matter,
    alice: Any,
    action: str,
    start: str,
    after: str,
    recorded: str,
) -> None:
    job = failed_job(matter, alice) if start == JobStatus.FAILED else _job(matter, alice)
    response = admin_client.post(
        JOBS,
        {"action": action, "_selected_action": [str(job.pk)]},
        REMOTE_ADDR="203.0.113.9",
        follow=True,
    )
    assert response.status_code == 200
    assert any(line.endswith(": 1 job(s).") for line in _messages(response))
    job.refresh_from_db()
    assert job.status == after
    event = AuditEvent.objects.get(job=job, action=recorded)
    assert (event.actor, event.client_address) == (staff, "203.0.113.9")
    assert (event.status_before, event.status_after) == (start, after)


def test_the_job_form_cannot_change_what_the_lifecycle_owns(
    admin_client: Client, matter: Matter, alice: Any
) -> None:
    job = failed_job(matter, alice)
    run = job.stage_runs.get()
    page = admin_client.get(f"{JOBS}{job.pk}/change/").content.decode()
    for field in ("status", "progress", "items_done", "current_stage", "skipped_stages"):
        assert f'name="{field}"' not in page
    assert 'name="stage_runs-0-status"' not in page
    events = job.audit.count()
    with CaptureQueriesContext(connection) as queries:
        saved = admin_client.post(
            f"{JOBS}{job.pk}/change/",
            {
                "status": "COMPLETED",
                "progress": "100",
                "retry_count": "9",
                "items_done": "7",
                "items_total": "7",
                "current_stage": "entities",
                "stage_index": "5",
                "skipped_stages": "extract",
                "stage_runs-TOTAL_FORMS": "1",
                "stage_runs-INITIAL_FORMS": "1",
                "stage_runs-0-id": str(run.pk),
                "stage_runs-0-job": str(job.pk),
                "stage_runs-0-status": "COMPLETED",
                "audit-TOTAL_FORMS": str(events),
                "audit-INITIAL_FORMS": str(events),
            },
        )
    assert saved.status_code == 302  # the form was accepted; it just changes none of these
    # Not even written back as they were: that could undo what a worker wrote meanwhile.
    assert not [q for q in queries if q["sql"].startswith("UPDATE ")]
    stored = ProcessingJob.objects.get(pk=job.pk)
    assert (stored.status, stored.progress, stored.retry_count) == (JobStatus.FAILED, 0, 0)
    assert (stored.items_done, stored.current_stage, stored.stage_index) == (0, "extract", 1)
    assert stored.skipped_stages == []
    assert job.stage_runs.get().status == "FAILED"
    assert admin_client.get(f"{JOBS}add/").status_code == 403


def test_deleting_what_has_an_audit_trail_is_refused_with_a_page_that_says_why(
    admin_client: Client, matter: Matter, alice: Any
) -> None:
    job = _job(matter, alice)
    for url in (
        f"{JOBS}{job.pk}/delete/",
        f"/admin/processing/document/{job.document_id}/delete/",
        f"/admin/processing/matter/{matter.pk}/delete/",
        f"/admin/auth/user/{alice.pk}/delete/",
    ):
        response = admin_client.post(url, {"post": "yes"})
        assert response.status_code == 200, url  # Django's "cannot delete" page, not a 500
        page = response.content.decode()
        assert "<h1>Cannot delete" in page and "<li>audit event" in page, url
    assert ProcessingJob.objects.filter(pk=job.pk).exists()
    assert Matter.objects.filter(pk=matter.pk).exists()
    assert type(alice).objects.filter(pk=alice.pk).exists()
    assert AuditEvent.objects.filter(job=job, action="created").exists()


def test_a_document_can_be_renamed_but_not_its_page_count_or_processing_state(
    admin_client: Client, matter: Matter, alice: Any
) -> None:
    job = _job(matter, alice)
    url = f"/admin/processing/document/{job.document_id}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="original_name"' in page
    assert 'name="page_count"' not in page and 'name="processing_state"' not in page
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.post(
            url,
            {"original_name": "renamed.pdf", "page_count": "99", "processing_state": "PROCESSED"},
        )
    assert response.status_code == 302
    # Only the name is written: the processing state a worker may be writing is left alone.
    updates = [q["sql"] for q in queries if q["sql"].startswith("UPDATE ")]
    assert len(updates) == 1 and '"original_name"' in updates[0]
    assert '"processing_state"' not in updates[0] and '"page_count"' not in updates[0]
    document = Document.objects.get(pk=job.document_id)
    assert document.original_name == "renamed.pdf"
    assert (document.page_count, document.processing_state) == (3, ProcessingState.PENDING)


def test_audit_events_and_page_results_are_read_only_even_for_a_superuser(
    admin_client: Client, matter: Matter, alice: Any
) -> None:
    job = _job(matter, alice)
    event = AuditEvent.objects.get(job=job, action="created")
    page = DocumentPage.objects.create(document=job.document, page_number=1, text="Text")
    for base, row in (
        ("/admin/processing/auditevent/", event),
        ("/admin/processing/documentpage/", page),
    ):
        assert admin_client.get(base).status_code == 200  # the list too
        view = admin_client.get(f"{base}{row.pk}/change/")
        assert view.status_code == 200  # staff may look
        assert 'name="_save"' not in view.content.decode()
        assert admin_client.post(f"{base}{row.pk}/change/", {}).status_code == 403
        assert admin_client.post(f"{base}{row.pk}/delete/", {"post": "yes"}).status_code == 403
        assert admin_client.get(f"{base}add/").status_code == 403
    event.refresh_from_db()
    assert event.action == "created"
    assert AuditEvent.objects.filter(pk=event.pk).exists()
    assert DocumentPage.objects.filter(pk=page.pk, text="Text").exists()


def _membership_form(matter: Matter, rows: list[tuple[Membership, str, bool]]) -> dict[str, str]:
    prefix = "memberships"
    form = {
        "name": matter.name,
        "search_language": matter.search_language,
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(len(rows)),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for n, (membership, role, delete) in enumerate(rows):
        form |= {
            f"{prefix}-{n}-id": str(membership.pk),
            f"{prefix}-{n}-matter": str(matter.pk),
            f"{prefix}-{n}-user": str(membership.user_id),
            f"{prefix}-{n}-role": role,
            f"{prefix}-{n}-created_at_0": membership.created_at.strftime("%Y-%m-%d"),
            f"{prefix}-{n}-created_at_1": membership.created_at.strftime("%H:%M:%S"),
        }
        if delete:
            form[f"{prefix}-{n}-DELETE"] = "on"
    return form


def test_the_matter_form_cannot_leave_a_matter_without_an_owner(
    admin_client: Client, make_user: Any, make_matter: Any, alice: Any
) -> None:
    make_user("bob")
    matter = make_matter(alice, bob=Role.MEMBER)
    owner = Membership.objects.get(matter=matter, user=alice)
    member = Membership.objects.get(matter=matter, user__username="bob")
    url = f"/admin/processing/matter/{matter.pk}/change/"

    demoted = admin_client.post(
        url, _membership_form(matter, [(owner, Role.MEMBER, False), (member, Role.MEMBER, False)])
    )
    assert demoted.status_code == 200  # the form again, with the error
    assert "A matter must keep at least one owner." in demoted.content.decode()
    removed = admin_client.post(
        url, _membership_form(matter, [(owner, Role.OWNER, True), (member, Role.MEMBER, False)])
    )
    assert "A matter must keep at least one owner." in removed.content.decode()
    owner.refresh_from_db()
    assert owner.role == Role.OWNER

    handed_over = admin_client.post(
        url, _membership_form(matter, [(owner, Role.MEMBER, False), (member, Role.OWNER, False)])
    )
    assert handed_over.status_code == 302
    roles = dict(Membership.objects.filter(matter=matter).values_list("user__username", "role"))
    assert roles == {"alice": Role.MEMBER, "bob": Role.OWNER}
