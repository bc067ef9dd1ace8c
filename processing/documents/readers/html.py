"""HTML: the text a browser would show, as one page.

The bytes are decoded with the codec :func:`~processing.documents.encodings.html_encoding`
chooses (BOM, valid UTF-8, a ``<meta charset>`` that fits, then detection),
and the file's size is charged against the text budget before parsing.
Invisible is what a browser hides without running scripts or reading style
sheets: the head, scripts, styles, embedded objects and form options, and
elements with ``hidden`` or an inline ``display: none`` / ``visibility:
hidden``. Blocks and rows go on their own lines and cells are tab-separated;
white space is collapsed as a browser does, except inside ``<pre>``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lxml.etree
import lxml.html

from processing.documents.detect import HTML
from processing.documents.encodings import html_encoding
from processing.documents.readers.base import DocumentReader, TextBudget, clean_text, tidy_lines

__all__ = ["HtmlReader"]

# The text is decoded already, and lxml refuses a str that declares an encoding.
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


class HtmlReader(DocumentReader):
    """The visible text of an HTML file, as one page."""

    content_type = HTML
    page_count = 1

    def __init__(self, path: Path, budget: TextBudget) -> None:
        budget.charge_bytes(path.stat().st_size, "HTML")
        data = path.read_bytes()
        self.encoding = html_encoding(data)
        text = data.decode(self.encoding, errors="replace")
        self._text = budget.charge_page(0, _visible_text(clean_text(text)))

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
    return tidy_lines(out.text())


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
