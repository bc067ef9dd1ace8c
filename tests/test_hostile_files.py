"""Hostile files, each crafted here and small on disk, stop on a budget before the work.

Each kind goes through a real RQ worker with a good document queued behind it:
the hostile one ends as the user sees it (its status and error code), without
an automatic retry, and the same worker goes on to complete the good one.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from processing.documents import (
    DOCX,
    IMAGE_JPEG,
    IMAGE_TIFF,
    PackageLimits,
    detect_file,
    open_document,
)
from processing.errors import CorruptDocument, DocumentTooComplex
from processing.models import DocumentPage, ProcessingJob
from tests.conftest import job_of, make_docx, make_pdf

pytestmark = pytest.mark.django_db(transaction=True)

_MAIN = "word/document.xml"
_W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_IMAGE_REL = (
    b'<Relationship Id="rIdHostile" Target="media/%s" Type="http://schemas.openxmlformats.org'
    b'/officeDocument/2006/relationships/image"/></Relationships>'
)
_PNG_TYPE = b'<Default Extension="png" ContentType="image/png"/>'


# --- hostile files, made here -----------------------------------------------------------


def docx_with(
    body: bytes | None = None,
    *,
    main_part: str = _MAIN,
    extra: Callable[[zipfile.ZipFile], None] | None = None,
    image: str | None = None,
) -> bytes:
    """A DOCX made by python-docx, its main part replaced by ``body`` (a whole XML document)
    and renamed ``main_part``; ``extra(archive)`` may add members."""
    template = zipfile.ZipFile(io.BytesIO(make_docx(["A template paragraph."])))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in template.infolist():
            data = template.read(info)
            name = info.filename
            if name == _MAIN:
                name, data = main_part, body if body is not None else data
            elif name == "word/_rels/document.xml.rels":
                name = f"word/_rels/{Path(main_part).name}.rels"
                if image:  # the main part refers to it, so python-docx loads it
                    data = data.replace(b"</Relationships>", _IMAGE_REL % image.encode())
            elif name in ("[Content_Types].xml", "_rels/.rels"):
                data = data.replace(_MAIN.encode(), main_part.encode())
                if image and name == "[Content_Types].xml" and b'Extension="png"' not in data:
                    data = data.replace(b"<Default ", _PNG_TYPE + b"<Default ", 1)
            archive.writestr(name, data)
        if extra is not None:
            extra(archive)
    return out.getvalue()


def body_of(inner: bytes, times: int) -> Iterator[bytes]:
    yield f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{_W_NS}"><w:body>'.encode()
    for _ in range(times):
        yield inner
    yield b"</w:body></w:document>"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` × ``height`` and holds no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        import zlib

        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def image_bytes(image: Image.Image, format: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=format, **options)
    return out.getvalue()


def lettered(size: tuple[int, int], lines: list[str], font_size: int) -> Image.Image:
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=font_size)
    for n, line in enumerate(lines):
        draw.text((font_size, font_size * (1 + 1.6 * n)), line, fill=0, font=font)
    return image


def tiff_of(frames: int, size: tuple[int, int] = (100, 100)) -> bytes:
    first, *rest = (Image.new("L", size, n % 256) for n in range(frames))
    return image_bytes(first, "TIFF", save_all=True, append_images=rest)


@pytest.fixture(scope="module")
def docx_with_a_2_gib_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DOCX whose "image" part is 2 GiB of zeros, declared and actual (9 MB on disk)."""

    def image(archive: zipfile.ZipFile) -> None:
        archive.compresslevel = 1  # the fastest: 3 s for 2 GiB
        zeros = bytes(8 << 20)
        with archive.open("word/media/image1.png", "w", force_zip64=True) as member:
            for _ in range(256):
                member.write(zeros)

    path = tmp_path_factory.mktemp("hostile") / "photo-report.docx"
    path.write_bytes(docx_with(extra=image, image="image1.png"))
    return path


# --- through a real worker ---------------------------------------------------------------


def upload(client: Any, matter: Any, name: str, content: bytes) -> ProcessingJob:
    response = client.upload(matter.pk, name, content)
    assert response.status_code == 201, response.content
    return job_of(response)


def assert_refused_then_worker_goes_on(
    client: Any, matter: Any, worker: Any, name: str, content: bytes, *, says: str
) -> dict[str, Any]:
    """Upload the hostile file and a good PDF behind it; one worker run; the hostile job
    FAILED with DOCUMENT_TOO_COMPLEX at once (a sentence naming the limit, no automatic
    retry), and the same worker then completed the good one."""
    hostile = upload(client, matter, name, content)
    good = upload(client, matter, "good.pdf", make_pdf(["A plain page after the hostile one."]))
    worker()
    body = client.get(f"/api/jobs/{hostile.pk}").json()
    assert (body["status"], body["error_code"]) == ("FAILED", "DOCUMENT_TOO_COMPLEX"), body
    assert says in body["error"], body["error"]
    assert body["retry_count"] == 0 and body["next_attempt_at"] is None
    hostile.refresh_from_db()
    assert hostile.auto_retries == 0
    assert client.get(f"/api/jobs/{good.pk}").json()["status"] == "COMPLETED"
    return body


def test_a_docx_whose_main_part_is_not_named_xml_stops_on_the_unpacked_budget(
    api_client: Any, alice: Any, matter: Any, worker: Any, settings: Any
) -> None:
    settings.DOCX_MAX_UNPACKED_BYTES = 8 * 1024 * 1024
    # 40 MB of one paragraph's text in a part called word/body.bin: 40 KB on disk.
    body = b"".join(body_of(b"<w:p><w:r><w:t>" + b"a" * 40_000_000 + b"</w:t></w:r></w:p>", 1))
    content = docx_with(body, main_part="word/body.bin")
    assert len(content) < 100_000
    assert_refused_then_worker_goes_on(
        api_client(alice), matter, worker, "memo.docx", content, says="unpacks to more than 8 MB"
    )


def test_a_docx_with_a_2_gib_image_part_is_refused_before_inflating_it(
    api_client: Any, alice: Any, matter: Any, worker: Any, docx_with_a_2_gib_image: Path
) -> None:
    content = docx_with_a_2_gib_image.read_bytes()
    assert detect_file(docx_with_a_2_gib_image) == DOCX
    assert_refused_then_worker_goes_on(
        api_client(alice), matter, worker, "report.docx", content, says="more than 256 MB"
    )


def test_a_docx_of_empty_paragraphs_stops_on_the_element_budget(
    api_client: Any, alice: Any, matter: Any, worker: Any, settings: Any
) -> None:
    settings.DOCX_MAX_XML_ELEMENTS = 50_000
    content = docx_with(b"".join(body_of(b"<w:p/>", 60_000)))
    assert_refused_then_worker_goes_on(
        api_client(alice), matter, worker, "blank.docx", content, says="more than 50,000 pieces"
    )


def test_a_png_over_the_decoded_pixel_cap_is_refused_unread(
    api_client: Any, alice: Any, matter: Any, worker: Any
) -> None:
    # The 144-megapixel PNG, under IMAGE_MAX_PIXELS (150 M): 1 bit deep, 20 KB.
    content = image_bytes(Image.new("1", (12_000, 12_000), 1), "PNG")
    assert len(content) < 100_000
    assert_refused_then_worker_goes_on(
        api_client(alice), matter, worker, "plan.png", content, says="at most 64 megapixels"
    )


def test_a_png_declaring_400_megapixels_in_57_bytes_is_refused(
    api_client: Any, alice: Any, matter: Any, worker: Any
) -> None:
    assert_refused_then_worker_goes_on(
        api_client(alice),
        matter,
        worker,
        "bomb.png",
        png_header_only(20_000, 20_000),
        says="over 150 megapixels, the limit",
    )


def test_a_big_jpeg_is_read_from_a_reduced_decoding(
    api_client: Any, alice: Any, matter: Any, worker: Any, settings: Any
) -> None:
    settings.OCR_MAX_PIXELS = 1_000_000
    client = api_client(alice)
    photo = lettered((6000, 4000), ["Invoice 4471", "Harrowgate Plumbing"], font_size=360)
    job = upload(client, matter, "photo.jpg", image_bytes(photo, "JPEG", quality=80))
    worker()
    body = client.get(f"/api/jobs/{job.pk}").json()
    assert body["status"] == "COMPLETED" and body["retry_count"] == 0
    (page,) = DocumentPage.objects.filter(document=job.document)
    assert "Harrowgate" in page.text and page.ocr_status == "recognised"
    assert "1224×816 px" in page.ocr_note  # within 1 megapixel, same proportions
    with open_document(job.document.file.path, IMAGE_JPEG) as reader:
        drawn = reader.render_page(0, dpi=300, max_pixels=1_000_000)
    # Decoded at 1/4 (1500 × 1000), never as the 24 megapixels the file holds.
    assert drawn.decoded_size == (1500, 1000) and drawn.image.size == (1224, 816)


def test_a_pdf_page_holding_an_image_over_the_cap_is_not_drawn(
    api_client: Any, alice: Any, matter: Any, worker: Any, settings: Any
) -> None:
    settings.IMAGE_MAX_DECODED_PIXELS = 1_000_000
    settings.OCR_MAX_PIXELS = 250_000
    document = FPDF(format=(105, 148))
    document.add_page()
    document.image(Image.new("L", (2000, 1000), 255), x=0, y=0, w=105)
    assert_refused_then_worker_goes_on(
        api_client(alice),
        matter,
        worker,
        "scan.pdf",
        bytes(document.output()),
        says="Page 1 holds an image of 2,000×1,000 pixels",
    )


def test_a_huge_pdf_page_is_drawn_at_a_reduced_scale(
    api_client: Any, alice: Any, matter: Any, worker: Any, settings: Any
) -> None:
    settings.OCR_MAX_PIXELS = 2_000_000
    client = api_client(alice)
    document = FPDF(unit="pt", format=(28_800, 28_800))  # 400 inches: 120,000 px at 300 dpi
    document.add_page()
    document.set_font("helvetica", size=1600)
    document.text(1000, 4000, "Lot 7")
    job = upload(client, matter, "site-plan.pdf", bytes(document.output()))
    worker()
    assert client.get(f"/api/jobs/{job.pk}").json()["status"] == "COMPLETED"
    (page,) = DocumentPage.objects.filter(document=job.document)
    drawn = re.search(r"(\d+)×(\d+) px image at 4 dpi", page.ocr_note)
    assert drawn, page.ocr_note
    width, height = int(drawn[1]), int(drawn[2])
    assert width * height <= 2_000_000 and width > 1400  # not 120,000 × 120,000
    assert "Lot" in page.text


def test_a_tiff_over_the_frame_cap_is_refused_after_one_pass(
    api_client: Any, alice: Any, matter: Any, worker: Any, settings: Any
) -> None:
    settings.DOCUMENT_MAX_PAGES = 200
    assert_refused_then_worker_goes_on(
        api_client(alice),
        matter,
        worker,
        "bundle.tif",
        tiff_of(250, (20, 20)),
        says="more than 200 pages",
    )


# --- the readers, by themselves ----------------------------------------------------------


def bytes_read_by_this_process() -> int:
    """Bytes this process has read through read() calls so far (Linux /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_a_tiffs_frames_are_read_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "scans.tif"
    path.write_bytes(tiff_of(300))  # 3 MB: 10 KB a frame
    size = path.stat().st_size
    before = bytes_read_by_this_process()
    with open_document(path, IMAGE_TIFF) as reader:
        assert reader.page_count == 300
        shades = [
            reader.render_page(i, dpi=300, max_pixels=10**6).image.getpixel((0, 0))
            for i in range(300)
        ]
    read = bytes_read_by_this_process() - before
    assert shades == [n % 256 for n in range(300)]
    # Walking from the first frame for each page would read about 150 × the file.
    assert read < 4 * size, f"read {read:,} bytes of a {size:,}-byte file"


def test_a_docx_member_cap_and_a_liar_zip(tmp_path: Path) -> None:
    def many(archive: zipfile.ZipFile) -> None:
        for n in range(30):
            archive.writestr(f"customXml/extra{n}.xml", "<a/>")

    crowded = tmp_path / "crowded.docx"
    crowded.write_bytes(docx_with(extra=many))
    with pytest.raises(DocumentTooComplex) as caught:
        open_document(crowded, DOCX, docx_limits=PackageLimits(max_members=20))
    assert "the limit is 20" in caught.value.message

    # A member that claims 1,000 bytes and inflates to 4 MB: never more than it claims.
    def liar(archive: zipfile.ZipFile) -> None:
        archive.writestr("word/media/image9.png", bytes(4 << 20))

    data = bytearray(docx_with(extra=liar))
    name = b"word/media/image9.png"
    # The uncompressed size, in the local header (name at 30) and the central one (at 46).
    struct.pack_into("<I", data, data.find(name) - 30 + 22, 1000)
    struct.pack_into("<I", data, data.rfind(name) - 46 + 24, 1000)
    lying = tmp_path / "lying.docx"
    lying.write_bytes(bytes(data))
    with pytest.raises(CorruptDocument):
        open_document(lying, DOCX)


def test_a_2_gib_docx_part_is_refused_from_its_declared_size(
    docx_with_a_2_gib_image: Path,
) -> None:
    before = bytes_read_by_this_process()
    with pytest.raises(DocumentTooComplex) as caught:
        open_document(docx_with_a_2_gib_image, DOCX)
    assert "image1.png" in caught.value.detail and "declared" in caught.value.detail
    # Nothing was inflated: little more than the zip's directory was read.
    assert bytes_read_by_this_process() - before < 1_000_000
