"""The matter and job pages over plain HTTP: what they show, who may see them, what their
polling gets back, a page cost that does not grow with the matter, uploading the same
file twice, and the members panel."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils.formats import date_format
from django.utils.timezone import localtime

from processing.jobs import lifecycle
from processing.jobs.states import JobStatus
from processing.models import Document, Matter, Membership, ProcessingJob, Role
from processing.pipeline.registry import Stage, register
from tests.conftest import stored_document

pytestmark = pytest.mark.django_db(transaction=True)

ONE_STAGE = "TEST_PAGES_ONE_STAGE"


def _noop(ctx: Any) -> None:
    """A stage with nothing to do."""


@pytest.fixture(autouse=True)
def one_stage_pipeline() -> None:
    register(ONE_STAGE, [Stage("only", "Only", f"{__name__}._noop")])


def browser_of(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def new_job(matter: Matter, by: Any, name: str = "a.pdf") -> ProcessingJob:
    return lifecycle.create_job(stored_document(matter, by, name), by=by, job_type=ONE_STAGE)


def finish(job: ProcessingJob) -> None:
    started = lifecycle.begin_stage(job.pk, ProcessingJob.objects.get(pk=job.pk).dispatch_id)
    assert started is not None
    assert lifecycle.complete_stage(*started, done=1, total=1) is not None


def test_a_polled_row_answers_286_once_its_job_is_finished(matter: Matter, alice: Any) -> None:
    job = new_job(matter, alice)
    client = browser_of(alice)
    for path in (f"/jobs/{job.pk}/row", f"/jobs/{job.pk}/history"):
        waiting = client.get(path)
        assert waiting.status_code == 200, path
        assert 'hx-trigger="every 2s, jt:resync' in waiting.content.decode()
    assert "1st in line" in client.get(f"/jobs/{job.pk}/row").content.decode()
    finish(job)
    for path in (f"/jobs/{job.pk}/row", f"/jobs/{job.pk}/history"):
        done = client.get(path)
        assert done.status_code == 286, path
        assert "every 2s" not in done.content.decode()  # the swapped-in part polls no more
    assert "Done" in client.get(f"/jobs/{job.pk}/row").content.decode()


def test_the_polled_parts_are_404_to_whoever_is_not_on_the_matter(
    matter: Matter, alice: Any, make_user: Any
) -> None:
    job = new_job(matter, alice)
    stranger = browser_of(make_user("mallory"))
    for path in (
        f"/jobs/{job.pk}/row",
        f"/jobs/{job.pk}/history",
        f"/matters/{matter.pk}/summary",
        f"/matters/{matter.pk}/",
    ):
        assert stranger.get(path).status_code == 404, path
    assert Client().get(f"/jobs/{job.pk}/row").status_code == 302  # to the login page


def test_the_matter_page_filters_by_status_and_pages_by_fifty(matter: Matter, alice: Any) -> None:
    jobs = [new_job(matter, alice, f"doc-{n:03}.pdf") for n in range(55)]
    finish(jobs[0])
    client = browser_of(alice)
    first = client.get(f"/matters/{matter.pk}/").content.decode()
    assert first.count('class="job status-') == 50
    assert "Page 1 of 2" in first
    second = client.get(f"/matters/{matter.pk}/?page=2").content.decode()
    assert second.count('class="job status-') == 5
    completed = client.get(f"/matters/{matter.pk}/?status=COMPLETED").content.decode()
    assert completed.count('class="job status-') == 1 and "doc-000.pdf" in completed
    assert "Processing 54 documents" in first  # the banner counts the whole matter
    assert "54 queued · 0 processing · 1 done · 0 failed" in first


def test_a_member_sees_the_job_page_with_its_timeline_and_audit(
    make_user: Any, make_matter: Any, alice: Any
) -> None:
    make_user("bob")
    matter = make_matter(alice, bob=Role.VIEWER)
    job = new_job(matter, alice)
    finish(job)
    page = browser_of(type(alice).objects.get(username="bob")).get(f"/jobs/{job.pk}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert f'id="job-{job.pk}"' in html and f'id="job-history-{job.pk}"' in html
    assert "attempt 1 · completed" in html
    assert "uploaded it" in html and "finished processing" in html
    assert "Open the processed document" in html


def _queries_for_matter_page(client: Client, matter: Matter) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(f"/matters/{matter.pk}/").status_code == 200
    return len(queries)


def test_the_matter_page_costs_the_same_queries_with_10_and_1000_jobs(
    matter: Matter, alice: Any, make_matter: Any
) -> None:
    client = browser_of(alice)
    small = make_matter(alice, "Small")
    _bulk_jobs(small, alice, 10)
    _bulk_jobs(matter, alice, 1000)
    client.get(f"/matters/{small.pk}/")  # warm the per-process caches (stage history)
    assert _queries_for_matter_page(client, small) == _queries_for_matter_page(client, matter)


def _bulk_jobs(matter: Matter, by: Any, count: int) -> None:
    """``count`` jobs in a realistic mix: most done, some failed, some running or queued."""
    documents = Document.objects.bulk_create(
        Document(
            matter=matter,
            uploaded_by=by,
            original_name=f"bulk-{n}.pdf",
            file=f"x/bulk-{n}.pdf",
            content_type="application/pdf",
            size=100,
            sha256=f"{n:064}",
            page_count=1 + n % 40,
        )
        for n in range(count)
    )
    mix = (
        [JobStatus.COMPLETED] * 6
        + [JobStatus.FAILED, JobStatus.PROCESSING]
        + [JobStatus.QUEUED] * 2
    )
    ProcessingJob.objects.bulk_create(
        ProcessingJob(
            matter=matter,
            document=document,
            job_type=ONE_STAGE,
            status=mix[n % len(mix)],
            current_stage="only",
            queue_name="high",
            created_by=by,
        )
        for n, document in enumerate(documents)
    )


# --- uploading the same file twice -----------------------------------------------------

DEPOSITION = b"Deposition of the witness, taken on the twelfth of March.\n" * 3


def _hidden_fields(html: str, form_id: str) -> dict[str, str]:
    """The hidden inputs of the element with ``form_id`` in a page, as the browser sends them."""
    part = html[html.index(f'id="{form_id}"') :]
    part = part[: part.index("</form>")]
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', part)
    return {name: unescape(value) for name, value in fields}


def test_an_upload_of_bytes_already_in_the_matter_says_where_they_are_and_can_go_anyway(
    matter: Matter, alice: Any
) -> None:
    client = browser_of(alice)
    upload = f"/matters/{matter.pk}/upload"
    client.post(upload, {"file": SimpleUploadedFile("deposition.txt", DEPOSITION)})
    original = Document.objects.get()
    job = ProcessingJob.objects.get()

    answer = client.post(
        upload, {"file": SimpleUploadedFile("deposition copy.txt", DEPOSITION)}, follow=True
    )

    page = answer.content.decode()
    assert Document.objects.count() == 1 and ProcessingJob.objects.count() == 1
    when = date_format(localtime(original.created_at), "j M Y, H:i")
    assert "“deposition copy.txt” was already uploaded as" in page
    assert f'<a href="/documents/{original.pk}/">deposition.txt</a>' in page
    assert f">{when}</time>" in page and "so it was not processed again" in page
    assert f'<a href="/jobs/{job.pk}/">Its job</a> is queued.' in page
    assert "Upload anyway" in page
    # Said once: the next visit of the page does not repeat it.
    assert "already uploaded" not in client.get(f"/matters/{matter.pk}/").content.decode()

    anyway = client.post(upload, _hidden_fields(page, "duplicate-upload"), follow=True)

    assert "“deposition copy.txt” was uploaded and queued." in anyway.content.decode()
    copy = Document.objects.exclude(pk=original.pk).get()
    assert copy.original_name == "deposition copy.txt" and copy.sha256 == original.sha256
    assert Path(copy.file.path).read_bytes() == DEPOSITION
    assert ProcessingJob.objects.filter(document=copy).count() == 1


def test_upload_anyway_takes_only_a_document_of_the_same_matter(
    matter: Matter, alice: Any, make_matter: Any
) -> None:
    client = browser_of(alice)
    other = make_matter(alice, "Another matter")
    client.post(f"/matters/{other.pk}/upload", {"file": SimpleUploadedFile("a.txt", DEPOSITION)})
    elsewhere = Document.objects.get()

    answer = client.post(
        f"/matters/{matter.pk}/upload",
        {"allow_duplicate": "1", "copy_of": str(elsewhere.pk), "name": "a.txt"},
        follow=True,
    )

    assert "That document is no longer in this matter." in answer.content.decode()
    assert Document.objects.count() == 1


# --- the members panel -----------------------------------------------------------------

HTMX = {"HX-Request": "true"}


def members_of(matter: Matter) -> list[tuple[str, str]]:
    return sorted(Membership.objects.filter(matter=matter).values_list("user__username", "role"))


def panel(response: Any, status: int) -> str:
    """The members panel alone, as htmx swaps it in place; with the status expected."""
    assert response.status_code == status, response.content[:500]
    html: str = response.content.decode().strip()
    assert html.startswith('<section id="members"') and html.endswith("</section>")
    assert "data-shows-refusals" in html  # so that app.js swaps in a refusal too
    return html


@pytest.fixture
def team(make_user: Any, make_matter: Any, alice: Any) -> Matter:
    """Alice owns it; Bob is a member, Carol a viewer; Dave has an account, not on it."""
    for username in ("bob", "carol", "dave"):
        make_user(username)
    return make_matter(alice, "Acme merger", bob=Role.MEMBER, carol=Role.VIEWER)


def test_an_owner_adds_a_person_changes_their_role_and_removes_them_in_place(
    team: Matter, alice: Any
) -> None:
    client = browser_of(alice)
    page = client.get(f"/matters/{team.pk}/").content.decode()
    assert 'id="members"' in page and "Add person" in page and "Change role" in page
    members = f"/matters/{team.pk}/members"

    added = panel(client.post(members, {"username": "dave", "role": "viewer"}, headers=HTMX), 200)
    assert "“dave” now has the role viewer." in added and ">dave<" in added
    assert ("dave", "viewer") in members_of(team)

    changed = panel(client.post(members, {"username": "dave", "role": "owner"}, headers=HTMX), 200)
    assert "“dave” now has the role owner." in changed
    assert ("dave", "owner") in members_of(team)

    removed = panel(client.post(f"{members}/remove", {"username": "dave"}, headers=HTMX), 200)
    assert "“dave” was removed from the matter." in removed
    assert "dave" not in removed.replace("“dave” was removed", "")
    assert members_of(team) == [("alice", "owner"), ("bob", "member"), ("carol", "viewer")]


def test_adding_an_unknown_username_says_so_in_the_panel(team: Matter, alice: Any) -> None:
    before = members_of(team)
    answer = browser_of(alice).post(
        f"/matters/{team.pk}/members", {"username": "nobdy", "role": "member"}, headers=HTMX
    )
    html = panel(answer, 400)
    assert "No one has the username “nobdy”; check its spelling." in html
    assert 'role="alert"' in html
    assert members_of(team) == before


@pytest.mark.parametrize("who", ["bob", "carol"])
def test_members_and_viewers_see_the_people_but_no_controls_and_a_forced_post_is_403(
    team: Matter, who: str
) -> None:
    client = browser_of(Membership.objects.get(matter=team, user__username=who).user)
    page = client.get(f"/matters/{team.pk}/").content.decode()
    section = page[page.index('<section id="members"') :]
    section = section[: section.index("</section>")]
    assert ">alice<" in section and "<td>Owner</td>" in section and "<td>Viewer</td>" in section
    assert "<form" not in section and "hx-post" not in section and "Add person" not in page
    before = members_of(team)
    members = f"/matters/{team.pk}/members"

    forced = [
        client.post(members, {"username": "dave", "role": "owner"}, headers=HTMX),
        client.post(members, {"username": who, "role": "owner"}),
        client.post(f"{members}/remove", {"username": "alice"}, headers=HTMX),
    ]

    for answer in forced:
        html = panel(answer, 403)
        assert "Only owners of this matter can add people" in html and "<form" not in html
    assert members_of(team) == before


def test_the_last_owner_is_refused_on_the_page_and_stays_owner(team: Matter, alice: Any) -> None:
    client = browser_of(alice)
    members = f"/matters/{team.pk}/members"
    for answer in (
        client.post(members, {"username": "alice", "role": "member"}, headers=HTMX),
        client.post(f"{members}/remove", {"username": "alice"}, headers=HTMX),
    ):
        assert "A matter must keep at least one owner." in panel(answer, 409)
    assert ("alice", "owner") in members_of(team)


def test_an_owner_who_steps_down_gets_a_page_that_matches_their_new_role(
    team: Matter, alice: Any
) -> None:
    client = browser_of(alice)
    members = f"/matters/{team.pk}/members"
    client.post(members, {"username": "bob", "role": "owner"}, headers=HTMX)

    demoted = client.post(members, {"username": "alice", "role": "member"}, headers=HTMX)
    assert demoted.status_code == 200 and demoted["HX-Refresh"] == "true"
    assert "Add person" not in client.get(f"/matters/{team.pk}/").content.decode()

    client = browser_of(Membership.objects.get(matter=team, user__username="bob").user)
    client.post(members, {"username": "carol", "role": "owner"}, headers=HTMX)
    left = client.post(f"{members}/remove", {"username": "bob"}, headers=HTMX)
    assert left.status_code == 200 and left["HX-Redirect"] == "/"
    assert client.get(f"/matters/{team.pk}/").status_code == 404
