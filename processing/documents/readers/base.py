"""What every reader is: an open document whose text is read a page at a time.

Besides :class:`DocumentReader` this holds what all formats share: the text
budget (``max_text_bytes``), counted per page and once per page, so reading a
page twice costs nothing more, and charged with the raw input size first
where a parser would otherwise inflate it in memory; and the cleaning every
extracted text gets (one kind of line end, no NUL, which PostgreSQL cannot
store).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

from processing.documents.render import RenderedPage, RenderError
from processing.errors import DocumentTooComplex

__all__ = ["DocumentReader", "TextBudget", "clean_text", "tidy_lines"]


class DocumentReader(ABC):
    """An open document: ``page_count`` pages, read one at a time with :meth:`page_text`.

    Use it as a context manager, or call :meth:`close`.
    """

    content_type: str
    page_count: int

    @abstractmethod
    def page_text(self, index: int) -> str:
        """The text of page ``index`` (0-based); empty for a page without a text layer."""

    def page_note(self, index: int) -> str:
        """Why page ``index``'s text is incomplete (a budget cut it short), or ""."""
        return ""

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


class TextBudget:
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


def clean_text(text: str) -> str:
    """Normalise line ends and drop what no user wants and PostgreSQL cannot store (NUL)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text


def tidy_lines(text: str) -> str:
    """Trailing spaces off each line, at most one blank line in a row, no blank edges."""
    lines = [line.rstrip() for line in text.split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n")


_BLANK_RUNS = re.compile(r"\n{3,}")
