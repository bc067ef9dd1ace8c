"""The JSON API as docs/api.md describes it: auth, scoping, roles, uploads, jobs, members.

Every error is checked in full: the exact status, the ``{"error": {"code",
"message", "details"}}`` envelope and the contract's code. Tests that need a
worker to run a job are transactional (``on_commit`` must fire to enqueue it);
the rest run in a rolled-back transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import threading
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from django.test import Client

from processing.errors import CorruptDocument
from processing.jobs import lifecycle
from processing.models import (
    AuditEvent,
    Document,
    DocumentPage,
    Matter,
    Membership,
    ProcessingJob,
    ProcessingState,
    StageRun,
)
from processing.uploads import accept_upload
from tests.conftest import ApiClient, job_of, make_pdf, queued_rq_ids, stored_document

pytestmark = pytest.mark.django_db
needs_worker = pytest.mark.django_db(transaction=True)

CORRUPT_PDF = b"%PDF-1.4\n garbage %%EOF"
TEXT = b"Deposition of the witness, taken on the twelfth of March.\n" * 3


def text_no(n: object) -> bytes:
    """TEXT with a line of its own: a different document, not a duplicate of TEXT."""
    return TEXT + f"Exhibit {n}.\n".encode()


# --- helpers ---------------------------------------------------------------------------


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert the response is the contract's error envelope with this status and code."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"].strip()
    assert isinstance(error["details"], dict)
    return error


def data_of(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.content[:500]
    return response.json()["data"]


def upload_raw(
    api: ApiClient, matter_id: Any, filename: str, content: bytes, *, field: str = "file"
) -> Any:
    """A multipart upload with ``filename`` sent exactly as given.

    Django's test client would reduce the name to its basename before sending;
    a hostile client does not.
    """
    boundary = "jobtracker-test-boundary-7f3a"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode()
    body = head + content + f"\r\n--{boundary}--\r\n".encode()
    return api.client.generic(
        "POST",
        f"/api/matters/{matter_id}/documents",
        body,
        content_type=f"multipart/form-data; boundary={boundary}",
        headers=api.headers,
    )


def stored_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def assert_nothing_stored() -> None:
    assert Document.objects.count() == 0
    assert ProcessingJob.objects.count() == 0
    assert stored_files() == []


def session_client(user: Any, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def act(api: ApiClient, job: ProcessingJob, action: str, matter_id: Any = None) -> Any:
    return api.post(f"/api/matters/{matter_id or job.matter_id}/jobs/{job.pk}/{action}")


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == UTC.utcoffset(None)
    return parsed


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    # Users are made with a password; the production hasher costs ~0.4 s each.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def bob(make_user: Any) -> Any:
    return make_user("bob")


@pytest.fixture
def carol(make_user: Any) -> Any:
    return make_user("carol")


@pytest.fixture
def shared(make_matter: Any, alice: Any, bob: Any, carol: Any) -> Matter:
    """Alice owns it; Bob is a member, Carol a viewer."""
    return make_matter(alice, "Acme merger", bob="member", carol="viewer")


# --- authentication --------------------------------------------------------------------

SOME_ID = "6f1c1a52-0d2e-4a43-9a3f-2b8e7d1c0a11"
PROTECTED = [
    ("get", "/api/matters"),
    ("get", "/api/jobs"),
    ("get", f"/api/jobs/{SOME_ID}"),
    ("get", f"/api/matters/{SOME_ID}/jobs"),
    ("get", f"/api/matters/{SOME_ID}/jobs/{SOME_ID}"),
    ("get", f"/api/matters/{SOME_ID}/members"),
    ("post", "/api/matters"),
    ("post", f"/api/matters/{SOME_ID}/documents"),
    ("post", f"/api/matters/{SOME_ID}/members"),
    ("post", f"/api/matters/{SOME_ID}/jobs/{SOME_ID}/retry"),
    ("post", f"/api/matters/{SOME_ID}/jobs/bulk"),
    ("delete", f"/api/matters/{SOME_ID}/members/alice"),
]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer jt_not-a-real-token", "Bearer ", "Basic YWxpY2U6cGFzc3dvcmQ=", "jt_no_scheme"],
)
@pytest.mark.parametrize("method, path", PROTECTED)
def test_without_valid_credentials_the_api_answers_401(
    method: str, path: str, authorization: str | None
) -> None:
    # A real integrator's client: no CSRF cookie, CSRF enforced as in production.
    client = Client(enforce_csrf_checks=True)
    headers = {"Authorization": authorization} if authorization is not None else {}
    call = getattr(client, method)
    if method == "post":
        response = call(path, data={"name": "x"}, content_type="application/json", headers=headers)
    else:
        response = call(path, headers=headers)
    error_of(response, 401, "AUTHENTICATION_REQUIRED")
    assert Matter.objects.count() == 0


def test_a_token_of_a_deactivated_user_is_refused(api_client: Any, alice: Any) -> None:
    api = api_client(alice)
    assert api.get("/api/matters").status_code == 200
    alice.is_active = False
    alice.save()
    error_of(api.get("/api/matters"), 401, "AUTHENTICATION_REQUIRED")


def test_session_login_reads_the_api(alice: Any, matter: Matter) -> None:
    data = data_of(session_client(alice).get("/api/matters"))
    assert [m["id"] for m in data] == [str(matter.pk)]


def test_session_post_needs_the_csrf_token(alice: Any) -> None:
    client = session_client(alice, csrf=True)
    refused = client.post("/api/matters", {"name": "No token"}, content_type="application/json")
    error_of(refused, 403, "FORBIDDEN")
    assert not Matter.objects.exists()

    client.get("/login/")  # a page with a form hands out the CSRF cookie
    token = client.cookies["csrftoken"].value
    accepted = client.post(
        "/api/matters",
        {"name": "With token"},
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert data_of(accepted, 201)["name"] == "With token"


def test_bearer_post_needs_no_csrf_token(api_client: Any, alice: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    headers = api_client(alice).headers
    response = client.post(
        "/api/matters", {"name": "Via token"}, content_type="application/json", headers=headers
    )
    assert data_of(response, 201)["role"] == "owner"
    assert Matter.objects.get().name == "Via token"


# --- matters ---------------------------------------------------------------------------


def test_matters_lists_only_the_callers_with_role_and_counts(
    api_client: Any, make_matter: Any, alice: Any, bob: Any
) -> None:
    mine = make_matter(alice, "Beta holdings")
    viewed = make_matter(bob, "Alpha lease", alice="viewer")
    make_matter(bob, "Bob's private matter")
    api = api_client(alice)
    for n in range(2):
        assert api.upload(mine.pk, f"note-{n}.txt", text_no(n)).status_code == 201

    data = data_of(api.get("/api/matters"))

    assert [m["name"] for m in data] == ["Alpha lease", "Beta holdings"]
    by_id = {m["id"]: m for m in data}
    assert set(by_id) == {str(mine.pk), str(viewed.pk)}
    statuses = {"QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED", "SKIPPED"}
    for matter in data:
        assert set(matter) >= {"id", "name", "role", "created_at", "counts"}
        assert set(matter["counts"]) == statuses
        parse_time(matter["created_at"])
    assert by_id[str(mine.pk)]["role"] == "owner"
    assert by_id[str(mine.pk)]["counts"]["QUEUED"] == 2
    assert by_id[str(viewed.pk)]["role"] == "viewer"
    assert sum(by_id[str(viewed.pk)]["counts"].values()) == 0


def test_creating_a_matter_makes_the_caller_its_owner(api_client: Any, alice: Any) -> None:
    api = api_client(alice)
    data = data_of(api.post("/api/matters", {"name": "  Jones estate  "}), 201)
    matter = Matter.objects.get(pk=data["id"])
    assert data["name"] == matter.name == "Jones estate"
    assert data["role"] == "owner"
    assert set(data["counts"].values()) == {0}
    assert matter.created_by == alice
    assert list(Membership.objects.filter(matter=matter).values_list("user__username", "role")) == [
        ("alice", "owner")
    ]
    assert [m["id"] for m in data_of(api.get("/api/matters"))] == [data["id"]]


@pytest.mark.parametrize("body", [{"name": ""}, {"name": "   "}, {}, {"name": "x" * 201}])
def test_a_matter_needs_a_name(api_client: Any, alice: Any, body: dict[str, str]) -> None:
    error_of(api_client(alice).post("/api/matters", body), 400, "VALIDATION_ERROR")
    assert not Matter.objects.exists()


def test_a_body_that_is_not_json_is_a_validation_error(api_client: Any, alice: Any) -> None:
    api = api_client(alice)
    response = api.client.post(
        "/api/matters", data=b"{not json", content_type="application/json", headers=api.headers
    )
    error_of(response, 400, "VALIDATION_ERROR")


# --- scoping: what is not yours does not exist -----------------------------------------


def test_another_users_matter_is_not_found(
    api_client: Any, make_matter: Any, alice: Any, bob: Any
) -> None:
    bobs = make_matter(bob, "Bob's")
    api = api_client(alice)
    unknown = uuid.uuid4()
    for matter_id in (bobs.pk, unknown):
        for response in (
            api.get(f"/api/matters/{matter_id}/jobs"),
            api.get(f"/api/matters/{matter_id}/members"),
            api.post(f"/api/matters/{matter_id}/members", {"username": "alice", "role": "owner"}),
            api.upload(matter_id, "note.txt", TEXT),
            api.post(
                f"/api/matters/{matter_id}/jobs/bulk", {"action": "retry", "status": "QUEUED"}
            ),
        ):
            error_of(response, 404, "MATTER_NOT_FOUND")
    # Nothing leaked, nothing changed: the same answer as for a matter that does not exist.
    assert Membership.objects.filter(matter=bobs).count() == 1
    assert_nothing_stored()


def test_another_users_job_is_not_found(
    api_client: Any, make_matter: Any, alice: Any, bob: Any
) -> None:
    bobs = make_matter(bob, "Bob's")
    job = job_of(api_client(bob).upload(bobs.pk, "note.txt", TEXT))
    alices = make_matter(alice, "Alice's")
    api = api_client(alice)

    error_of(api.get(f"/api/jobs/{job.pk}"), 404, "JOB_NOT_FOUND")
    error_of(api.get(f"/api/matters/{alices.pk}/jobs/{job.pk}"), 404, "JOB_NOT_FOUND")
    error_of(act(api, job, "cancel", alices.pk), 404, "JOB_NOT_FOUND")
    error_of(api.get(f"/api/matters/{bobs.pk}/jobs/{job.pk}"), 404, "MATTER_NOT_FOUND")
    error_of(act(api, job, "cancel"), 404, "MATTER_NOT_FOUND")
    assert [j["id"] for j in data_of(api.get("/api/jobs"))] == []
    job.refresh_from_db()
    assert job.status == "QUEUED"


def test_a_job_under_another_visible_matters_path_is_not_found(
    api_client: Any, make_matter: Any, alice: Any
) -> None:
    first, second = make_matter(alice, "First"), make_matter(alice, "Second")
    api = api_client(alice)
    job = job_of(api.upload(first.pk, "note.txt", TEXT))

    error_of(api.get(f"/api/matters/{second.pk}/jobs/{job.pk}"), 404, "JOB_NOT_FOUND")
    error_of(act(api, job, "cancel", second.pk), 404, "JOB_NOT_FOUND")
    bulk = {"action": "cancel", "job_ids": [str(job.pk)]}
    refused = data_of(api.post(f"/api/matters/{second.pk}/jobs/bulk", bulk))
    assert refused == {"done": 0, "refused": [{"job_id": str(job.pk), "code": "JOB_NOT_FOUND"}]}
    job.refresh_from_db()
    assert job.status == "QUEUED"
    assert data_of(api.get(f"/api/matters/{first.pk}/jobs/{job.pk}"))["id"] == str(job.pk)


MALFORMED = ["not-a-uuid", "123", "{id}junk", "{id}0", "{short}", "{id}%20", "%00", "{id}'--"]


@pytest.mark.parametrize("template", MALFORMED)
def test_a_malformed_id_is_a_404_with_its_code(
    api_client: Any, alice: Any, matter: Matter, template: str
) -> None:
    api = api_client(alice)
    job = job_of(api.upload(matter.pk, "note.txt", TEXT))

    def bad(real: Any) -> str:
        return template.format(id=real, short=str(real)[:-1])

    m, j = matter.pk, job.pk
    for response, code in (
        (api.get(f"/api/jobs/{bad(j)}"), "JOB_NOT_FOUND"),
        (api.get(f"/api/matters/{m}/jobs/{bad(j)}"), "JOB_NOT_FOUND"),
        (api.post(f"/api/matters/{m}/jobs/{bad(j)}/cancel"), "JOB_NOT_FOUND"),
        (api.post(f"/api/matters/{m}/jobs/{bad(j)}/retry"), "JOB_NOT_FOUND"),
        (api.get(f"/api/matters/{bad(m)}/jobs"), "MATTER_NOT_FOUND"),
        (api.get(f"/api/matters/{bad(m)}/jobs/{j}"), "MATTER_NOT_FOUND"),
        (api.get(f"/api/matters/{bad(m)}/members"), "MATTER_NOT_FOUND"),
        (api.upload(bad(m), "note.txt", TEXT), "MATTER_NOT_FOUND"),
    ):
        error_of(response, 404, code)
    job.refresh_from_db()
    assert job.status == "QUEUED"
    assert Document.objects.count() == 1


# --- roles -----------------------------------------------------------------------------


def test_a_viewer_reads_but_may_not_change_anything(
    api_client: Any, alice: Any, carol: Any, shared: Matter
) -> None:
    job = job_of(api_client(alice).upload(shared.pk, "note.txt", TEXT))
    viewer = api_client(carol)

    status = viewer.get(f"/api/jobs/{job.pk}")
    assert status.status_code == 200 and status.json()["id"] == str(job.pk)
    assert [j["id"] for j in data_of(viewer.get(f"/api/matters/{shared.pk}/jobs"))] == [str(job.pk)]
    assert data_of(viewer.get(f"/api/matters/{shared.pk}/jobs/{job.pk}"))["id"] == str(job.pk)
    assert len(data_of(viewer.get(f"/api/matters/{shared.pk}/members"))) == 3

    error_of(viewer.upload(shared.pk, "note.txt", TEXT), 403, "FORBIDDEN")
    for action in ("retry", "skip", "skip-stage", "cancel", "prioritize"):
        error_of(act(viewer, job, action), 403, "FORBIDDEN")
    bulk = {"action": "cancel", "job_ids": [str(job.pk)]}
    error_of(viewer.post(f"/api/matters/{shared.pk}/jobs/bulk", bulk), 403, "FORBIDDEN")
    error_of(
        viewer.post(f"/api/matters/{shared.pk}/members", {"username": "carol", "role": "owner"}),
        403,
        "FORBIDDEN",
    )
    job.refresh_from_db()
    assert job.status == "QUEUED" and job.priority == "default"
    assert Document.objects.count() == 1
    assert not AuditEvent.objects.filter(actor=carol).exists()


def test_a_member_uploads_and_cancels_only_their_own_uploads(
    api_client: Any, alice: Any, bob: Any, shared: Matter
) -> None:
    alices_job = job_of(api_client(alice).upload(shared.pk, "alice.txt", TEXT))
    member = api_client(bob)
    response = member.upload(shared.pk, "bob.txt", text_no("bob"))
    assert response.status_code == 201
    bobs_job = job_of(response)
    assert bobs_job.created_by == bob and bobs_job.document.uploaded_by == bob

    error_of(act(member, alices_job, "cancel"), 403, "FORBIDDEN")
    error_of(act(member, bobs_job, "prioritize"), 403, "FORBIDDEN")
    bulk = {"action": "cancel", "job_ids": [str(bobs_job.pk)]}
    error_of(member.post(f"/api/matters/{shared.pk}/jobs/bulk", bulk), 403, "FORBIDDEN")
    assert data_of(act(member, bobs_job, "cancel"))["status"] == "CANCELLED"

    alices_job.refresh_from_db()
    assert alices_job.status == "QUEUED"
    assert AuditEvent.objects.get(job=bobs_job, action="cancelled").actor == bob


def test_an_owner_cancels_and_prioritises_anyones_job(
    api_client: Any, alice: Any, bob: Any, shared: Matter
) -> None:
    member = api_client(bob)
    first = job_of(member.upload(shared.pk, "one.txt", text_no(1)))
    second = job_of(member.upload(shared.pk, "two.txt", text_no(2)))
    owner = api_client(alice)
    assert data_of(act(owner, first, "cancel"))["status"] == "CANCELLED"
    assert data_of(act(owner, second, "prioritize"))["priority"] == "high"
    assert AuditEvent.objects.get(job=first, action="cancelled").actor == alice


@needs_worker
def test_only_an_owner_may_retry_skip_or_skip_a_stage(
    api_client: Any, alice: Any, bob: Any, carol: Any, shared: Matter, worker: Any
) -> None:
    failed = job_of(api_client(bob).upload(shared.pk, "broken.pdf", CORRUPT_PDF))
    worker()
    failed.refresh_from_db()
    assert failed.status == "FAILED"

    for user in (bob, carol):  # bob uploaded it, but retrying is an owner's call
        for action in ("retry", "skip", "skip-stage"):
            error_of(act(api_client(user), failed, action), 403, "FORBIDDEN")
    failed.refresh_from_db()
    assert failed.status == "FAILED" and failed.retry_count == 0
    assert failed.skipped_stages == []
    refused = AuditEvent.objects.filter(job=failed, actor__in=[bob, carol]).exclude(
        action="created"
    )
    assert not refused.exists()

    assert data_of(act(api_client(alice), failed, "retry"))["status"] == "QUEUED"


# --- uploads ---------------------------------------------------------------------------


def test_an_upload_stores_the_document_and_queues_its_job(
    api_client: Any, alice: Any, matter: Matter
) -> None:
    content = make_pdf(["First page.", "Second page."])
    data = data_of(api_client(alice).upload(matter.pk, "brief.pdf", content), 201)

    document = Document.objects.get(pk=data["document"]["id"])
    api_url = f"/api/documents/{document.pk}"
    assert data["document"] == {
        "id": str(document.pk),
        "matter_id": str(matter.pk),
        "name": "brief.pdf",
        "content_type": "application/pdf",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "page_count": None,  # the first stage counts the pages, in a worker
        "processing_state": "PENDING",
        "created_at": data["document"]["created_at"],
        "pages_url": f"{api_url}/pages",
        "entities_url": f"{api_url}/entities",
        "file_url": f"{api_url}/file",
    }
    assert document.matter == matter and document.uploaded_by == alice
    assert Path(document.file.path).read_bytes() == content
    job = ProcessingJob.objects.get(document=document)
    assert data["job"]["id"] == str(job.pk) and data["job"]["status"] == "QUEUED"
    assert job.created_by == alice
    assert data["duplicate"] is False


@needs_worker
def test_the_same_bytes_uploaded_again_answer_the_document_already_in_the_matter(
    api_client: Any, alice: Any, bob: Any, shared: Matter
) -> None:
    first = data_of(api_client(alice).upload(shared.pk, "deposition.txt", TEXT), 201)
    queued = queued_rq_ids()
    assert len(queued) == 1

    # Another member, another name, the same bytes.
    again = data_of(api_client(bob).upload(shared.pk, "deposition (1).txt", TEXT), 200)

    assert again["duplicate"] is True
    assert again["document"] == first["document"]
    assert again["job"]["id"] == first["job"]["id"]
    assert Document.objects.count() == 1 and ProcessingJob.objects.count() == 1
    assert queued_rq_ids() == queued  # nothing new to process
    assert len(stored_files()) == 1


@needs_worker
def test_allow_duplicate_uploads_the_same_bytes_again_as_a_new_document(
    api_client: Any, alice: Any, matter: Matter
) -> None:
    api = api_client(alice)
    first = data_of(api.upload(matter.pk, "deposition.txt", TEXT), 201)

    again = data_of(api.upload(matter.pk, "deposition.txt", TEXT, allow_duplicate=True), 201)

    assert again["duplicate"] is False
    assert again["document"]["id"] != first["document"]["id"]
    assert again["job"]["id"] != first["job"]["id"]
    assert again["document"]["sha256"] == first["document"]["sha256"]
    assert Document.objects.count() == 2 and len(queued_rq_ids()) == 2
    # A later plain upload of the bytes answers the newest of the two.
    latest = data_of(api.upload(matter.pk, "deposition.txt", TEXT), 200)
    assert latest["duplicate"] is True and latest["job"]["id"] == again["job"]["id"]


def test_the_same_bytes_in_another_matter_are_not_a_duplicate(
    api_client: Any, make_matter: Any, alice: Any, matter: Matter
) -> None:
    api = api_client(alice)
    other = make_matter(alice, "Another matter")
    first = data_of(api.upload(matter.pk, "deposition.txt", TEXT), 201)

    elsewhere = data_of(api.upload(other.pk, "deposition.txt", TEXT), 201)

    assert elsewhere["duplicate"] is False
    assert elsewhere["document"]["id"] != first["document"]["id"]
    assert Document.objects.get(pk=elsewhere["document"]["id"]).matter == other


def test_allow_duplicate_that_is_not_a_yes_or_no_is_a_validation_error(
    api_client: Any, alice: Any, matter: Matter
) -> None:
    api = api_client(alice)
    response = api.client.post(
        f"/api/matters/{matter.pk}/documents?allow_duplicate=perhaps",
        data={"file": SimpleUploadedFile("deposition.txt", TEXT)},
        headers=api.headers,
    )
    error_of(response, 400, "VALIDATION_ERROR")
    assert_nothing_stored()


@needs_worker
def test_two_identical_uploads_at_the_same_moment_store_one_document(
    alice: Any, matter: Matter
) -> None:
    """Each upload's transaction is held open a moment after it has stored its document
    (as a slow request's would be): without the lock on (matter, bytes), both would find
    no duplicate and both would store one."""
    start = threading.Barrier(2)
    both_stored = threading.Barrier(2, timeout=1)  # both get here only if nothing serialises
    duplicates: list[bool] = []

    def upload(name: str) -> None:
        try:
            with transaction.atomic():
                start.wait()
                accepted = accept_upload(matter, SimpleUploadedFile(name, TEXT), by=alice)
                with contextlib.suppress(threading.BrokenBarrierError):
                    both_stored.wait()
            duplicates.append(accepted.duplicate)
        finally:
            connection.close()

    threads = [threading.Thread(target=upload, args=(f"copy-{n}.txt",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert sorted(duplicates) == [False, True]
    assert Document.objects.count() == 1 and ProcessingJob.objects.count() == 1
    assert len(queued_rq_ids()) == 1


def test_a_file_over_the_limit_is_413(
    api_client: Any, alice: Any, matter: Matter, settings: Any
) -> None:
    settings.UPLOAD_MAX_BYTES = 1000
    api = api_client(alice)
    error = error_of(api.upload(matter.pk, "big.txt", b"a" * 1001), 413, "FILE_TOO_LARGE")
    assert error["details"]["max_bytes"] == 1000
    assert error["details"]["size"] == 1001
    assert_nothing_stored()
    # The limit itself is allowed.
    assert api.upload(matter.pk, "fits.txt", b"a" * 1000).status_code == 201


def test_an_empty_file_is_refused(api_client: Any, alice: Any, matter: Matter) -> None:
    error_of(api_client(alice).upload(matter.pk, "empty.pdf", b""), 400, "EMPTY_FILE")
    assert_nothing_stored()


def _zip_without_word() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes/readme.txt", "Not a Word document.")
    return out.getvalue()


UNSUPPORTED = {
    "gif": b"GIF89a" + bytes(200),
    "zip": _zip_without_word(),
    "ole2-doc": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1024),
    "random": random.Random(7).randbytes(4096),
}


@pytest.mark.parametrize("name", ["scan.pdf", "memo.docx", "notes.txt"])
@pytest.mark.parametrize("kind", sorted(UNSUPPORTED))
def test_the_type_comes_from_the_content_not_the_name(
    api_client: Any, alice: Any, matter: Matter, kind: str, name: str
) -> None:
    response = api_client(alice).upload(matter.pk, name, UNSUPPORTED[kind])
    error = error_of(response, 400, "UNSUPPORTED_FILE_TYPE")
    assert "application/pdf" in error["details"]["supported"]
    assert_nothing_stored()


def test_a_text_file_named_pdf_is_accepted_as_text(
    api_client: Any, alice: Any, matter: Matter
) -> None:
    data = data_of(api_client(alice).upload(matter.pk, "really-text.pdf", TEXT), 201)
    assert data["document"]["content_type"] == "text/plain"
    assert Document.objects.get(pk=data["document"]["id"]).content_type == "text/plain"


@pytest.mark.parametrize("form", ["nothing", "file under another name", "file as plain text"])
def test_an_upload_without_a_file_is_a_validation_error(
    api_client: Any, alice: Any, matter: Matter, form: str
) -> None:
    data = {
        "nothing": {},
        "file under another name": {"document": SimpleUploadedFile("note.txt", TEXT)},
        "file as plain text": {"file": "just a string"},
    }[form]
    api = api_client(alice)
    path = f"/api/matters/{matter.pk}/documents"
    error = error_of(api.client.post(path, data=data, headers=api.headers), 400, "VALIDATION_ERROR")
    assert error["details"]["field"] == "file"
    assert_nothing_stored()


@pytest.mark.parametrize(
    "sent, original, stored",
    [
        # Django's multipart parser already drops directories and control characters;
        # the storage then turns spaces into underscores.
        ("../../etc/passwd .pdf", "passwd .pdf", "passwd_.pdf"),
        ("..\\..\\windows\\win.ini.pdf", "win.ini.pdf", "win.ini.pdf"),
        ("a/b/../../c.pdf", "c.pdf", "c.pdf"),
        ("bad\x07na\x1bme\t.pdf", "badname.pdf", "badname.pdf"),
        # What reaches the app is kept as the original name and made safe for the disk.
        ("con<>:*?|.pdf", "con<>:*?|.pdf", "con_.pdf"),
        ("....pdf", "....pdf", "pdf"),
        ("..pdf", "..pdf", "pdf"),
        ("x;rm -rf $HOME.pdf", "x;rm -rf $HOME.pdf", "x_rm_-rf__HOME.pdf"),
        ("a" * 300 + ".pdf", "a" * 251 + ".pdf", "a" * 120 + ".pdf"),
    ],
)
def test_the_stored_file_name_is_sanitised(
    api_client: Any, alice: Any, matter: Matter, sent: str, original: str, stored: str
) -> None:
    response = upload_raw(api_client(alice), matter.pk, sent, TEXT)
    data = data_of(response, 201)
    document = Document.objects.get(pk=data["document"]["id"])
    assert document.original_name == data["document"]["name"] == original

    folder = (Path(settings.MEDIA_ROOT) / "documents" / str(matter.pk) / str(document.pk)).resolve()
    path = Path(document.file.path).resolve()
    assert path.parent == folder
    assert path.name == stored
    assert ".." not in path.name and "/" not in path.name and "\\" not in path.name
    assert all(ch.isprintable() for ch in path.name)
    assert path.read_bytes() == TEXT
    assert stored_files() == [path]


# --- the job object --------------------------------------------------------------------

NULLABLE_STR = (str, type(None))
NULLABLE_INT = (int, type(None))
JOB_FIELDS: dict[str, Any] = {
    "job_id": str,
    "id": str,
    "matter_id": str,
    "document_id": str,
    "job_type": str,
    "status": str,
    "error": NULLABLE_STR,
    "error_code": NULLABLE_STR,
    "current_stage": str,
    "stage_index": int,
    "total_stages": int,
    "stages": list,
    "progress": int,
    "items_total": int,
    "items_done": int,
    "page_count": NULLABLE_INT,
    "eta_seconds": NULLABLE_INT,
    "estimated_completion": NULLABLE_STR,
    "queue_position": NULLABLE_INT,
    "retry_count": int,
    "max_retries": int,
    "next_attempt_at": NULLABLE_STR,
    "priority": str,
    "created_at": str,
    "started_at": NULLABLE_STR,
    "completed_at": NULLABLE_STR,
    "updated_at": str,
    "result_url": NULLABLE_STR,
    "result_api_url": NULLABLE_STR,
}


def assert_job_object(body: dict[str, Any], job: ProcessingJob) -> None:
    """Every field of the job object (docs/api.md), with its type and its ties to the rows."""
    missing = set(JOB_FIELDS) - set(body)
    assert not missing, missing
    for field, kind in JOB_FIELDS.items():
        assert isinstance(body[field], kind), (field, body[field])
        assert not isinstance(body[field], bool), field
    assert body["job_id"] == body["id"] == str(job.pk)
    assert body["matter_id"] == str(job.matter_id)
    assert body["document_id"] == str(job.document_id)
    assert body["job_type"] == "DOCUMENT_PROCESSING"
    assert 0 <= body["progress"] <= 100
    assert 1 <= body["stage_index"] <= body["total_stages"] == len(body["stages"])
    for stage in body["stages"]:
        assert set(stage) >= {"name", "label", "status"}
        assert all(isinstance(stage[k], str) and stage[k] for k in ("name", "label", "status"))
    for field in ("created_at", "updated_at", "started_at", "completed_at", "next_attempt_at"):
        if body[field] is not None:
            parse_time(body[field])
    uuid.UUID(body["id"])


STEPPER = [
    ("extract", "Extracting"),
    ("ocr", "Reading scanned pages"),
    ("chunk", "Chunking"),
    ("index", "Indexing"),
    ("entities", "Finding entities"),
]


def test_a_queued_job_object(api_client: Any, alice: Any, matter: Matter) -> None:
    api = api_client(alice)
    job = job_of(api.upload(matter.pk, "brief.pdf", make_pdf(["One.", "Two."])))
    body = api.get(f"/api/jobs/{job.pk}").json()

    assert_job_object(body, job)
    assert body["status"] == "QUEUED"
    assert body["stages"] == [
        {"name": name, "label": label, "status": "PENDING"} for name, label in STEPPER
    ]
    assert (body["current_stage"], body["stage_index"], body["total_stages"]) == ("extract", 1, 5)
    assert body["progress"] == 0 and (body["items_done"], body["items_total"]) == (0, 0)
    assert body["page_count"] is None  # not counted until its first stage runs
    assert body["queue_position"] == 1
    assert body["eta_seconds"] is None and body["estimated_completion"] is None
    assert body["retry_count"] == 0 and body["max_retries"] == settings.JOB_MAX_RETRIES
    assert body["priority"] == "default" and body["next_attempt_at"] is None
    assert body["error"] is None and body["error_code"] is None
    assert body["started_at"] is None and body["completed_at"] is None
    assert body["result_url"] is None and body["result_api_url"] is None
    # The flat status object and the matter's job list describe the job the same way.
    listed = data_of(api.get(f"/api/matters/{matter.pk}/jobs"))[0]
    assert {k: listed[k] for k in JOB_FIELDS} == {k: body[k] for k in JOB_FIELDS}


@needs_worker
def test_a_completed_job_object_and_its_result(
    api_client: Any, alice: Any, bob: Any, matter: Matter, worker: Any
) -> None:
    api = api_client(alice)
    job = job_of(api.upload(matter.pk, "brief.pdf", make_pdf(["Clause one.", "Clause two."])))
    assert api.get(f"/api/jobs/{job.pk}").json()["result_url"] is None
    worker()
    body = api.get(f"/api/jobs/{job.pk}").json()

    assert_job_object(body, job)
    assert body["status"] == "COMPLETED" and body["progress"] == 100
    assert body["stages"] == [
        {"name": name, "label": label, "status": "COMPLETED"} for name, label in STEPPER
    ]
    assert (body["current_stage"], body["stage_index"]) == ("entities", 5)
    assert (body["items_done"], body["items_total"], body["page_count"]) == (2, 2, 2)
    assert body["queue_position"] is None and body["eta_seconds"] is None
    assert body["error"] is None and body["error_code"] is None
    created, started, completed = (
        parse_time(body[k]) for k in ("created_at", "started_at", "completed_at")
    )
    assert created <= started <= completed
    assert body["result_url"] == f"/documents/{job.document_id}/"
    assert body["result_api_url"] == f"/api/documents/{job.document_id}"

    page = session_client(alice).get(body["result_url"])
    assert page.status_code == 200
    assert "Clause one." in page.text and "Clause two." in page.text
    assert Client().get(body["result_url"]).status_code == 302  # to the login page
    assert session_client(bob).get(body["result_url"]).status_code == 404


# --- ETag ------------------------------------------------------------------------------


@needs_worker
def test_etag_gives_304_until_the_job_changes(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    api = api_client(alice)
    job = job_of(api.upload(matter.pk, "note.txt", TEXT))
    first = api.get(f"/api/jobs/{job.pk}")
    assert first.status_code == 200
    etag = first["ETag"]
    assert etag.startswith('"') and etag.endswith('"')

    same = api.get(f"/api/jobs/{job.pk}", headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.content == b""
    assert same["ETag"] == etag
    listed = api.get(f"/api/jobs/{job.pk}", headers={"If-None-Match": f'"other", W/{etag}'})
    assert listed.status_code == 304
    other = api.get(f"/api/jobs/{job.pk}", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other["ETag"] == etag

    worker()

    changed = api.get(f"/api/jobs/{job.pk}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["status"] == "COMPLETED"
    assert changed["ETag"] != etag
    again = api.get(f"/api/jobs/{job.pk}", headers={"If-None-Match": changed["ETag"]})
    assert again.status_code == 304 and again.content == b""


# --- listing ---------------------------------------------------------------------------


def test_a_matters_jobs_filtered_and_paginated_newest_first(
    api_client: Any, alice: Any, matter: Matter
) -> None:
    api = api_client(alice)
    jobs = [job_of(api.upload(matter.pk, f"note-{n}.txt", text_no(n))) for n in range(5)]
    for job in jobs[1], jobs[3]:
        assert act(api, job, "cancel").status_code == 200
    newest_first = [str(j.pk) for j in reversed(jobs)]
    base = f"/api/matters/{matter.pk}/jobs"

    everything = api.get(base).json()
    assert [j["id"] for j in everything["data"]] == newest_first
    assert everything["meta"] == {"total": 5, "page": 1, "per_page": 20}

    cancelled = api.get(f"{base}?status=CANCELLED").json()
    assert [j["id"] for j in cancelled["data"]] == [str(jobs[3].pk), str(jobs[1].pk)]
    assert cancelled["meta"]["total"] == 2
    queued = api.get(f"{base}?status=QUEUED").json()
    assert [j["id"] for j in queued["data"]] == [str(jobs[4].pk), str(jobs[2].pk), str(jobs[0].pk)]
    assert api.get(f"{base}?status=FAILED").json() == {
        "data": [],
        "meta": {"total": 0, "page": 1, "per_page": 20},
    }

    by_type = api.get(f"{base}?job_type=DOCUMENT_PROCESSING&status=QUEUED").json()
    assert by_type["meta"]["total"] == 3
    assert api.get(f"{base}?job_type=OCR_ONLY").json()["meta"]["total"] == 0

    pages = [api.get(f"{base}?page={p}&per_page=2").json() for p in (1, 2, 3)]
    assert [[j["id"] for j in p["data"]] for p in pages] == [
        newest_first[0:2],
        newest_first[2:4],
        newest_first[4:5],
    ]
    assert [p["meta"] for p in pages] == [{"total": 5, "page": p, "per_page": 2} for p in (1, 2, 3)]
    beyond = api.get(f"{base}?page=9&per_page=2").json()
    assert beyond == {"data": [], "meta": {"total": 5, "page": 9, "per_page": 2}}
    huge = 10**20  # an OFFSET past PostgreSQL's bigint: still just an empty page
    assert api.get(f"{base}?page={huge}").json() == {
        "data": [],
        "meta": {"total": 5, "page": huge, "per_page": 20},
    }
    assert len(api.get(f"{base}?per_page=100").json()["data"]) == 5


@pytest.mark.parametrize(
    "query", ["per_page=101", "per_page=0", "page=0", "page=abc", "status=DONE", "status=queued"]
)
def test_invalid_list_parameters_are_validation_errors(
    api_client: Any, alice: Any, matter: Matter, query: str
) -> None:
    error = error_of(
        api_client(alice).get(f"/api/matters/{matter.pk}/jobs?{query}"), 400, "VALIDATION_ERROR"
    )
    assert error["details"]["errors"]


def test_recent_jobs_across_the_callers_matters_only(
    api_client: Any, make_matter: Any, alice: Any, bob: Any
) -> None:
    own = make_matter(alice, "Own")
    viewed = make_matter(bob, "Viewed", alice="viewer")
    private = make_matter(bob, "Private")
    alice_api, bob_api = api_client(alice), api_client(bob)
    j1 = job_of(alice_api.upload(own.pk, "a.txt", TEXT))
    j2 = job_of(bob_api.upload(viewed.pk, "b.txt", TEXT))
    hidden = job_of(bob_api.upload(private.pk, "c.txt", TEXT))
    j3 = job_of(alice_api.upload(own.pk, "d.txt", text_no("d")))
    assert act(alice_api, j1, "cancel").status_code == 200

    recent = alice_api.get("/api/jobs").json()
    assert [j["id"] for j in recent["data"]] == [str(j3.pk), str(j2.pk), str(j1.pk)]
    assert str(hidden.pk) not in {j["id"] for j in recent["data"]}
    assert recent["meta"]["limit"] == 20

    limited = alice_api.get("/api/jobs?limit=2").json()["data"]
    assert [j["id"] for j in limited] == [str(j3.pk), str(j2.pk)]
    queued = alice_api.get("/api/jobs?status=QUEUED").json()["data"]
    assert [j["id"] for j in queued] == [str(j3.pk), str(j2.pk)]
    cancelled = alice_api.get("/api/jobs?status=CANCELLED&limit=5").json()["data"]
    assert [j["id"] for j in cancelled] == [str(j1.pk)]

    for query in ("limit=101", "limit=0", "status=NOPE"):
        error_of(alice_api.get(f"/api/jobs?{query}"), 400, "VALIDATION_ERROR")


# --- detail: stage history and audit ---------------------------------------------------


@needs_worker
def test_job_detail_has_stage_history_and_audit(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    api = api_client(alice)
    job = job_of(api.upload(matter.pk, "brief.pdf", make_pdf(["A.", "B.", "C."])))
    worker()
    data = data_of(api.get(f"/api/matters/{matter.pk}/jobs/{job.pk}"))

    assert_job_object(data, job)
    history = data["stage_history"]
    assert [(r["stage"], r["stage_index"], r["status"]) for r in history] == [
        (name, i, "COMPLETED") for i, (name, _label) in enumerate(STEPPER, start=1)
    ]
    run = history[0]
    assert (run["stage"], run["stage_index"], run["attempt"], run["status"]) == (
        "extract",
        1,
        1,
        "COMPLETED",
    )
    assert (run["items_done"], run["items_total"]) == (3, 3)
    assert run["error_code"] is None and run["error"] is None
    assert isinstance(run["duration_ms"], int) and run["duration_ms"] >= 0
    assert parse_time(run["started_at"]) <= parse_time(run["finished_at"])

    audit = [
        (e["action"], e["status_before"], e["status_after"], e["actor"], e["reason"])
        for e in data["audit"]
    ]
    assert audit == [
        ("created", None, "QUEUED", "alice", ""),
        ("started", "QUEUED", "PROCESSING", None, ""),
        ("completed", "PROCESSING", "COMPLETED", None, ""),
    ]
    for event in data["audit"]:
        parse_time(event["at"])
        # The names the statuses were first published under are still there.
        assert (event["from_status"], event["to_status"]) == (
            event["status_before"],
            event["status_after"],
        )


# --- actions ---------------------------------------------------------------------------


@needs_worker
def test_retry_a_failed_job_runs_its_stage_again(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    api = api_client(alice)
    job = job_of(api.upload(matter.pk, "broken.pdf", CORRUPT_PDF))
    worker()
    failed = api.get(f"/api/jobs/{job.pk}").json()
    assert failed["status"] == "FAILED" and failed["error_code"] == "CORRUPT_DOCUMENT"
    assert failed["stages"][0]["status"] == "FAILED"

    retried = data_of(act(api, job, "retry"))

    assert retried["status"] == "QUEUED" and retried["retry_count"] == 1
    assert retried["error"] is None and retried["error_code"] is None
    event = AuditEvent.objects.get(job=job, action="retried")
    assert (event.actor, event.status_before, event.status_after) == (alice, "FAILED", "QUEUED")

    worker()  # it was enqueued again, and fails again: the file is still corrupt

    detail = data_of(api.get(f"/api/matters/{matter.pk}/jobs/{job.pk}"))
    assert detail["status"] == "FAILED" and detail["retry_count"] == 1
    history = [
        (r["stage"], r["attempt"], r["status"], r["error_code"]) for r in detail["stage_history"]
    ]
    assert history == [
        ("extract", 1, "FAILED", "CORRUPT_DOCUMENT"),
        ("extract", 2, "FAILED", "CORRUPT_DOCUMENT"),
    ]
    actions = [(e["action"], e["actor"]) for e in detail["audit"]]
    assert actions == [
        ("created", "alice"),
        ("started", None),
        ("failed", None),
        ("retried", "alice"),
        ("started", None),
        ("failed", None),
    ]


@needs_worker
def test_retry_a_completed_job_is_an_invalid_transition(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    api = api_client(alice)
    job = job_of(api.upload(matter.pk, "note.txt", TEXT))
    worker()
    for action in ("retry", "skip", "cancel", "prioritize"):
        error = error_of(act(api, job, action), 409, "INVALID_TRANSITION")
        assert error["details"]["current_status"] == "COMPLETED"
    job.refresh_from_db()
    assert job.status == "COMPLETED" and job.retry_count == 0
    assert not AuditEvent.objects.filter(job=job, actor=alice).exclude(action="created").exists()


@needs_worker
def test_skip_a_failed_job(api_client: Any, alice: Any, matter: Matter, worker: Any) -> None:
    api = api_client(alice)
    job = job_of(api.upload(matter.pk, "broken.pdf", CORRUPT_PDF))
    worker()

    skipped = data_of(act(api, job, "skip"))

    assert skipped["status"] == "SKIPPED" and skipped["result_url"] is None
    assert skipped["stages"][0]["status"] == "SKIPPED"
    job.refresh_from_db()
    assert job.status == "SKIPPED"
    assert job.document.processing_state == ProcessingState.INCOMPLETE
    assert AuditEvent.objects.get(job=job, action="skipped").actor == alice
    error = error_of(act(api, job, "retry"), 409, "INVALID_TRANSITION")
    assert error["details"]["current_status"] == "SKIPPED"


def test_skip_a_queued_job_is_an_invalid_transition(
    api_client: Any, alice: Any, matter: Matter
) -> None:
    api = api_client(alice)
    job = job_of(api.upload(matter.pk, "note.txt", TEXT))
    for action in ("skip", "retry"):
        error = error_of(act(api, job, action), 409, "INVALID_TRANSITION")
        assert error["details"]["current_status"] == "QUEUED"
    job.refresh_from_db()
    assert job.status == "QUEUED"


@needs_worker
def test_a_cancelled_job_is_left_alone_by_the_worker(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    api = api_client(alice)
    job = job_of(api.upload(matter.pk, "brief.pdf", make_pdf(["Never read."])))

    cancelled = data_of(act(api, job, "cancel"))
    assert cancelled["status"] == "CANCELLED" and cancelled["queue_position"] is None
    worker()

    body = api.get(f"/api/jobs/{job.pk}").json()
    assert body["status"] == "CANCELLED" and body["progress"] == 0
    assert body["started_at"] is None and body["result_url"] is None
    assert not StageRun.objects.filter(job=job).exists()
    assert not DocumentPage.objects.filter(document=job.document).exists()
    assert AuditEvent.objects.get(job=job, action="cancelled").actor == alice
    error = error_of(act(api, job, "cancel"), 409, "INVALID_TRANSITION")
    assert error["details"]["current_status"] == "CANCELLED"


def test_prioritize_moves_a_queued_job_to_the_front(
    api_client: Any, alice: Any, matter: Matter
) -> None:
    api = api_client(alice)
    first = job_of(api.upload(matter.pk, "one.pdf", make_pdf(["One."])))
    second = job_of(api.upload(matter.pk, "two.pdf", make_pdf(["Two."])))
    assert api.get(f"/api/jobs/{second.pk}").json()["queue_position"] == 2

    moved = data_of(act(api, second, "prioritize"))

    assert moved["priority"] == "high" and moved["status"] == "QUEUED"
    assert moved["queue_position"] == 1
    assert api.get(f"/api/jobs/{first.pk}").json()["queue_position"] == 2
    assert AuditEvent.objects.get(job=second, action="prioritized").actor == alice
    act(api, first, "cancel")
    error = error_of(act(api, first, "prioritize"), 409, "INVALID_TRANSITION")
    assert error["details"]["current_status"] == "CANCELLED"


@needs_worker
def test_bulk_retry_by_ids_and_by_status(
    api_client: Any, make_matter: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    api = api_client(alice)
    failed = [
        job_of(api.upload(matter.pk, f"broken-{n}.pdf", f"%PDF-1.4\n garbage {n} %%EOF".encode()))
        for n in range(3)
    ]
    completed = job_of(api.upload(matter.pk, "fine.txt", TEXT))
    elsewhere = job_of(api.upload(make_matter(alice, "Elsewhere").pk, "other.txt", TEXT))
    worker()
    assert set(ProcessingJob.objects.filter(matter=matter).values_list("status", flat=True)) == {
        "FAILED",
        "COMPLETED",
    }
    bulk = f"/api/matters/{matter.pk}/jobs/bulk"
    unknown = str(uuid.uuid4())

    by_ids = data_of(
        api.post(
            bulk,
            {
                "action": "retry",
                "job_ids": [
                    str(failed[0].pk),
                    unknown,
                    "not-a-uuid",
                    str(completed.pk),
                    str(elsewhere.pk),
                ],
            },
        )
    )

    assert by_ids == {
        "done": 1,
        "refused": [
            {"job_id": unknown, "code": "JOB_NOT_FOUND"},
            {"job_id": "not-a-uuid", "code": "JOB_NOT_FOUND"},
            {"job_id": str(completed.pk), "code": "INVALID_TRANSITION"},
            {"job_id": str(elsewhere.pk), "code": "JOB_NOT_FOUND"},
        ],
    }
    statuses = dict(ProcessingJob.objects.values_list("pk", "status"))
    assert statuses[failed[0].pk] == "QUEUED"
    assert statuses[failed[1].pk] == statuses[failed[2].pk] == "FAILED"
    assert statuses[completed.pk] == statuses[elsewhere.pk] == "COMPLETED"

    by_status = data_of(api.post(bulk, {"action": "retry", "status": "FAILED"}))

    assert by_status == {"done": 2, "refused": []}
    rows = ProcessingJob.objects.filter(pk__in=[j.pk for j in failed])
    assert set(rows.values_list("status", "retry_count")) == {("QUEUED", 1)}
    assert AuditEvent.objects.filter(action="retried", actor=alice).count() == 3

    cancelled = data_of(api.post(bulk, {"action": "cancel", "status": "QUEUED"}))
    assert cancelled == {"done": 3, "refused": []}
    assert ProcessingJob.objects.filter(matter=matter, status="CANCELLED").count() == 3


@pytest.mark.parametrize(
    "body",
    [
        {"action": "retry"},
        {"action": "retry", "status": "FAILED", "job_ids": []},
        {"action": "delete", "status": "FAILED"},
        {"action": "retry", "status": "COMPLETED"},
        {"action": "retry", "job_ids": "all"},
        {"action": "retry", "status": "FAILED", "reason": "x" * 1001},
        {"action": "retry", "status": "FAILED", "reason": 7},
    ],
)
def test_an_invalid_bulk_request_is_a_validation_error(
    api_client: Any, alice: Any, matter: Matter, body: dict[str, Any]
) -> None:
    response = api_client(alice).post(f"/api/matters/{matter.pk}/jobs/bulk", body)
    error_of(response, 400, "VALIDATION_ERROR")


# --- reasons: each action says why, and the audit trail keeps it ------------------------

# action, the status it starts from, the status it leads to, the audit event it writes
ACTIONS = [
    ("retry", "FAILED", "QUEUED", "retried"),
    ("skip", "FAILED", "SKIPPED", "skipped"),
    ("skip-stage", "FAILED", "QUEUED", "stage_skipped"),
    ("cancel", "QUEUED", "CANCELLED", "cancelled"),
    ("prioritize", "QUEUED", "QUEUED", "prioritized"),
]


def job_in(matter: Matter, by: Any, status: str, name: str = "a.pdf") -> ProcessingJob:
    """A QUEUED job, or one FAILED for good at its first stage (driven by hand, no worker)."""
    job = lifecycle.create_job(stored_document(matter, by, name), by=by)
    if status == "FAILED":
        started = lifecycle.begin_stage(job.pk, job.dispatch_id)
        assert started is not None
        failed = lifecycle.fail_stage(*started, CorruptDocument())
        assert failed is not None
    job.refresh_from_db()
    assert job.status == status
    return job


def post_raw(api: ApiClient, path: str, body: bytes, **extra: Any) -> Any:
    """A POST with exactly ``body`` (possibly empty, possibly not JSON)."""
    return api.client.generic(
        "POST", path, body, content_type="application/json", headers=api.headers, **extra
    )


@pytest.mark.parametrize(("action", "start", "after", "recorded"), ACTIONS)
def test_every_action_records_the_reason_and_the_callers_address(
    api_client: Any, alice: Any, matter: Matter, action: str, start: str, after: str, recorded: str
) -> None:
    api = api_client(alice)
    job = job_in(matter, alice, start)
    path = f"/api/matters/{matter.pk}/jobs/{job.pk}/{action}"

    response = api.post(path, {"reason": "The client asked us to"}, REMOTE_ADDR="198.51.100.23")

    assert data_of(response)["status"] == after
    event = AuditEvent.objects.get(job=job, action=recorded)
    assert (event.actor, event.status_before, event.status_after) == (alice, start, after)
    assert (event.reason, event.client_address) == ("The client asked us to", "198.51.100.23")
    shown = data_of(api.get(f"/api/matters/{matter.pk}/jobs/{job.pk}"))["audit"][-1]
    assert (shown["action"], shown["actor"], shown["reason"]) == (
        recorded,
        "alice",
        "The client asked us to",
    )
    assert (shown["status_before"], shown["status_after"]) == (start, after)
    assert "client_address" not in shown  # for staff, in the admin


@pytest.mark.parametrize(
    ("remote", "recorded"),
    [("", None), ("unix-socket", None), ("fe80::1%eth0", "fe80::1")],
)
def test_an_action_from_an_odd_or_missing_address_is_done_and_audited(
    api_client: Any, alice: Any, matter: Matter, remote: str, recorded: str | None
) -> None:
    job = job_in(matter, alice, "QUEUED")
    response = api_client(alice).post(
        f"/api/matters/{matter.pk}/jobs/{job.pk}/cancel", REMOTE_ADDR=remote
    )
    assert data_of(response)["status"] == "CANCELLED"
    event = AuditEvent.objects.get(job=job, action="cancelled")
    assert event.client_address == recorded


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", ""),
        (b"{}", ""),
        (b'{"reason": ""}', ""),
        (b'{"reason": "' + b"x" * 1000 + b'"}', "x" * 1000),
    ],
)
def test_an_action_s_body_is_optional_and_a_reason_may_be_1000_characters(
    api_client: Any, alice: Any, matter: Matter, body: bytes, reason: str
) -> None:
    api = api_client(alice)
    job = job_in(matter, alice, "FAILED")
    response = post_raw(api, f"/api/matters/{matter.pk}/jobs/{job.pk}/skip", body)
    assert data_of(response)["status"] == "SKIPPED"
    assert AuditEvent.objects.get(job=job, action="skipped").reason == reason


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"reason": "' + b"x" * 1001 + b'"}', "payload.reason"),
        (b'{"reason": 42}', "payload.reason"),
        (b'{"reason": null}', "payload.reason"),
        (b'{"reason": ["why"]}', "payload.reason"),
        (b'["why"]', "payload"),
        (b"because I said so", None),
    ],
)
def test_a_reason_that_is_too_long_or_not_text_is_refused_and_nothing_changes(
    api_client: Any, alice: Any, matter: Matter, body: bytes, field: str | None
) -> None:
    api = api_client(alice)
    job = job_in(matter, alice, "FAILED")
    for action in ("retry", "skip", "skip-stage"):
        response = post_raw(api, f"/api/matters/{matter.pk}/jobs/{job.pk}/{action}", body)
        error = error_of(response, 400, "VALIDATION_ERROR")
        if field is not None:
            assert field in [e["field"] for e in error["details"]["errors"]]
    stored = ProcessingJob.objects.get(pk=job.pk)
    assert (stored.status, stored.retry_count, stored.skipped_stages) == ("FAILED", 0, [])
    assert not AuditEvent.objects.filter(job=job, actor=alice).exclude(action="created").exists()


def test_a_bulk_action_records_its_reason_on_every_job(
    api_client: Any, alice: Any, matter: Matter
) -> None:
    failed = [job_in(matter, alice, "FAILED", f"broken-{n}.pdf") for n in range(2)]
    response = api_client(alice).post(
        f"/api/matters/{matter.pk}/jobs/bulk",
        {"action": "retry", "status": "FAILED", "reason": "The OCR service is back"},
        REMOTE_ADDR="2001:db8::1",
    )
    assert data_of(response) == {"done": 2, "refused": []}
    events = AuditEvent.objects.filter(job__in=failed, action="retried")
    assert sorted(events.values_list("job_id", "reason", "client_address", "actor")) == sorted(
        (job.pk, "The OCR service is back", "2001:db8::1", alice.pk) for job in failed
    )


# --- skip one stage ----------------------------------------------------------------------


def test_skipping_the_stage_of_a_job_that_has_not_failed_is_an_invalid_transition(
    api_client: Any, alice: Any, matter: Matter
) -> None:
    job = job_in(matter, alice, "QUEUED")
    error = error_of(act(api_client(alice), job, "skip-stage"), 409, "INVALID_TRANSITION")
    assert error["details"]["current_status"] == "QUEUED"
    stored = ProcessingJob.objects.get(pk=job.pk)
    assert (stored.status, stored.current_stage, stored.skipped_stages) == ("QUEUED", "extract", [])
    assert not AuditEvent.objects.filter(job=job, action="stage_skipped").exists()


@needs_worker
def test_a_skipped_stage_lets_the_rest_run_and_the_job_completes_with_a_skipped_stage(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    api = api_client(alice)
    # A search language PostgreSQL does not know fails the index stage for good.
    Matter.objects.filter(pk=matter.pk).update(search_language="no_such_language")
    pdf = make_pdf(["Signed on 12 March 2024.", "Write to counsel@example.com."])
    job = job_of(api.upload(matter.pk, "contract.pdf", pdf))
    worker()
    job.refresh_from_db()
    assert (job.status, job.current_stage, job.error_code) == (
        "FAILED",
        "index",
        "INVALID_SEARCH_LANGUAGE",
    )

    queued = data_of(
        api.post(
            f"/api/matters/{matter.pk}/jobs/{job.pk}/skip-stage",
            {"reason": "Search is not needed for this one"},
        )
    )
    assert (queued["status"], queued["current_stage"], queued["error_code"]) == (
        "QUEUED",
        "entities",
        None,
    )
    worker()  # the remaining stage runs on a real worker

    detail = data_of(api.get(f"/api/matters/{matter.pk}/jobs/{job.pk}"))
    assert detail["status"] == "COMPLETED" and detail["progress"] == 100
    assert [(s["name"], s["status"]) for s in detail["stages"]] == [
        ("extract", "COMPLETED"),
        ("ocr", "COMPLETED"),
        ("chunk", "COMPLETED"),
        ("index", "SKIPPED"),
        ("entities", "COMPLETED"),
    ]
    history = [(r["stage"], r["status"]) for r in detail["stage_history"]]
    assert history[-3:] == [("index", "FAILED"), ("index", "SKIPPED"), ("entities", "COMPLETED")]
    skipped = [e for e in detail["audit"] if e["action"] == "stage_skipped"]
    assert [(e["actor"], e["reason"], e["details"]) for e in skipped] == [
        ("alice", "Search is not needed for this one", {"stage": "index"})
    ]
    assert detail["audit"][-1]["action"] == "completed"
    # The stages after the skipped one did their work; the skipped one's results are missing.
    document = Document.objects.get(pk=job.document_id)
    assert document.entities.exists()
    assert not document.chunks.exclude(search_vector=None).exists()
    assert document.processing_state == ProcessingState.INCOMPLETE

    browser = session_client(alice)
    for page in (f"/matters/{matter.pk}/", f"/jobs/{job.pk}/"):
        html = browser.get(page).content.decode()
        assert "Completed with a skipped stage" in html
    assert "skipped the failed stage" in html and "Search is not needed for this one" in html


# --- members ---------------------------------------------------------------------------


def members_of(matter: Matter) -> list[tuple[str, str]]:
    return sorted(Membership.objects.filter(matter=matter).values_list("user__username", "role"))


def test_members_are_listed_with_their_roles(
    api_client: Any, bob: Any, carol: Any, shared: Matter
) -> None:
    data = data_of(api_client(carol).get(f"/api/matters/{shared.pk}/members"))
    assert data == [
        {"username": "alice", "role": "owner"},
        {"username": "bob", "role": "member"},
        {"username": "carol", "role": "viewer"},
    ]


def test_an_owner_adds_a_member_and_changes_their_role(
    api_client: Any, make_user: Any, alice: Any, shared: Matter
) -> None:
    dave = make_user("dave")
    api = api_client(alice)
    path = f"/api/matters/{shared.pk}/members"

    added = data_of(api.post(path, {"username": "dave", "role": "viewer"}), 201)
    assert added == {"username": "dave", "role": "viewer"}
    assert ("dave", "viewer") in members_of(shared)
    seen = data_of(api_client(dave).get("/api/matters"))
    assert [(m["id"], m["role"]) for m in seen] == [(str(shared.pk), "viewer")]

    changed = data_of(api.post(path, {"username": "dave", "role": "owner"}), 201)
    assert changed == {"username": "dave", "role": "owner"}
    assert Membership.objects.filter(matter=shared, user=dave).count() == 1
    assert ("dave", "owner") in members_of(shared)


@pytest.mark.parametrize("who", ["bob", "carol"])
def test_only_owners_manage_members(
    api_client: Any, make_user: Any, shared: Matter, who: str
) -> None:
    make_user("dave")
    api = api_client(Membership.objects.get(matter=shared, user__username=who).user)
    before = members_of(shared)
    path = f"/api/matters/{shared.pk}/members"
    error_of(api.post(path, {"username": "dave", "role": "member"}), 403, "FORBIDDEN")
    error_of(api.post(path, {"username": who, "role": "owner"}), 403, "FORBIDDEN")
    error_of(api.delete(f"{path}/carol"), 403, "FORBIDDEN")
    assert members_of(shared) == before


def test_an_owner_removes_a_member(api_client: Any, alice: Any, bob: Any, shared: Matter) -> None:
    response = api_client(alice).delete(f"/api/matters/{shared.pk}/members/bob")
    assert response.status_code == 204 and response.content == b""
    assert members_of(shared) == [("alice", "owner"), ("carol", "viewer")]
    error_of(api_client(bob).get(f"/api/matters/{shared.pk}/jobs"), 404, "MATTER_NOT_FOUND")


def test_the_last_owner_cannot_be_removed_or_demoted(
    api_client: Any, alice: Any, shared: Matter
) -> None:
    api = api_client(alice)
    path = f"/api/matters/{shared.pk}/members"
    error_of(api.delete(f"{path}/alice"), 409, "INVALID_TRANSITION")
    error_of(api.post(path, {"username": "alice", "role": "member"}), 409, "INVALID_TRANSITION")
    assert ("alice", "owner") in members_of(shared)

    # With a second owner, the first may step down.
    assert api.post(path, {"username": "bob", "role": "owner"}).status_code == 201
    assert api.delete(f"{path}/alice").status_code == 204
    assert members_of(shared) == [("bob", "owner"), ("carol", "viewer")]


@pytest.mark.parametrize(
    "body",
    [
        {"username": "nobody", "role": "member"},
        {"username": "", "role": "member"},
        {"username": "bob", "role": "admin"},
        {"username": "bob"},
    ],
)
def test_an_invalid_member_request_is_a_validation_error(
    api_client: Any, alice: Any, shared: Matter, body: dict[str, str]
) -> None:
    before = members_of(shared)
    response = api_client(alice).post(f"/api/matters/{shared.pk}/members", body)
    error_of(response, 400, "VALIDATION_ERROR")
    assert members_of(shared) == before


# --- OpenAPI ---------------------------------------------------------------------------

IMPLEMENTED_PATHS = {
    "/api/matters": {"get", "post"},
    "/api/matters/{matter_id}/members": {"get", "post"},
    "/api/matters/{matter_id}/members/{username}": {"delete"},
    "/api/matters/{matter_id}/documents": {"post"},
    "/api/jobs": {"get"},
    "/api/jobs/{job_id}": {"get"},
    "/api/matters/{matter_id}/jobs": {"get"},
    "/api/matters/{matter_id}/jobs/{job_id}": {"get"},
    "/api/matters/{matter_id}/jobs/{job_id}/retry": {"post"},
    "/api/matters/{matter_id}/jobs/{job_id}/skip": {"post"},
    "/api/matters/{matter_id}/jobs/{job_id}/skip-stage": {"post"},
    "/api/matters/{matter_id}/jobs/{job_id}/cancel": {"post"},
    "/api/matters/{matter_id}/jobs/{job_id}/prioritize": {"post"},
    "/api/matters/{matter_id}/jobs/bulk": {"post"},
    "/api/matters/{matter_id}/search": {"get"},
    "/api/matters/{matter_id}/jobs/stats": {"get"},
    "/api/documents/{document_id}": {"get"},
    "/api/documents/{document_id}/pages": {"get"},
    "/api/documents/{document_id}/entities": {"get"},
    "/api/documents/{document_id}/file": {"get"},
    "/api/jobs/{job_id}/callback": {"post"},
}


def openapi_paths() -> dict[str, set[str]]:
    response = Client().get("/api/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    return {path: set(ops) for path, ops in document["paths"].items()}


def test_openapi_document_lists_the_contract_paths() -> None:
    paths = openapi_paths()
    for path, methods in IMPLEMENTED_PATHS.items():
        assert path in paths, path
        assert methods <= paths[path], (path, paths[path])
