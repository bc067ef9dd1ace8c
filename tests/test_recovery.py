"""Recovery rebuilds lost queue entries from the database; retention prunes old data."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import django_rq
import pytest
from django.core.management import call_command
from django.db import connection as db_connection
from django.utils import timezone
from rq.job import Job
from rq.registry import FinishedJobRegistry, ScheduledJobRegistry

from processing.errors import ServiceUnavailable
from processing.jobs import dispatch, lifecycle, recovery
from processing.jobs.states import JobStatus
from processing.models import AuditEvent, Matter, ProcessingJob, StageRun
from processing.pipeline.registry import Stage, register
from tests.conftest import job_of, make_pdf, queued_rq_ids, redis_unreachable, stored_document

pytestmark = pytest.mark.django_db(transaction=True)

TWO_STAGES = "TEST_RECOVERY_TWO_STAGES"


def _noop(ctx: Any) -> None:
    """A stage with nothing to do."""


@pytest.fixture(autouse=True)
def two_stage_pipeline() -> None:
    register(
        TWO_STAGES,
        [
            Stage("first", "First", f"{__name__}._noop"),
            Stage("second", "Second", f"{__name__}._noop"),
        ],
    )


@pytest.fixture
def no_grace(settings: Any) -> None:
    """Recovery looks at jobs the moment they are queued (the grace is tested on its own)."""
    settings.RECOVERY_GRACE_SECONDS = 0


def rq_id(job: ProcessingJob) -> str:
    job.refresh_from_db()
    return dispatch.rq_job_id(job.pk, job.dispatch_id)


def new_job(matter: Matter, by: Any, name: str = "a.pdf") -> ProcessingJob:
    return lifecycle.create_job(stored_document(matter, by, name=name), by=by, job_type=TWO_STAGES)


def lose_entry(job: ProcessingJob) -> None:
    """What a crash between the commit and the enqueue leaves: the row, and no RQ entry."""
    Job.fetch(rq_id(job), connection=django_rq.get_connection("default")).delete()


def requeued_events(job: ProcessingJob) -> int:
    return AuditEvent.objects.filter(job=job, action="requeued").count()


# --- lost entries are rebuilt --------------------------------------------------------------


def test_an_upload_made_while_redis_was_down_is_enqueued_by_recovery_and_completes(
    api_client: Any, alice: Any, matter: Matter, worker: Any, settings: Any, no_grace: None
) -> None:
    client = api_client(alice)
    with redis_unreachable(settings):
        response = client.upload(matter.pk, "memo.pdf", make_pdf(["Signed on 3 May 2024."]))
    assert response.status_code == 201
    job = job_of(response)
    assert queued_rq_ids() == []
    assert worker() == 0  # nothing to run: the job would wait forever

    report = recovery.recover()

    assert report.requeued == [job.pk] and report.rescheduled == []
    assert queued_rq_ids() == [rq_id(job)]
    worker()
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.progress == 100
    assert requeued_events(job) == 1
    assert client.get(f"/api/jobs/{job.pk}").json()["status"] == "COMPLETED"


def test_a_job_whose_enqueue_never_happened_is_recovered_and_completes(
    matter: Matter, alice: Any, worker: Any, no_grace: None
) -> None:
    job = new_job(matter, alice)
    stale = rq_id(job)
    lose_entry(job)

    report = recovery.recover()

    assert report.requeued == [job.pk]
    fresh = rq_id(job)
    assert fresh != stale and queued_rq_ids() == [fresh]  # under a new dispatch token
    audit = AuditEvent.objects.get(job=job, action="requeued")
    assert audit.actor is None and audit.status_before == audit.status_after == JobStatus.QUEUED
    worker()
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert list(StageRun.objects.filter(job=job).values_list("stage", "status")) == [
        ("first", "COMPLETED"),
        ("second", "COMPLETED"),
    ]


def test_after_redis_loses_its_data_one_pass_puts_every_queued_job_back(
    matter: Matter, alice: Any, worker: Any, settings: Any, no_grace: None
) -> None:
    settings.RETRY_BACKOFF_BASE = settings.RETRY_BACKOFF_MAX = 600
    waiting = new_job(matter, alice, "retry.pdf")
    waiting.refresh_from_db()
    started = lifecycle.begin_stage(waiting.pk, waiting.dispatch_id, worker="test")
    assert started is not None
    lifecycle.fail_stage(*started, ServiceUnavailable())
    waiting.refresh_from_db()
    due = waiting.next_attempt_at
    assert waiting.status == JobStatus.QUEUED and due is not None and due > timezone.now()
    queued = [new_job(matter, alice, f"{n}.pdf") for n in range(3)]

    django_rq.get_connection("default").flushdb()  # this test run's database only
    assert queued_rq_ids() == []
    report = recovery.recover()

    assert report.requeued == [job.pk for job in queued]  # in the order they were queued
    assert report.rescheduled == [waiting.pk]
    assert queued_rq_ids() == [rq_id(job) for job in queued]
    queue = django_rq.get_queue(waiting.queue_name)
    scheduled = ScheduledJobRegistry(queue=queue)
    assert scheduled.get_job_ids() == [rq_id(waiting)]
    at = scheduled.get_scheduled_time(rq_id(waiting)).replace(tzinfo=UTC)
    assert abs((at - due).total_seconds()) < 1  # at its time, not now

    worker()
    for job in queued:
        job.refresh_from_db()
        assert job.status == JobStatus.COMPLETED
    waiting.refresh_from_db()
    assert waiting.status == JobStatus.QUEUED  # the retry was not run early
    assert recovery.recover().rescued == 0  # and its scheduled entry counts as live


def test_a_fresh_job_inside_the_grace_period_is_left_alone(
    matter: Matter, alice: Any, settings: Any
) -> None:
    settings.RECOVERY_GRACE_SECONDS = 10
    job = new_job(matter, alice)
    lose_entry(job)  # as if its enqueue were still on its way

    report = recovery.recover()

    assert report.rescued == 0 and report.checked == 0
    assert queued_rq_ids() == [] and requeued_events(job) == 0
    later = recovery.recover(now=timezone.now() + timedelta(seconds=11))
    assert later.requeued == [job.pk]


def test_a_job_with_a_live_entry_is_left_alone(matter: Matter, alice: Any, no_grace: None) -> None:
    job = new_job(matter, alice)
    entry = rq_id(job)

    report = recovery.recover()

    assert report.checked == 1 and report.rescued == 0
    assert report.lines() == ["nothing to recover (1 job queued, all in their queue)"]
    assert queued_rq_ids() == [entry] and rq_id(job) == entry  # no second entry, same token
    assert requeued_events(job) == 0


def test_two_passes_at_once_enqueue_each_lost_job_exactly_once(
    matter: Matter, alice: Any, worker: Any
) -> None:
    jobs = [new_job(matter, alice, f"{n}.pdf") for n in range(8)]
    for job in jobs:
        lose_entry(job)
    # Lost a minute ago: past the grace period (a job requeued by one pass is inside it).
    ProcessingJob.objects.update(updated_at=timezone.now() - timedelta(minutes=1))
    barrier = threading.Barrier(2)
    reports: list[recovery.RecoveryReport] = []

    def one_pass() -> None:
        try:
            barrier.wait()
            reports.append(recovery.recover())
        finally:
            db_connection.close()  # each thread had its own connection

    threads = [threading.Thread(target=one_pass) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    rescued = [job_id for report in reports for job_id in report.requeued]
    assert len(reports) == 2 and sorted(rescued) == sorted(job.pk for job in jobs)
    assert sorted(queued_rq_ids()) == sorted(rq_id(job) for job in jobs)
    assert [requeued_events(job) for job in jobs] == [1] * len(jobs)
    worker()
    assert set(ProcessingJob.objects.values_list("status", flat=True)) == {JobStatus.COMPLETED}


def test_a_job_that_moved_on_since_it_was_checked_is_not_requeued(
    matter: Matter, alice: Any
) -> None:
    job = new_job(matter, alice)
    job.refresh_from_db()
    checked = job.dispatch_id
    lifecycle.prioritize(job, by=alice)  # a new token since the check
    assert lifecycle.requeue_lost(job.pk, lost_dispatch=checked) is None
    job.refresh_from_db()
    assert lifecycle.begin_stage(job.pk, job.dispatch_id, worker="test") is not None
    assert lifecycle.requeue_lost(job.pk, lost_dispatch=job.dispatch_id) is None  # running
    assert requeued_events(job) == 0
    assert len(queued_rq_ids()) == 2  # the first entry (now stale) and the prioritised one


# --- the commands ----------------------------------------------------------------------------


def test_recover_command_prints_what_it_did(matter: Matter, alice: Any, no_grace: None) -> None:
    job = new_job(matter, alice)
    lose_entry(job)

    out = io.StringIO()
    call_command("recover", stdout=out)
    assert out.getvalue() == f"re-enqueued 1 job whose queue entry was lost: {job.pk}\n"

    out = io.StringIO()
    call_command("recover", stdout=out)
    assert out.getvalue() == "nothing to recover (1 job queued, all in their queue)\n"


def test_upkeep_outlives_an_unreachable_redis_and_recovers_once_it_is_back(
    matter: Matter, alice: Any, settings: Any, caplog: Any, no_grace: None
) -> None:
    settings.RECOVERY_INTERVAL = 0.05
    with redis_unreachable(settings):
        job = new_job(matter, alice)
        call_command("upkeep", passes=2, stdout=io.StringIO())
    assert "the recovery pass could not run" in caplog.text
    assert queued_rq_ids() == []

    out = io.StringIO()
    call_command("upkeep", passes=1, stdout=out)
    assert f"recovery: re-enqueued 1 job whose queue entry was lost: {job.pk}" in out.getvalue()
    assert queued_rq_ids() == [rq_id(job)]


def test_prune_removes_old_rq_data_and_old_finished_history_and_keeps_the_rest(
    matter: Matter, alice: Any, worker: Any
) -> None:
    old, recent, active = (new_job(matter, alice, f"{n}.pdf") for n in ("old", "recent", "active"))
    worker()
    # The active job: failed, retried by a person long ago, and queued again since.
    active.refresh_from_db()
    long_ago = timezone.now() - timedelta(days=40)
    ProcessingJob.objects.filter(pk=old.pk).update(finished_at=long_ago)
    ProcessingJob.objects.filter(pk=active.pk).update(status=JobStatus.QUEUED, finished_at=long_ago)
    StageRun.objects.filter(job__in=[old, active]).update(finished_at=long_ago)
    # RQ's record of the old job's two stages ended two days ago.
    connection = django_rq.get_connection("default")
    finished = FinishedJobRegistry(queue=django_rq.get_queue(old.queue_name))
    old_entries = [i for i in finished.get_job_ids() if str(old.pk) in i]
    assert len(old_entries) == 2
    for entry in Job.fetch_many(old_entries, connection):
        assert entry is not None
        entry.ended_at = datetime.now(UTC) - timedelta(hours=48)
        entry.save()
    audit_before = AuditEvent.objects.count()

    out = io.StringIO()
    call_command("prune", stdout=out)

    assert out.getvalue().splitlines() == [
        "removed 2 finished RQ queue entries older than 24 h",
        "removed 2 stage history rows of jobs finished more than 30 days ago",
    ]
    assert not any(connection.exists(Job.key_for(i)) for i in old_entries)
    kept = finished.get_job_ids()
    assert len(kept) == 4 and not any(str(old.pk) in i for i in kept)  # recent's and active's
    assert StageRun.objects.filter(job=old).count() == 0
    assert StageRun.objects.filter(job=recent).count() == 2
    assert StageRun.objects.filter(job=active).count() == 2  # never an active job's history
    assert AuditEvent.objects.count() == audit_before  # the audit trail is kept
    out = io.StringIO()
    call_command("prune", stdout=out)
    assert out.getvalue() == "nothing to prune\n"
