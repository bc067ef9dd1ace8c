"""Shared fixtures: people, matters, API clients, real RQ workers, test documents.

Tests run against the real PostgreSQL and Redis that ``./dev test`` provides
(or ``DATABASE_URL``/``REDIS_URL``). Redis uses its own database number
while testing (see settings.TESTING), and each test starts with empty queues.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import django_rq
import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rq import SimpleWorker

from processing.jobs.queues import QUEUES
from processing.models import Document, Matter, Membership, ProcessingJob, Role
from processing.tokens import create_token

# --- the real-world corpus ---------------------------------------------------------------
#
# Tests marked ``corpus`` read the real documents of ``shared/corpus`` (MANIFEST.tsv lists
# them and the outcome each must reach). With JOBTRACKER_CORPUS set, the corpus is required
# (CI sets it: .ci/run); otherwise it is used when found beside the checkout, and a clone
# elsewhere runs everything else, with one line saying the corpus tests did not run.

CORPUS_VARIABLE = "JOBTRACKER_CORPUS"


def _find_corpus() -> tuple[Path, str | None]:
    """The corpus folder, and None; or, when there is none to use, where it was looked
    for and why the corpus tests are not run. A required corpus that is missing stops
    the run (``pytest_configure``)."""
    configured = os.environ.get(CORPUS_VARIABLE)
    if configured:
        return Path(configured).resolve(), None
    root = Path(__file__).resolve().parent.parent
    for parent in (root, *root.parents):
        candidate = parent / "shared" / "corpus"
        if candidate.is_dir():
            return candidate, None
    return root.parent / "shared" / "corpus", (
        f"no shared/corpus beside the checkout (looked in {root} and the folders above it) "
        f"and {CORPUS_VARIABLE} is not set; set it to the corpus folder to run them"
    )


CORPUS, CORPUS_NOT_RUN = _find_corpus()


def corpus_manifest() -> list[dict[str, str]]:
    """The rows of the corpus's MANIFEST.tsv; none when the corpus tests are not run."""
    if CORPUS_NOT_RUN:
        return []
    with (CORPUS / "MANIFEST.tsv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "corpus: reads the real documents of shared/corpus")
    if CORPUS_NOT_RUN or (CORPUS / "MANIFEST.tsv").is_file():
        return
    configured = os.environ.get(CORPUS_VARIABLE)
    source = f"{CORPUS_VARIABLE}={configured}" if configured else "shared/corpus"
    problem = f"{CORPUS / 'MANIFEST.tsv'} is missing" if CORPUS.is_dir() else f"no folder {CORPUS}"
    raise pytest.UsageError(
        f"{source}: {problem}; the corpus tests need the corpus and its MANIFEST.tsv."
    )


_CORPUS_LEFT_OUT = pytest.StashKey[int]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a corpus, leave out the tests that read it (said once, at the end)."""
    if not CORPUS_NOT_RUN:
        return
    left_out = [item for item in items if item.get_closest_marker("corpus")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not item.get_closest_marker("corpus")]
    config.stash[_CORPUS_LEFT_OUT] = len(left_out)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if config.stash.get(_CORPUS_LEFT_OUT, 0):
        terminalreporter.write_line(
            f"The corpus tests were not run (deselected): {CORPUS_NOT_RUN}.", yellow=True
        )


@pytest.fixture(autouse=True)
def _empty_queues(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts and ends with this test database's Redis empty."""
    connection = django_rq.get_connection("default")
    connection.flushdb()
    yield
    connection.flushdb()


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _fresh_estimates() -> None:
    from processing.jobs import estimates

    estimates.clear_history()


class CountingWorker(SimpleWorker):
    """RQ's in-process worker, counting the RQ jobs it executes."""

    executed = 0

    def execute_job(self, job: Any, queue: Any) -> Any:
        self.executed += 1
        return super().execute_job(job, queue)


def run_worker(*, max_jobs: int | None = None) -> int:
    """Drain the queues with a real RQ worker in this process (burst mode).

    Returns how many RQ jobs it ran. Stages enqueued by the lifecycle while it
    runs are picked up too, so one call takes a job to its end.
    """
    connection = django_rq.get_connection("default")
    queues = [django_rq.get_queue(name) for name in QUEUES]
    worker = CountingWorker(queues, connection=connection)
    worker.work(burst=True, max_jobs=max_jobs, logging_level="WARNING")
    return worker.executed


def database_url() -> str:
    """The test database's URL, for the processes a test starts (daphne, workers)."""
    db = django_settings.DATABASES["default"]
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = quote(db["HOST"] or "", safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{credentials}@{host}{port}/{db['NAME']}"


@pytest.fixture
def worker() -> Callable[..., int]:
    """``worker()`` drains the queues with a real RQ worker; see :func:`run_worker`."""
    return run_worker


@pytest.fixture
def make_user(db: None) -> Callable[..., Any]:
    def make(username: str = "alice", **extra: Any) -> Any:
        return get_user_model().objects.create_user(
            username=username, password="correct-horse-battery", **extra
        )

    return make


@pytest.fixture
def make_matter(db: None) -> Callable[..., Matter]:
    def make(owner: Any, name: str = "Smith v. Jones", **members: str) -> Matter:
        matter = Matter.objects.create(name=name, created_by=owner)
        Membership.objects.create(matter=matter, user=owner, role=Role.OWNER)
        for username, role in members.items():
            user = get_user_model().objects.get(username=username)
            Membership.objects.create(matter=matter, user=user, role=role)
        return matter

    return make


class ApiClient:
    """A Django test client that sends a Bearer token and speaks JSON."""

    def __init__(self, token: str | None) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, **extra: Any) -> Any:
        return self.client.get(path, headers={**self.headers, **extra.pop("headers", {})}, **extra)

    def post(self, path: str, data: Any = None, **extra: Any) -> Any:
        return self.client.post(
            path, data=data or {}, content_type="application/json", headers=self.headers, **extra
        )

    def delete(self, path: str) -> Any:
        return self.client.delete(path, headers=self.headers)

    def upload(
        self, matter_id: Any, name: str, content: bytes, *, allow_duplicate: bool = False
    ) -> Any:
        query = "?allow_duplicate=1" if allow_duplicate else ""
        return self.client.post(
            f"/api/matters/{matter_id}/documents{query}",
            data={"file": SimpleUploadedFile(name, content)},
            headers=self.headers,
        )


@pytest.fixture
def api_client(db: None) -> Callable[[Any], ApiClient]:
    """``api_client(user)`` is an API client authenticated with a fresh token of ``user``."""

    def make(user: Any | None) -> ApiClient:
        return ApiClient(create_token(user)[1] if user is not None else None)

    return make


@pytest.fixture
def alice(make_user: Callable[..., Any]) -> Any:
    return make_user("alice")


@pytest.fixture
def matter(make_matter: Callable[..., Matter], alice: Any) -> Matter:
    return make_matter(alice)


# --- documents made in the tests -------------------------------------------------------


def stored_document(matter: Matter, by: Any, name: str = "a.pdf", page_count: int = 3) -> Document:
    """A document row whose file is never read: for tests that drive the lifecycle by hand."""
    return Document.objects.create(
        matter=matter,
        uploaded_by=by,
        original_name=name,
        file=f"x/{name}",
        content_type="application/pdf",
        size=100,
        sha256=name.encode().hex()[:64].ljust(64, "0"),
        page_count=page_count,
    )


def make_pdf(pages: list[str]) -> bytes:
    """A text PDF with one page per string."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def make_docx(
    paragraphs: list[str],
    *,
    table: list[list[str]] | None = None,
    page_break_after: int | None = None,
) -> bytes:
    """A DOCX with the given paragraphs, optionally a table and a page break."""
    import docx
    from docx.enum.text import WD_BREAK

    document = docx.Document()
    for i, text in enumerate(paragraphs):
        paragraph = document.add_paragraph(text)
        if page_break_after is not None and i == page_break_after:
            paragraph.add_run().add_break(WD_BREAK.PAGE)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def job_of(response: Any) -> ProcessingJob:
    """The job created by an upload response."""
    return ProcessingJob.objects.select_related("document").get(
        pk=response.json()["data"]["job"]["job_id"]
    )


def queued_rq_ids() -> list[str]:
    """Every RQ job waiting in the queues."""
    return [job_id for name in QUEUES for job_id in django_rq.get_queue(name).job_ids]


@contextlib.contextmanager
def redis_unreachable(settings: Any) -> Iterator[None]:
    """RQ (and so the lifecycle's announcements and enqueues) pointed at a port nothing
    listens on, for what runs inside."""
    from processing.jobs import dispatch

    saved = settings.RQ_QUEUES
    settings.RQ_QUEUES = {
        name: {**queue, "URL": "redis://127.0.0.1:1/0"} for name, queue in saved.items()
    }
    dispatch._own_connection.cache_clear()
    try:
        yield
    finally:
        settings.RQ_QUEUES = saved
        dispatch._own_connection.cache_clear()


def failed_job(matter: Matter, by: Any, name: str = "broken.pdf") -> ProcessingJob:
    """A job whose first stage failed for good (CORRUPT_DOCUMENT), driven by hand."""
    from processing.errors import CorruptDocument
    from processing.jobs import lifecycle
    from processing.jobs.states import JobStatus

    job = lifecycle.create_job(stored_document(matter, by, name), by=by)
    started = lifecycle.begin_stage(job.pk, job.dispatch_id)
    assert started is not None
    failed = lifecycle.fail_stage(*started, CorruptDocument())
    assert failed is not None and failed.status == JobStatus.FAILED
    return failed
