"""The audit trail only grows: no audit event can be changed or deleted, by the ORM, by a
queryset or by raw SQL, and what an event points at cannot be deleted from under it."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError

from processing.jobs import lifecycle
from processing.models import (
    AuditEvent,
    AuditTrailIsAppendOnly,
    Document,
    Matter,
    ProcessingJob,
)
from tests.conftest import stored_document

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(matter: Matter, alice: Any) -> ProcessingJob:
    job = lifecycle.create_job(stored_document(matter, alice), by=alice)
    return lifecycle.cancel(job, by=alice, reason="Uploaded the wrong file", address="192.0.2.4")


@pytest.fixture
def event(job: ProcessingJob) -> AuditEvent:
    return AuditEvent.objects.get(job=job, action="cancelled")


def _as_stored(event: AuditEvent) -> dict[str, Any]:
    return AuditEvent.objects.filter(pk=event.pk).values().get()


def test_a_person_s_action_is_recorded_with_why_and_from_where(
    event: AuditEvent, alice: Any
) -> None:
    assert (event.actor, event.status_before, event.status_after) == (alice, "QUEUED", "CANCELLED")
    assert (event.reason, event.client_address) == ("Uploaded the wrong file", "192.0.2.4")


def test_an_event_cannot_be_changed_or_deleted_through_the_model(event: AuditEvent) -> None:
    before = _as_stored(event)
    event.reason = "Rewritten afterwards"
    with pytest.raises(AuditTrailIsAppendOnly, match="cannot be changed"):
        event.save()
    with pytest.raises(AuditTrailIsAppendOnly, match="cannot be changed"):
        event.save(update_fields=["reason"])
    with pytest.raises(AuditTrailIsAppendOnly, match="cannot be deleted"):
        event.delete()
    assert _as_stored(event) == before


def test_an_event_cannot_be_changed_or_deleted_through_a_queryset(event: AuditEvent) -> None:
    before = _as_stored(event)
    events = AuditEvent.objects.filter(pk=event.pk)
    with pytest.raises(AuditTrailIsAppendOnly):
        events.update(reason="Rewritten afterwards")
    with pytest.raises(AuditTrailIsAppendOnly):
        events.delete()
    with pytest.raises(AuditTrailIsAppendOnly):
        AuditEvent.objects.all().delete()
    with pytest.raises(AuditTrailIsAppendOnly), transaction.atomic():
        AuditEvent.objects.bulk_update([event], ["reason"])
    assert _as_stored(event) == before


def test_a_new_event_given_the_id_of_an_existing_one_does_not_overwrite_it(
    event: AuditEvent, job: ProcessingJob
) -> None:
    before = _as_stored(event)
    forged = AuditEvent(pk=event.pk, matter_id=job.matter_id, job=job, action="retried")
    with pytest.raises(IntegrityError), transaction.atomic():
        forged.save()
    assert _as_stored(event) == before


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE processing_auditevent SET reason = 'Rewritten afterwards' WHERE id = %s",
        "UPDATE processing_auditevent SET actor_id = NULL WHERE id = %s",
        "DELETE FROM processing_auditevent WHERE id = %s",
    ],
)
def test_the_database_refuses_to_change_or_delete_an_event_in_raw_sql(
    event: AuditEvent, sql: str
) -> None:
    before = _as_stored(event)
    with (
        pytest.raises(IntegrityError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, [event.pk])
    assert _as_stored(event) == before


def test_a_job_matter_document_or_person_with_an_audit_trail_cannot_be_deleted(
    event: AuditEvent, job: ProcessingJob, alice: Any
) -> None:
    before = _as_stored(event)
    for deleted in (
        lambda: ProcessingJob.objects.filter(pk=job.pk).delete(),
        lambda: Document.objects.filter(pk=job.document_id).delete(),
        lambda: Matter.objects.filter(pk=job.matter_id).delete(),
        lambda: type(alice).objects.filter(pk=alice.pk).delete(),
    ):
        with pytest.raises(ProtectedError):
            deleted()
    assert ProcessingJob.objects.filter(pk=job.pk).exists()
    assert Document.objects.filter(pk=job.document_id).exists()
    assert Matter.objects.filter(pk=job.matter_id).exists()
    assert type(alice).objects.filter(pk=alice.pk).exists()
    assert _as_stored(event) == before


@pytest.mark.django_db(transaction=True)
def test_a_throwaway_database_can_still_be_emptied_with_truncate(event: AuditEvent) -> None:
    # How the test runner resets its database after a test that commits, and the
    # benchmarks theirs: TRUNCATE fires no row trigger.
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE processing_auditevent")
    assert not AuditEvent.objects.exists()
