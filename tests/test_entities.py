"""Entities: what the finder finds, the stage's checkpoints, the result page, the ready counts.

The finder is pure and tested on known text; the stage runs through the
lifecycle on real RQ workers (a test pipeline, extract then entities); the
document page and the matter object are read as a member and a stranger.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count
from django.test import Client
from django.test.utils import CaptureQueriesContext

from processing.errors import StageCancelled
from processing.jobs import lifecycle
from processing.jobs.context import StageContext
from processing.models import (
    Document,
    DocumentPage,
    Entity,
    Matter,
    ProcessingJob,
    StageRun,
)
from processing.pipeline import entities as entities_module
from processing.pipeline import entity_finder
from processing.pipeline.entities import entities
from processing.pipeline.entity_finder import Found, find_entities, find_entities_by_window
from processing.pipeline.registry import DOCUMENT_PROCESSING, get_pipeline, register
from tests.conftest import job_of, make_pdf

TEST_JOB_TYPE = "TEST_EXTRACT_ENTITIES"
needs_worker = pytest.mark.django_db(transaction=True)


def kinds_and_values(text: str) -> list[tuple[str, str, str]]:
    """(kind, text, value) of everything found, after checking every offset."""
    found = find_entities(text)
    for item in found:
        assert text[item.start : item.end] == item.text, item
    return [(f.kind, f.text, f.value) for f in found]


def only(text: str, kind: str) -> list[tuple[str, str]]:
    return [(t, v) for k, t, v in kinds_and_values(text) if k == kind]


# --- the finder: dates ---------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "January 5, 2021",
        "5 January 2021",
        "Jan. 5, 2021",
        "Jan 5 2021",
        "2021-01-05",
        "01/05/2021",
        "1/5/2021",
        "JANUARY 5, 2021",
        "5th January 2021",
        "5th day of January, 2021",
        "January 5th, 2021",
    ],
)
def test_each_date_form_is_found_with_its_iso_value(written: str) -> None:
    text = f"The agreement, signed {written}, binds both parties."
    assert only(text, "date") == [(written, "2021-01-05")]
    item = find_entities(text)[0]
    assert (item.start, item.end) == (22, 22 + len(written))


def test_impossible_dates_and_bare_years_are_not_dates() -> None:
    text = (
        "Filed 02/30/2021 and 13/01/2021 and 2021-02-29; in 2021 and in May 2021 the court, "
        "which may 5, 2021 nothing, heard 10 witnesses. Version 2.0.1, v1.2.3, build 2021.01.05."
    )
    assert only(text, "date") == []


def test_a_leap_day_is_a_date() -> None:
    assert only("Closing on 02/29/2024.", "date") == [("02/29/2024", "2024-02-29")]


# --- the finder: money ---------------------------------------------------------------


@pytest.mark.parametrize(
    "written, value",
    [
        ("$1,200.50", "USD 1200.50"),
        ("$3 million", "USD 3000000.00"),
        ("USD 3 million", "USD 3000000.00"),
        ("$3.5 billion", "USD 3500000000.00"),
        ("$3m", "USD 3000000.00"),
        ("$250k", "USD 250000.00"),
        ("US$ 40", "USD 40.00"),
        ("€500", "EUR 500.00"),
        ("£1,000", "GBP 1000.00"),
        ("EUR 2.000,00", "EUR 2000.00"),
        ("1.200,50 €", "EUR 1200.50"),
        ("500 EUR", "EUR 500.00"),
        ("CHF 12", "CHF 12.00"),
        ("25 dollars", "USD 25.00"),
        ("$0.50", "USD 0.50"),
    ],
)
def test_amounts_are_found_with_currency_and_two_decimals(written: str, value: str) -> None:
    text = f"The buyer shall pay {written} on closing."
    assert only(text, "money") == [(written, value)]


def test_numbers_without_a_currency_are_not_money() -> None:
    text = "Clause 1,200 of 3 million words; 2.000,00 units; 68508; in 2021 the rate was 4.5."
    assert only(text, "money") == []


def test_a_code_belongs_to_the_number_after_it() -> None:
    assert only("In 2021 EUR 500 was paid.", "money") == [("EUR 500", "EUR 500.00")]


# --- the finder: email addresses -------------------------------------------------------


def test_email_is_found_and_lower_cased_without_trailing_punctuation() -> None:
    text = "Write to Jane.Doe+law@Example.CO.UK. Or (mailto:ops@firm-llp.com)."
    assert only(text, "email") == [
        ("Jane.Doe+law@Example.CO.UK", "jane.doe+law@example.co.uk"),
        ("ops@firm-llp.com", "ops@firm-llp.com"),
    ]


def test_things_that_look_a_little_like_emails_are_not() -> None:
    assert only("user@localhost, @handle, a@b, name@ domain.com", "email") == []


# --- the finder: phone numbers ---------------------------------------------------------


@pytest.mark.parametrize(
    "written, value",
    [
        ("(402) 555-0142", "+14025550142"),
        ("402-555-0142", "+14025550142"),
        ("402.555.0142", "+14025550142"),
        ("+1 402 555 0142", "+14025550142"),
        ("+1 (402) 555-0142", "+14025550142"),
        ("1-800-555-0199", "+18005550199"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+44 (0)20 7946 0958", "+442079460958"),
        ("+33 1 23 45 67 89", "+33123456789"),
    ],
)
def test_phone_numbers_are_found_in_e164_form(written: str, value: str) -> None:
    text = f"Call us on {written} today."
    assert only(text, "phone") == [(written, value)]


@pytest.mark.parametrize(
    "text",
    [
        "United States v. Doe, No. 4:13-cr-03121 (D. Neb.)",
        "Case No. 1:20-cv-01234-ABC and No. 12-3456",
        "Lincoln, NE 68508 and 68508-1234",
        "SSN 123-45-6789",
        "Filed 2021-01-05 and 01/05/2021",
        "Invoice 123-456-7890 (area codes do not start with 1)",
        "ISBN 978-3-16-148410-0",
        "Version 10.4.2.1 build 4025550142",
        "+12 34",
        "Serial 402-555-01425",
    ],
)
def test_dockets_dates_and_ids_are_not_phone_numbers(text: str) -> None:
    assert only(text, "phone") == []


# --- the finder: case citations ----------------------------------------------------------


def test_case_citations_are_found_by_eyecite_with_offsets_into_the_page() -> None:
    text = (
        "As held in Roe v. Wade, 410 U.S. 113 (1973), and long before in\n"
        "Marbury v. Madison, 5 U.S. 137, the courts decide. Id. at 140. Roe, 410 U.S. at 115. "
        "See also 42 U.S.C. § 1983."
    )
    assert only(text, "citation") == [
        ("410 U.S. 113", "410 U.S. 113"),
        ("5 U.S. 137", "5 U.S. 137"),
        ("410 U.S. at 115", "410 U.S. at 115"),
    ]


def test_a_citation_broken_over_two_lines_keeps_its_line_break() -> None:
    text = "Brown v. Board of Education, 347 U.S.\n483 (1954)."
    assert only(text, "citation") == [("347 U.S.\n483", "347 U.S. 483")]


def test_a_date_in_a_citations_parenthetical_is_a_date_and_a_year_is_not() -> None:
    text = (
        "Smith v. Jones, 2021 WL 123456 (S.D.N.Y. Jan. 5, 2021); Roe v. Wade, 410 U.S. 113 (1973)."
    )
    assert kinds_and_values(text) == [
        ("citation", "2021 WL 123456", "2021 WL 123456"),
        ("date", "Jan. 5, 2021", "2021-01-05"),
        ("citation", "410 U.S. 113", "410 U.S. 113"),
    ]


def test_eyecites_court_lookup_is_unchanged_by_the_speed_up() -> None:
    from eyecite import helpers

    find_entities("Roe v. Wade, 410 U.S. 113 (1973).")  # installs the faster lookup
    faster = helpers.get_court_by_paren
    original = faster.original
    parens = ["9th Cir.", "S.D.N.Y.", "D. Neb.", "Pa.Super.", "2d Cir", "Cal.", "x", "", "1973"]
    for paren in parens:
        assert faster(paren) == original(paren), paren


# --- the finder: overlaps and a whole page -----------------------------------------------


def test_overlapping_matches_keep_the_longer_one() -> None:
    text = "Reach 402-555-0142@example.com or 402-555-0142."
    assert kinds_and_values(text) == [
        ("email", "402-555-0142@example.com", "402-555-0142@example.com"),
        ("phone", "402-555-0142", "+14025550142"),
    ]


def test_a_page_of_mixed_text_finds_each_kind_once_in_order() -> None:
    text = (
        "SETTLEMENT AGREEMENT\n\nDated March 3, 2022, between Acme Corp. (counsel: "
        "ann.lee@acme.example, (402) 555-0142) and Beta LLC.\nBeta shall pay $1,200,000.00 "
        "by 04/15/2022, failing which interest accrues per Smith v. Jones, 123 F.3d 456 "
        "(9th Cir. 1997). Docket 4:13-cr-03121; Lincoln, NE 68508."
    )
    assert kinds_and_values(text) == [
        ("date", "March 3, 2022", "2022-03-03"),
        ("email", "ann.lee@acme.example", "ann.lee@acme.example"),
        ("phone", "(402) 555-0142", "+14025550142"),
        ("money", "$1,200,000.00", "USD 1200000.00"),
        ("date", "04/15/2022", "2022-04-15"),
        ("citation", "123 F.3d 456", "123 F.3d 456"),
    ]
    assert find_entities("") == [] and find_entities("No entities at all here.") == []


# --- the stage through the lifecycle -------------------------------------------------------


def register_test_pipeline() -> None:
    """Declare the test job type: extract, then entities."""
    default = get_pipeline(DOCUMENT_PROCESSING)
    register(
        TEST_JOB_TYPE,
        [default.stage("extract"), default.stage("entities")],
    )


@pytest.fixture
def extract_then_entities(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Uploads in this test run extract then entities (the rest of the default pipeline is
    other engineers' stages and is tested on its own)."""
    register_test_pipeline()
    create_job = lifecycle.create_job

    def create_test_job(document: Any, **options: Any) -> Any:
        return create_job(document, **{**options, "job_type": TEST_JOB_TYPE})

    monkeypatch.setattr(lifecycle, "create_job", create_test_job)
    yield


@pytest.fixture
def scanned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first line of every page text the stage scans, in order."""
    seen: list[str] = []

    def counting(text: str) -> Iterator[list[Found]]:
        seen.append(text.splitlines()[0] if text else "")
        return find_entities_by_window(text)

    monkeypatch.setattr(entities_module, "find_entities_by_window", counting)
    return seen


PAGES = [
    "Page 1. This agreement is dated January 5, 2021.",
    "Page 2. Notices go to Jane.Doe@Example.com.",
    "Page 3. See Roe v. Wade, 410 U.S. 113 (1973).",
]


def entity_rows(document: Document) -> list[tuple[int, str, str]]:
    return list(
        Entity.objects.filter(document=document)
        .order_by("page_number", "start")
        .values_list("page_number", "kind", "value")
    )


@needs_worker
def test_the_stage_saves_each_pages_entities_with_its_page_number(
    api_client: Any,
    alice: Any,
    matter: Matter,
    worker: Any,
    extract_then_entities: None,
    scanned: list[str],
) -> None:
    client = api_client(alice)
    job = job_of(client.upload(matter.pk, "agreement.pdf", make_pdf(PAGES)))
    assert job.job_type == TEST_JOB_TYPE
    worker()

    body = client.get(f"/api/jobs/{job.pk}").json()
    assert body["status"] == "COMPLETED" and body["current_stage"] == "entities"
    assert (body["items_done"], body["items_total"]) == (3, 3)
    assert entity_rows(job.document) == [
        (1, "date", "2021-01-05"),
        (2, "email", "jane.doe@example.com"),
        (3, "citation", "410 U.S. 113"),
    ]
    pages = DocumentPage.objects.filter(document=job.document)
    texts = dict(pages.values_list("page_number", "text"))
    for entity in Entity.objects.filter(document=job.document):
        assert texts[entity.page_number][entity.start : entity.end] == entity.text
        assert entity.matter_id == matter.pk
    assert not DocumentPage.objects.filter(document=job.document, entities_done=False).exists()
    assert scanned == [
        "Page 1. This agreement is dated January 5, 2021.",
        "Page 2. Notices go to Jane.Doe@Example.com.",
        "Page 3. See Roe v. Wade, 410 U.S. 113 (1973).",
    ]
    run = StageRun.objects.get(job=job, stage="entities")
    assert (run.status, run.items_done, run.items_total) == ("COMPLETED", 3, 3)

    # Running the stage again (directly, as a late duplicate would) scans nothing and
    # writes nothing.
    scanned.clear()
    ctx = direct_context(job.document, job)
    with CaptureQueriesContext(connection) as queries:
        entities(ctx)
    assert scanned == []
    assert (ctx.items_done, ctx.items_total) == (3, 3)
    writes = [q["sql"] for q in queries if q["sql"].startswith(("INSERT", "UPDATE"))]
    assert not [sql for sql in writes if "entity" in sql or "documentpage" in sql]
    assert len(entity_rows(job.document)) == 3


@needs_worker
def test_a_retry_resumes_after_the_last_saved_page_and_duplicates_nothing(
    api_client: Any,
    alice: Any,
    matter: Matter,
    worker: Any,
    extract_then_entities: None,
    scanned: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(entities_module, "FLUSH_PAGES", 1)
    broken = {"armed": True}
    counting = entities_module.find_entities_by_window

    def failing_on_page_3(text: str) -> Iterator[list[Found]]:
        found = counting(text)
        if text.startswith("Page 3") and broken.pop("armed", False):
            raise RuntimeError("worker lost mid-page")
        return found

    monkeypatch.setattr(entities_module, "find_entities_by_window", failing_on_page_3)
    client = api_client(alice)
    job = job_of(client.upload(matter.pk, "agreement.pdf", make_pdf(PAGES)))
    worker()

    job.refresh_from_db()
    assert job.status == "QUEUED" and job.error_code == "INTERNAL_ERROR"
    pages = DocumentPage.objects.filter(document=job.document)
    done = dict(pages.values_list("page_number", "entities_done"))
    assert done == {1: True, 2: True, 3: False}
    assert [row[0] for row in entity_rows(job.document)] == [1, 2]  # page 3 saved nothing

    from processing.jobs.dispatch import enqueue_stage

    scanned.clear()
    enqueue_stage(job.id, job.dispatch_id, job.queue_name)  # the scheduled retry, now
    worker()

    job.refresh_from_db()
    assert job.status == "COMPLETED" and job.error_code is None
    assert scanned == ["Page 3. See Roe v. Wade, 410 U.S. 113 (1973)."]  # 1 and 2 not rescanned
    assert entity_rows(job.document) == [
        (1, "date", "2021-01-05"),
        (2, "email", "jane.doe@example.com"),
        (3, "citation", "410 U.S. 113"),
    ]
    runs = list(
        StageRun.objects.filter(job=job, stage="entities").values_list(
            "status", "items_done", "items_total"
        )
    )
    assert runs == [("FAILED", 2, 3), ("COMPLETED", 3, 3)]


def direct_context(document: Document, job: ProcessingJob | None = None) -> StageContext:
    """A context for calling the stage function directly, outside a worker."""
    register_test_pipeline()
    if job is None:
        job = ProcessingJob.objects.create(
            matter_id=document.matter_id,
            document=document,
            job_type=TEST_JOB_TYPE,
            status="PROCESSING",
            current_stage="entities",
            stage_index=2,
            total_stages=2,
        )
    run = StageRun.objects.create(job=job, stage="entities", stage_index=2, status="IN_PROGRESS")
    return StageContext(job=job, stage_run=run)


def make_document(
    matter: Matter, pages: list[str], *, name: str = "doc.txt", **fields: Any
) -> Document:
    document = Document.objects.create(
        matter=matter,
        original_name=name,
        file=f"documents/{matter.pk}/{uuid.uuid4()}/{name}",
        content_type="text/plain",
        size=100,
        sha256="0" * 64,
        page_count=len(pages),
        **fields,
    )
    DocumentPage.objects.bulk_create(
        DocumentPage(document=document, page_number=n, text=t, char_count=len(t))
        for n, t in enumerate(pages, start=1)
    )
    return document


@pytest.mark.django_db
def test_a_document_without_pages_completes_at_once(matter: Matter) -> None:
    document = make_document(matter, [])
    ctx = direct_context(document)
    entities(ctx)
    assert (ctx.items_done, ctx.items_total) == (0, 0)
    assert not Entity.objects.exists()


# --- the document page --------------------------------------------------------------------


def page_as(user: Any, document: Document) -> Any:
    client = Client()
    client.force_login(user)
    return client.get(f"/documents/{document.pk}/")


@pytest.mark.django_db
def test_the_document_page_shows_entities_by_kind_with_their_pages_and_ocr_notes(
    alice: Any, matter: Matter, make_user: Callable[..., Any]
) -> None:
    document = make_document(
        matter,
        [
            "Dated January 5, 2021.",
            "Pay $1,200.50 to jane@example.com.",
            "Unreadable scan",
            "Again on January 5, 2021, see Roe v. Wade, 410 U.S. 113.",
        ],
        processing_state="PROCESSED",
    )
    DocumentPage.objects.filter(document=document, page_number=2).update(
        source="ocr", ocr_status="recognised", ocr_confidence=87.4
    )
    DocumentPage.objects.filter(document=document, page_number=3).update(
        ocr_status="failed", ocr_note="The page image could not be decoded."
    )
    entities(direct_context(document))

    response = page_as(alice, document)
    assert response.status_code == 200
    html = response.content.decode()
    for kind, label in [
        ("date", "Date"),
        ("money", "Money"),
        ("email", "Email address"),
        ("citation", "Case citation"),
    ]:
        assert f'id="entities-{kind}"' in html and label in html
    assert 'id="entities-phone"' not in html
    # One row per distinct date, linking both pages it is on.
    assert html.count('<td class="entity-value">2021-01-05</td>') == 1
    assert '<a href="#page-1">1</a>, <a href="#page-4">4</a>' in html
    assert "USD 1200.50" in html and '<a href="#page-2">2</a>' in html
    assert "jane@example.com" in html and "410 U.S. 113" in html
    assert 'id="page-4"' in html
    assert "OCR, confidence 87%" in html and "1 page read by OCR" in html
    assert "OCR failed on this page: The page image could not be decoded." in html
    assert f'href="/matters/{matter.pk}/"' in html


@pytest.mark.django_db
def test_the_document_page_is_404_for_a_non_member_and_its_queries_do_not_grow(
    alice: Any, matter: Matter, make_user: Callable[..., Any]
) -> None:
    small = make_document(matter, ["Dated January 5, 2021."], processing_state="PROCESSED")
    lines = [f"On {m}/1{m}/2021 call 402-555-01{m}{m} or x{m}@example.com." for m in range(1, 10)]
    large = make_document(matter, lines, processing_state="PROCESSED")
    for document in (small, large):
        entities(direct_context(document))
    assert Entity.objects.filter(document=large).count() == 27

    stranger = make_user("mallory")
    assert page_as(stranger, small).status_code == 404
    assert page_as(stranger, large).status_code == 404

    with CaptureQueriesContext(connection) as few:
        assert page_as(alice, small).status_code == 200
    with CaptureQueriesContext(connection) as many:
        assert page_as(alice, large).status_code == 200
    assert len(many) == len(few)


# --- what is ready in a matter ---------------------------------------------------------------


@needs_worker
def test_the_matter_object_counts_whats_ready_while_another_document_waits(
    api_client: Any,
    alice: Any,
    matter: Matter,
    worker: Any,
    extract_then_entities: None,
) -> None:
    client = api_client(alice)
    done = job_of(client.upload(matter.pk, "agreement.pdf", make_pdf(PAGES)))
    worker()
    waiting = job_of(client.upload(matter.pk, "later.pdf", make_pdf(["Page 1. $5 on 01/02/2021."])))
    # Entities of a document still in the pipeline are not counted as ready yet.
    Entity.objects.create(
        document=waiting.document,
        matter=matter,
        kind="money",
        text="$5",
        value="USD 5.00",
        page_number=1,
        start=8,
        end=10,
    )

    matters = client.get("/api/matters").json()["data"]
    (mine,) = [m for m in matters if m["id"] == str(matter.pk)]
    assert mine["ready"] == {"documents": 1, "pages": 3, "entities": 3}
    assert mine["counts"]["QUEUED"] == 1 and mine["counts"]["COMPLETED"] == 1
    assert client.get(f"/api/jobs/{waiting.pk}").json()["status"] == "QUEUED"
    assert Document.objects.get(pk=done.document_id).processing_state == "PROCESSED"

    web = Client()
    web.force_login(alice)
    html = web.get(f"/matters/{matter.pk}/").content.decode()
    # The page counts what is ready and what is still coming.
    assert "Search: 1 of 2 documents indexed" in html
    assert "Entities (4 found — processing…)" in html


@pytest.mark.django_db
def test_the_matter_list_costs_the_same_queries_for_one_matter_or_many(
    api_client: Any, alice: Any, make_matter: Callable[..., Matter]
) -> None:
    client = api_client(alice)
    first = make_matter(alice, "First")
    make_document(first, ["On January 5, 2021 we paid $10."], processing_state="PROCESSED")
    entities(direct_context(Document.objects.get(matter=first)))
    client.get("/api/matters")  # the token's first use is recorded once
    with CaptureQueriesContext(connection) as one:
        data = client.get("/api/matters").json()["data"]
    assert data[0]["ready"] == {"documents": 1, "pages": 1, "entities": 2}

    for n in range(4):
        other = make_matter(alice, f"Other {n}")
        make_document(other, ["Nothing here."], processing_state="PROCESSED")
    with CaptureQueriesContext(connection) as five:
        data = client.get("/api/matters").json()["data"]
    assert len(data) == 5 and len(five) == len(one)
    assert [m["ready"]["documents"] for m in data] == [1, 1, 1, 1, 1]
    created = client.post("/api/matters", {"name": "New"}).json()["data"]
    assert created["ready"] == {"documents": 0, "pages": 0, "entities": 0}


def test_every_kind_has_a_place_in_the_overlap_precedence() -> None:
    # Two overlapping matches of the same length are settled by it; a kind missing
    # from it would fail the entities stage on the first such page.
    assert set(entity_finder._PRECEDENCE) == set(Entity.Kind)


# --- hostile pages: linear overlap removal, caps, windows ------------------------------


def quadratic_without_overlaps(candidates: list[Found]) -> list[Found]:
    """The overlap removal the finder used before it was made linear: the test oracle."""
    import bisect

    ordered = sorted(
        candidates,
        key=lambda f: (-(f.end - f.start), entity_finder._PRECEDENCE[f.kind], f.start),
    )
    starts: list[int] = []
    kept: list[Found] = []
    for found in ordered:
        i = bisect.bisect_right(starts, found.start)
        if i > 0 and kept[i - 1].end > found.start:
            continue
        if i < len(kept) and kept[i].start < found.end:
            continue
        starts.insert(i, found.start)
        kept.insert(i, found)
    return kept


@pytest.mark.parametrize("seed", range(40))
def test_overlap_removal_keeps_what_the_quadratic_one_kept(seed: int) -> None:
    import random

    rng = random.Random(seed)
    kinds = list(entity_finder._PRECEDENCE)
    candidates = []
    for _ in range(rng.randint(0, 300)):
        start = rng.randint(0, 2000)
        end = start + rng.randint(1, rng.choice([3, 20, 500]))
        candidates.append(Found(rng.choice(kinds), "x", "x", start, end))
    assert entity_finder._without_overlaps(candidates) == quadratic_without_overlaps(candidates)


HOSTILE_LINE = "a{n}@x.example (402) 555-{n:04d} 2021-01-{d:02d} $1{n},00 "


def hostile_line(repeats: int) -> str:
    """One line of back-to-back emails, phones, dates and amounts (4 entities a repeat)."""
    return "".join(HOSTILE_LINE.format(n=n % 10000, d=n % 28 + 1) for n in range(repeats))


def test_a_long_line_found_window_by_window_matches_it_found_whole() -> None:
    text = hostile_line(2500)  # about 120 KB: three windows
    windows = list(find_entities_by_window(text, window=40_000))
    assert len(windows) > 2
    assert [f for window in windows for f in window] == find_entities(text)


@needs_worker
def test_a_page_of_back_to_back_entities_completes_with_the_cap_noted(
    api_client: Any,
    alice: Any,
    matter: Matter,
    worker: Any,
    settings: Any,
    extract_then_entities: None,
) -> None:
    settings.ENTITIES_MAX_PER_PAGE = 300
    settings.ENTITIES_MAX_PER_DOCUMENT = 450
    client = api_client(alice)
    # A text file: one line per page, pages separated by form feeds.
    pages = ["Page one. " + hostile_line(400), "Page two. " + hostile_line(400), "Page three."]
    job = job_of(client.upload(matter.pk, "hostile.txt", "\f".join(pages).encode()))
    worker()

    body = client.get(f"/api/jobs/{job.pk}").json()
    assert (body["status"], body["error_code"]) == ("COMPLETED", None)
    assert (body["items_done"], body["items_total"]) == (3, 3)
    per_page = dict(
        Entity.objects.filter(document=job.document)
        .values("page_number")
        .annotate(n=Count("id"))
        .values_list("page_number", "n")
    )
    assert per_page == {1: 300, 2: 150}
    notes = dict(
        DocumentPage.objects.filter(document=job.document).values_list(
            "page_number", "entities_note"
        )
    )
    assert notes[1] == "Entities on this page: counting stopped at 300, the limit per page."
    assert notes[2] == ""
    assert notes[3].startswith("Not scanned for entities: the document reached its limit of 450")
    assert not DocumentPage.objects.filter(document=job.document, entities_done=False).exists()

    page = Client()
    page.force_login(alice)
    html = page.get(f"/documents/{job.document.pk}/").content.decode()
    assert "counting stopped at 300, the limit per page" in html
    assert "reached its limit of 450 entities" in html


@pytest.mark.django_db
def test_a_cancel_stops_the_stage_inside_a_long_page(
    matter: Matter, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.CANCEL_CHECK_INTERVAL = 0
    settings.ENTITIES_MAX_PER_PAGE = 100_000
    document = make_document(matter, [hostile_line(6000)])  # about 300 KB: several windows
    ctx = direct_context(document)
    windows: list[int] = []
    real = entity_finder.find_entities

    def counting(text: str) -> list[Found]:
        windows.append(len(text))
        if len(windows) == 2:
            lifecycle.cancel(ProcessingJob.objects.get(pk=ctx.job.pk), by=None)
        return real(text)

    monkeypatch.setattr(entity_finder, "find_entities", counting)
    with pytest.raises(StageCancelled):
        entities(ctx)
    assert len(windows) == 2
    assert not Entity.objects.filter(document=document).exists()
    assert not DocumentPage.objects.filter(document=document, entities_done=True).exists()


# --- the document page stays of bounded size --------------------------------------------


@pytest.mark.django_db
def test_a_document_of_many_pages_shows_its_text_a_screen_at_a_time(
    alice: Any, matter: Matter
) -> None:
    document = make_document(matter, [f"Text of page {n}. " + "word " * 200 for n in range(1, 61)])

    html = page_as(alice, document).content.decode()
    assert 'id="page-1"' in html and 'id="page-20"' in html and 'id="page-21"' not in html
    assert "Text 1 of 3 (pages 1–20)" in html
    assert 'href="?page=2#text" rel="next"' in html and 'rel="prev"' not in html

    second = Client()
    second.force_login(alice)
    html = second.get(f"/documents/{document.pk}/?page=2").content.decode()
    assert 'id="page-20"' not in html and 'id="page-21"' in html and 'id="page-40"' in html
    assert 'href="?page=1#text" rel="prev"' in html and 'href="?page=3#text" rel="next"' in html
    # A screen number past the end shows the last screen, not an error.
    html = second.get(f"/documents/{document.pk}/?page=99").content.decode()
    assert 'id="page-60"' in html and 'rel="next"' not in html


@pytest.mark.django_db
def test_the_document_page_is_bounded_for_huge_pages_and_many_entities(
    alice: Any, matter: Matter
) -> None:
    huge = "x" * 1_000_000
    emails = " ".join(f"person{n}@example.com" for n in range(120))
    document = make_document(matter, [huge, huge, emails, huge])
    entities(direct_context(document))

    response = page_as(alice, document)
    assert response.status_code == 200
    # One huge page a screen, cut at 200,000 characters: never the 3 MB of text.
    assert len(response.content) < 300_000
    html = response.content.decode()
    assert 'id="page-1"' in html and 'id="page-2"' not in html
    assert "Showing the first 200000 of 1000000 characters of this page." in html
    # The email table shows 50 of its 120 values, and links to the next 50.
    assert html.count('<td class="entity-value">person') == 50
    assert "120 values, 1 of 3" in html
    assert 'href="?entities_email=2#entities-email" rel="next"' in html

    again = Client()
    again.force_login(alice)
    html = again.get(f"/documents/{document.pk}/?entities_email=3&page=3").content.decode()
    assert html.count('<td class="entity-value">person') == 20
    assert '<td class="entity-value">person119@example.com</td>' in html
    assert '<td class="entity-value">person99@example.com</td>' not in html
    assert 'id="page-3"' in html


@needs_worker
def test_html_cut_short_completes_with_a_warning_on_its_page(
    api_client: Any,
    alice: Any,
    matter: Matter,
    worker: Any,
    settings: Any,
    extract_then_entities: None,
) -> None:
    settings.HTML_MAX_NODES = 1000
    body = "".join(f"<p>Paragraph {n}, sent 2021-01-{n % 28 + 1:02d}.</p>" for n in range(3000))
    client = api_client(alice)
    job = job_of(
        client.upload(matter.pk, "flat.html", f"<html><body>{body}</body></html>".encode())
    )
    worker()

    assert client.get(f"/api/jobs/{job.pk}").json()["status"] == "COMPLETED"
    page = DocumentPage.objects.get(document=job.document)
    assert "Paragraph 990," in page.text and "Paragraph 1000," not in page.text
    assert page.text_note.startswith("Only part of this page was read: it has more than 1,000")
    html = page_as(alice, job.document).content.decode()
    assert 'id="document-notes"' in html
    assert "Only part of this page was read: it has more than 1,000 HTML elements" in html
