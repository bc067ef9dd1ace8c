"""External stages: a job of the EXTERNAL_REVIEW pipeline waits in its "review" stage for
an outside service, whose signed callbacks drive the same transitions as a worker's stage;
a callback that is unsigned, stale, replayed or off the job's state is refused and changes
nothing; silence past the stage's time limit fails it TIMEOUT."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from processing.api.schemas import JobEnvelope
from processing.jobs import lifecycle, recovery, retention
from processing.models import AuditEvent, CallbackNonce, Matter, ProcessingJob, StageRun
from processing.pipeline.registry import EXTERNAL_REVIEW
from tests.conftest import make_pdf, stored_document
from tests.processes import running_app

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "test-callback-secret"
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(autouse=True)
def callback_secret(settings: Any) -> None:
    settings.EXTERNAL_CALLBACK_SECRET = SECRET


def sign(body: bytes, timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """The headers of a signed callback: HMAC-SHA256 over ``timestamp.`` + body."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Timestamp": stamp, "X-Signature": f"sha256={digest}"}


def report(stage: str = "review", event: str = "progress", **fields: Any) -> bytes:
    return json.dumps(
        {"nonce": uuid.uuid4().hex, "stage": stage, "event": event, **fields}
    ).encode()


def post(job_id: Any, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return Client().post(
        f"/api/jobs/{job_id}/callback",
        data=body,
        content_type="application/json",
        headers=sign(body) if headers is None else headers,
    )


def error_code(response: Any, status: int) -> str:
    assert response.status_code == status, response.content[:500]
    code: str = response.json()["error"]["code"]
    return code


@pytest.fixture
def waiting(matter: Matter, alice: Any, worker: Any) -> ProcessingJob:
    """An EXTERNAL_REVIEW job whose text is extracted by a real worker: it now waits in
    its external "review" stage."""
    document = stored_document(matter, alice, "contract.pdf", page_count=2)
    document.file.save(
        "contract.pdf", ContentFile(make_pdf(["The lease.", "The rent."])), save=True
    )
    job = lifecycle.create_job(document, by=alice, job_type=EXTERNAL_REVIEW)
    worker()
    job.refresh_from_db()
    return job


def test_an_upload_asks_for_the_external_pipeline_by_job_type(
    matter: Matter, alice: Any, api_client: Any, worker: Any
) -> None:
    client = api_client(alice)
    pdf = make_pdf(["The lease.", "The rent."])
    path = f"/api/matters/{matter.pk}/documents"
    unknown = client.client.post(
        f"{path}?job_type=NOT_A_PIPELINE",
        data={"file": SimpleUploadedFile("lease.pdf", pdf)},
        headers=client.headers,
    )
    assert error_code(unknown, 400) == "VALIDATION_ERROR"
    assert not ProcessingJob.objects.exists()
    created = client.client.post(
        f"{path}?job_type={EXTERNAL_REVIEW}",
        data={"file": SimpleUploadedFile("lease.pdf", pdf)},
        headers=client.headers,
    )
    assert created.status_code == 201, created.content[:300]
    assert created.json()["data"]["job"]["job_type"] == EXTERNAL_REVIEW
    worker()
    job = ProcessingJob.objects.get()
    assert (job.status, job.current_stage) == ("PROCESSING", "review")


def world(job: ProcessingJob) -> tuple[Any, ...]:
    """What a refused callback must not change."""
    job.refresh_from_db()
    return (
        CallbackNonce.objects.count(),
        AuditEvent.objects.count(),
        list(StageRun.objects.order_by("pk").values_list("status", "items_done")),
        job.status,
        job.current_stage,
        job.items_done,
        job.updated_at,
        job.lease_expires_at,
        job.dispatch_id,
    )


# --- the stage waits for its outside service ------------------------------------------------


def test_the_job_waits_in_its_external_stage_leased_to_the_outside_service(
    waiting: ProcessingJob,
) -> None:
    assert (waiting.status, waiting.current_stage, waiting.stage_index) == (
        "PROCESSING",
        "review",
        2,
    )
    assert waiting.lease_holder == lifecycle.EXTERNAL_HOLDER
    assert waiting.lease_expires_at is not None
    # The stage's time limit, not a worker's 15-second lease.
    assert waiting.lease_expires_at > timezone.now() + timedelta(
        seconds=django_settings.STAGE_TIMEOUT - 120
    )
    run = StageRun.objects.get(job=waiting, stage="review")
    assert run.status == "IN_PROGRESS"
    answer = Client().get(f"/api/jobs/{waiting.pk}")  # anonymous: refused, it is not a callback
    assert answer.status_code == 401


def test_progress_moves_the_job_and_renews_the_lease(waiting: ProcessingJob) -> None:
    ProcessingJob.objects.filter(pk=waiting.pk).update(
        lease_expires_at=timezone.now() + timedelta(seconds=5)
    )
    response = post(waiting.pk, report(items_done=3, items_total=4))
    assert response.status_code == 200, response.content
    JobEnvelope.model_validate(response.json())  # the answer the OpenAPI document declares
    data = response.json()["data"]
    assert (data["status"], data["current_stage"], data["items_done"], data["items_total"]) == (
        "PROCESSING",
        "review",
        3,
        4,
    )
    assert data["progress"] == 100 * (1 + 3 / 4) // 4  # stage 2 of 4, three quarters done
    waiting.refresh_from_db()
    assert waiting.lease_expires_at is not None
    assert waiting.lease_expires_at > timezone.now() + timedelta(seconds=600)
    assert StageRun.objects.get(job=waiting, stage="review").items_done == 3


def test_completed_runs_the_next_stages_on_a_worker_until_the_job_completes(
    waiting: ProcessingJob, worker: Any
) -> None:
    body = report(event="completed", items_done=2, items_total=2, attempt=1)
    response = post(waiting.pk, body)
    assert response.status_code == 200, response.content
    assert response.json()["data"]["current_stage"] == "chunk"
    worker()
    waiting.refresh_from_db()
    assert waiting.status == "COMPLETED"
    runs = dict(StageRun.objects.filter(job=waiting).values_list("stage", "status"))
    assert runs == {
        "extract": "COMPLETED",
        "review": "COMPLETED",
        "chunk": "COMPLETED",
        "index": "COMPLETED",
    }
    assert waiting.document.chunks.exists()  # type: ignore[attr-defined]


def test_a_permanent_failure_fails_the_job_with_a_safe_message(waiting: ProcessingJob) -> None:
    body = report(event="failed", error={"message": "reviewer quota exceeded", "permanent": True})
    response = post(waiting.pk, body)
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert (data["status"], data["error_code"]) == ("FAILED", "EXTERNAL_STAGE_FAILED")
    assert "quota" not in data["error"]  # the outside service's words are for staff
    waiting.refresh_from_db()
    assert "reviewer quota exceeded" in waiting.error_detail
    run = StageRun.objects.get(job=waiting, stage="review")
    assert (run.status, run.error_code) == ("FAILED", "EXTERNAL_STAGE_FAILED")
    assert AuditEvent.objects.filter(job=waiting, action="failed").exists()


def test_a_transient_failure_is_retried_with_backoff(waiting: ProcessingJob) -> None:
    body = report(event="failed", error={"message": "try later", "permanent": False})
    data = post(waiting.pk, body).json()["data"]
    assert (data["status"], data["error_code"], data["retry_count"]) == (
        "QUEUED",
        "EXTERNAL_STAGE_FAILED",
        1,
    )
    assert data["next_attempt_at"] is not None
    event = AuditEvent.objects.get(job=waiting, action="retry_scheduled")
    assert event.details["error_code"] == "EXTERNAL_STAGE_FAILED"


def test_silence_past_the_time_limit_fails_the_stage_timeout_and_retries_it(
    waiting: ProcessingJob,
) -> None:
    assert waiting.lease_expires_at is not None
    assert recovery.recover(now=waiting.lease_expires_at - timedelta(seconds=1)).timed_out == []
    found = recovery.recover(now=waiting.lease_expires_at + timedelta(seconds=1))
    assert found.timed_out == [waiting.pk]
    waiting.refresh_from_db()
    assert (waiting.status, waiting.error_code, waiting.auto_retries) == ("QUEUED", "TIMEOUT", 1)
    assert waiting.next_attempt_at is not None  # backoff, as any transient error
    run = StageRun.objects.get(job=waiting, stage="review")
    assert (run.status, run.error_code) == ("FAILED", "TIMEOUT")
    # The outside service is late: its report now changes nothing.
    late = post(waiting.pk, report(event="completed"))
    assert error_code(late, 409) == "INVALID_TRANSITION"


# --- refusals change nothing -----------------------------------------------------------------


def _wrong_signature(job: ProcessingJob) -> Any:
    body = report()
    return post(job.pk, body, sign(body, secret="not-the-secret"))


def _missing_signature(job: ProcessingJob) -> Any:
    return post(job.pk, report(), {})


def _body_changed_after_signing(job: ProcessingJob) -> Any:
    body = report(items_done=1)
    return post(job.pk, body.replace(b'"items_done": 1', b'"items_done": 2'), sign(body))


def _old(job: ProcessingJob) -> Any:
    body = report()
    return post(job.pk, body, sign(body, int(time.time()) - 301))


def _from_the_future(job: ProcessingJob) -> Any:
    body = report()
    return post(job.pk, body, sign(body, int(time.time()) + 301))


def _wrong_stage(job: ProcessingJob) -> Any:
    return post(job.pk, report(stage="extract"))


def _earlier_attempt(job: ProcessingJob) -> Any:
    # The test made attempt 2 the running one: attempt 1's report comes late.
    return post(job.pk, report(event="completed", attempt=1))


def _unknown_job(job: ProcessingJob) -> Any:
    return post(uuid.uuid4(), report())


def _malformed_job_id(job: ProcessingJob) -> Any:
    return post("not-a-uuid", report())


def _not_json(job: ProcessingJob) -> Any:
    return post(job.pk, b"{nonce")


def _unknown_event(job: ProcessingJob) -> Any:
    return post(job.pk, report(event="paused"))


def _nonce_too_long(job: ProcessingJob) -> Any:
    body = json.dumps({"nonce": "n" * 101, "stage": "review", "event": "progress"}).encode()
    return post(job.pk, body)


def _cancelled(job: ProcessingJob) -> Any:
    lifecycle.cancel(job, by=None)
    before = world(job)
    response = post(job.pk, report(event="completed"))
    assert world(job) == before
    return response


REFUSALS = {
    "wrong signature": (_wrong_signature, 401, "INVALID_SIGNATURE"),
    "missing signature": (_missing_signature, 401, "INVALID_SIGNATURE"),
    "body changed after signing": (_body_changed_after_signing, 401, "INVALID_SIGNATURE"),
    "older than 5 minutes": (_old, 401, "REQUEST_EXPIRED"),
    "more than 5 minutes ahead": (_from_the_future, 401, "REQUEST_EXPIRED"),
    "another stage": (_wrong_stage, 409, "INVALID_TRANSITION"),
    "an earlier attempt": (_earlier_attempt, 409, "INVALID_TRANSITION"),
    "unknown job": (_unknown_job, 404, "JOB_NOT_FOUND"),
    "malformed job id": (_malformed_job_id, 404, "JOB_NOT_FOUND"),
    "not JSON": (_not_json, 400, "VALIDATION_ERROR"),
    "unknown event": (_unknown_event, 400, "VALIDATION_ERROR"),
    "nonce over 100 characters": (_nonce_too_long, 400, "VALIDATION_ERROR"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refused_callback_changes_nothing(waiting: ProcessingJob, case: str) -> None:
    send, status, code = REFUSALS[case]
    if send is _earlier_attempt:  # attempt 1 timed out, and attempt 2 runs
        StageRun.objects.filter(job=waiting, stage="review").update(attempt=2)
        ProcessingJob.objects.filter(pk=waiting.pk).update(stage_attempt=2)
    before = world(waiting)
    response = send(waiting)
    assert error_code(response, status) == code
    assert response.json()["error"]["message"]
    assert world(waiting) == before


def test_a_callback_for_a_cancelled_job_is_refused_with_its_status(
    waiting: ProcessingJob,
) -> None:
    response = _cancelled(waiting)
    assert error_code(response, 409) == "INVALID_TRANSITION"
    details = response.json()["error"]["details"]
    assert (details["current_status"], details["current_stage"]) == ("CANCELLED", "review")


def test_a_replayed_request_is_refused_and_changes_nothing(waiting: ProcessingJob) -> None:
    body = report(items_done=1, items_total=2)
    headers = sign(body)
    assert post(waiting.pk, body, headers).status_code == 200
    before = world(waiting)
    again = post(waiting.pk, body, headers)
    assert error_code(again, 409) == "REPLAYED_REQUEST"
    assert world(waiting) == before


def test_without_a_secret_every_callback_is_refused(waiting: ProcessingJob, settings: Any) -> None:
    settings.EXTERNAL_CALLBACK_SECRET = ""
    before = world(waiting)
    body = report(event="completed")
    assert error_code(post(waiting.pk, body, sign(body, secret="")), 401) == (
        "CALLBACKS_NOT_CONFIGURED"
    )
    assert world(waiting) == before


def test_retention_forgets_nonces_after_a_day(waiting: ProcessingJob) -> None:
    assert post(waiting.pk, report()).status_code == 200
    CallbackNonce.objects.create(nonce="old", received_at=timezone.now() - timedelta(hours=25))
    assert retention.prune().nonces == 1
    assert list(CallbackNonce.objects.values_list("nonce", flat=True)) != ["old"]
    assert CallbackNonce.objects.count() == 1


# --- the README's example ----------------------------------------------------------------------


def readme_snippet() -> str:
    """The shell between the README's markers for the callback example."""
    found = re.search(
        r"<!-- callback-example -->\s*```sh\n(.*?)```", README.read_text(), flags=re.DOTALL
    )
    assert found, "README.md lost its callback example"
    return found.group(1)


def test_the_readme_example_moves_the_job_on(waiting: ProcessingJob, worker: Any) -> None:
    """The README's curl + openssl snippet, run by bash against the web server."""
    media = Path(django_settings.MEDIA_ROOT)
    with running_app(media, "callback", relay=False, EXTERNAL_CALLBACK_SECRET=SECRET) as app:
        environment = {
            "SECRET": SECRET,
            "JOB": str(waiting.pk),
            "BASE": app.url,
            "PATH": "/usr/bin:/bin",
        }
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", readme_snippet()],
            env=environment,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    assert json.loads(run.stdout)["data"]["current_stage"] == "chunk", run.stdout
    worker()
    waiting.refresh_from_db()
    assert waiting.status == "COMPLETED"
