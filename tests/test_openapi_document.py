"""The OpenAPI document says what each endpoint answers: its success schema and the exact
refusals it can meet, each in the error envelope; and real answers fit those schemas
field for field (the schemas forbid fields they do not declare)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from pydantic import BaseModel

from processing.api.schemas import (
    BulkEnvelope,
    JobDetailEnvelope,
    JobEnvelope,
    JobOut,
    MatterEnvelope,
    MatterJobsEnvelope,
    MattersEnvelope,
    MemberEnvelope,
    MembersEnvelope,
    RecentJobsEnvelope,
    SearchEnvelope,
    UploadEnvelope,
)
from processing.models import Matter
from tests.conftest import failed_job, job_of
from tests.test_api import error_of

M = "/api/matters/{matter_id}"
JOB = f"{M}/jobs/{{job_id}}"
ACTION = {200, 400, 401, 403, 404, 409}
DECLARED = {
    "GET /api/matters": {200, 401},
    "POST /api/matters": {201, 400, 401, 403},
    f"GET {M}/members": {200, 401, 404},
    f"POST {M}/members": {201, 400, 401, 403, 404, 409},
    f"DELETE {M}/members/{{username}}": {204, 401, 403, 404, 409},
    f"POST {M}/documents": {200, 201, 400, 401, 403, 404, 413, 429},
    f"GET {M}/jobs": {200, 400, 401, 404},
    f"GET {M}/jobs/stats": {200, 401, 404},
    f"POST {M}/jobs/bulk": {200, 400, 401, 403, 404},
    f"GET {JOB}": {200, 401, 404},
    f"POST {JOB}/retry": ACTION,
    f"POST {JOB}/skip": ACTION,
    f"POST {JOB}/skip-stage": ACTION,
    f"POST {JOB}/cancel": ACTION,
    f"POST {JOB}/prioritize": ACTION,
    f"GET {M}/search": {200, 400, 401, 404},
    "GET /api/jobs": {200, 400, 401},
    "GET /api/jobs/{job_id}": {200, 304, 401, 404},
    "GET /api/documents/{document_id}": {200, 401, 404},
    "GET /api/documents/{document_id}/pages": {200, 400, 401, 404},
    "GET /api/documents/{document_id}/entities": {200, 400, 401, 404},
    "GET /api/documents/{document_id}/file": {200, 401, 404},
    "POST /api/jobs/{job_id}/callback": {200, 400, 401, 404, 409},
}
TEXT = b"Deposition of the witness, taken on 12 March 2024 in Springfield.\n" * 3


def operations() -> dict[str, dict[str, Any]]:
    """Each operation of the OpenAPI document, by "METHOD /path"."""
    document = Client().get("/api/openapi.json").json()
    return {
        f"{method.upper()} {path}": operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }


def test_every_operation_declares_exactly_the_answers_it_can_give() -> None:
    declared = {name: {int(s) for s in op["responses"]} for name, op in operations().items()}
    assert declared == DECLARED


def test_every_refusal_is_the_error_envelope_and_every_success_has_a_schema() -> None:
    for name, operation in operations().items():
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (name, status)
            elif int(status) in (200, 201) and not name.endswith("/file"):
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"].startswith("#/components/schemas/"), (name, status)


def test_the_upload_documents_a_required_file_and_the_job_read_its_etag() -> None:
    found = operations()
    upload = found[f"POST {M}/documents"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["required"] == ["file"]
    assert upload["schema"]["properties"]["file"]["format"] == "binary"
    assert "Retry-After" in found[f"POST {M}/documents"]["responses"]["429"]["headers"]
    job = found["GET /api/jobs/{job_id}"]
    assert "ETag" in job["responses"]["200"]["headers"]
    assert "ETag" in job["responses"]["304"]["headers"]
    assert "If-None-Match" in {p["name"] for p in job["parameters"]}


def fits(schema: type[BaseModel], response: Any, status: int = 200) -> dict[str, Any]:
    """The response's body, after checking its status and that it fits ``schema`` exactly."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    body: dict[str, Any] = response.json()
    schema.model_validate(body)
    return body


@pytest.mark.django_db(transaction=True)
def test_real_answers_fit_their_schemas(
    api_client: Any, alice: Any, make_user: Any, matter: Matter, worker: Any
) -> None:
    api = api_client(alice)
    make_user("bob")
    fits(MatterEnvelope, api.post("/api/matters", {"name": "Other"}), 201)
    fits(
        MemberEnvelope,
        api.post(f"/api/matters/{matter.pk}/members", {"username": "bob", "role": "viewer"}),
        201,
    )
    fits(MembersEnvelope, api.get(f"/api/matters/{matter.pk}/members"))

    upload = fits(UploadEnvelope, api.upload(matter.pk, "deposition.txt", TEXT), 201)
    assert upload["data"]["duplicate"] is False
    job = job_of(api.upload(matter.pk, "again.txt", TEXT))
    duplicate = fits(UploadEnvelope, api.upload(matter.pk, "again.txt", TEXT), 200)
    assert duplicate["data"]["duplicate"] is True
    worker()
    failed = failed_job(matter, alice)

    matters = fits(MattersEnvelope, api.get("/api/matters"))
    assert {m["name"] for m in matters["data"]} == {"Smith v. Jones", "Other"}
    jobs = fits(MatterJobsEnvelope, api.get(f"/api/matters/{matter.pk}/jobs"))
    assert {j["status"] for j in jobs["data"]} == {"COMPLETED", "FAILED"}
    fits(RecentJobsEnvelope, api.get("/api/jobs"))
    detail = fits(JobDetailEnvelope, api.get(f"/api/matters/{matter.pk}/jobs/{job.pk}"))
    assert detail["data"]["stage_history"] and detail["data"]["audit"]
    assert detail["data"]["result_api_url"] == f"/api/documents/{job.document_id}"

    flat = api.get(f"/api/jobs/{job.pk}")
    fits(JobOut, flat)
    not_modified = api.get(f"/api/jobs/{job.pk}", headers={"If-None-Match": flat["ETag"]})
    assert not_modified.status_code == 304 and not_modified["ETag"] == flat["ETag"]

    hits = fits(SearchEnvelope, api.get(f"/api/matters/{matter.pk}/search", data={"q": "witness"}))
    assert hits["data"]
    retried = fits(JobEnvelope, api.post(f"/api/matters/{matter.pk}/jobs/{failed.pk}/retry"))
    assert retried["data"]["status"] == "QUEUED"
    bulk = api.post(f"/api/matters/{matter.pk}/jobs/bulk", {"action": "cancel", "status": "QUEUED"})
    assert fits(BulkEnvelope, bulk)["data"]["done"] == 1


@pytest.mark.django_db
def test_a_search_without_q_is_a_validation_error(
    api_client: Any, alice: Any, matter: Matter
) -> None:
    """The document says ``q`` is required; the API refuses a search without it."""
    error = error_of(
        api_client(alice).get(f"/api/matters/{matter.pk}/search"), 400, "VALIDATION_ERROR"
    )
    assert error["details"]["errors"][0]["field"] == "q"
