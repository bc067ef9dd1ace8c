"""Open a stored document and read its text one page at a time, one module per format.

Streaming rule: a reader holds the open document, not its text. A PDF page is
loaded, its text extracted and closed again inside one
:meth:`DocumentReader.page_text` call, so a 5,000-page PDF costs the memory of
one page; a plain-text file is read page by page from byte offsets found at
open. DOCX and HTML have no page-level access in their parsers, so their text
is extracted once at open (the parsed tree is dropped straight after).

``base`` holds :class:`DocumentReader`, the text budget and text cleaning;
``pdf``, ``docx``, ``text``, ``html`` and ``image`` each read one format, and
:func:`open_document` picks among them by content type. Which encoding a text
or HTML file is in is decided in :mod:`processing.documents.encodings`.
"""

from __future__ import annotations

from pathlib import Path

from processing.documents.detect import DOCX, HTML, IMAGE_TYPES, PDF, TEXT
from processing.documents.readers.base import DocumentReader, TextBudget
from processing.documents.readers.docx import DocxReader, PackageLimits
from processing.documents.readers.html import HtmlReader
from processing.documents.readers.image import ImageReader
from processing.documents.readers.pdf import open_pdf
from processing.documents.readers.text import TextReader
from processing.errors import DocumentTooComplex

__all__ = ["DocumentReader", "PackageLimits", "open_document"]


def open_document(
    path: Path | str,
    content_type: str,
    *,
    max_pages: int = 5000,
    max_text_bytes: int | None = None,
    max_image_pixels: int = 150_000_000,
    max_html_nodes: int = 500_000,
    max_decoded_pixels: int = 64_000_000,
    docx_limits: PackageLimits | None = None,
) -> DocumentReader:
    """Open ``path`` as ``content_type`` (PDF, DOCX, TEXT, HTML or an image) page by page.

    Raises :class:`CorruptDocument`, :class:`EncryptedDocument` or
    :class:`DocumentTooComplex` (over ``max_pages`` pages, over
    ``max_text_bytes`` of text or of uncompressed markup, an image page over
    ``max_image_pixels``, a PNG or TIFF page, or an image in a PDF page being
    drawn, over ``max_decoded_pixels``, or a DOCX over ``docx_limits``).
    HTML past ``max_html_nodes`` elements is read up to there, and
    :meth:`DocumentReader.page_note` says so. ``OSError`` from a missing or
    unreadable file is not the document's fault and is not caught.
    """
    path = Path(path)
    path.stat()  # a missing file is a storage problem, not a corrupt document
    budget = TextBudget(max_text_bytes)
    if content_type == PDF:
        reader: DocumentReader = open_pdf(path, budget, max_image_pixels=max_decoded_pixels)
    elif content_type == DOCX:
        reader = DocxReader(path, budget, docx_limits or PackageLimits())
    elif content_type == TEXT:
        reader = TextReader(path, budget)
    elif content_type == HTML:
        reader = HtmlReader(path, budget, max_nodes=max_html_nodes)
    elif content_type in IMAGE_TYPES:
        reader = ImageReader(
            path,
            content_type,
            max_pages=max_pages,
            max_pixels=max_image_pixels,
            max_decoded_pixels=max_decoded_pixels,
        )
    else:
        raise ValueError(f"no reader for content type {content_type!r}")
    if reader.page_count > max_pages:
        reader.close()
        raise DocumentTooComplex(
            f"This document has {reader.page_count:,} pages; the limit is {max_pages:,}. "
            "Split it into smaller files and upload those.",
            detail=f"DOCUMENT_MAX_PAGES={max_pages}",
        )
    return reader
