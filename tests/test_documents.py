"""Reading documents: what an upload is, and the text of each page a user will search.

Pure tests: files on disk, no database, no Redis. The real-world corpus in
``shared/corpus`` (MANIFEST.tsv) is checked file by file.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docx
import pypdf
import pytest
from docx.enum.section import WD_SECTION
from docx.enum.text import WD_BREAK
from fpdf import FPDF
from PIL import Image, ImageDraw

from processing.documents import (
    DOCX,
    HTML,
    IMAGE_JPEG,
    IMAGE_PNG,
    IMAGE_TIFF,
    PDF,
    SNIFF_BYTES,
    SUPPORTED_FORMATS,
    SUPPORTED_TYPES,
    TEXT,
    RenderError,
    detect_content_type,
    detect_file,
    open_document,
    supported_description,
)
from processing.errors import CorruptDocument, DocumentTooComplex, EncryptedDocument
from tests.conftest import CORPUS, corpus_manifest

Write = Callable[..., Path]


@pytest.fixture(autouse=True)
def _empty_queues() -> Iterator[None]:
    """These tests touch no queue: override the suite's Redis flush so they run without Redis."""
    yield


# --- documents made here ----------------------------------------------------------------


def pdf_bytes(pages: list[str]) -> bytes:
    """A text PDF with one page per string."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def encrypted_pdf(*, user_password: str, owner_password: str | None, algorithm: str) -> bytes:
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(pdf_bytes(["Privileged memo about Zephyr"])))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes(build: Callable[[Any], object]) -> bytes:
    """A DOCX made by ``build(document)`` on a fresh python-docx document."""
    document = docx.Document()
    build(document)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bytes(entries: dict[str, bytes | str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """``write(data, name)`` stores bytes in a temporary file and returns its path."""

    def write(data: bytes, name: str = "upload.bin") -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write


def read_all(path: Path, content_type: str, **limits: int) -> list[str]:
    with open_document(path, content_type, **limits) as reader:
        return [reader.page_text(i) for i in range(reader.page_count)]


# --- detection: what kind of file is it --------------------------------------------------


def test_sniff_window_is_at_least_8_kib() -> None:
    assert SNIFF_BYTES >= 8 * 1024


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", PDF),
        (b"%%EOF\r\n%PDF-1.5\r\n%\xe2\xe3\xcf\xd3\r\n", PDF),  # junk before the header
        (b"\x00" * 600 + b"%PDF-1.4\n", PDF),
        (b"Plain words, nothing more.\n", TEXT),
        ("café naïve façade\n".encode("latin-1"), TEXT),
        ("Hello from UTF-16\r\n".encode("utf-16"), TEXT),
        ("Hello from BOM-less UTF-16LE\r\n".encode("utf-16-le"), TEXT),
        ("Привет, мир. Это обычный текст.\n".encode("cp1251"), TEXT),
        (b"<!DOCTYPE html><html><body><p>Hi</p></body></html>", HTML),
        (b"\xef\xbb\xbf\n  <!-- generated -->\n<html lang=en><p>Hi</p></html>", HTML),
        (b"<?xml version='1.0'?>\n<!DOCTYPE html PUBLIC '-//W3C//DTD XHTML 1.0//EN'>", HTML),
        (b"<div class='opinion'><p>The court holds.</p></div>", HTML),
        ("<html><body>Grüße</body></html>".encode("utf-16"), HTML),
        (b"Write <html> first, then <body>, in your page.\n", TEXT),
        # Scans: the signature decides; a damaged image fails at open, like a damaged PDF.
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, IMAGE_PNG),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4, IMAGE_JPEG),
        (b"II*\x00\x08\x00\x00\x00" + bytes(64), IMAGE_TIFF),
        (b"MM\x00*\x00\x00\x00\x08" + bytes(64), IMAGE_TIFF),
    ],
)
def test_detects_documents_from_their_content(data: bytes, expected: str) -> None:
    assert detect_content_type(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512,  # legacy .doc (OLE2)
        b"\x89PNG\n\x1a\n" + bytes(range(256)) * 4,  # a PNG mangled by a text-mode copy
        b"GIF89a\x10\x00\x10\x00" + bytes(range(256)) * 4,
        b"\x7fELF\x02\x01\x01" + b"\x00" * 1000,
        b"MZ\x90\x00\x03" + b"\x00" * 1000,
        b"\x1f\x8b\x08\x00" + bytes(range(256)),
        b"{\\rtf1\\ansi Hello}",
        random.Random(1).randbytes(64 * 1024),
        random.Random(2).randbytes(4096),
        random.Random(3).randbytes(300),
        bytes(random.Random(4).randrange(1, 32) for _ in range(2000)),  # control characters
    ],
    ids=[
        "empty",
        "doc",
        "mangled-png",
        "gif",
        "elf",
        "exe",
        "gzip",
        "rtf",
        "random-64k",
        "random-4k",
        "random-300",
        "controls",
    ],
)
def test_refuses_what_is_not_a_supported_document(data: bytes) -> None:
    assert detect_content_type(data) is None


def test_the_name_and_claimed_type_do_not_decide() -> None:
    pdf = pdf_bytes(["x"])
    assert detect_content_type(pdf, filename="notes.txt") == PDF
    assert detect_content_type(b"just words\n", filename="scan.pdf") == TEXT
    assert detect_content_type(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" * 64, filename="a.docx") is None


def test_name_only_breaks_a_tie_between_text_and_html() -> None:
    fragment = b"<b>Exhibit A</b> is attached.\n"
    assert detect_content_type(fragment, filename="exhibit.html") == HTML
    assert detect_content_type(fragment, filename="exhibit.txt") == TEXT


def test_docx_is_a_zip_with_a_word_document(write: Write) -> None:
    data = docx_bytes(lambda d: d.add_paragraph("Hello"))
    assert detect_content_type(data[:SNIFF_BYTES]) == DOCX
    assert detect_file(write(data, "renamed.pdf")) == DOCX


def test_docx_found_from_the_zip_directory_wherever_the_document_sits(write: Write) -> None:
    """The central directory is at the end; a big picture may come before word/document.xml."""
    template = zipfile.ZipFile(io.BytesIO(docx_bytes(lambda d: d.add_paragraph("Late"))))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word/media/image1.bin", random.Random(5).randbytes(3 * SNIFF_BYTES))
        for info in template.infolist():
            archive.writestr(info.filename, template.read(info.filename), zipfile.ZIP_DEFLATED)
    path = write(out.getvalue(), "big.docx")
    assert detect_file(path) == DOCX
    assert read_all(path, DOCX) == ["Late"]


def test_detect_file_reads_a_file_object_and_leaves_it_where_it_was() -> None:
    data = docx_bytes(lambda d: d.add_paragraph("Hello"))
    upload = io.BytesIO(data)
    upload.seek(10)
    assert detect_file(upload) == DOCX
    assert upload.tell() == 10


@pytest.mark.parametrize(
    "entries",
    [
        {"notes.txt": "hello"},
        {"[Content_Types].xml": "<Types/>", "xl/workbook.xml": "<workbook/>"},  # xlsx
        {"mimetype": "application/vnd.oasis.opendocument.text", "content.xml": "<x/>"},  # odt
        {
            "[Content_Types].xml": '<Types><Override PartName="/word/document.xml" ContentType='
            '"application/vnd.ms-word.document.macroEnabled.main+xml"/></Types>',
            "word/document.xml": "<w:document/>",
        },  # docm
    ],
    ids=["zip", "xlsx", "odt", "docm"],
)
def test_other_zips_are_not_docx(write: Write, entries: dict[str, str]) -> None:
    data = zip_bytes(entries)
    assert detect_content_type(data) is None
    assert detect_file(write(data)) is None


def test_users_are_told_the_supported_formats_in_one_sentence() -> None:
    assert supported_description() == "PDF, Word (.docx), plain text, HTML, PNG, JPEG or TIFF"
    assert set(SUPPORTED_FORMATS) == SUPPORTED_TYPES


_ONE_PAGE_OF_EACH_FORMAT: dict[str, Callable[[], bytes]] = {
    PDF: lambda: pdf_bytes(["Hello"]),
    DOCX: lambda: docx_bytes(lambda d: d.add_paragraph("Hello")),
    TEXT: lambda: b"Hello\n",
    HTML: lambda: b"<html><body><p>Hello</p></body></html>",
    IMAGE_PNG: lambda: image_bytes(Image.new("L", (8, 8), 255), "PNG"),
    IMAGE_JPEG: lambda: image_bytes(Image.new("L", (8, 8), 255), "JPEG"),
    IMAGE_TIFF: lambda: image_bytes(Image.new("L", (8, 8), 255), "TIFF"),
}


@pytest.mark.parametrize("content_type", list(SUPPORTED_FORMATS))
def test_every_format_users_are_told_of_is_detected_and_read(
    write: Write, content_type: str
) -> None:
    path = write(_ONE_PAGE_OF_EACH_FORMAT[content_type]())
    assert detect_file(path) == content_type
    with open_document(path, content_type) as reader:
        assert reader.page_count == 1


# --- PDF --------------------------------------------------------------------------------


def test_pdf_pages_come_back_in_order_with_their_words(write: Write) -> None:
    words = ["alpha", "bravo", "charlie", "delta"]
    path = write(pdf_bytes([f"Page about {w} and nothing else" for w in words]))
    with open_document(path, PDF) as reader:
        assert reader.page_count == 4
        assert "charlie" in reader.page_text(2)  # any order, one page at a time
        for index, word in enumerate(words):
            text = reader.page_text(index)
            assert word in text
            assert not set(words) - {word} & set(text.split())


def test_a_pdf_with_junk_before_its_header_opens(write: Write) -> None:
    path = write(b"%%EOF\r\n" + pdf_bytes(["Opinion of the court"]))
    assert detect_file(path) == PDF
    assert "Opinion of the court" in read_all(path, PDF)[0]


def test_a_pdf_pdfium_refuses_is_read_by_the_tolerant_reader(write: Write) -> None:
    """The trailer lost its /Root: pdfium gives up, pypdf finds the catalog by scanning."""
    damaged = pdf_bytes(["Alpha page", "Bravo page"]).replace(b"/Root", b"/Rooot")
    pages = read_all(write(damaged), PDF)
    assert [page.strip() for page in pages] == ["Alpha page", "Bravo page"]


def test_a_pdf_needing_a_password_is_encrypted(write: Write) -> None:
    for algorithm in ("RC4-128", "AES-256"):
        path = write(
            encrypted_pdf(user_password="secret", owner_password=None, algorithm=algorithm)
        )
        with pytest.raises(EncryptedDocument) as caught:
            open_document(path, PDF)
        assert caught.value.code == "ENCRYPTED_DOCUMENT"
        assert caught.value.permanent
        assert "password" in caught.value.message
        assert "pdfium" not in caught.value.message  # technical detail stays in .detail


def test_a_pdf_with_an_empty_user_password_is_not_encrypted_for_us(write: Write) -> None:
    for algorithm in ("RC4-128", "AES-256"):
        path = write(encrypted_pdf(user_password="", owner_password="owner", algorithm=algorithm))
        assert "Zephyr" in read_all(path, PDF)[0]


def test_a_pdf_over_the_page_limit_is_too_complex(write: Write) -> None:
    path = write(pdf_bytes(["one", "two", "three"]))
    with pytest.raises(DocumentTooComplex) as caught:
        open_document(path, PDF, max_pages=2)
    assert caught.value.code == "DOCUMENT_TOO_COMPLEX"
    assert read_all(path, PDF, max_pages=3)[2].strip() == "three"


def test_too_much_text_is_too_complex(write: Write) -> None:
    path = write(pdf_bytes(["word " * 200] * 3))
    with pytest.raises(DocumentTooComplex):
        read_all(path, PDF, max_text_bytes=1500)
    assert len(read_all(path, PDF, max_text_bytes=100_000)) == 3


@pytest.mark.parametrize(
    "data",
    [
        pdf_bytes(["A whole page of text"] * 3)[:1024],
        b"%PDF-1.4\n" + random.Random(6).randbytes(5000),
        b"%PDF-1.3\n%%EOF\n",
        b"",
    ],
    ids=["first-1kb", "header-then-garbage", "header-only", "empty"],
)
def test_broken_pdfs_are_corrupt(write: Write, data: bytes) -> None:
    path = write(data)
    with pytest.raises(CorruptDocument) as caught:
        read_all(path, PDF)
    assert caught.value.code == "CORRUPT_DOCUMENT"
    assert caught.value.permanent


def test_pages_out_of_range_are_an_error(write: Write) -> None:
    with open_document(write(pdf_bytes(["only"])), PDF) as reader, pytest.raises(IndexError):
        reader.page_text(1)


def test_a_missing_file_is_not_a_corrupt_document(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_document(tmp_path / "gone.pdf", PDF)


# --- DOCX -------------------------------------------------------------------------------


def _memo(document: Any) -> None:
    document.sections[0].header.paragraphs[0].text = "Matter 42 - Privileged"
    document.sections[0].footer.paragraphs[0].text = "Page footer text"
    document.add_paragraph("Opening alpha paragraph.")
    table = document.add_table(rows=2, cols=3)
    for r, row in enumerate([["Name", "Role", "Date"], ["Ada", "Witness", "2024-01-02"]]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph("Closing the first page").add_run().add_break(WD_BREAK.PAGE)
    document.add_paragraph("Second page bravo.")
    section = document.add_section(WD_SECTION.NEW_PAGE)
    section.header.is_linked_to_previous = False
    section.header.paragraphs[0].text = "Matter 42 - Privileged"  # same text, its own part
    document.add_paragraph("Third page charlie.")
    document.add_section(WD_SECTION.CONTINUOUS)
    document.add_paragraph("Still the third page delta.")
    heading = document.add_paragraph("Fourth page echo.")
    heading.paragraph_format.page_break_before = True


def test_docx_text_in_document_order_split_at_page_breaks(write: Write) -> None:
    pages = read_all(write(docx_bytes(_memo)), DOCX)
    assert len(pages) == 4
    first, second, third, fourth = pages
    assert first.index("Opening alpha") < first.index("Name\tRole\tDate") < first.index("Closing")
    assert "Name\tRole\tDate\nAda\tWitness\t2024-01-02" in first
    assert "bravo" in second and "bravo" not in first
    assert "charlie" in third and "delta" in third
    assert "echo" in fourth and "echo" not in third


def test_docx_headers_and_footers_appear_once(write: Write) -> None:
    text = "\n".join(read_all(write(docx_bytes(_memo)), DOCX))
    assert text.count("Matter 42 - Privileged") == 1
    assert text.count("Page footer text") == 1


def test_docx_page_break_before_the_first_paragraph_adds_no_blank_page(write: Write) -> None:
    def build(document: Any) -> None:
        document.add_paragraph("Title page").paragraph_format.page_break_before = True
        document.add_paragraph("More")

    assert read_all(write(docx_bytes(build)), DOCX) == ["Title page\nMore"]


def test_an_empty_docx_still_has_one_page(write: Write) -> None:
    assert read_all(write(docx_bytes(lambda d: None)), DOCX) == [""]


def with_footnote(data: bytes, note: str) -> bytes:
    """Add a footnote (python-docx cannot) referenced from the first run of the document."""
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    notes = (
        f'<w:footnotes xmlns:w="{w}">'
        '<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>'
        f'<w:footnote w:id="1"><w:p><w:r><w:t>{note}</w:t></w:r></w:p></w:footnote>'
        "</w:footnotes>"
    )
    source = zipfile.ZipFile(io.BytesIO(data))
    parts = {name: source.read(name) for name in source.namelist()}
    parts["word/footnotes.xml"] = notes.encode()
    parts["word/_rels/document.xml.rels"] = parts["word/_rels/document.xml.rels"].replace(
        b"</Relationships>",
        b'<Relationship Id="rIdNote" Type="http://schemas.openxmlformats.org/officeDocument/'
        b'2006/relationships/footnotes" Target="footnotes.xml"/></Relationships>',
    )
    parts["[Content_Types].xml"] = parts["[Content_Types].xml"].replace(
        b"</Types>",
        b'<Override PartName="/word/footnotes.xml" ContentType="application/vnd.openxml'
        b'formats-officedocument.wordprocessingml.footnotes+xml"/></Types>',
    )
    parts["word/document.xml"] = parts["word/document.xml"].replace(
        b"</w:t></w:r>", b'</w:t></w:r><w:r><w:footnoteReference w:id="1"/></w:r>', 1
    )
    return zip_bytes(parts)


def test_docx_footnotes_are_at_the_foot_of_their_page(write: Write) -> None:
    def build(document: Any) -> None:
        document.add_paragraph("The court so held.")
        document.add_paragraph("End of page one.").add_run().add_break(WD_BREAK.PAGE)
        document.add_paragraph("Page two.")

    data = with_footnote(docx_bytes(build), "See Smith v. Jones, 123 U.S. 456.")
    assert read_all(write(data), DOCX) == [
        "The court so held.\nEnd of page one.\nSee Smith v. Jones, 123 U.S. 456.",
        "Page two.",
    ]


@pytest.mark.parametrize(
    "data",
    [
        zip_bytes({"notes.txt": "not a word document"}),
        zip_bytes({"word/document.xml": "<w:document"}),  # a name alone is not a document
        docx_bytes(lambda d: d.add_paragraph("cut short"))[:2000],
        random.Random(7).randbytes(3000),
    ],
    ids=["plain-zip", "broken-xml", "truncated", "random"],
)
def test_a_docx_python_docx_cannot_open_is_corrupt(write: Write, data: bytes) -> None:
    with pytest.raises(CorruptDocument):
        open_document(write(data), DOCX)


def test_a_docx_inflating_past_the_text_limit_is_too_complex(write: Write) -> None:
    path = write(docx_bytes(lambda d: d.add_paragraph("x" * 50_000)))
    with pytest.raises(DocumentTooComplex):
        open_document(path, DOCX, max_text_bytes=20_000)


# --- plain text -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("café naïve façade", "latin-1"),
        ("Le café est à côté de la façade. Ça m'étonne qu'il ait été élu.", "cp1252"),
        ("Zażółć gęślą jaźń. Mówię po polsku, ale słabo.", "cp1250"),
        ("Все люди рождаются свободными и равными в своём достоинстве и правах.", "cp1251"),
        ("Все люди рождаются свободными и равными в своём достоинстве и правах.", "koi8_r"),
        ("Они составляли ясные планы и должны поступать в духе братства.", "mac_cyrillic"),
        ("すべての人間は、生まれながらにして自由であり、平等である。", "shift_jis"),
        ("Unicode text: “quotes”, emoji 🙂 and 日本語.", "utf-8"),
        ("Unicode text with a BOM: Grüße.", "utf-8-sig"),
        ("UTF-16 text: Grüße, 日本語.", "utf-16"),
        ("UTF-16BE text: Grüße, 日本語.", "utf-16-be"),
    ],
)
def test_text_decodes_in_its_own_encoding(write: Write, text: str, encoding: str) -> None:
    data = (text + "\r\n").encode(encoding)
    path = write(data, "notes.txt")
    assert detect_file(path) == TEXT
    assert read_all(path, TEXT) == [text + "\n"]


def test_text_pages_split_at_form_feeds(write: Write) -> None:
    data = "First page\n\fSecond page\n\fThird page\n\f".encode("utf-16")
    assert read_all(write(data), TEXT) == ["First page\n", "Second page\n", "Third page\n"]


def test_a_late_non_ascii_byte_does_not_break_decoding(write: Write) -> None:
    data = b"plain english line\n" * 8000 + "the café at the end\n".encode("latin-1")
    assert len(data) > SNIFF_BYTES
    (page,) = read_all(write(data), TEXT)
    assert page.endswith("the café at the end\n")


def test_utf8_with_a_stray_byte_stays_utf8(write: Write) -> None:
    text = "Le café est à côté de la façade. Déjà vu.\n" * 50
    data = text.encode() + b"Stray \x96 dash.\n" + text.encode()
    path = write(data)
    assert detect_file(path) == TEXT
    (page,) = read_all(path, TEXT)
    assert page == text + "Stray \ufffd dash.\n" + text


def test_text_over_the_page_limit_is_too_complex(write: Write) -> None:
    with pytest.raises(DocumentTooComplex):
        open_document(write(b"a\fb\fc\fd"), TEXT, max_pages=3)


# --- HTML -------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html><head><title>Docket head title</title>
<style>.hidden { color: red }</style>
<script>var trackingSecret = "do-not-index";</script></head>
<body>
<noscript>Enable JavaScript please</noscript>
<template><p>Template text</p></template>
<h1>Docket Report</h1>
<p>Filed   on
   <b>January 5</b>,  2021.</p>
<table><tr><th>Date</th><th>Entry</th></tr>
<tr><td>01/05/2021</td><td>Complaint filed</td></tr></table>
<div hidden>Hidden note</div>
<script>document.write("injected")</script>
<p>Last line &amp; done.</p>
</body></html>
"""


def test_html_gives_only_the_visible_text(write: Write) -> None:
    (text,) = read_all(write(PAGE.encode(), "docket.html"), HTML)
    for invisible in (
        "trackingSecret",
        "color: red",
        "Enable JavaScript",
        "Template text",
        "Docket head title",
        "Hidden note",
        "injected",
    ):
        assert invisible not in text
    assert "Docket Report\n" in text
    assert "Filed on January 5, 2021." in text
    assert "Date\tEntry\n01/05/2021\tComplaint filed" in text
    assert text.endswith("Last line & done.")
    assert "\n\n\n" not in text


def test_html_is_decoded_by_its_meta_charset(write: Write) -> None:
    page = '<html><head><meta charset="windows-1251"></head><body>Суд постановил</body></html>'
    assert read_all(write(page.encode("cp1251")), HTML) == ["Суд постановил"]


def test_html_saved_as_utf8_under_a_stale_latin1_meta(write: Write) -> None:
    page = '<html><head><meta charset="iso-8859-1"></head><body>Grüße aus Köln</body></html>'
    assert read_all(write(page.encode()), HTML) == ["Grüße aus Köln"]


def test_html_with_a_wrong_meta_charset_is_still_readable(write: Write) -> None:
    page = '<html><head><meta charset="utf-8"></head><body><p>Le café à côté.</p></body></html>'
    assert read_all(write(page.encode("cp1252")), HTML) == ["Le café à côté."]


def test_html_decoded_right_when_its_first_accent_is_far_in(write: Write) -> None:
    page = b"<html><body>" + b"<p>plain words</p>\n" * 5000 + "<p>Déjà vu</p>".encode("cp1252")
    (text,) = read_all(write(page + b"</body></html>"), HTML)
    assert text.endswith("plain words\nDéjà vu")


def test_broken_html_is_read_tolerantly(write: Write) -> None:
    page = b"<html><body><p>Unclosed <b>bold <table><tr><td>cell one<td>cell two"
    (text,) = read_all(write(page), HTML)
    assert "Unclosed bold" in text and "cell one\tcell two" in text


def test_deeply_nested_html_keeps_the_text_below_libxml2s_depth_limit(write: Write) -> None:
    # libxml2 builds no tree deeper than 2,048 levels and silently drops what is below.
    depth = 5000
    page = "".join(f"<div><span>level {n}</span>" for n in range(depth)) + " The end."
    page += "</div>" * depth
    path = write(page.encode(), "deep.html")
    assert path.stat().st_size < 200_000
    with open_document(path, HTML) as reader:
        text, note = reader.page_text(0), reader.page_note(0)
    assert note == ""
    assert "level 0\nlevel 1\n" in text and "level 4999 The end." in text


def test_flat_html_past_its_node_budget_is_read_up_to_there_and_says_so(write: Write) -> None:
    page = "<html><body>" + "".join(f"<p>para {n}</p>" for n in range(30_000)) + "</body></html>"
    path = write(page.encode(), "flat.html")
    with open_document(path, HTML, max_html_nodes=10_000) as reader:
        text, note = reader.page_text(0), reader.page_note(0)
    lines = text.splitlines()
    assert lines[0] == "para 0" and "para 9990" in lines and "para 10000" not in lines
    assert note == (
        "Only part of this page was read: it has more than 10,000 HTML elements, the limit; "
        "the text after them is missing."
    )
    with open_document(path, HTML) as reader:  # within the default budget: all of it
        assert reader.page_text(0).splitlines()[-1] == "para 29999" and not reader.page_note(0)


# --- the real-world corpus ----------------------------------------------------------------


MANIFEST = corpus_manifest()
ERRORS = {
    "CORRUPT_DOCUMENT": CorruptDocument,
    "ENCRYPTED_DOCUMENT": EncryptedDocument,
    "DOCUMENT_TOO_COMPLEX": DocumentTooComplex,
}


def _ids(rows: list[dict[str, str]]) -> list[str]:
    return [row["file"] for row in rows]


@pytest.mark.corpus
@pytest.mark.parametrize("row", MANIFEST, ids=_ids(MANIFEST))
def test_corpus_file_is_detected_from_its_bytes(row: dict[str, str]) -> None:
    path = CORPUS / row["file"]
    detected = detect_file(path)
    head = detect_content_type(path.read_bytes()[:SNIFF_BYTES])
    if row["expect"].startswith("REJECTED"):
        assert detected is None and head is None
    else:
        assert detected in SUPPORTED_TYPES
        assert head == detected


def _outcomes(expect: str) -> list[str]:
    """'EITHER a | b' lists alternatives; anything else is one outcome."""
    if expect.startswith("EITHER "):
        return [part.strip() for part in expect.removeprefix("EITHER ").split("|")]
    return [expect]


def _read_outcome(path: Path) -> tuple[str, list[str]]:
    """('COMPLETED', page texts) or ('FAILED <CODE>', [])."""
    try:
        return "COMPLETED", read_all(path, detect_file(path))
    except (CorruptDocument, EncryptedDocument, DocumentTooComplex) as error:
        return f"FAILED {error.code}", []


def _meets(outcome: str, pages: list[str], expect: str) -> bool:
    words = expect.split()
    if words[0] == "FAILED":
        return outcome == expect
    if outcome != "COMPLETED":
        return False
    count = next(w for w in words if w.startswith("pages"))
    if count.startswith("pages>="):
        right_count = len(pages) >= int(count.removeprefix("pages>="))
    else:
        right_count = len(pages) == int(count.removeprefix("pages="))
    has_text = "ocr" in words or not pages or any(page.strip() for page in pages)
    return right_count and has_text


READABLE = [row for row in MANIFEST if not row["expect"].startswith("REJECTED")]


@pytest.mark.corpus
@pytest.mark.parametrize("row", READABLE, ids=_ids(READABLE))
def test_corpus_file_reads_as_the_manifest_expects(row: dict[str, str]) -> None:
    outcome, pages = _read_outcome(CORPUS / row["file"])
    alternatives = _outcomes(row["expect"])
    assert any(_meets(outcome, pages, expect) for expect in alternatives), (
        f"{row['file']}: got {outcome} with {len(pages)} pages; expected {row['expect']}"
    )


def _corpus_text(name: str) -> str:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"{name} is not in the corpus")
    return "\n".join(read_all(path, detect_file(path)))


@pytest.mark.corpus
@pytest.mark.parametrize(
    ("name", "present", "absent"),
    [
        ("missouri.pdf", ["In the Missouri Court of Appeals", "Jagels"], []),
        ("dmca.pdf", ["implemented", "circumvention"], ["imple-"]),  # hyphenated at line ends
        ("jo.pdf", ["わたくし"], []),  # pypdf would give mojibake here
        ("xfa_issue14315.pdf", ["Adobe Reader 8"], []),
        ("sample-russian.txt", ["составляли"], ["составлЯли"]),  # MacCyrillic, not cp1251
        ("ned.html", ["USA v. Benz", "Docket Text"], ["<script", "top.location"]),
    ],
)
def test_corpus_text_reads_as_a_person_would_read_it(
    name: str, present: list[str], absent: list[str]
) -> None:
    text = _corpus_text(name)
    for words in present:
        assert words in text
    for words in absent:
        assert words not in text


@pytest.mark.corpus
def test_corpus_docx_headers_are_not_repeated() -> None:
    text = _corpus_text("word-docx.docx")
    assert text.count("Docket No. MD17-00012") == 1
    assert "Applicant" in text


# --- images: scanned pages, one per frame ----------------------------------------------


def image_bytes(image: Any, format: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=format, **options)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` × ``height`` pixels and holding none: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("format", "content_type"), [("PNG", IMAGE_PNG), ("JPEG", IMAGE_JPEG)])
def test_an_image_is_one_page_with_no_text_layer(
    write: Write, format: str, content_type: str
) -> None:
    path = write(image_bytes(Image.new("RGB", (640, 480), "white"), format))
    assert detect_file(path) == content_type
    with open_document(path, content_type) as reader:
        assert reader.page_count == 1 and reader.page_text(0) == ""
        page = reader.render_page(0, dpi=300, max_pixels=10**6)
    assert page.image.mode == "L" and page.image.size == (640, 480) and not page.reduced


def test_a_tiff_has_a_page_per_frame(write: Write) -> None:
    frames = [Image.new("L", (300, 200), 255), Image.new("1", (200, 300), 0)]
    data = image_bytes(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    path = write(data)
    assert detect_file(path) == IMAGE_TIFF
    with open_document(path, IMAGE_TIFF) as reader:
        assert reader.page_count == 2
        assert reader.render_page(1, dpi=300, max_pixels=10**6).image.size == (200, 300)


def test_an_image_over_the_pixel_limit_is_too_complex_at_open(write: Write) -> None:
    path = write(image_bytes(Image.new("L", (2000, 1000), 255), "PNG"))
    with pytest.raises(DocumentTooComplex):
        open_document(path, IMAGE_PNG, max_image_pixels=1_000_000)
    # Only the header is read: 400 megapixels declared in 57 bytes are refused before decoding.
    with pytest.raises(DocumentTooComplex):
        open_document(write(png_header_only(20_000, 20_000)), IMAGE_PNG)


def test_a_damaged_image_is_corrupt(write: Write) -> None:
    with pytest.raises(CorruptDocument):
        open_document(write(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4), IMAGE_PNG)


def test_a_big_image_is_drawn_within_the_pixel_budget(write: Write) -> None:
    path = write(image_bytes(Image.new("L", (8000, 5000), 255), "PNG"))  # 40 megapixels
    with open_document(path, IMAGE_PNG) as reader:
        page = reader.render_page(0, dpi=300, max_pixels=25_000_000)
    assert page.reduced and page.pixels <= 25_000_000
    assert page.image.size == (6324, 3952)  # the same proportions


def test_a_transparent_image_is_read_as_dark_on_white(write: Write) -> None:
    image = Image.new("RGBA", (400, 200), (0, 0, 0, 0))  # transparent black
    ImageDraw.Draw(image).rectangle((100, 50, 300, 150), fill=(0, 0, 0, 255))
    with open_document(write(image_bytes(image, "PNG")), IMAGE_PNG) as reader:
        page = reader.render_page(0, dpi=300, max_pixels=10**6)
    assert page.image.getpixel((10, 10)) == 255 and page.image.getpixel((200, 100)) == 0


def test_a_huge_pdf_page_is_drawn_at_a_lower_resolution(write: Write) -> None:
    pdf = FPDF(unit="pt", format=(14400, 14400))  # 200 × 200 inches
    pdf.add_page()
    pdf.set_font("helvetica", size=400)
    pdf.text(1000, 2000, "Site plan")
    with open_document(write(bytes(pdf.output())), PDF) as reader:
        page = reader.render_page(0, dpi=300, max_pixels=25_000_000)
    assert page.image.mode == "L" and page.pixels <= 25_000_000
    assert page.reduced and round(page.dpi or 0) == 25  # not 60,000 × 60,000 pixels at 300 dpi


def test_a_pdf_page_is_drawn_at_the_resolution_asked(write: Write) -> None:
    with open_document(write(pdf_bytes(["One page."])), PDF) as reader:  # A4
        page = reader.render_page(0, dpi=150, max_pixels=25_000_000)
    assert page.image.size == (1241, 1754) and not page.reduced and page.dpi == 150


def test_text_formats_have_no_page_images(write: Write) -> None:
    with open_document(write(b"Just words.\n"), TEXT) as reader, pytest.raises(RenderError):
        reader.render_page(0, dpi=300, max_pixels=10**6)
