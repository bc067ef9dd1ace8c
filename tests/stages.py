"""Pipelines that exist only in tests, and worker processes that know them.

A test that needs what only a separate worker process shows (a work horse killed
by RQ's stop-job command, RQ's scheduler running delayed retries, a cancel
arriving while a stage runs) starts the Procfile's worker with
:func:`worker_processes`: ``manage.py rqworker … --with-scheduler`` with
``--worker-class tests.stages.Worker``, the production worker class with these
pipelines registered too. Their stages note what they do in Redis (this test
run's database, which every test starts empty), where the test, in another
process, reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import django_rq
from django.conf import settings
from django.core.files.base import ContentFile
from redis import Redis

from processing.errors import CorruptDocument, ServiceUnavailable
from processing.jobs.worker import Worker as ProductionWorker
from processing.models import Document, Matter
from processing.pipeline import extract as extract_stage
from processing.pipeline.registry import DOCUMENT_PROCESSING, Stage, get_pipeline, register
from tests.conftest import database_url

ROOT = Path(__file__).resolve().parent.parent

SLOW_ITEMS = "TEST_SLOW_ITEMS"
"""One stage of :data:`ITEMS` items, :data:`ITEM_SECONDS` each."""
STUCK_ITEM = "TEST_STUCK_ITEM"
"""One stage stuck inside its one item for ten minutes (a Tesseract page that never ends)."""
QUICK = "TEST_QUICK"
"""One stage with nothing to do."""
MEMORY_HUNGRY = "TEST_MEMORY_HUNGRY"
"""One stage that allocates :data:`HUNGRY_BYTES`, 10 MB at a time (a parser on a bomb)."""
CRASHING = "TEST_CRASHING"
"""One stage that aborts its process (pdfium on a bomb: SIGABRT)."""
KILLED = "TEST_KILLED"
"""One stage whose process is SIGKILLed (the OOM killer)."""
FLAKY_DOCUMENT = "TEST_FLAKY_DOCUMENT"
"""The real document pipeline, its ``extract`` stage reading pages through
:class:`FlakyReader`: every page read is counted, one page can be made to fail, and
every page can be made slow."""

ITEMS = 20
ITEM_SECONDS = 0.4
HUNGRY_BYTES = 600 * 1024 * 1024


def redis() -> Redis:
    """This test run's Redis database (flushed before and after every test)."""
    return django_rq.get_connection("default")


def _key(owner: object, what: str) -> str:
    return f"tests:{owner}:{what}"


def note(job_id: object, what: str, number: int) -> None:
    """Record that item ``number`` of job ``job_id`` reached ``what``, and when."""
    redis().rpush(_key(job_id, what), json.dumps({"number": number, "at": time.time()}))


def notes(job_id: object, what: str) -> list[dict[str, Any]]:
    """What :func:`note` recorded for ``job_id`` and ``what``, in order."""
    return [json.loads(raw) for raw in redis().lrange(_key(job_id, what), 0, -1)]


def slow_items(ctx: Any) -> None:
    """Work through :data:`ITEMS` items of :data:`ITEM_SECONDS` each, checking for a stop
    before each one."""
    ctx.progress(0, ITEMS)
    for number in range(1, ITEMS + 1):
        ctx.stop_if_asked()
        note(ctx.job.pk, "started", number)
        time.sleep(ITEM_SECONDS)
        note(ctx.job.pk, "finished", number)
        ctx.progress(number, ITEMS)


def stuck_item(ctx: Any) -> None:
    """Start the one item and stay inside it for ten minutes."""
    ctx.progress(0, 1)
    ctx.stop_if_asked()
    note(ctx.job.pk, "started", 1)
    time.sleep(600)
    note(ctx.job.pk, "finished", 1)
    ctx.progress(1, 1)


def nothing(ctx: Any) -> None:
    """Do nothing, and note that it ran."""
    note(ctx.job.pk, "ran", 1)


def hungry(ctx: Any) -> None:
    """Take :data:`HUNGRY_BYTES` of memory and touch every page of it, as a parser
    inflating a bomb would; note each 100 MB reached."""
    ctx.progress(0, 1)
    chunk = 10 * 1024 * 1024
    held = []
    for number in range(1, HUNGRY_BYTES // chunk + 1):
        held.append(b"\x01" * chunk)
        if number % 10 == 0:
            note(ctx.job.pk, "allocated", number * chunk)
    ctx.progress(1, 1)


def crash(ctx: Any) -> None:
    """Abort the process halfway through its one item, as pdfium does on a bomb."""
    ctx.progress(0, 1)
    note(ctx.job.pk, "started", 1)
    os.abort()


def killed(ctx: Any) -> None:
    """Have the process SIGKILLed inside its one item, as the OOM killer does."""
    ctx.progress(0, 1)
    note(ctx.job.pk, "started", 1)
    os.kill(os.getpid(), signal.SIGKILL)


# --- a document pipeline whose page reads are counted, and can fail --------------------


def make_page_fail(document: Document, page: int, *, times: int, permanent: bool) -> None:
    """Have reading ``page`` of ``document`` fail its first ``times`` reads: with a
    transient ``SERVICE_UNAVAILABLE``, or a permanent ``CORRUPT_DOCUMENT``."""
    redis().hset(
        _key(document.pk, "fault"),
        mapping={"page": page, "times": times, "permanent": int(permanent)},
    )


def make_pages_slow(document: Document, seconds: float) -> None:
    """Have every page read of ``document`` take ``seconds`` longer."""
    redis().set(_key(document.pk, "slow"), seconds)


def page_reads(document: Document) -> dict[int, int]:
    """How many times each page of ``document`` was read, by page number."""
    counts = redis().hgetall(_key(document.pk, "reads"))
    return {
        int(page): int(count) for page, count in sorted(counts.items(), key=lambda i: int(i[0]))
    }


class FlakyReader:
    """A document reader that counts each page read, and fails one as the test set up."""

    def __init__(self, reader: Any, document_id: object) -> None:
        self.reader = reader
        self.document_id = document_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)

    def page_text(self, index: int) -> str:
        number = index + 1
        store = redis()
        store.hincrby(_key(self.document_id, "reads"), str(number), 1)
        slow = store.get(_key(self.document_id, "slow"))
        if slow:
            time.sleep(float(slow))
        fault = store.hgetall(_key(self.document_id, "fault"))
        if fault and int(fault[b"page"]) == number:
            failures = store.hincrby(_key(self.document_id, "fault"), "failed", 1)
            if failures <= int(fault[b"times"]):
                if int(fault[b"permanent"]):
                    raise CorruptDocument(detail=f"page {number} (made to fail by the test)")
                raise ServiceUnavailable()
        text: str = self.reader.page_text(index)
        return text


def flaky_extract(ctx: Any) -> None:
    """The real ``extract`` stage, reading the document through a :class:`FlakyReader`."""
    real_open = extract_stage.open_document

    @contextlib.contextmanager
    def open_flaky(*args: Any, **kwargs: Any) -> Iterator[FlakyReader]:
        with real_open(*args, **kwargs) as reader:
            yield FlakyReader(reader, ctx.document.pk)

    with mock.patch.object(extract_stage, "open_document", open_flaky):
        extract_stage.extract(ctx)


def _register() -> None:
    register(SLOW_ITEMS, [Stage("items", "Working through items", f"{__name__}.slow_items")])
    register(STUCK_ITEM, [Stage("stuck", "Reading a hard page", f"{__name__}.stuck_item")])
    register(QUICK, [Stage("nothing", "Doing nothing", f"{__name__}.nothing")])
    register(MEMORY_HUNGRY, [Stage("inflate", "Inflating", f"{__name__}.hungry")])
    register(CRASHING, [Stage("parse", "Parsing", f"{__name__}.crash")])
    register(KILLED, [Stage("parse", "Parsing", f"{__name__}.killed")])
    stages = list(get_pipeline(DOCUMENT_PROCESSING).stages)
    stages[0] = Stage("extract", "Extracting", f"{__name__}.flaky_extract")
    register(FLAKY_DOCUMENT, stages)


_register()


def stored_file(matter: Matter, by: Any, name: str, content: bytes) -> Document:
    """A PDF document whose file is stored, without the job an upload would create."""
    document = Document(
        matter=matter,
        uploaded_by=by,
        original_name=name,
        content_type="application/pdf",
        size=len(content),
        sha256=name.encode().hex()[:64].ljust(64, "0"),
    )
    document.file.save(name, ContentFile(content), save=False)
    document.save()
    return document


# --- worker processes ------------------------------------------------------------------


class Worker(ProductionWorker):
    """The production worker class; importing this module registered the test pipelines."""


def wait_until(condition: Callable[[], Any], *, seconds: float, what: str) -> Any:
    """Poll ``condition`` every 50 ms until it returns something true; that, or fail."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"waited {seconds:g} s for {what}"
        time.sleep(0.05)


@contextlib.contextmanager
def worker_processes(
    *queue_lists: tuple[str, ...], logs: Path, **environment: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One worker process per tuple of queue names, run as ``./dev run`` runs them (with
    RQ's scheduler), on the test database and media; ``environment`` adds settings.

    Yields once every worker has registered with Redis; stops them at the end (a
    second SIGTERM is RQ's cold shutdown, which also ends a running work horse).
    """
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "PYTHONUNBUFFERED": "1",
        **environment,
    }
    logs.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for number, queues in enumerate(queue_lists, start=1):
            log = (logs / f"worker-{number}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "manage.py",
                        "rqworker",
                        *queues,
                        "--with-scheduler",
                        "--worker-class",
                        f"{__name__}.Worker",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        wait_until(
            lambda: _all_registered(processes, logs),
            seconds=60,
            what=f"the workers to start (logs in {logs})",
        )
        yield processes
    finally:
        _stop(processes)


def _all_registered(processes: list[subprocess.Popen[bytes]], logs: Path) -> bool:
    from rq import Worker as RqWorker

    for process in processes:
        assert process.poll() is None, f"a worker exited early; see {logs}"
    return len(RqWorker.all(connection=redis())) >= len(processes)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
