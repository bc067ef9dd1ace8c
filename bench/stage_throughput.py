"""Pages per second of each stage of DOCUMENT_PROCESSING, run one after another in-process.

text:    a 100-page text PDF (fpdf2, ~300 words a page, with dates, amounts, emails,
         phone numbers and U.S. case citations on every page, so ``entities`` has real
         work), uploaded with processing.uploads.accept_upload. Each stage in pipeline
         order: the job's current ``dispatch_id`` is read from the database and
         ``tasks.run_stage(job_id, dispatch_id)`` is called and timed (begin_stage -> the
         real stage with a real StageContext -> complete_stage). The RQ entry that
         complete_stage enqueues for the next stage is flushed; this process runs it.
         One untimed warm-up document first (imports, eyecite's tables, first
         connection: reported as "cold"), then ROUNDS fresh documents; medians.
scanned: a 10-page PDF of page images (text drawn with Pillow in a TrueType font, no text
         layer): ``extract`` is run, then ``ocr`` (Tesseract on every page) is timed.
         One run by default (Tesseract takes seconds a page).

pages/s is the document's pages over the stage's wall time, whatever the stage counts as
its items (``index`` counts chunks). CPU is this process plus its PostgreSQL backend
(/proc/<pid>/schedstat), when the backend runs on this machine, plus the child processes
it waited for (Tesseract).

Runs on its own database (``jobtracker_bench_stages``), media folder and, unless
BENCH_REDIS_DB is set, Redis db 12, so it does not disturb the other benchmarks'.

    .venv/bin/python bench/stage_throughput.py [--pages 100] [--rounds 3]
                                              [--scanned-pages 10] [--ocr-runs 1]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import time
from pathlib import Path
from typing import Any

# Not the Redis db the other benchmarks flush (13): set before _setup reads it.
os.environ.setdefault("BENCH_REDIS_DB", "12")

import _setup  # noqa: E402

NAME = "stage_throughput"
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation")
FONT_NAMES = ("DejaVuSerif.ttf", "LiberationSerif-Regular.ttf", "DejaVuSans.ttf")
SCAN_DPI = 200


def isolate(suffix: str) -> None:
    """Use database ``jobtracker_bench_<suffix>`` and media ``bench-media-<suffix>``.

    _setup's own (``jobtracker_bench``, ``bench-media``) are dropped and emptied by every
    benchmark that calls prepare(); a run of this one must not pull them from under
    another benchmark running at the same time. Call before ``_setup.prepare()``.
    """
    from django.apps import apps

    if apps.ready:
        raise RuntimeError("isolate() must run before Django is set up")
    database = f"{_setup.BENCH_DB}_{suffix}"
    _setup.BENCH_DB = database
    _setup.DATABASE_URL = _setup._with_database(_setup._SERVER_DATABASE_URL, database)
    os.environ["DATABASE_URL"] = _setup.DATABASE_URL
    _setup.MEDIA_ROOT = _setup.MEDIA_ROOT.with_name(f"bench-media-{suffix}")
    os.environ["MEDIA_ROOT"] = str(_setup.MEDIA_ROOT)


# --- documents ---------------------------------------------------------------------------

_MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip
_CASES = (
    ("Roe v. Wade", 410, 113, 1973),
    ("Brown v. Board of Education", 347, 483, 1954),
    ("Miranda v. Arizona", 384, 436, 1966),
    ("Gideon v. Wainwright", 372, 335, 1963),
    ("Celotex Corp. v. Catrett", 477, 317, 1986),
    ("Anderson v. Liberty Lobby, Inc.", 477, 242, 1986),
    ("Bell Atlantic Corp. v. Twombly", 550, 544, 2007),
    ("Ashcroft v. Iqbal", 556, 662, 2009),
)


def entity_sentences(page: int) -> list[str]:
    """Sentences with entities of every kind, varied by page."""
    name, volume, first, year = _CASES[page % len(_CASES)]
    other, o_volume, o_first, o_year = _CASES[(page * 3 + 1) % len(_CASES)]
    month, day = _MONTHS[page % 12], page % 28 + 1
    short = name.split(" v. ")[-1].split(",")[0]
    filed = 1995 + page % 25
    dollars = (page * 7919) % 90_000 + 1_000
    return [
        f"On {month} {day}, {filed}, the defendant paid ${dollars:,}.{page % 100:02d} "
        f"under the settlement agreement.",
        f"See {name}, {volume} U.S. {first} ({year}); cf. {other}, {o_volume} U.S. "
        f"{o_first}, {o_first + 4} ({o_year}).",
        f"Notices go to counsel{page}@example.com or (402) 555-{page % 10_000:04d} before "
        f"{filed + 1}-{page % 12 + 1:02d}-{day:02d}.",
        f"The plaintiff claimed USD {page % 9 + 1} million in damages and GBP "
        f"{page * 10 + 250:,} in costs, as {short}, {volume} U.S. at {first + 2}, allows.",
    ]


def page_text(page: int, words: int = 300) -> str:
    """About ``words`` words: _setup's deterministic prose with the entity sentences in it."""
    sentences = entity_sentences(page)
    filler_words = max(words - sum(len(s.split()) for s in sentences), len(sentences) + 1)
    filler = _setup.page_text(page, filler_words).split()[2:]  # without "Page N."
    step = len(filler) // (len(sentences) + 1)
    parts = [f"Page {page}."]
    for i, sentence in enumerate(sentences):
        parts.append(" ".join(filler[i * step : (i + 1) * step]).capitalize() + ".")
        parts.append(sentence)
    parts.append(" ".join(filler[len(sentences) * step :]).capitalize().rstrip(".") + ".")
    return " ".join(parts)


def make_text_pdf(pages: int, words: int = 300) -> bytes:
    """A text PDF, one :func:`page_text` (with entities) a page."""
    return _setup.make_text_pdf(pages, words, text=page_text)


def _font_path() -> Path:
    for folder in FONT_DIRS:
        for name in FONT_NAMES:
            if (Path(folder) / name).is_file():
                return Path(folder) / name
    found = sorted(Path("/usr/share/fonts").rglob("*.ttf"))
    if not found:
        raise SystemExit("no TrueType font under /usr/share/fonts to draw the scanned pages")
    return found[0]


def make_scanned_pdf(pages: int, words: int = 300) -> tuple[bytes, str, list[str]]:
    """A PDF of A4 page images at SCAN_DPI (Pillow), no text layer; the font and texts."""
    from PIL import Image, ImageDraw, ImageFont

    font_path = _font_path()
    font = ImageFont.truetype(str(font_path), size=round(11 * SCAN_DPI / 72))  # 11 pt
    width, height = round(8.27 * SCAN_DPI), round(11.69 * SCAN_DPI)
    margin = round(0.9 * SCAN_DPI)
    line_height = round(font.size * 1.45)
    texts, images = [], []
    for number in range(1, pages + 1):
        text = page_text(number, words)
        image = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(image)
        y = margin
        for line in _wrap(text, font, width - 2 * margin):
            if y + line_height > height - margin:
                raise SystemExit(f"scanned page {number}: the text does not fit on the page")
            draw.text((margin, y), line, font=font, fill=0)
            y += line_height
        texts.append(text)
        images.append(image)
    out = io.BytesIO()
    images[0].save(out, "PDF", save_all=True, append_images=images[1:], resolution=float(SCAN_DPI))
    return out.getvalue(), font_path.name, texts


def _wrap(text: str, font: Any, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def upload(matter: Any, user: Any, name: str, content: bytes) -> tuple[Any, Any]:
    """accept_upload as the views call it; the queue entry it makes is flushed."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from processing.uploads import accept_upload

    accepted = accept_upload(
        matter, SimpleUploadedFile(name, content, "application/pdf"), by=user, allow_duplicate=True
    )
    document, job = accepted.document, accepted.job
    _setup.flush_redis()  # this process runs the stages itself
    return document, job


# --- running stages ------------------------------------------------------------------------


def _cpu(pids: list[int | None]) -> float | None:
    """CPU seconds of ``pids`` (None: this process) plus this process's reaped children."""
    values = [_setup.cpu_seconds(pid) for pid in pids]
    if any(v is None for v in values):
        return None
    times = os.times()
    return sum(values) + times.children_user + times.children_system


def run_current_stage(job_id: Any, expected: str) -> dict[str, Any]:
    """Run the job's current stage (``expected``) with tasks.run_stage; its figures."""
    from django.db import connection

    from processing.jobs import tasks
    from processing.models import ProcessingJob, StageRun

    job = ProcessingJob.objects.only("current_stage", "dispatch_id", "status").get(pk=job_id)
    if job.current_stage != expected:
        raise SystemExit(f"job {job_id} is at {job.current_stage!r}, expected {expected!r}")
    backend = _setup.backend_pid()
    counter = _setup.QueryCounter()
    cpu_before = _cpu([None, backend])
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        outcome = tasks.run_stage(str(job_id), str(job.dispatch_id))
    elapsed = time.perf_counter() - started
    cpu_after = _cpu([None, backend])
    _setup.flush_redis()  # the next stage's RQ entry, enqueued by complete_stage
    cpu = None
    if None not in (cpu_before, cpu_after) and _setup.backend_pid() == backend:
        cpu = cpu_after - cpu_before
    run = StageRun.objects.filter(job_id=job_id, stage=expected).order_by("-id").first()
    if outcome != "completed" or run is None or run.status != "COMPLETED":
        job = ProcessingJob.objects.get(pk=job_id)
        raise SystemExit(
            f"stage {expected} of job {job_id} did not complete: {outcome}, {job.status}, "
            f"{job.error_code}: {job.error}\n{job.error_detail}"
        )
    return {
        "s": elapsed,
        "cpu_s": cpu,
        "queries": counter.count,
        "items_done": run.items_done,
        "items_total": run.items_total,
    }


def run_pipeline(job_id: Any, stages: list[str]) -> dict[str, dict[str, Any]]:
    return {name: run_current_stage(job_id, name) for name in stages}


def document_counts(document: Any) -> dict[str, Any]:
    from django.db.models import Count, Sum

    from processing.models import DocumentChunk, DocumentPage, Entity

    pages = DocumentPage.objects.filter(document=document)
    kinds = Entity.objects.filter(document=document).values("kind").annotate(n=Count("id"))
    return {
        "pages": pages.count(),
        "chars": pages.aggregate(n=Sum("char_count"))["n"] or 0,
        "chunks": DocumentChunk.objects.filter(document=document).count(),
        "indexed_chunks": DocumentChunk.objects.filter(
            document=document, search_vector__isnull=False
        ).count(),
        "entities": {row["kind"]: row["n"] for row in kinds.order_by("kind")},
    }


def ocr_accuracy(document: Any, texts: list[str]) -> dict[str, Any]:
    """How many of each page's words the OCR text holds (a sanity check, not a metric)."""
    from django.db.models import Avg, Count

    from processing.models import DocumentPage

    pages = DocumentPage.objects.filter(document=document).order_by("page_number")
    statuses = dict(pages.values_list("ocr_status").annotate(n=Count("id")).order_by())
    found = total = 0
    for page, source in zip(pages, texts, strict=True):
        read = set(re.findall(r"\w+", page.text.lower()))
        words = re.findall(r"\w+", source.lower())
        total += len(words)
        found += sum(1 for w in words if w in read)
    confidence = pages.aggregate(c=Avg("ocr_confidence"))["c"]
    return {
        "ocr_status": statuses,
        "mean_confidence": confidence,
        "source_words_found": found / total if total else None,
    }


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--words", type=int, default=300, help="words per page")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scanned-pages", type=int, default=10, help="0: no OCR part")
    parser.add_argument("--ocr-runs", type=int, default=1)
    args = parser.parse_args()

    isolate("stages")
    info = _setup.prepare()
    from processing.pipeline.registry import DOCUMENT_PROCESSING, get_pipeline

    stages = [stage.name for stage in get_pipeline(DOCUMENT_PROCESSING).stages]
    user, matter = _setup.make_owner()

    pdf_bytes = make_text_pdf(args.pages, args.words)
    words = len(page_text(1, args.words).split())
    print(
        f"text document: {args.pages} pages x ~{words} words, {len(pdf_bytes) / 1024:.0f} KiB; "
        f"stages: {' -> '.join(stages)}"
    )

    def one_document(label: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        document, job = upload(matter, user, f"{label}.pdf", pdf_bytes)
        figures = run_pipeline(job.id, stages)
        document.refresh_from_db()
        if document.page_count != args.pages:
            raise SystemExit(f"expected {args.pages} pages, extract counted {document.page_count}")
        return figures, document_counts(document)

    cold, counts = one_document("warm-up")
    if counts["pages"] != args.pages or counts["indexed_chunks"] != counts["chunks"]:
        raise SystemExit(f"the warm-up document was not fully processed: {counts}")
    print(
        f"each document: {counts['chars']:,} characters, {counts['chunks']} chunks, entities "
        + ", ".join(f"{k} {v}" for k, v in counts["entities"].items())
    )
    runs = []
    for round_no in range(1, args.rounds + 1):
        figures, _counts = one_document(f"round-{round_no}")
        runs.append({"round": round_no, "load_1min": _setup.load(), "stages": figures})

    def med(stage: str, key: str) -> float | None:
        values = [r["stages"][stage][key] for r in runs if r["stages"][stage][key] is not None]
        return _setup.median(values) if values else None

    median: dict[str, dict[str, Any]] = {}
    for stage in stages:
        seconds = med(stage, "s")
        median[stage] = {
            "pages_per_s": _setup.median([args.pages / r["stages"][stage]["s"] for r in runs]),
            "s": seconds,
            "cpu_s": med(stage, "cpu_s"),
            "queries": med(stage, "queries"),
            "items": runs[-1]["stages"][stage]["items_total"],
            "cold_pages_per_s": args.pages / cold[stage]["s"],
        }
    pipeline_pages_per_s = _setup.median(
        [args.pages / sum(f["s"] for f in r["stages"].values()) for r in runs]
    )

    scanned: dict[str, Any] | None = None
    if args.scanned_pages > 0:
        scanned = run_scanned(matter, user, args.scanned_pages, args.words, args.ocr_runs)

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{1000 * value:,.0f}"

    rows = [
        [
            f"{stage} (text)",
            m["pages_per_s"],
            ms(m["s"]),
            ms(m["cpu_s"]),
            m["items"],
            f"{m['queries']:.0f}",
            m["cold_pages_per_s"],
        ]
        for stage, m in median.items()
    ]
    rows.append(
        [
            "all five (text)",
            pipeline_pages_per_s,
            ms(sum(m["s"] for m in median.values())),
            "",
            "",
            "",
            args.pages / sum(c["s"] for c in cold.values()),
        ]
    )
    if scanned is not None:
        for stage in ("extract", "ocr"):
            figure = scanned[stage]
            rows.append(
                [
                    f"{stage} (scanned)",
                    figure["pages_per_s"],
                    ms(figure["s"]),
                    ms(figure["cpu_s"]),
                    figure["items"],
                    f"{figure['queries']:.0f}",
                    "",
                ]
            )
    print()
    print(
        _setup.table(
            [
                "stage",
                "pages/s",
                "wall ms",
                "CPU ms",
                "items",
                "SQL queries",
                "cold pages/s",
            ],
            rows,
        )
    )
    print(
        f"\ntext: medians of {args.rounds} fresh {args.pages}-page documents (cold: the first "
        f"document in this process); CPU = this process + its PostgreSQL backend + Tesseract"
    )
    if scanned is not None:
        accuracy = scanned["accuracy"]
        print(
            f"scanned: {args.scanned_pages} page images ({SCAN_DPI} dpi, {scanned['font']}), "
            f"median of {args.ocr_runs}; ~{scanned['ocr_s_per_page']:.1f} s a page; OCR "
            f"statuses {accuracy['ocr_status']}, mean confidence "
            f"{accuracy['mean_confidence'] or 0:.1f}, "
            f"{100 * (accuracy['source_words_found'] or 0):.1f} % of the words read back"
        )

    path_out = _setup.write_results(
        NAME,
        {
            "versions": info,
            "config": {
                "pages": args.pages,
                "words_per_page": args.words,
                "rounds": args.rounds,
                "scanned_pages": args.scanned_pages,
                "ocr_runs": args.ocr_runs,
                "scan_dpi": SCAN_DPI,
            },
            "document": counts,
            "median": median,
            "pipeline_pages_per_s": pipeline_pages_per_s,
            "cold": cold,
            "runs": runs,
            "scanned": scanned,
        },
    )
    print(f"results: {path_out}")


def run_scanned(matter: Any, user: Any, pages: int, words: int, runs: int) -> dict[str, Any]:
    """extract, then ocr, on fresh uploads of a PDF of page images; medians of ``runs``."""
    content, font, texts = make_scanned_pdf(pages, words)
    print(
        f"scanned document: {pages} page images, {len(content) / 1024:.0f} KiB "
        f"(OCR at {os.environ.get('OCR_DPI', '300')} dpi)"
    )
    results = []
    document = None
    for run_no in range(1, runs + 1):
        document, job = upload(matter, user, f"scanned-{run_no}.pdf", content)
        figures = run_pipeline(job.id, ["extract", "ocr"])
        document.refresh_from_db()
        if document.page_count != pages:
            raise SystemExit(
                f"expected {pages} scanned pages, extract counted {document.page_count}"
            )
        results.append(figures)
    out: dict[str, Any] = {"font": font, "runs": results}
    for stage in ("extract", "ocr"):
        seconds = _setup.median([r[stage]["s"] for r in results])
        cpu = [r[stage]["cpu_s"] for r in results if r[stage]["cpu_s"] is not None]
        out[stage] = {
            "pages_per_s": _setup.median([pages / r[stage]["s"] for r in results]),
            "s": seconds,
            "cpu_s": _setup.median(cpu) if cpu else None,
            "queries": _setup.median([r[stage]["queries"] for r in results]),
            "items": results[-1][stage]["items_total"],
        }
    out["ocr_s_per_page"] = out["ocr"]["s"] / pages
    out["accuracy"] = ocr_accuracy(document, texts)
    return out


if __name__ == "__main__":
    main()
