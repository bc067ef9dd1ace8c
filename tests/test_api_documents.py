"""The integrator's view of results: a matter's job statistics, and a processed document's
metadata, pages, entities and original file, over the JSON API.

Documents are uploaded through the API and processed by a real RQ worker; every answer
is checked against the schema the OpenAPI document declares for it.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pydantic import BaseModel

from processing.api.documents import PAGE_TEXT_MAX_CHARS
from processing.api.schemas import (
    DocumentEnvelope,
    EntitiesEnvelope,
    ErrorOut,
    JobStatsEnvelope,
    PagesEnvelope,
)
from processing.jobs import estimates
from processing.jobs.states import JobStatus
from processing.models import Document, Matter, ProcessingJob, ProcessingState
from tests.conftest import job_of, make_pdf
from tests.test_api import error_of
from tests.test_ocr import pdf, text_image

pytestmark = pytest.mark.django_db
needs_worker = pytest.mark.django_db(transaction=True)

SOME_ID = "6f1c1a52-0d2e-4a43-9a3f-2b8e7d1c0a11"
STAGES = ["extract", "ocr", "chunk", "index", "entities"]
CONTRACT = [
    "Lease of the Ashford warehouse, signed on 12 March 2024 by the tenant.",
    "Rent is $1,200.00 a month, paid to clerk@example.com before 12 March 2024.",
    "Notices go to clerk@example.com; a late payment costs $50.00.",
]


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def team(make_user: Any, make_matter: Any, alice: Any) -> Matter:
    """Alice owns it; Bob is a member, Carol a viewer; Mallory has an account, not on it."""
    for name in ("bob", "carol", "mallory"):
        make_user(name)
    matter: Matter = make_matter(alice, "Ashford lease", bob="member", carol="viewer")
    return matter


def user(name: str) -> Any:
    return type(Matter.objects.first().created_by).objects.get(username=name)  # type: ignore[union-attr]


def valid(schema: type[BaseModel], response: Any, status: int = 200) -> dict[str, Any]:
    """The response's body, after checking it has this status and fits the declared schema."""
    assert response.status_code == status, response.content[:500]
    body: dict[str, Any] = response.json()
    schema.model_validate(body)
    return body


def processed(api: Any, matter: Matter, worker: Any, name: str, content: bytes) -> Document:
    """A document uploaded through the API and processed to the end by a real worker."""
    job = job_of(api.upload(matter.pk, name, content))
    worker()
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, (job.error_code, job.error)
    return Document.objects.get(pk=job.document_id)


# --- statistics --------------------------------------------------------------------------


@needs_worker
def test_stats_count_jobs_by_status_and_give_the_stage_figures_the_eta_uses(
    api_client: Any, alice: Any, team: Matter, worker: Any
) -> None:
    api = api_client(alice)
    for n in range(2):
        processed(api, team, worker, f"lease-{n}.pdf", make_pdf([*CONTRACT, f"Copy {n}."]))
    queued = job_of(api.upload(team.pk, "later.txt", b"Queued, not yet processed.\n"))
    api.post(f"/api/matters/{team.pk}/jobs/{queued.pk}/cancel")
    estimates.clear_history()  # learned before the runs: a process keeps it for 30 s

    body = valid(
        JobStatsEnvelope, api_client(user("carol")).get(f"/api/matters/{team.pk}/jobs/stats")
    )
    stats = body["data"]
    assert {k: stats[k] for k in ("queued", "processing", "completed", "failed")} == {
        "queued": 0,
        "processing": 0,
        "completed": 2,
        "failed": 0,
    }
    assert (stats["cancelled"], stats["skipped"]) == (1, 0)
    completed = ProcessingJob.objects.filter(matter=team, status=JobStatus.COMPLETED)
    expected_ms = sum(
        (j.completed_at - j.started_at) / timedelta(milliseconds=1) for j in completed
    ) / len(completed)
    assert abs(stats["avg_processing_time_ms"] - expected_ms) <= 1
    assert list(stats["stages"]) == STAGES
    costs = estimates.stage_costs()
    for name, figures in stats["stages"].items():
        assert figures["seconds_per_item"] == costs[name].per_page
        assert figures["seconds_per_run"] == costs[name].seconds(0.0)
        assert figures["seconds_per_run"] > 0
    assert stats["stages"]["extract"]["label"] == "Extracting"


def test_a_matter_without_jobs_has_zero_counts_and_no_figures(
    api_client: Any, alice: Any, team: Matter
) -> None:
    stats = valid(JobStatsEnvelope, api_client(alice).get(f"/api/matters/{team.pk}/jobs/stats"))
    assert stats["data"] == {
        "queued": 0,
        "processing": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "skipped": 0,
        "avg_processing_time_ms": None,
        "stages": {},
    }


def test_stats_of_a_matter_the_caller_is_not_on_are_not_found(
    api_client: Any, team: Matter
) -> None:
    api = api_client(user("mallory"))
    for matter_id in (team.pk, SOME_ID, "not-a-uuid"):
        response = api.get(f"/api/matters/{matter_id}/jobs/stats")
        valid(ErrorOut, response, 404)
        error_of(response, 404, "MATTER_NOT_FOUND")
    error_of(
        api_client(None).get(f"/api/matters/{team.pk}/jobs/stats"), 401, "AUTHENTICATION_REQUIRED"
    )


def _bulk_jobs(matter: Matter, by: Any, count: int) -> None:
    """``count`` jobs in every status, completed ones with a processing time."""
    documents = Document.objects.bulk_create(
        Document(
            matter=matter,
            uploaded_by=by,
            original_name=f"bulk-{n}.pdf",
            file=f"x/bulk-{n}.pdf",
            content_type="application/pdf",
            size=100,
            sha256=f"{matter.pk.int % 10**9:09}{n:055}",
            page_count=1 + n % 40,
        )
        for n in range(count)
    )
    statuses = list(JobStatus)
    now = timezone.now()
    ProcessingJob.objects.bulk_create(
        ProcessingJob(
            matter=matter,
            document=document,
            status=statuses[n % len(statuses)],
            current_stage="extract",
            started_at=now - timedelta(seconds=n + 1),
            completed_at=now if statuses[n % len(statuses)] == JobStatus.COMPLETED else None,
            created_by=by,
        )
        for n, document in enumerate(documents)
    )


def test_stats_cost_the_same_queries_for_3_jobs_and_for_300(
    api_client: Any, alice: Any, make_matter: Any
) -> None:
    small, large = make_matter(alice, "Small"), make_matter(alice, "Large")
    _bulk_jobs(small, alice, 3)
    _bulk_jobs(large, alice, 300)
    api = api_client(alice)
    api.get("/api/matters")  # the token's first use records its last-used time, once

    def queries(matter: Matter) -> tuple[int, dict[str, Any]]:
        estimates.clear_history()  # both ask for the stage history
        with CaptureQueriesContext(connection) as captured:
            body = valid(JobStatsEnvelope, api.get(f"/api/matters/{matter.pk}/jobs/stats"))
        return len(captured), body["data"]

    few, small_stats = queries(small)
    many, large_stats = queries(large)
    assert few == many
    assert small_stats["completed"] == 1 and large_stats["completed"] == 300 // 6
    assert sum(large_stats[s.lower()] for s in JobStatus.values) == 300
    assert large_stats["avg_processing_time_ms"] > small_stats["avg_processing_time_ms"] > 0


# --- a document ----------------------------------------------------------------------------


@needs_worker
def test_a_document_before_and_after_processing(
    api_client: Any, alice: Any, team: Matter, worker: Any
) -> None:
    api = api_client(alice)
    content = make_pdf(CONTRACT)
    job = job_of(api.upload(team.pk, "lease.pdf", content))
    path = f"/api/documents/{job.document_id}"
    before = valid(DocumentEnvelope, api.get(path))["data"]
    assert before["processing_state"] == ProcessingState.PENDING
    assert before["job"] == {
        "job_id": str(job.pk),
        "status": "QUEUED",
        "url": f"/api/jobs/{job.pk}",
    }
    assert api.get(f"/api/jobs/{job.pk}").json()["result_api_url"] is None

    worker()
    after = valid(DocumentEnvelope, api_client(user("carol")).get(path))["data"]
    assert after == {
        "id": str(job.document_id),
        "matter_id": str(team.pk),
        "name": "lease.pdf",
        "content_type": "application/pdf",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "page_count": 3,
        "processing_state": "PROCESSED",
        "created_at": before["created_at"],
        "pages_url": f"{path}/pages",
        "entities_url": f"{path}/entities",
        "file_url": f"{path}/file",
        "job": {"job_id": str(job.pk), "status": "COMPLETED", "url": f"/api/jobs/{job.pk}"},
    }
    # The completed job points integrators here, and people to the page.
    status = api.get(f"/api/jobs/{job.pk}").json()
    assert status["result_api_url"] == path
    assert status["result_url"] == f"/documents/{job.document_id}/"


@needs_worker
def test_pages_give_text_source_and_ocr_confidence_page_by_page(
    api_client: Any, alice: Any, team: Matter, worker: Any
) -> None:
    scan = text_image(["Inspection report", "for the Ashford warehouse"], (1240, 1748))
    api = api_client(alice)
    document = processed(api, team, worker, "mixed.pdf", pdf([CONTRACT[0], scan, CONTRACT[1]]))
    path = f"/api/documents/{document.pk}/pages"

    body = valid(PagesEnvelope, api.get(f"{path}?per_page=2"))
    assert body["meta"] == {"total": 3, "page": 1, "per_page": 2}
    first, scanned = body["data"]
    assert first["page"] == 1 and first["source"] == "text_layer"
    assert first["ocr_status"] == "not_needed" and first["ocr_confidence"] is None
    assert "Ashford warehouse" in first["text"] and first["text_truncated"] is False
    assert first["char_count"] == len(first["text"])
    assert scanned["page"] == 2 and scanned["source"] == "ocr"
    assert scanned["ocr_status"] == "recognised" and 0 < scanned["ocr_confidence"] <= 100
    assert "Inspection" in scanned["text"]

    rest = valid(PagesEnvelope, api.get(f"{path}?page=2&per_page=2"))
    assert [p["page"] for p in rest["data"]] == [3] and "$1,200.00" in rest["data"][0]["text"]
    past = valid(PagesEnvelope, api.get(f"{path}?page=99&per_page=2"))
    assert past == {"data": [], "meta": {"total": 3, "page": 99, "per_page": 2}}


@needs_worker
def test_a_huge_page_is_cut_and_says_so(
    api_client: Any, alice: Any, team: Matter, worker: Any
) -> None:
    line = "The witness described the warehouse at length. " * 20 + "\n"
    content = (line * (PAGE_TEXT_MAX_CHARS // len(line) + 50)).encode()
    api = api_client(alice)
    document = processed(api, team, worker, "transcript.txt", content)
    (page,) = valid(PagesEnvelope, api.get(f"/api/documents/{document.pk}/pages"))["data"]
    assert len(page["text"]) == PAGE_TEXT_MAX_CHARS and page["text_truncated"] is True
    assert page["char_count"] > PAGE_TEXT_MAX_CHARS
    assert content.decode().startswith(page["text"])


@pytest.mark.parametrize("query", ["per_page=21", "per_page=0", "page=0", "page=x", "per_page=-1"])
def test_invalid_page_parameters_are_validation_errors(
    api_client: Any, alice: Any, team: Matter, query: str
) -> None:
    document = Document.objects.create(
        matter=team,
        original_name="a.pdf",
        file="x/a.pdf",
        content_type="application/pdf",
        size=1,
        sha256="0" * 64,
    )
    for path in (f"/api/documents/{document.pk}/pages", f"/api/documents/{document.pk}/entities"):
        if "21" in query and "entities" in path:
            continue  # entities allow up to 100 a page
        response = api_client(alice).get(f"{path}?{query}")
        valid(ErrorOut, response, 400)
        error_of(response, 400, "VALIDATION_ERROR")


@needs_worker
def test_entities_one_row_per_value_with_its_pages_filtered_by_kind(
    api_client: Any, alice: Any, team: Matter, worker: Any
) -> None:
    api = api_client(alice)
    document = processed(api, team, worker, "lease.pdf", make_pdf(CONTRACT))
    path = f"/api/documents/{document.pk}/entities"

    everything = valid(EntitiesEnvelope, api.get(path))
    rows = {(r["kind"], r["value"]): r for r in everything["data"]}
    assert everything["meta"] == {"total": len(rows), "page": 1, "per_page": 50}
    assert rows[("date", "2024-03-12")]["pages"] == [1, 2]
    assert rows[("date", "2024-03-12")]["count"] == 2
    assert rows[("date", "2024-03-12")]["text"] == "12 March 2024"
    assert rows[("email", "clerk@example.com")]["pages"] == [2, 3]
    assert rows[("money", "USD 1200.00")]["pages"] == [2]
    kinds = [r["kind"] for r in everything["data"]]
    assert kinds == sorted(kinds, key=["date", "money", "email", "phone", "citation"].index)

    money = valid(EntitiesEnvelope, api.get(f"{path}?kind=money"))
    assert {r["value"] for r in money["data"]} == {"USD 1200.00", "USD 50.00"}
    assert money["meta"]["total"] == 2
    one = valid(EntitiesEnvelope, api.get(f"{path}?kind=money&per_page=1&page=2"))
    assert one["meta"] == {"total": 2, "page": 2, "per_page": 1}
    assert [r["value"] for r in one["data"]] == ["USD 50.00"]  # first found on a later page

    unknown = api.get(f"{path}?kind=person")
    valid(ErrorOut, unknown, 400)
    error = error_of(unknown, 400, "VALIDATION_ERROR")
    assert [e["field"] for e in error["details"]["errors"]] == ["kind"]


# --- the original file ---------------------------------------------------------------------


def test_the_file_is_the_original_bytes_as_an_attachment(
    api_client: Any, alice: Any, team: Matter
) -> None:
    api = api_client(alice)
    content = make_pdf(CONTRACT)
    document_id = api.upload(team.pk, "lease.pdf", content).json()["data"]["document"]["id"]

    file = api_client(user("carol")).get(f"/api/documents/{document_id}/file")
    assert file.status_code == 200
    assert file.streaming  # FileResponse: streamed, never read whole into memory
    assert b"".join(file.streaming_content) == content
    assert file["Content-Type"] == "application/pdf"
    assert file["Content-Disposition"] == 'attachment; filename="lease.pdf"'
    assert file["X-Content-Type-Options"] == "nosniff"


def test_a_hostile_name_leaves_as_a_safe_file_name(
    api_client: Any, alice: Any, team: Matter
) -> None:
    content = b"<html><script>alert(1)</script>Deposition of the witness.</html>\n"
    document = Document(
        matter=team,
        original_name='evil"\r\nX-Injected: 1;name.html',
        content_type="text/html",
        size=len(content),
        sha256="2" * 64,
    )
    document.file.save("name.html", ContentFile(content), save=True)

    file = api_client(alice).get(f"/api/documents/{document.pk}/file")
    assert file.status_code == 200 and b"".join(file.streaming_content) == content
    assert file["X-Content-Type-Options"] == "nosniff"  # never rendered as a page
    disposition = file["Content-Disposition"]
    assert disposition.startswith("attachment; filename=") and disposition.endswith('.html"')
    assert not set("\r\n/\\;") & set(disposition.removeprefix("attachment; filename="))
    assert disposition.count('"') == 2 and "X-Injected" not in file


def test_a_file_gone_from_storage_is_not_found(api_client: Any, alice: Any, team: Matter) -> None:
    document = Document.objects.create(
        matter=team,
        original_name="gone.pdf",
        file="x/gone.pdf",
        content_type="application/pdf",
        size=1,
        sha256="1" * 64,
    )
    error_of(api_client(alice).get(f"/api/documents/{document.pk}/file"), 404, "DOCUMENT_NOT_FOUND")


# --- who may read a document ---------------------------------------------------------------

DOCUMENT_PATHS = ["", "/pages", "/entities", "/file"]


@pytest.mark.parametrize("suffix", DOCUMENT_PATHS)
def test_a_document_outside_the_callers_matters_is_not_found(
    api_client: Any, alice: Any, team: Matter, suffix: str
) -> None:
    api = api_client(alice)
    content = b"Deposition of the witness, taken on the twelfth of March.\n"
    document_id = api.upload(team.pk, "a.txt", content).json()["data"]["document"]["id"]
    for name in ("alice", "bob", "carol"):
        assert (
            api_client(user(name)).get(f"/api/documents/{document_id}{suffix}").status_code == 200
        )
    stranger = api_client(user("mallory"))
    for document in (document_id, SOME_ID, "not-a-uuid", "../../etc"):
        response = stranger.get(f"/api/documents/{document}{suffix}")
        if document == "../../etc":
            assert response.status_code == 404
            continue
        valid(ErrorOut, response, 404)
        error_of(response, 404, "DOCUMENT_NOT_FOUND")
    error_of(
        api_client(None).get(f"/api/documents/{document_id}{suffix}"),
        401,
        "AUTHENTICATION_REQUIRED",
    )


def test_the_openapi_document_declares_the_answers_of_the_new_endpoints() -> None:
    from django.test import Client

    paths = Client().get("/api/openapi.json").json()["paths"]
    expected = {
        "/api/matters/{matter_id}/jobs/stats": {"200", "401", "404"},
        "/api/documents/{document_id}": {"200", "401", "404"},
        "/api/documents/{document_id}/pages": {"200", "400", "401", "404"},
        "/api/documents/{document_id}/entities": {"200", "400", "401", "404"},
        "/api/documents/{document_id}/file": {"200", "401", "404"},
    }
    for path, statuses in expected.items():
        responses = paths[path]["get"]["responses"]
        assert set(responses) == statuses, (path, set(responses))
        for status in statuses - {"200"}:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (path, status)
    entity_kind = paths["/api/documents/{document_id}/entities"]["get"]["parameters"]
    assert any(p["name"] == "kind" for p in entity_kind)
