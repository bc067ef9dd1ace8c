"""Open a stored document and read its text one page at a time.

Streaming rule: a reader holds the open document, not its text. A PDF page is
loaded, its text extracted and the page and text page closed again inside one
:meth:`DocumentReader.page_text` call, so a 5,000-page PDF costs the memory of
one page; a plain-text file is read page by page from byte offsets found at
open. DOCX and HTML have no page-level access in their parsers, so their text
is extracted once at open (the parsed tree is dropped straight after).

Empty-password rule: a PDF is encrypted *for us* only if it cannot be opened
without a password. Many PDFs are encrypted with an empty user password and
permission flags (dmca.pdf); every viewer opens them silently, and so must we.
``is_encrypted`` is therefore never checked on its own: only a failed open
with the empty password raises :class:`EncryptedDocument`.
"""

from __future__ import annotations

import logging
import re
import warnings
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import docx
import lxml.etree
import lxml.html
import pypdf
import pypdfium2
from docx.opc.constants import RELATIONSHIP_TYPE as RT
from docx.oxml.parser import parse_xml
from PIL import Image
from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

from processing.documents.detect import (
    DOCX,
    HTML,
    IMAGE_JPEG,
    IMAGE_PNG,
    IMAGE_TIFF,
    IMAGE_TYPES,
    PDF,
    TEXT,
)
from processing.documents.encodings import (
    CHUNK_BYTES,
    SNIFF_BYTES,
    code_unit,
    html_encoding,
    text_codec,
    validated_codec,
)
from processing.documents.render import RenderedPage, RenderError, grayscale_within, pdf_scale
from processing.errors import CorruptDocument, DocumentTooComplex, EncryptedDocument

logger = logging.getLogger(__name__)

__all__ = ["DocumentReader", "open_document"]


def open_document(
    path: Path | str,
    content_type: str,
    *,
    max_pages: int = 5000,
    max_text_bytes: int | None = None,
    max_image_pixels: int = 150_000_000,
) -> DocumentReader:
    """Open ``path`` as ``content_type`` (PDF, DOCX, TEXT, HTML or an image) page by page.

    Raises :class:`CorruptDocument`, :class:`EncryptedDocument` or
    :class:`DocumentTooComplex` (over ``max_pages`` pages, over
    ``max_text_bytes`` of text or of uncompressed markup, or an image page over
    ``max_image_pixels``). ``OSError`` from a missing or unreadable file is not
    the document's fault and is not caught.
    """
    path = Path(path)
    path.stat()  # a missing file is a storage problem, not a corrupt document
    budget = _TextBudget(max_text_bytes)
    if content_type == PDF:
        reader: DocumentReader = _open_pdf(path, budget)
    elif content_type == DOCX:
        reader = _DocxReader(path, budget)
    elif content_type == TEXT:
        reader = _TextReader(path, budget)
    elif content_type == HTML:
        reader = _HtmlReader(path, budget)
    elif content_type in IMAGE_TYPES:
        reader = _ImageReader(path, content_type, max_pages=max_pages, max_pixels=max_image_pixels)
    else:
        raise ValueError(f"no reader for content type {content_type!r}")
    if reader.page_count > max_pages:
        reader.close()
        raise DocumentTooComplex(detail=f"{reader.page_count} pages; the limit is {max_pages}")
    return reader


class DocumentReader(ABC):
    """An open document: ``page_count`` pages, read one at a time with :meth:`page_text`.

    Use it as a context manager, or call :meth:`close`.
    """

    content_type: str
    page_count: int

    @abstractmethod
    def page_text(self, index: int) -> str:
        """The text of page ``index`` (0-based); empty for a page without a text layer."""

    @abstractmethod
    def close(self) -> None:
        """Release the file, the parser and the text held; safe to call twice."""

    def render_page(self, index: int, *, dpi: float, max_pixels: int) -> RenderedPage:
        """Page ``index`` as a grayscale image at ``dpi``, drawn smaller if over ``max_pixels``.

        Raises :class:`RenderError` when the page cannot be drawn: always for
        formats without page images (text, HTML, DOCX) and for PDFs only pypdf
        could open (it cannot draw).
        """
        raise RenderError("The page could not be drawn as an image.")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.page_count:
            raise IndexError(f"page {index} of a {self.page_count}-page document")


class _TextBudget:
    """Counts extracted text against ``max_text_bytes``, each page once."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._counted: dict[int, int] = {}
        self._total = 0

    def charge_bytes(self, size: int, what: str) -> None:
        """Fail if ``size`` bytes of input (``what``) alone are over the limit."""
        if self.limit is not None and size > self.limit:
            raise DocumentTooComplex(detail=f"{size} bytes of {what}; the limit is {self.limit}")

    def charge_page(self, index: int, text: str) -> str:
        """Count a page's text (once) and return it; fail when the total is over the limit."""
        if self.limit is not None and index not in self._counted:
            size = len(text.encode("utf-8", "surrogatepass"))
            self._counted[index] = size
            self._total += size
            if self._total > self.limit:
                raise DocumentTooComplex(
                    detail=f"over {self.limit} bytes of text by page {index + 1}"
                )
        return text


def _clean(text: str) -> str:
    """Normalise line ends and drop what no user wants and PostgreSQL cannot store (NUL)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text


# --- PDF -------------------------------------------------------------------------------

_PASSWORD_ERRORS = {pypdfium2.raw.FPDF_ERR_PASSWORD, pypdfium2.raw.FPDF_ERR_SECURITY}


def _open_pdf(path: Path, budget: _TextBudget) -> DocumentReader:
    """pdfium first (fast, streams, right on CJK); pypdf when pdfium cannot load the file."""
    try:
        pdf = pypdfium2.PdfDocument(str(path))
    except pypdfium2.PdfiumError as error:
        if error.err_code in _PASSWORD_ERRORS:
            raise EncryptedDocument(detail=f"pdfium: {error}") from error
        return _PypdfReader(path, budget, pdfium_error=str(error))
    if len(pdf) == 0:
        # pdfium loaded it but sees no page: let the tolerant reader look too.
        pdf.close()
        return _PypdfReader(path, budget, pdfium_error="no pages", pdfium_loaded=True)
    return _PdfiumReader(pdf, budget)


class _PdfiumReader(DocumentReader):
    content_type = PDF

    def __init__(self, pdf: pypdfium2.PdfDocument, budget: _TextBudget) -> None:
        self._pdf: pypdfium2.PdfDocument | None = pdf
        self._budget = budget
        self.page_count = len(pdf)

    def page_text(self, index: int) -> str:
        self._check_index(index)
        if self._pdf is None:
            raise ValueError("the document is closed")
        try:
            page = self._pdf[index]
        except pypdfium2.PdfiumError as error:
            raise CorruptDocument(detail=f"page {index + 1}: {error}") from error
        try:
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_range()
            finally:
                textpage.close()
        finally:
            page.close()
        # U+FFFE is pdfium's mark for a hyphen that broke a word at a line end.
        return self._budget.charge_page(index, _clean(text).replace("\ufffe", ""))

    def render_page(self, index: int, *, dpi: float, max_pixels: int) -> RenderedPage:
        self._check_index(index)
        if self._pdf is None:
            raise ValueError("the document is closed")
        try:
            page = self._pdf[index]
        except pypdfium2.PdfiumError as error:
            raise RenderError("The page could not be loaded.") from error
        try:
            scale = pdf_scale(*page.get_size(), dpi=dpi, max_pixels=max_pixels)
            # The image shares the bitmap's buffer, which Python owns (new_native).
            image = page.render(scale=scale, grayscale=True, limit_image_cache=True).to_pil()
        except (pypdfium2.PdfiumError, ValueError, MemoryError) as error:
            raise RenderError("The page could not be drawn.") from error
        finally:
            page.close()
        return RenderedPage(image, dpi=scale * 72, reduced=scale < dpi / 72, max_pixels=max_pixels)

    def close(self) -> None:
        if self._pdf is not None:
            self._pdf.close()
            self._pdf = None


class _PypdfReader(DocumentReader):
    """The tolerant fallback for files pdfium refuses (it rebuilds broken xref tables).

    pypdf reads the whole file into memory; that is acceptable for the rare file
    that needs it, and uploads are size-limited.
    """

    content_type = PDF

    def __init__(
        self, path: Path, budget: _TextBudget, *, pdfium_error: str, pdfium_loaded: bool = False
    ) -> None:
        self._budget = budget
        try:
            reader = pypdf.PdfReader(path, strict=False)
            if reader.is_encrypted and not reader.decrypt(""):
                raise EncryptedDocument(detail=f"pdfium: {pdfium_error}; pypdf: needs a password")
            self.page_count = len(reader.pages)
            declares_no_pages = self.page_count == 0 and _declares_no_pages(reader)
        except (EncryptedDocument, OSError, MemoryError):
            raise
        except (FileNotDecryptedError, DependencyError) as error:
            raise EncryptedDocument(detail=f"pdfium: {pdfium_error}; pypdf: {error}") from error
        except Exception as error:  # pypdf raises all sorts on broken files
            raise CorruptDocument(detail=f"pdfium: {pdfium_error}; pypdf: {error!r}") from error
        if self.page_count == 0 and not (declares_no_pages or pdfium_loaded):
            # A damaged file where pypdf found no page tree: not an empty document.
            raise CorruptDocument(detail=f"pdfium: {pdfium_error}; pypdf: no page tree")
        self._reader: pypdf.PdfReader | None = reader
        logger.info("pdfium could not load %s (%s); read with pypdf", path.name, pdfium_error)

    def page_text(self, index: int) -> str:
        self._check_index(index)
        if self._reader is None:
            raise ValueError("the document is closed")
        try:
            text = self._reader.pages[index].extract_text()
        except (OSError, MemoryError):
            raise
        except Exception as error:
            raise CorruptDocument(detail=f"page {index + 1}: {error!r}") from error
        return self._budget.charge_page(index, _clean(text))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _declares_no_pages(reader: pypdf.PdfReader) -> bool:
    """True when the catalog's page tree says, in so many words, that there are no pages."""
    try:
        pages = reader.trailer["/Root"]["/Pages"]
        return int(pages.get("/Count", -1)) == 0 and not pages.get("/Kids")
    except (KeyError, TypeError, ValueError, AttributeError, PdfReadError):
        return False


# --- DOCX ------------------------------------------------------------------------------

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_P, _TBL, _TR, _TC, _SDT, _SDT_CONTENT = (
    f"{_W}p",
    f"{_W}tbl",
    f"{_W}tr",
    f"{_W}tc",
    f"{_W}sdt",
    f"{_W}sdtContent",
)
_WRAPPERS = {_SDT, _SDT_CONTENT, f"{_W}customXml", f"{_W}smartTag"}
# Properties, deleted or moved-away text, field instructions and the
# duplicate fallback of alternate content: none of it is text the reader sees.
_SKIPPED = {
    f"{_W}pPr",
    f"{_W}rPr",
    f"{_W}sdtPr",
    f"{_W}sectPr",
    f"{_W}tblPr",
    f"{_W}trPr",
    f"{_W}tcPr",
    f"{_W}del",
    f"{_W}moveFrom",
    f"{_W}delText",
    f"{_W}instrText",
    f"{_W}delInstrText",
    f"{_W}fldData",
    _MC_FALLBACK,
}
_NEW_PAGE_SECTIONS = {"nextPage", "oddPage", "evenPage"}
_FALSE = {"0", "false", "off"}


class _DocxReader(DocumentReader):
    """Pages end at explicit page breaks, paragraphs with page-break-before, and
    sections that start on a new page. Word's own page count (docProps/app.xml)
    is a leftover of its last layout and is never used.
    """

    content_type = DOCX

    def __init__(self, path: Path, budget: _TextBudget) -> None:
        _check_zip_size(path, budget)
        try:
            document = docx.Document(str(path))
            pages = _DocxPaginator(document).pages()
        except (OSError, MemoryError):
            raise
        except Exception as error:  # PackageNotFoundError, BadZipFile, KeyError, XMLSyntaxError…
            raise CorruptDocument(detail=f"python-docx: {error!r}") from error
        self._pages = [budget.charge_page(i, text) for i, text in enumerate(pages)]
        self.page_count = len(self._pages)

    def page_text(self, index: int) -> str:
        self._check_index(index)
        return self._pages[index]

    def close(self) -> None:
        self._pages = []


def _check_zip_size(path: Path, budget: _TextBudget) -> None:
    """Refuse a DOCX whose XML would inflate past the text limit (a zip bomb) before parsing it."""
    if budget.limit is None:
        return
    try:
        with zipfile.ZipFile(path) as archive:
            size = sum(
                info.file_size
                for info in archive.infolist()
                if info.filename.endswith((".xml", ".rels"))
            )
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise CorruptDocument(detail=f"zip: {error}") from error
    budget.charge_bytes(size, "uncompressed XML")


class _DocxPaginator:
    """Walks a DOCX body in document order and cuts it into pages of text."""

    def __init__(self, document: Any) -> None:
        self._document = document
        self._body = document.element.body
        # Each section's properties sit in its last paragraph; the last section's in the body.
        ends = (p.find(f"{_W}pPr/{_W}sectPr") for p in _children(self._body, _P))
        self._sections = [end for end in ends if end is not None]
        self._sections.extend(self._body.iterfind(f"{_W}sectPr"))
        self._section = 0
        self._pages: list[list[str]] = [[]]
        self._page_has_body = False
        self._seen_headers_footers: set[str] = set()
        # Empty while the notes themselves are read (a note cannot cite a note).
        self._notes: dict[str, dict[str, str]] = {"footnote": {}, "endnote": {}}
        self._notes = {
            "footnote": self._notes_text(RT.FOOTNOTES, "footnote"),
            "endnote": self._notes_text(RT.ENDNOTES, "endnote"),
        }
        self._page_footnotes: list[str] = []
        self._endnotes: list[str] = []
        self._break_before_styles, self._default_style = _page_break_styles(document)

    def pages(self) -> list[str]:
        """The text of each page, trailing blank pages dropped, at least one page."""
        self._headers_footers("header")
        self._blocks(self._body)
        self._headers_footers("footer")
        self._flush_footnotes()
        self._pages[-1].extend(self._endnotes)
        texts = [_tidy_lines("\n".join(lines)) for lines in self._pages]
        while len(texts) > 1 and not texts[-1].strip():
            texts.pop()
        return texts

    def _emit(self, text: str, *, body: bool = True) -> None:
        self._pages[-1].append(text)
        self._page_has_body = self._page_has_body or body

    def _new_page(self, *, even_if_empty: bool) -> None:
        """Start a page; a page-break-before or a section start on a fresh page adds none."""
        if even_if_empty or self._page_has_body:
            self._flush_footnotes()
            self._pages.append([])
            self._page_has_body = False

    def _blocks(self, container: Any) -> None:
        for child in container:
            tag = child.tag
            if tag == _P:
                self._paragraph(child)
            elif tag == _TBL:
                self._emit(self._table(child))
            elif tag in _WRAPPERS:
                self._blocks(child)

    def _paragraph(self, paragraph: Any) -> None:
        if self._breaks_before(paragraph):
            self._new_page(even_if_empty=False)
        parts: list[str] = []
        self._inline(paragraph, parts, paginate=True)
        self._emit("".join(parts))
        section_end = paragraph.find(f"{_W}pPr/{_W}sectPr")
        if section_end is not None:
            self._end_section()

    def _end_section(self) -> None:
        self._headers_footers("footer")
        self._section += 1
        if self._section < len(self._sections):
            kind = self._sections[self._section].find(f"{_W}type")
            start = "nextPage" if kind is None else kind.get(f"{_W}val", "nextPage")
            if start in _NEW_PAGE_SECTIONS:
                self._new_page(even_if_empty=False)
            self._headers_footers("header")

    def _inline(self, element: Any, parts: list[str], *, paginate: bool) -> None:
        for child in element:
            tag = child.tag
            if not isinstance(tag, str) or tag in _SKIPPED:
                continue
            if tag == f"{_W}t":
                parts.append(child.text or "")
            elif tag in (f"{_W}tab", f"{_W}ptab"):
                parts.append("\t")
            elif tag == f"{_W}br":
                if child.get(f"{_W}type") == "page" and paginate:
                    self._emit("".join(parts))
                    parts.clear()
                    self._new_page(even_if_empty=True)
                else:
                    parts.append("\n")
            elif tag == f"{_W}cr":
                parts.append("\n")
            elif tag == f"{_W}noBreakHyphen":
                parts.append("-")
            elif tag in (f"{_W}footnoteReference", f"{_W}endnoteReference"):
                kind = "footnote" if tag == f"{_W}footnoteReference" else "endnote"
                note = self._notes[kind].get(child.get(f"{_W}id", ""))
                if note:
                    (self._page_footnotes if kind == "footnote" else self._endnotes).append(note)
            elif tag == f"{_W}txbxContent":  # a text box: its paragraphs on their own lines
                parts.append("\n" + self._story_text(child) + "\n")
            else:
                self._inline(child, parts, paginate=paginate)

    def _table(self, table: Any) -> str:
        rows = []
        for row in _children(table, _TR):
            cells = [self._story_text(cell) for cell in _children(row, _TC)]
            rows.append("\t".join(" ".join(cell.split("\n")) for cell in cells))
        return "\n".join(rows)

    def _story_text(self, container: Any) -> str:
        """Text of paragraphs and tables in a cell, text box, header or footer (no paging)."""
        lines = []
        for child in _children(container, _P, _TBL):
            if child.tag == _TBL:
                lines.append(self._table(child))
            else:
                parts: list[str] = []
                self._inline(child, parts, paginate=False)
                lines.append("".join(parts))
        return "\n".join(lines).strip("\n")

    def _breaks_before(self, paragraph: Any) -> bool:
        properties = paragraph.find(f"{_W}pPr")
        style = self._default_style
        if properties is not None:
            flag = properties.find(f"{_W}pageBreakBefore")
            if flag is not None:
                return flag.get(f"{_W}val", "true") not in _FALSE
            style_ref = properties.find(f"{_W}pStyle")
            if style_ref is not None:
                style = style_ref.get(f"{_W}val")
        return style in self._break_before_styles

    def _flush_footnotes(self) -> None:
        """Footnotes go at the foot of the page that refers to them, as in print."""
        self._pages[-1].extend(self._page_footnotes)
        self._page_footnotes = []

    def _notes_text(self, relationship: str, kind: str) -> dict[str, str]:
        """Footnote or endnote id -> text (separator notes left out)."""
        for rel in self._document.part.rels.values():
            if rel.reltype == relationship and not rel.is_external:
                root = parse_xml(rel.target_part.blob)
                return {
                    note.get(f"{_W}id", ""): self._story_text(note)
                    for note in root.iterfind(f"{_W}{kind}")
                    if note.get(f"{_W}type") in (None, "normal")
                }
        return {}

    def _headers_footers(self, kind: str) -> None:
        """Emit this section's headers (or footers) whose text has not appeared before."""
        if self._section >= len(self._sections):
            return
        related = self._document.part.related_parts
        for reference in self._sections[self._section].iterfind(f"{_W}{kind}Reference"):
            part = related.get(reference.get(f"{_R}id"))
            if part is None or not hasattr(part, "element"):
                continue
            text = _tidy_lines(self._story_text(part.element))
            if text.strip() and text not in self._seen_headers_footers:
                self._seen_headers_footers.add(text)
                self._emit(text, body=False)


def _children(element: Any, *tags: str) -> list[Any]:
    """Direct children with one of ``tags``, looking through content controls and custom XML."""
    found = []
    for child in element:
        if child.tag in tags:
            found.append(child)
        elif child.tag in _WRAPPERS:
            found.extend(_children(child, *tags))
    return found


def _page_break_styles(document: Any) -> tuple[set[str], str | None]:
    """Paragraph style ids that start a new page (directly or through basedOn), and the default."""
    try:
        styles = document.styles.element
    except (KeyError, AttributeError):
        return set(), None
    own: dict[str, bool | None] = {}
    based_on: dict[str, str] = {}
    default = None
    for style in styles.iterfind(f"{_W}style"):
        if style.get(f"{_W}type") != "paragraph":
            continue
        style_id = style.get(f"{_W}styleId")
        if style.get(f"{_W}default") in ("1", "true", "on"):
            default = style_id
        flag = style.find(f"{_W}pPr/{_W}pageBreakBefore")
        own[style_id] = None if flag is None else flag.get(f"{_W}val", "true") not in _FALSE
        parent = style.find(f"{_W}basedOn")
        if parent is not None:
            based_on[style_id] = parent.get(f"{_W}val")
    breaking = set()
    for style_id in own:
        current: str | None = style_id
        for _ in range(20):  # basedOn chains are short; a cycle must not hang us
            if current is None or own.get(current) is not None:
                break
            current = based_on.get(current)
        if current is not None and own.get(current):
            breaking.add(style_id)
    return breaking, default


def _tidy_lines(text: str) -> str:
    """Trailing spaces off each line, at most one blank line in a row, no blank edges."""
    lines = [line.rstrip() for line in text.split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n")


_BLANK_RUNS = re.compile(r"\n{3,}")


# --- Plain text ------------------------------------------------------------------------


class _TextReader(DocumentReader):
    """Pages are separated by form feeds; their byte offsets are found at open."""

    content_type = TEXT

    def __init__(self, path: Path, budget: _TextBudget) -> None:
        self._budget = budget
        self._file = open(path, "rb")  # noqa: SIM115 - held open until close()
        try:
            size = path.stat().st_size
            budget.charge_bytes(size, "text")
            head = self._file.read(SNIFF_BYTES)
            encoding, start = text_codec(head)
            self.encoding = validated_codec(self._file, encoding, start)
            self._pages = _page_offsets(self._file, self.encoding, start, size)
        except BaseException:
            self._file.close()
            raise
        self.page_count = len(self._pages)

    def page_text(self, index: int) -> str:
        self._check_index(index)
        begin, end = self._pages[index]
        self._file.seek(begin)
        text = self._file.read(end - begin).decode(self.encoding, errors="replace")
        return self._budget.charge_page(index, _clean(text))

    def close(self) -> None:
        self._file.close()


def _page_offsets(file: Any, encoding: str, start: int, size: int) -> list[tuple[int, int]]:
    """(begin, end) byte ranges of the pages, split at form feeds in the encoded stream.

    In every ASCII-compatible encoding we detect, byte 0x0C is only ever a form
    feed (multi-byte trail bytes are 0x30 and above); in UTF-16/32 it must also
    sit on a code-unit boundary.
    """
    separator = "\f".encode(encoding)
    unit = code_unit(encoding)
    pages = []
    begin = start
    file.seek(start)
    offset = start
    tail = b""
    while chunk := file.read(CHUNK_BYTES):
        data = tail + chunk
        base = offset - len(tail)
        position = data.find(separator)
        while position != -1:
            absolute = base + position
            if (absolute - start) % unit == 0 and absolute >= begin:
                pages.append((begin, absolute))
                begin = absolute + len(separator)
            position = data.find(separator, position + 1)
        keep = len(separator) - 1
        tail = data[-keep:] if keep else b""
        offset += len(chunk)
    pages.append((begin, size))
    last_begin, last_end = pages[-1]
    if len(pages) > 1 and last_end - last_begin < 4096:  # a final form feed starts no page
        file.seek(last_begin)
        if not file.read(last_end - last_begin).decode(encoding, "replace").strip():
            pages.pop()
    return pages


# --- HTML ------------------------------------------------------------------------------

_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^>]*\?>")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_INVISIBLE = {
    "script",
    "style",
    "noscript",
    "template",
    "head",
    "title",
    "iframe",
    "object",
    "embed",
    "svg",
    "math",
    "canvas",
    "datalist",
    "select",
}
_BLOCKS = {
    "address",
    "article",
    "aside",
    "blockquote",
    "caption",
    "center",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "legend",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "tfoot",
    "thead",
    "tr",
    "ul",
}
_CELLS = {"td", "th"}


class _HtmlReader(DocumentReader):
    """The visible text of an HTML file, as one page."""

    content_type = HTML
    page_count = 1

    def __init__(self, path: Path, budget: _TextBudget) -> None:
        budget.charge_bytes(path.stat().st_size, "HTML")
        data = path.read_bytes()
        self.encoding = html_encoding(data)
        text = data.decode(self.encoding, errors="replace")
        self._text = budget.charge_page(0, _visible_text(_clean(text)))

    def page_text(self, index: int) -> str:
        self._check_index(index)
        return self._text

    def close(self) -> None:
        self._text = ""


def _visible_text(markup: str) -> str:
    """What a browser shows: no scripts, styles or head; blocks and rows on their own lines."""
    markup = _XML_DECLARATION.sub("", markup, count=1)
    if not markup.strip():
        return ""
    parser = lxml.html.HTMLParser(remove_comments=True, remove_pis=True, huge_tree=True)
    try:
        root = lxml.html.document_fromstring(markup, parser=parser)
    except (lxml.etree.ParserError, ValueError):
        return ""
    out = _VisibleText()
    walker = lxml.etree.iterwalk(root, events=("start", "end"))
    for event, element in walker:
        tag = element.tag.lower() if isinstance(element.tag, str) else ""
        hidden = tag in _INVISIBLE or _is_hidden(element)
        if event == "start":
            if hidden:
                walker.skip_subtree()
                continue
            if tag in _BLOCKS:
                out.end_line()
            elif tag == "br":
                out.line_break()
            if tag == "pre":
                out.preformatted += 1
            out.add(element.text)
        else:
            if not hidden:
                if tag in _BLOCKS:
                    out.end_line()
                elif tag in _CELLS:
                    out.cell()
                if tag == "pre":
                    out.preformatted -= 1
            out.add(element.tail)
    return _tidy_lines(out.text())


class _VisibleText:
    """Collects rendered text: collapsed whitespace, one line per block, tabs between cells."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.preformatted = 0
        self._at_line_start = True

    def add(self, text: str | None) -> None:
        if not text:
            return
        if not self.preformatted:
            text = _WHITESPACE.sub(" ", text)
            if self._at_line_start or (self.parts and self.parts[-1].endswith((" ", "\t"))):
                text = text.lstrip(" ")
            if not text:
                return
        self.parts.append(text)
        self._at_line_start = text.endswith("\n")

    def end_line(self) -> None:
        """A block starts or ends: begin a new line unless one was just begun."""
        if not self._at_line_start:
            self.line_break()

    def line_break(self) -> None:
        if self.parts:
            self.parts[-1] = self.parts[-1].rstrip(" \t")
        self.parts.append("\n")
        self._at_line_start = True

    def cell(self) -> None:
        if not self._at_line_start:
            if self.parts:
                self.parts[-1] = self.parts[-1].rstrip(" ")
            self.parts.append("\t")

    def text(self) -> str:
        return "".join(self.parts)


def _is_hidden(element: Any) -> bool:
    if element.get("hidden") is not None:
        return True
    style = element.get("style")
    return bool(style and _HIDDEN_STYLE.search(style))


_WHITESPACE = re.compile(r"\s+")


def _collapse(text: str) -> str:
    return _WHITESPACE.sub(" ", text)


# --- Images ----------------------------------------------------------------------------

_PIL_FORMATS = {IMAGE_PNG: ["PNG"], IMAGE_JPEG: ["JPEG"], IMAGE_TIFF: ["TIFF"]}


class _ImageReader(DocumentReader):
    """A scanned page (PNG, JPEG) or a stack of them (TIFF: one page per frame).

    Images have no text layer: ``page_text`` is empty and the text comes from
    OCR. Only headers are read at open (sizes, frame count), so an image over
    ``max_pixels`` (a decompression bomb) is refused before a pixel is decoded.
    Pillow refuses images over 2 × ``Image.MAX_IMAGE_PIXELS`` (about 179 MP)
    itself; that too is DOCUMENT_TOO_COMPLEX.
    """

    def __init__(self, path: Path, content_type: str, *, max_pages: int, max_pixels: int) -> None:
        self.content_type = content_type
        self._path = path
        self._max_pixels = max_pixels
        with self._open() as image:
            if content_type == IMAGE_TIFF:
                self.page_count = _checked_frames(image, max_pages, max_pixels)
            else:  # an animated PNG or a camera's MPO JPEG is still one page
                _check_frame(image, 0, max_pixels)
                self.page_count = 1

    def _open(self) -> Image.Image:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                return Image.open(self._path, formats=_PIL_FORMATS[self.content_type])
            except Image.DecompressionBombError as error:
                raise DocumentTooComplex(detail=f"image: {error}") from error
            except OSError as error:
                if error.errno is not None:  # the disk, not the data
                    raise
                raise CorruptDocument(detail=f"image: {error}") from error
            except (SyntaxError, ValueError, EOFError) as error:
                raise CorruptDocument(detail=f"image: {error!r}") from error

    def page_text(self, index: int) -> str:
        self._check_index(index)
        return ""

    def render_page(self, index: int, *, dpi: float, max_pixels: int) -> RenderedPage:
        """The frame as it is stored (``dpi`` does not apply), reduced if over ``max_pixels``."""
        self._check_index(index)
        try:
            with self._open() as image:
                image.seek(index)
                _check_frame(image, index, self._max_pixels)
                gray, reduced = grayscale_within(image, max_pixels)
        except (OSError, SyntaxError, ValueError, EOFError, CorruptDocument) as error:
            if isinstance(error, OSError) and error.errno is not None:
                raise
            raise RenderError("The page image could not be decoded.") from error
        return RenderedPage(gray, dpi=None, reduced=reduced, max_pixels=max_pixels)

    def close(self) -> None:
        """Nothing is held open between calls."""


def _check_frame(image: Image.Image, index: int, max_pixels: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptDocument(detail=f"image page {index + 1} is {width}×{height} pixels")
    if width * height > max_pixels:
        raise DocumentTooComplex(
            detail=f"image page {index + 1} is {width}×{height} pixels; the limit is {max_pixels}"
        )


def _checked_frames(image: Image.Image, max_pages: int, max_pixels: int) -> int:
    """How many frames a TIFF has, each checked against ``max_pixels``; stops past ``max_pages``."""
    count = 0
    while count <= max_pages:
        _check_frame(image, count, max_pixels)
        count += 1
        try:
            image.seek(count)
        except EOFError:
            break
        except (OSError, SyntaxError, ValueError) as error:
            raise CorruptDocument(detail=f"image page {count + 1}: {error!r}") from error
    return count
