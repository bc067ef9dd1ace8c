"""Word (.docx): the text in reading order, cut into pages where the file says a page ends.

A DOCX holds no pages, only the breaks Word lays them out by: explicit page
breaks, paragraphs (or their styles, through ``basedOn``) with page-break-
before, and sections that start on a new page. Those are the page ends here;
Word's own page count (docProps/app.xml) is a leftover of its last layout and
is never used. python-docx has no page-level access, so the text is extracted
once at open and the parsed tree dropped.

What a reader of the printed page sees, once: a header or footer the first
time its text appears (not once per section), footnotes at the foot of the
page that cites them, endnotes at the end; tables as tab-separated rows; text
boxes and content controls in place. Deleted and moved-away text, field
instructions and the duplicate fallback of alternate content are skipped.
Before python-docx sees the file, :func:`check_package` walks the zip within
its budgets: a count of members, the unpacked size of every member and of all
of them (declared, then counted while inflating, since a zip can lie), and
the XML elements of every member that holds XML, whatever its name. The
bytes of XML are charged against the text budget too. So a zip bomb, a 2 GiB
"image" part or 180 MB of empty paragraphs stop on a budget, read in bounded
chunks, before python-docx builds a tree of any of it.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docx
from docx.opc.constants import RELATIONSHIP_TYPE as RT
from docx.oxml.parser import parse_xml

from processing.documents.detect import DOCX
from processing.documents.readers.base import DocumentReader, TextBudget, tidy_lines
from processing.errors import CorruptDocument, DocumentTooComplex

__all__ = ["DocxReader", "PackageLimits", "check_package"]

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


class DocxReader(DocumentReader):
    """Pages end at explicit page breaks, paragraphs with page-break-before, and
    sections that start on a new page. Word's own page count (docProps/app.xml)
    is a leftover of its last layout and is never used.
    """

    content_type = DOCX

    def __init__(self, path: Path, budget: TextBudget, limits: PackageLimits) -> None:
        budget.charge_bytes(check_package(path, limits), "uncompressed XML")
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


@dataclass(frozen=True)
class PackageLimits:
    """What a DOCX's zip may hold: members, unpacked bytes (each and all), XML elements."""

    max_members: int = 10_000
    max_unpacked_bytes: int = 256 * 1024 * 1024
    max_xml_elements: int = 2_000_000


_CHUNK = 1024 * 1024
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    ValueError,
    zlib.error,
    NotImplementedError,  # a compression method zipfile cannot read
    RuntimeError,  # an encrypted member
)


def check_package(path: Path, limits: PackageLimits) -> int:
    """Walk the zip at ``path`` within ``limits``; return how many bytes of XML it holds.

    Declared sizes are checked first (nothing is inflated for a zip that
    admits to being a bomb), then every member is inflated a megabyte at a
    time and counted, since a declared size can lie. Elements are counted
    from the bytes (each ``<`` that opens a tag), so no tree is built.
    Raises :class:`DocumentTooComplex` naming the limit passed, or
    :class:`CorruptDocument` for a zip that cannot be read.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            if len(members) > limits.max_members:
                raise _too_many_members(len(members), limits.max_members)
            declared = 0
            for info in members:
                declared += info.file_size
                if declared > limits.max_unpacked_bytes:
                    raise _too_big(limits.max_unpacked_bytes, f"declared, at {info.filename!r}")
            unpacked = xml_bytes = elements = 0
            for info in members:
                with archive.open(info) as member:
                    counter: _ElementCounter | None = None
                    while chunk := member.read(_CHUNK):
                        unpacked += len(chunk)
                        if unpacked > limits.max_unpacked_bytes:
                            raise _too_big(
                                limits.max_unpacked_bytes, f"inflated, at {info.filename!r}"
                            )
                        if counter is None:
                            counter = _ElementCounter(xml=_looks_like_xml(chunk))
                        if counter.xml:
                            xml_bytes += len(chunk)
                            elements += counter.count(chunk)
                            if elements > limits.max_xml_elements:
                                raise _too_many_elements(limits.max_xml_elements, info.filename)
    except _ZIP_ERRORS as error:
        raise CorruptDocument(detail=f"zip: {error!r}") from error
    return xml_bytes


class _ElementCounter:
    """Counts start tags in a stream of XML bytes, chunk by chunk.

    Every ``<`` in XML opens markup (a ``<`` in text must be escaped); those
    that open an end tag, a declaration, a comment or CDATA are not elements.
    A ``<`` in a comment is counted, which only errs on the safe side.
    """

    def __init__(self, *, xml: bool) -> None:
        self.xml = xml
        self._ended_with_open = False

    def count(self, chunk: bytes) -> int:
        """Start tags in ``chunk``, given what the previous chunk ended with."""
        found = chunk.count(b"<") - chunk.count(b"</") - chunk.count(b"<?") - chunk.count(b"<!")
        if self._ended_with_open and chunk[:1] in (b"/", b"?", b"!"):
            found -= 1
        self._ended_with_open = chunk.endswith(b"<")
        return found


def _looks_like_xml(head: bytes) -> bool:
    """Whether a member's first bytes are XML (by content: a part can be named anything)."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16: counted, over-counting end tags
        return True
    return head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"<"


def _mb(size: int) -> str:
    return f"{size / 2**20:,.0f} MB"


def _too_many_members(count: int, limit: int) -> DocumentTooComplex:
    return DocumentTooComplex(
        f"This Word file is made of {count:,} parts; the limit is {limit:,}. "
        "Split it into smaller files and upload those.",
        detail=f"DOCX_MAX_PARTS={limit}",
    )


def _too_big(limit: int, where: str) -> DocumentTooComplex:
    return DocumentTooComplex(
        f"This Word file unpacks to more than {_mb(limit)}, the limit for one document. "
        "Split it into smaller files, or use smaller pictures, and upload those.",
        detail=f"DOCX_MAX_UNPACKED_BYTES={limit}; {where}",
    )


def _too_many_elements(limit: int, name: str) -> DocumentTooComplex:
    return DocumentTooComplex(
        f"This Word file has more than {limit:,} pieces of markup (paragraphs, runs, "
        "formatting), the limit for one document. Split it into smaller files and upload those.",
        detail=f"DOCX_MAX_XML_ELEMENTS={limit}; at {name!r}",
    )


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
        texts = [tidy_lines("\n".join(lines)) for lines in self._pages]
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
            text = tidy_lines(self._story_text(part.element))
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
