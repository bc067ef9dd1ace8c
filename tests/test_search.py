"""Search: documents go through extract → chunk → index with real workers, then are found.

Uploads here run a pipeline of just the stages under test (see
``search_pipeline``), so these tests do not depend on OCR or entity
extraction. Chunking rules are also checked directly on
:func:`processing.pipeline.chunk.split_chunks`, which needs no database.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from processing.jobs import lifecycle
from processing.models import DocumentChunk, DocumentPage, Matter, ProcessingJob, StageRun
from processing.pipeline.chunk import CHUNK_MAX, CHUNK_MIN, PAGE_SEPARATOR, split_chunks
from processing.pipeline.registry import (
    _REGISTRY,
    DOCUMENT_PROCESSING,
    Pipeline,
    get_pipeline,
)
from tests.conftest import ApiClient, job_of, make_pdf

needs_worker = pytest.mark.django_db(transaction=True)

TEST_JOB_TYPE = "TEST_EXTRACT_CHUNK_INDEX"
CHUNK_TABLE = DocumentChunk._meta.db_table


@pytest.fixture(autouse=True)
def search_pipeline(monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    """Uploads (which create DOCUMENT_PROCESSING jobs) run extract → chunk → index only."""
    default = get_pipeline(DOCUMENT_PROCESSING)
    stages = tuple(default.stage(name) for name in ("extract", "chunk", "index"))
    pipeline = Pipeline(TEST_JOB_TYPE, stages)
    monkeypatch.setitem(_REGISTRY, TEST_JOB_TYPE, pipeline)
    monkeypatch.setitem(_REGISTRY, DOCUMENT_PROCESSING, pipeline)
    return pipeline


# --- helpers ---------------------------------------------------------------------------


def processed(
    client: ApiClient, matter: Matter, name: str, content: bytes, worker: Callable[..., int]
) -> ProcessingJob:
    """Upload ``content`` and run the workers until its job ends; it must complete."""
    response = client.upload(matter.pk, name, content)
    assert response.status_code == 201, response.content[:500]
    job = job_of(response)
    worker()
    job.refresh_from_db()
    assert job.status == "COMPLETED", (job.error_code, job.error, job.error_detail[-2000:])
    return job


def hits_of(client: ApiClient, matter: Any, q: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/api/matters/{matter.pk}/search", data={"q": q, **params})
    assert response.status_code == 200, response.content[:500]
    body = response.json()
    assert set(body) == {"data"}
    return body["data"]


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


def rerun(document: Any, worker: Callable[..., int]) -> tuple[ProcessingJob, list[str]]:
    """Run the whole pipeline again on ``document`` as a new job; its SQL, captured."""
    with CaptureQueriesContext(connection) as queries:
        job = lifecycle.create_job(document, job_type=TEST_JOB_TYPE)
        worker()
    job.refresh_from_db()
    assert job.status == "COMPLETED", (job.error_code, job.error_detail[-2000:])
    return job, [q["sql"] for q in queries.captured_queries]


def chunk_rows(document: Any) -> list[tuple[Any, ...]]:
    return list(
        DocumentChunk.objects.filter(document=document)
        .order_by("index")
        .values_list("index", "text", "page_start", "page_end", "char_start", "language")
    )


SENTENCES = [
    "The parties agree to the terms set out below.",
    "Each party shall keep the other informed of any claim.",
    "Notice must be given in writing within thirty days.",
    "The court held that the clause was enforceable as written.",
    "Payment is due on the first business day of each month.",
    "Nothing in this agreement creates a partnership between them.",
    "Mr. Smith signed on behalf of Acme Corp. on the same day.",
    "Disputes go first to mediation and then to arbitration.",
]


def prose(seed: int, sentences: int) -> str:
    """Deterministic filler text of ``sentences`` sentences, in paragraphs."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(sentences):
        out.append(rng.choice(SENTENCES))
        out.append("\n\n" if i % 9 == 8 else " ")
    return "".join(out).strip()


# --- finding things ----------------------------------------------------------------------


@needs_worker
def test_a_word_on_page_3_is_found_on_page_3_highlighted(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    client = api_client(alice)
    pages = [f"Page {n}. {prose(n, 6)}" for n in range(1, 6)]
    pages[2] += " The shipment travelled by zeppelin to Lisbon."
    job = processed(client, matter, "voyage.pdf", make_pdf(pages), worker)

    hits = hits_of(client, matter, "zeppelin")

    assert len(hits) == 1
    hit = hits[0]
    assert set(hit) == {"document_id", "document_name", "page", "snippet", "rank"}
    assert hit["document_id"] == str(job.document_id)
    assert hit["document_name"] == "voyage.pdf"
    assert hit["page"] == 3
    assert "<mark>zeppelin</mark>" in hit["snippet"]
    assert isinstance(hit["rank"], float) and hit["rank"] > 0


@needs_worker
def test_more_mentions_rank_higher(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    client = api_client(alice)
    filler = prose(7, 4)
    five = " ".join(f"Clause {n} concerns indemnification of the buyer." for n in range(1, 6))
    processed(
        client,
        matter,
        "once.pdf",
        make_pdf([f"{filler} Clause 1 concerns indemnification of the buyer. {filler}"]),
        worker,
    )
    processed(client, matter, "five.pdf", make_pdf([f"{filler} {five} {filler}"]), worker)

    hits = hits_of(client, matter, "indemnification")

    assert [h["document_name"] for h in hits] == ["five.pdf", "once.pdf"]
    assert hits[0]["rank"] > hits[1]["rank"]


@needs_worker
def test_english_stemming_matches_other_forms_of_a_word(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    client = api_client(alice)
    processed(
        client,
        matter,
        "noun.pdf",
        make_pdf(["The seller gives full indemnification for every claim."]),
        worker,
    )
    processed(
        client,
        matter,
        "verb.pdf",
        make_pdf(["The seller shall indemnify the buyer against every claim."]),
        worker,
    )

    def names(q: str) -> set[str]:
        return {h["document_name"] for h in hits_of(client, matter, q)}

    assert names("indemnify") == {"noun.pdf", "verb.pdf"}
    assert names("indemnification") == {"noun.pdf", "verb.pdf"}
    assert names("indemnified") == {"noun.pdf", "verb.pdf"}
    assert names("claims") == {"noun.pdf", "verb.pdf"}
    assert names('"shall indemnify"') == {"verb.pdf"}  # a phrase
    assert names("indemnify -buyer") == {"noun.pdf"}  # websearch syntax: exclusion
    snippet = hits_of(client, matter, "indemnify -buyer")[0]["snippet"]
    assert "<mark>indemnification</mark>" in snippet


@needs_worker
def test_search_sees_only_the_callers_matter(
    api_client: Any, alice: Any, make_user: Any, make_matter: Any, matter: Matter, worker: Any
) -> None:
    bob = make_user("bob")
    other = make_matter(bob, name="Other matter")
    processed(
        api_client(alice),
        matter,
        "alice.pdf",
        make_pdf(["Confidential settlement figures for Alice."]),
        worker,
    )
    processed(
        api_client(bob),
        other,
        "bob.pdf",
        make_pdf(["Confidential settlement figures for Bob."]),
        worker,
    )
    as_bob = api_client(bob)

    error_of(
        as_bob.get(f"/api/matters/{matter.pk}/search", data={"q": "settlement"}),
        404,
        "MATTER_NOT_FOUND",
    )
    error_of(
        as_bob.get("/api/matters/not-a-uuid/search", data={"q": "settlement"}),
        404,
        "MATTER_NOT_FOUND",
    )
    error_of(
        api_client(None).get(f"/api/matters/{matter.pk}/search", data={"q": "x"}),
        401,
        "AUTHENTICATION_REQUIRED",
    )
    assert [h["document_name"] for h in hits_of(as_bob, other, "settlement")] == ["bob.pdf"]
    assert [h["document_name"] for h in hits_of(api_client(alice), matter, "settlement")] == [
        "alice.pdf"
    ]


@needs_worker
def test_snippets_are_escaped_html_with_only_mark_tags(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    client = api_client(alice)
    text = (
        "Exhibit 4 shows the indemnification <script>alert('pwned')</script> "
        'schedule & costs <b>bold</b> "quoted" for Smith & Co.'
    )
    processed(client, matter, "exhibit.pdf", make_pdf([text]), worker)

    snippet = hits_of(client, matter, "indemnification")[0]["snippet"]

    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in snippet
    assert "&lt;b&gt;bold&lt;/b&gt;" in snippet and "schedule &amp; costs" in snippet
    assert re.findall(r"<[^>]*>", snippet) == ["<mark>", "</mark>"]


@pytest.mark.django_db
@pytest.mark.parametrize("q", ["", "   ", "\t\n"])
def test_an_empty_query_is_a_validation_error(
    api_client: Any, alice: Any, matter: Matter, q: str
) -> None:
    response = api_client(alice).get(f"/api/matters/{matter.pk}/search", data={"q": q})
    error = error_of(response, 400, "VALIDATION_ERROR")
    assert error["details"] == {"field": "q"}


@pytest.mark.django_db
def test_query_limits(api_client: Any, alice: Any, matter: Matter) -> None:
    client = api_client(alice)
    path = f"/api/matters/{matter.pk}/search"
    error_of(client.get(path, data={"q": "x" * 501}), 400, "VALIDATION_ERROR")
    error_of(client.get(path, data={"q": "x", "limit": 0}), 400, "VALIDATION_ERROR")
    error_of(client.get(path, data={"q": "x", "limit": 101}), 400, "VALIDATION_ERROR")
    assert hits_of(client, matter, "the and of") == []  # stop words only: nothing to find
    assert hits_of(client, matter, "'; DROP TABLE x; --") == []


@needs_worker
def test_hits_collapse_per_page_and_honour_the_limit(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    client = api_client(alice)
    # Every sentence mentions the word, so overlapping chunks of one page all match.
    pages = [
        " ".join(f"Arbitration rule {p}.{i} applies here." for i in range(60)) for p in range(1, 5)
    ]
    job = processed(client, matter, "rules.pdf", make_pdf(pages), worker)
    assert DocumentChunk.objects.filter(document=job.document).count() > 4

    hits = hits_of(client, matter, "arbitration")
    assert sorted(h["page"] for h in hits) == [1, 2, 3, 4]
    assert [h["rank"] for h in hits] == sorted((h["rank"] for h in hits), reverse=True)
    assert len(hits_of(client, matter, "arbitration", limit=2)) == 2


# --- reruns are checkpointed ---------------------------------------------------------------


@needs_worker
def test_rerunning_chunk_and_index_writes_nothing(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    client = api_client(alice)
    pages = [prose(n, 30) for n in range(1, 7)]
    job = processed(client, matter, "long.pdf", make_pdf(pages), worker)
    before = chunk_rows(job.document)
    assert len(before) >= 4
    assert not DocumentChunk.objects.filter(document=job.document, search_vector=None).exists()

    again, sql = rerun(job.document, worker)

    assert chunk_rows(job.document) == before
    assert any(CHUNK_TABLE in s for s in sql)  # the stages' queries were captured
    touching = [
        s for s in sql if CHUNK_TABLE in s and s.lstrip().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    assert touching == []
    runs = {r.stage: r for r in StageRun.objects.filter(job=again)}
    assert (runs["chunk"].items_done, runs["chunk"].items_total) == (6, 6)
    assert (runs["index"].items_done, runs["index"].items_total) == (len(before), len(before))


@needs_worker
def test_index_fills_only_missing_vectors_in_one_update(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    client = api_client(alice)
    job = processed(
        client, matter, "long.pdf", make_pdf([prose(n, 30) for n in range(1, 5)]), worker
    )
    chunks = DocumentChunk.objects.filter(document=job.document)
    cleared = chunks.filter(index__in=[1, 2]).update(search_vector=None)
    assert cleared == 2

    _, sql = rerun(job.document, worker)

    updates = [s for s in sql if s.lstrip().startswith(f'UPDATE "{CHUNK_TABLE}"')]
    assert len(updates) == 1
    assert not chunks.filter(search_vector=None).exists()
    assert hits_of(client, matter, "mediation")


@needs_worker
def test_chunking_is_deterministic(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    client = api_client(alice)
    job = processed(
        client, matter, "long.pdf", make_pdf([prose(n, 40) for n in range(1, 8)]), worker
    )
    before = chunk_rows(job.document)
    DocumentChunk.objects.filter(document=job.document).delete()

    rerun(job.document, worker)

    assert chunk_rows(job.document) == before
    pages = list(
        DocumentPage.objects.filter(document=job.document)
        .order_by("page_number")
        .values_list("page_number", "text")
    )
    assert [c.text for c in split_chunks(pages)] == [row[1] for row in before]


# --- how text is cut -------------------------------------------------------------------------


def test_chunks_end_at_sentences_and_overlap() -> None:
    text = " ".join(f"Sentence number {n} says something about the contract." for n in range(200))
    chunks = list(split_chunks([(1, text)]))

    assert len(chunks) > 5
    for previous, current in zip(chunks, chunks[1:], strict=False):
        assert CHUNK_MIN <= len(previous.text) <= CHUNK_MAX
        assert previous.text.endswith("contract.")
        assert current.text.startswith("Sentence number ")
        overlap = previous.char_start + len(previous.text) - current.char_start
        assert 0.10 * len(previous.text) <= overlap <= 0.25 * len(previous.text)
        assert text[current.char_start : current.char_start + overlap] == previous.text[-overlap:]
    assert chunks[0].char_start == 0
    assert chunks[-1].char_start + len(chunks[-1].text) == len(text)


def test_chunks_prefer_paragraph_breaks_then_sentences() -> None:
    paragraph = " ".join(f"Point {n} of the paragraph." for n in range(45))  # ~1,150 chars
    text = "\n\n".join([paragraph] * 4)
    chunks = list(split_chunks([(1, text)]))
    assert len(chunks) > 2
    for c in chunks[:-1]:
        assert c.text.endswith("Point 44 of the paragraph.")

    abbreviations = " ".join(
        "Mr. Smith met Dr. Jones of Acme Inc. in the U.S. on Jan. 5 to sign it." for _ in range(40)
    )
    chunks = list(split_chunks([(1, abbreviations)]))
    assert len(chunks) > 2
    for c in chunks[:-1]:  # never after "Mr.", "Dr.", "Inc.", "U.S." or "Jan."
        assert c.text.endswith("to sign it.")


def test_words_are_never_cut_unless_longer_than_a_chunk() -> None:
    words = " ".join(f"word{n:04d}" for n in range(600))  # no sentence ends at all
    for c in split_chunks([(1, words)]):
        assert re.fullmatch(r"word\d{4}( word\d{4})*", c.text), c.text[:40]

    giant = "x" * 4000
    chunks = list(split_chunks([(1, f"Before it. {giant} After it.")]))
    assert "".join(c.text for c in chunks).count("x") >= 4000
    assert all(len(c.text) <= CHUNK_MAX for c in chunks)
    assert chunks[0].text == "Before it."  # the long token starts its own chunks
    assert chunks[-1].text.endswith("After it.")


def test_page_spans_and_offsets() -> None:
    pages = [(1, prose(1, 10)), (2, "   \n"), (3, prose(3, 10)), (4, prose(4, 30))]
    text_pages = [(n, t) for n, t in pages if t.strip()]  # the stage skips blank pages
    stream = PAGE_SEPARATOR.join(t for _, t in text_pages)
    starts = {}
    offset = 0
    for number, page_text in text_pages:
        starts[number] = offset
        offset += len(page_text) + len(PAGE_SEPARATOR)

    chunks = list(split_chunks(text_pages))

    assert any(c.page_start == 1 and c.page_end == 3 for c in chunks)
    for c in chunks:
        begin = starts[c.page_start] + c.char_start
        assert stream[begin : begin + len(c.text)] == c.text
        last = begin + len(c.text) - 1
        assert c.page_end == max(n for n, s in starts.items() if s <= last)
        assert c.text.startswith(dict(text_pages)[c.page_start][c.char_start :][:20])


@needs_worker
def test_a_chunk_crossing_pages_has_its_span_and_hits_name_the_matching_page(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    client = api_client(alice)
    pages = [prose(1, 12), "The cargo was carried by zeppelin. " + prose(2, 12), prose(3, 12)]
    job = processed(client, matter, "span.pdf", make_pdf(pages), worker)
    first = DocumentChunk.objects.get(document=job.document, index=0)
    page_texts = dict(
        DocumentPage.objects.filter(document=job.document).values_list("page_number", "text")
    )
    assert (first.page_start, first.char_start) == (1, 0)
    assert first.page_end >= 2 and "zeppelin" in first.text
    assert first.text.startswith(page_texts[1])
    assert first.text.startswith(page_texts[1] + PAGE_SEPARATOR + page_texts[2][:200])

    hits = hits_of(client, matter, "zeppelin")

    assert [(h["page"], h["document_name"]) for h in hits] == [(2, "span.pdf")]


@needs_worker
def test_a_document_without_text_completes_with_no_chunks(
    api_client: Any, alice: Any, matter: Matter, worker: Any
) -> None:
    job = processed(api_client(alice), matter, "blank.pdf", make_pdf(["", " "]), worker)
    assert job.document.pages.count() == 2
    assert not DocumentChunk.objects.filter(document=job.document).exists()
    runs = {
        r.stage: (r.status, r.items_done, r.items_total) for r in StageRun.objects.filter(job=job)
    }
    assert runs["chunk"] == ("COMPLETED", 0, 0)
    assert runs["index"] == ("COMPLETED", 0, 0)


# --- languages -----------------------------------------------------------------------------


@needs_worker
def test_a_matters_language_is_used_and_a_bad_one_fails_clearly(
    api_client: Any, alice: Any, make_matter: Any, matter: Matter, worker: Any
) -> None:
    client = api_client(alice)
    french = make_matter(alice, name="Affaire")
    Matter.objects.filter(pk=french.pk).update(search_language="french")
    processed(
        client,
        french,
        "contrat.pdf",
        make_pdf(["Les parties signent les contrats de vente."]),
        worker,
    )
    assert [h["document_name"] for h in hits_of(client, french, "contrat")] == ["contrat.pdf"]
    assert set(DocumentChunk.objects.filter(matter=french).values_list("language", flat=True)) == {
        "french"
    }

    bad = "english'; DROP TABLE processing_documentchunk; --"
    Matter.objects.filter(pk=matter.pk).update(search_language=bad[:32])
    job = job_of(client.upload(matter.pk, "x.pdf", make_pdf(["Some words."])))
    worker()
    job.refresh_from_db()
    assert (job.status, job.current_stage, job.error_code) == (
        "FAILED",
        "index",
        "INVALID_SEARCH_LANGUAGE",
    )
    assert "search language" in job.error and job.retry_count == 0
    error = error_of(
        client.get(f"/api/matters/{matter.pk}/search", data={"q": "words"}), 400, "VALIDATION_ERROR"
    )
    assert error["details"] == {"field": "search_language"}

    # Once staff correct it, a retry indexes in the corrected language.
    Matter.objects.filter(pk=matter.pk).update(search_language="english")
    lifecycle.retry(job, by=alice)
    worker()
    job.refresh_from_db()
    assert job.status == "COMPLETED"
    assert [h["document_name"] for h in hits_of(client, matter, "word")] == ["x.pdf"]


# --- HTML ------------------------------------------------------------------------------------


@needs_worker
def test_the_search_page_shows_highlighted_hits_to_a_member(
    api_client: Any, alice: Any, make_user: Any, matter: Matter, worker: Any
) -> None:
    pages = [prose(n, 5) for n in range(1, 4)]
    pages[2] += " Delivery <by> zeppelin & airship."
    job = processed(api_client(alice), matter, "voyage.pdf", make_pdf(pages), worker)
    browser = Client()
    browser.force_login(alice)

    page = browser.get(f"/matters/{matter.pk}/")
    assert page.status_code == 200
    assert f'action="/matters/{matter.pk}/search"' in page.content.decode()

    response = browser.get(f"/matters/{matter.pk}/search", {"q": "zeppelin"})

    assert response.status_code == 200
    html = response.content.decode()
    assert f'href="/documents/{job.document_id}/#page-3">voyage.pdf</a>' in html
    assert "page 3" in html
    assert "&lt;by&gt; <mark>zeppelin</mark> &amp; airship." in html
    assert "1 result for" in html

    empty = browser.get(f"/matters/{matter.pk}/search", {"q": "nothingmatcheshere"})
    assert empty.status_code == 200 and "Nothing in this matter" in empty.content.decode()

    outsider = Client()
    outsider.force_login(make_user("mallory"))
    assert outsider.get(f"/matters/{matter.pk}/search", {"q": "zeppelin"}).status_code == 404
    anonymous = Client().get(f"/matters/{matter.pk}/search", {"q": "zeppelin"})
    assert anonymous.status_code == 302
