"""PDF: pdfium first (fast, streams, right on CJK), pypdf when pdfium cannot load the file.

A page is loaded, its text extracted and the page and text page closed again
inside one :meth:`page_text` call, so a 5,000-page PDF costs the memory of one
page. pypdf rebuilds broken cross-reference tables that pdfium refuses, but
reads the whole file into memory and cannot draw pages, so a PDF only it
opens has no page images for OCR. A file pdfium loads but finds no page in
goes to pypdf as well; when pypdf finds no page either, the document is empty
only if pdfium loaded it or its page tree says so (``/Count 0``, no kids),
else the page tree is lost and the file is CORRUPT_DOCUMENT.

Empty-password rule: a PDF is encrypted *for us* only if it cannot be opened
without a password. Many PDFs are encrypted with an empty user password and
permission flags (dmca.pdf); every viewer opens them silently, and so must we.
``is_encrypted`` is therefore never checked on its own: only a failed open
with the empty password raises :class:`EncryptedDocument`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import pypdf
import pypdfium2
from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError
from pypdf.generic import DictionaryObject

from processing.documents.detect import PDF
from processing.documents.readers.base import DocumentReader, TextBudget, clean_text
from processing.documents.render import RenderedPage, RenderError, pdf_scale
from processing.errors import CorruptDocument, DocumentTooComplex, EncryptedDocument

logger = logging.getLogger(__name__)

__all__ = ["open_pdf"]


_PASSWORD_ERRORS = {pypdfium2.raw.FPDF_ERR_PASSWORD, pypdfium2.raw.FPDF_ERR_SECURITY}


def open_pdf(
    path: Path, budget: TextBudget, *, max_image_pixels: int = 64_000_000
) -> DocumentReader:
    """pdfium first (fast, streams, right on CJK); pypdf when pdfium cannot load the file.

    A page holding an image over ``max_image_pixels`` is not drawn (pdfium
    decodes a page's images whole, whatever the scale it draws at).
    """
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
    return _PdfiumReader(pdf, budget, max_image_pixels=max_image_pixels)


class _PdfiumReader(DocumentReader):
    content_type = PDF

    def __init__(
        self, pdf: pypdfium2.PdfDocument, budget: TextBudget, *, max_image_pixels: int
    ) -> None:
        self._pdf: pypdfium2.PdfDocument | None = pdf
        self._budget = budget
        self._max_image_pixels = max_image_pixels
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
        return self._budget.charge_page(index, clean_text(text).replace("\ufffe", ""))

    def render_page(self, index: int, *, dpi: float, max_pixels: int) -> RenderedPage:
        self._check_index(index)
        if self._pdf is None:
            raise ValueError("the document is closed")
        try:
            page = self._pdf[index]
        except pypdfium2.PdfiumError as error:
            raise RenderError("The page could not be loaded.") from error
        try:
            _check_images(page, index, self._max_image_pixels)
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


def _check_images(page: pypdfium2.PdfPage, index: int, limit: int) -> None:
    """Refuse a page holding an image over ``limit`` pixels, from its declared size, undecoded.

    pdfium decodes each image of a page at full size while drawing it, even
    when the page is drawn small, so the output's pixel budget does not bound
    the memory a 40,000-pixel-wide image takes.
    """
    for found in page.get_objects(filter=[pypdfium2.raw.FPDF_PAGEOBJ_IMAGE]):
        try:
            width, height = cast(pypdfium2.PdfImage, found).get_px_size()
        except pypdfium2.PdfiumError:
            continue  # no size to read: pdfium will not draw it either
        if width * height > limit:
            raise DocumentTooComplex(
                f"Page {index + 1} holds an image of {width:,}×{height:,} pixels; the limit is "
                f"{limit / 1_000_000:g} megapixels for one image. Save the document with smaller "
                "images and upload it again.",
                detail=f"IMAGE_MAX_DECODED_PIXELS={limit}",
            )


class _PypdfReader(DocumentReader):
    """The tolerant fallback for files pdfium refuses (it rebuilds broken xref tables).

    pypdf reads the whole file into memory; that is acceptable for the rare file
    that needs it, and uploads are size-limited.
    """

    content_type = PDF

    def __init__(
        self, path: Path, budget: TextBudget, *, pdfium_error: str, pdfium_loaded: bool = False
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
        return self._budget.charge_page(index, clean_text(text))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _declares_no_pages(reader: pypdf.PdfReader) -> bool:
    """True when the catalog's page tree says, in so many words, that there are no pages."""
    try:
        root = reader.trailer["/Root"]
        pages = root["/Pages"] if isinstance(root, DictionaryObject) else None
        if not isinstance(pages, DictionaryObject):
            return False
        return int(pages.get("/Count", -1)) == 0 and not pages.get("/Kids")
    except (KeyError, TypeError, ValueError, AttributeError, PdfReadError):
        return False
