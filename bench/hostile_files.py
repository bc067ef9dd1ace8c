"""The issue's hostile files through the document readers, before and after the budgets.

Each file is made here (small on disk) and read in a child process of its own, the way
the ``extract`` and ``ocr`` stages read it: ``open_document`` with the default limits,
every page's text, and every page of an image or PDF drawn for OCR (300 dpi within
25 megapixels). Reported per kind and side: the outcome (pages read, or the error
code), wall time, and the child's peak RSS (``ru_maxrss`` from ``wait4``).

before: the readers of ``--before`` (a git revision, default ``main``), exported with
        ``git archive`` into a temporary folder. The child gets ``RLIMIT_AS`` of
        ``--cap-gb`` (default 4) and ``--timeout`` seconds (default 300), so a bomb ends
        as "MemoryError" or "killed" rather than taking the machine.
after:  the readers of this checkout, under the same caps.

Only the readers: no database, no worker (tests/test_hostile_files.py runs each kind
through a real worker).

    .venv/bin/python bench/hostile_files.py [--before main] [--only png_144mp,...]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results" / "hostile_files.json"
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
MAIN = "word/document.xml"
_IMAGE_REL = (
    b'<Relationship Id="rIdHostile" Target="media/%s" Type="http://schemas.openxmlformats.org'
    b'/officeDocument/2006/relationships/image"/></Relationships>'
)
_PNG_TYPE = b'<Default Extension="png" ContentType="image/png"/>'

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from processing.documents import open_document
from processing.errors import StageError
path, content_type = sys.argv[2], sys.argv[3]
started = time.monotonic()
try:
    with open_document(path, content_type) as reader:
        for index in range(reader.page_count):
            reader.page_text(index)
            if content_type.startswith("image/") or content_type == "application/pdf":
                reader.render_page(index, dpi=300, max_pixels=25_000_000)
        outcome = f"read {reader.page_count} pages"
except StageError as error:
    outcome = error.code
except MemoryError:
    outcome = "MemoryError"
print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started}))
"""


# --- the files ----------------------------------------------------------------------------


def _template_docx() -> zipfile.ZipFile:
    import docx

    out = io.BytesIO()
    document = docx.Document()
    document.add_paragraph("A template paragraph.")
    document.save(out)
    return zipfile.ZipFile(out)


def _docx(
    path: Path,
    main: Callable[[zipfile.ZipFile, str], None] | None = None,
    *,
    main_part: str = MAIN,
    extra: Callable[[zipfile.ZipFile], None] | None = None,
    image: str | None = None,
) -> None:
    """A python-docx DOCX whose main part ``main`` writes (streamed), named ``main_part``."""
    template = _template_docx()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for info in template.infolist():
            data, name = template.read(info), info.filename
            if name == MAIN:
                if main is not None:
                    main(archive, main_part)
                    continue
                name = main_part
            elif name == "word/_rels/document.xml.rels":
                name = f"word/_rels/{Path(main_part).name}.rels"
                if image:  # the main part refers to it, so python-docx loads it
                    data = data.replace(b"</Relationships>", _IMAGE_REL % image.encode())
            elif name in ("[Content_Types].xml", "_rels/.rels"):
                data = data.replace(MAIN.encode(), main_part.encode())
                if image and name == "[Content_Types].xml" and b'Extension="png"' not in data:
                    data = data.replace(b"<Default ", _PNG_TYPE + b"<Default ", 1)
            archive.writestr(name, data)
        if extra is not None:
            extra(archive)


def _streamed_body(inner: bytes, total: int) -> Callable[[zipfile.ZipFile, str], None]:
    def write(archive: zipfile.ZipFile, name: str) -> None:
        block = inner * max(1, (1 << 20) // len(inner))
        with archive.open(name, "w", force_zip64=True) as member:
            member.write(f'<?xml version="1.0"?><w:document xmlns:w="{W_NS}"><w:body>'.encode())
            for _ in range(total // len(block)):
                member.write(block)
            member.write(b"</w:body></w:document>")

    return write


def docx_not_xml(path: Path) -> str:
    """The main part named word/body.bin: one paragraph of 1 GiB of text."""

    def write(archive: zipfile.ZipFile, name: str) -> None:
        with archive.open(name, "w", force_zip64=True) as member:
            head = f'<?xml version="1.0"?><w:document xmlns:w="{W_NS}"><w:body>'
            member.write(f"{head}<w:p><w:r><w:t>".encode())
            block = b"a" * (1 << 20)
            for _ in range(1024):
                member.write(block)
            member.write(b"</w:t></w:r></w:p></w:body></w:document>")

    _docx(path, write, main_part="word/body.bin")
    return "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def docx_2gib_image(path: Path) -> str:
    def image(archive: zipfile.ZipFile) -> None:
        zeros = bytes(8 << 20)
        with archive.open("word/media/image1.png", "w", force_zip64=True) as member:
            for _ in range(256):
                member.write(zeros)

    _docx(path, extra=image, image="image1.png")
    return "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def docx_empty_paragraphs(path: Path) -> str:
    """180 MB of <w:p/>: 30 million paragraphs, under the 200 MiB text budget."""
    _docx(path, _streamed_body(b"<w:p/>", 180_000_000))
    return "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def png_144mp(path: Path) -> str:
    from PIL import Image

    Image.new("RGB", (12_000, 12_000), "white").save(path, format="PNG")
    return "image/png"


def jpeg_108mp(path: Path) -> str:
    from PIL import Image

    Image.new("L", (12_000, 9_000), 255).save(path, format="JPEG", quality=80)
    return "image/jpeg"


def pdf_huge_image(path: Path) -> str:
    """A 200-inch page holding a 40,000 × 4,000 image (160 megapixels)."""
    from fpdf import FPDF
    from PIL import Image

    document = FPDF(unit="pt", format=(14_400, 1_440))
    document.add_page()
    document.image(Image.new("L", (40_000, 4_000), 255), x=0, y=0, w=14_400)
    document.output(str(path))
    return "application/pdf"


def pdf_huge_page(path: Path) -> str:
    """A 400-inch page of thin text: 120,000 px wide at 300 dpi if not reduced."""
    from fpdf import FPDF

    document = FPDF(unit="pt", format=(28_800, 28_800))
    document.add_page()
    document.set_font("helvetica", size=1600)
    document.text(1000, 4000, "Lot 7")
    document.output(str(path))
    return "application/pdf"


def tiff_2000_frames(path: Path) -> str:
    from PIL import Image

    first, *rest = (Image.new("L", (200, 200), n % 256) for n in range(2000))
    first.save(path, format="TIFF", save_all=True, append_images=rest)
    return "image/tiff"


KINDS: dict[str, Callable[[Path], str]] = {
    "docx_not_xml": docx_not_xml,
    "docx_2gib_image": docx_2gib_image,
    "docx_empty_paragraphs": docx_empty_paragraphs,
    "png_144mp": png_144mp,
    "jpeg_108mp": jpeg_108mp,
    "pdf_huge_image": pdf_huge_image,
    "pdf_huge_page": pdf_huge_page,
    "tiff_2000_frames": tiff_2000_frames,
}


# --- running ------------------------------------------------------------------------------


def run_child(
    code_root: Path, path: Path, content_type: str, cap_gb: float, timeout: float
) -> dict:
    """Read ``path`` with the readers under ``code_root`` in a capped child process."""
    cap = int(cap_gb * 2**30)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(code_root), str(path), content_type],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=limit,
    )
    killed = False
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - started > timeout:
            child.kill()
            killed = True
            pid, status, usage = os.wait4(child.pid, 0)
            break
        time.sleep(0.05)
    wall = time.monotonic() - started
    out = child.stdout.read().decode() if child.stdout else ""
    err = child.stderr.read().decode() if child.stderr else ""
    child.returncode = os.waitstatus_to_exitcode(status)
    if killed:
        outcome = f"killed after {timeout:g} s"
    elif out.strip():
        outcome = json.loads(out.strip().splitlines()[-1])["outcome"]
    else:
        last = err.strip().splitlines()[-1] if err.strip() else ""
        outcome = f"exit {child.returncode}: {last[:80]}"
    return {"outcome": outcome, "seconds": round(wall, 2), "peak_rss_mb": usage.ru_maxrss // 1024}


def export(revision: str, into: Path) -> Path:
    """The ``processing`` package of ``revision``, exported into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "processing"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="main", help="git revision of the old readers")
    parser.add_argument("--only", default="", help="comma-separated kinds")
    parser.add_argument("--cap-gb", type=float, default=4.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    kinds = [k for k in KINDS if not args.only or k in args.only.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        before = export(args.before, work / "before") if args.before else None
        for kind in kinds:
            path = work / kind
            content_type = KINDS[kind](path)
            row = {"kind": kind, "on_disk_kb": path.stat().st_size // 1024}
            sides = [("before", before), ("after", ROOT)] if before else [("after", ROOT)]
            for side, code_root in sides:
                assert code_root is not None
                row[side] = run_child(code_root, path, content_type, args.cap_gb, args.timeout)
            rows.append(row)
            print(json.dumps(row), flush=True)
            path.unlink()
    load = os.getloadavg()
    print(
        f"\nload average {load[0]:.2f}; cap {args.cap_gb:g} GiB address space, {args.timeout:g} s"
    )
    print(f"{'kind':24} {'disk KB':>8}  {'before':44}  after")
    for row in rows:
        cells = []
        for side in ("before", "after"):
            if side in row:
                r = row[side]
                cells.append(
                    f"{r['outcome'][:22]:22} {r['seconds']:7.2f} s {r['peak_rss_mb']:6} MB"
                )
        print(f"{row['kind']:24} {row['on_disk_kb']:>8}  " + "  ".join(f"{c:44}" for c in cells))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "load": load, "before": args.before}, indent=1))


if __name__ == "__main__":
    main()
