"""Chaos: no job is lost and no work is stored twice while workers are killed, Redis
loses its data and PostgreSQL restarts.

30 documents of mixed sizes (text pages, scanned pages that need OCR, a corrupt and an
encrypted file) go through 2 worker processes with daphne, the live relay and the
upkeep process running, all as ``./dev run`` starts them. While they work, the test
SIGKILLs a worker and its work horse in the middle of a stage 5 times (starting a new
worker each time), empties Redis once, and restarts PostgreSQL once. An integrator
watches the matter's event feed throughout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import django_rq
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from jobtracker.dev import postgres
from processing import tokens, uploads
from processing.jobs.states import JobStatus, StageStatus
from processing.models import DocumentChunk, DocumentPage, ProcessingJob, StageRun
from tests.processes import running_app
from tests.stages import wait_until

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(600),
]

KILLS = 5
RESUMED_WITHIN_S = 30.0
"""What the product promises: a lost stage resumes on a live worker within 30 s."""
BAD_FILES = {"corrupt.pdf": "CORRUPT_DOCUMENT", "locked.pdf": "ENCRYPTED_DOCUMENT"}


# --- the documents -----------------------------------------------------------------------


def _scan(text: str) -> Image.Image:
    image = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=44)
    for line, words in enumerate(text.split(". ")):
        draw.text((90, 120 + line * 90), words, fill=0, font=font)
    return image


def _pdf(pages: list[str | Image.Image], *, password: str | None = None) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for page in pages:
        pdf.add_page()
        if isinstance(page, str):
            pdf.multi_cell(0, 6, page)
        else:
            pdf.image(page, x=0, y=0, w=pdf.w, h=pdf.h)
    if password:
        pdf.set_encryption(owner_password="owner", user_password=password)
    return bytes(pdf.output())


def _page(number: int, doc: int) -> str:
    return (
        f"Exhibit {doc}, page {number}. On 12 March 2024 Harrow & Sons Ltd paid "
        f"$1,{number:03d}.00 to Penrose LLP (invoice {doc}-{number}); see Roe v. Wade, "
        "410 U.S. 113 (1973). Contact clerk@penrose.example or +1 212 555 0100. "
    ) * 6


def documents() -> dict[str, bytes]:
    """28 readable documents of 1 to 160 pages, five with scanned pages, and two bad files."""
    out: dict[str, bytes] = {}
    sizes = [1, 3, 5, 8, 12, 20, 30, 45, 60, 80, 100, 120, 160, 2, 4, 6, 10, 15, 25, 40]
    sizes += [50, 70, 90, 110]
    for doc, size in enumerate(sizes):
        out[f"exhibit-{doc:02d}.pdf"] = _pdf([_page(n, doc) for n in range(1, size + 1)])
    for doc in range(4):
        scanned: list[str | Image.Image] = [_page(1, 100 + doc)]
        scanned += [_scan(f"Scanned letter {doc}. Page {n}. Dated 3 May 2021") for n in (2, 3)]
        out[f"scanned-{doc}.pdf"] = _pdf(scanned)
    out["corrupt.pdf"] = b"%PDF-1.7\n" + os.urandom(4000)
    out["locked.pdf"] = _pdf([_page(1, 999)], password="secret")
    return out


# --- the event feed ----------------------------------------------------------------------


@dataclass
class Feed:
    """The matter's event feed as an integrator reads it, reconnecting when it drops."""

    url: str
    events: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with connect(self.url, open_timeout=5, close_timeout=1) as socket_:
                    while not self.stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            self.events.append(json.loads(socket_.recv(timeout=0.5)))
            except (ConnectionClosed, OSError, TimeoutError):
                time.sleep(0.2)


@contextlib.contextmanager
def reading(url: str) -> Iterator[Feed]:
    feed = Feed(url)
    thread = threading.Thread(target=feed.run, daemon=True)
    thread.start()
    try:
        yield feed
    finally:
        feed.stop.set()
        thread.join(5)


# --- chaos -------------------------------------------------------------------------------


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


@dataclass
class Kill:
    at: float
    runs: list[StageRun]
    """The stage runs the killed work horse had in progress."""


def kill_a_worker_mid_stage(workers: dict[str, Any], app: Any) -> Kill | None:
    """SIGKILL a worker and its work horse while it runs a stage, and start another worker.

    None when the stage ended before the kill landed (the worker is still replaced).
    """
    host = socket.gethostname()
    by_pid = {process.pid: name for name, process in workers.items()}
    for run in StageRun.objects.filter(status=StageStatus.IN_PROGRESS).order_by("-started_at"):
        name, _, pid = run.worker.rpartition(":")
        horse = int(pid) if pid.isdigit() and name == host else None
        parent = _parent_of(horse) if horse else None
        if parent in by_pid:
            break
    else:
        return None
    assert horse is not None and parent is not None
    at = time.time()
    os.kill(parent, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(horse, signal.SIGKILL)
    worker = by_pid[parent]
    workers[worker].wait(5)
    workers[f"{worker}+"] = app.start_worker(f"{worker}+")
    del workers[worker]
    lost = list(StageRun.objects.filter(worker=run.worker, status=StageStatus.IN_PROGRESS))
    return Kill(at, lost) if lost else None


def assert_all_alive(services: list[Any], workers: dict[str, Any]) -> None:
    """No process died by itself: daphne, the relay, upkeep and the workers not killed
    rode out the lost Redis data and the PostgreSQL restart."""
    for process in [*services, *workers.values()]:
        assert process.poll() is None, f"{process.args[2:4]} exited; see test-artifacts/logs/chaos"


def restart_postgresql() -> None:
    """Stop the embedded PostgreSQL that serves the tests and start it again."""
    data_dir = Path(settings.DATA_DIR)
    assert postgres.running(data_dir), (
        "the chaos test restarts PostgreSQL, so it needs the embedded one "
        f"(./dev test starts it in {data_dir})"
    )
    connections.close_all()
    postgres.stop(data_dir)
    wait_until(lambda: postgres.running(data_dir) is None, seconds=30, what="PostgreSQL to stop")
    time.sleep(1.0)  # the workers, the relay and daphne meet a server that is not there
    postgres.start(data_dir)


def resumed_at(run: StageRun) -> float | None:
    """When the stage lost with ``run`` began again (a later run of the same stage)."""
    later = (
        StageRun.objects.filter(job_id=run.job_id, stage=run.stage, attempt__gt=run.attempt)
        .exclude(started_at=None)
        .order_by("started_at")
        .first()
    )
    return later.started_at.timestamp() if later and later.started_at else None


# --- the test ----------------------------------------------------------------------------


def test_no_job_is_lost_and_nothing_is_stored_twice_through_kills_a_flush_and_a_restart(
    make_user: Any, make_matter: Any, tmp_path: Path
) -> None:
    owner = make_user("dana")
    matter = make_matter(owner, "Estate of Miller")
    token = tokens.create_token(owner, name="chaos")[1]
    jobs = {
        name: uploads.accept_upload(
            matter, SimpleUploadedFile(name, content, "application/pdf"), by=owner
        ).job
        for name, content in documents().items()
    }
    media = Path(settings.MEDIA_ROOT)
    with running_app(media, "chaos", relay=True) as app:
        services = [*app.processes, app.start("upkeep", "manage.py", "upkeep")]
        feed_url = f"ws://127.0.0.1:{app.port}/ws/matters/{matter.pk}/events?token={token}"
        with reading(feed_url) as feed:
            workers = {name: app.start_worker(name) for name in ("worker-1", "worker-2")}
            kills: list[Kill] = []
            flushed = restarted = False
            deadline = time.monotonic() + 240
            while len(kills) < KILLS or not (flushed and restarted):
                assert time.monotonic() < deadline, "the chaos did not finish in 4 min"
                assert_all_alive(services, workers)
                assert ProcessingJob.objects.active().exists(), (
                    f"every job ended after {len(kills)} kills: the documents are too few "
                    "to keep the workers busy through the chaos"
                )
                if len(kills) == 2 and not flushed:
                    django_rq.get_connection("default").flushdb()
                    flushed = True
                elif len(kills) == 3 and not restarted:
                    restart_postgresql()
                    restarted = True
                elif (kill := kill_a_worker_mid_stage(workers, app)) is not None:
                    kills.append(kill)
                time.sleep(1.5)

            wait_until(
                lambda: not ProcessingJob.objects.active().exists(),
                seconds=300,
                what="every job to end (logs in test-artifacts/logs/chaos)",
            )
            time.sleep(1.0)  # the last pushes
            assert_all_alive(services, workers)

    # Every job ended as its document deserves.
    for name, job in jobs.items():
        job.refresh_from_db()
        if name in BAD_FILES:
            assert (job.status, job.error_code) == (JobStatus.FAILED, BAD_FILES[name]), name
        else:
            assert job.status == JobStatus.COMPLETED, (name, job.status, job.error_code)

    # No page or chunk stored twice: each page once, chunks numbered without repeats.
    for job in jobs.values():
        document = job.document
        if job.status != JobStatus.COMPLETED:
            continue
        numbers = list(
            DocumentPage.objects.filter(document=document).values_list("page_number", flat=True)
        )
        assert sorted(numbers) == list(range(1, document.page_count + 1)), document.original_name
        chunks = list(
            DocumentChunk.objects.filter(document=document).values_list("index", flat=True)
        )
        assert len(chunks) == len(set(chunks)), document.original_name

    # Each killed stage resumed on a live worker within the promise.
    waits = []
    for kill in kills:
        for run in kill.runs:
            resumed = resumed_at(run)
            assert resumed is not None, (run.job_id, run.stage)
            waits.append(resumed - kill.at)
            assert resumed - kill.at <= RESUMED_WITHIN_S, (run.job_id, run.stage, resumed - kill.at)
        assert all(StageRun.objects.get(pk=run.pk).error_code == "WORKER_LOST" for run in kill.runs)

    print(f"kill -> resumed, s: {', '.join(f'{w:.1f}' for w in sorted(waits))}")

    # On the event feed, no job's progress went backwards within an attempt.
    seen: dict[tuple[str, int], list[int]] = defaultdict(list)
    for event in feed.events:
        if event["type"] == "job.updated":
            shown = event["job"]
            seen[(shown["job_id"], shown["retry_count"])].append(shown["progress"])
    assert {job_id for job_id, _ in seen} == {str(job.pk) for job in jobs.values()}
    for key, progress in seen.items():
        assert progress == sorted(progress), (key, progress)
