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
    """The visible text of an HTML file, as one page; cut short past ``max_nodes`` elements."""

    content_type = HTML
    page_count = 1

    def __init__(self, path: Path, budget: TextBudget, *, max_nodes: int = 500_000) -> None:
        budget.charge_bytes(path.stat().st_size, "HTML")
        data = path.read_bytes()
        self.encoding = html_encoding(data)
        text = data.decode(self.encoding, errors="replace")
        del data
        visible, self.note = _visible_text(clean_text(text), max_nodes=max_nodes)
        self._text = budget.charge_page(0, visible)

    def page_text(self, index: int) -> str:
        self._check_index(index)
        return self._text

    def page_note(self, index: int) -> str:
        self._check_index(index)
        return self.note

    def close(self) -> None:
        self._text = ""


FEED_CHARS = 1024 * 1024
COMPACT_PARTS = 4096


def _visible_text(markup: str, *, max_nodes: int) -> tuple[str, str]:
    """What a browser shows, and a note when only part of it could be read.

    The markup goes through libxml2's HTML parser as a stream of events into
    :class:`_VisibleText`, never as a tree: a tree of a few MB of flat markup
    took hundreds of MB, and libxml2 cuts a tree at 2,048 levels of nesting
    (silently dropping the text below), where the event stream has no such
    limit. Past ``max_nodes`` elements the rest is not read and the note says so.
    """
    markup = _XML_DECLARATION.sub("", markup, count=1)
    if not markup.strip():
        return "", ""
    out = _VisibleText(max_nodes)
    # The stubs' ParserTarget wants close() to return the parse result; ours has none.
    target: Any = out
    parser = lxml.etree.HTMLParser(target=target, remove_comments=True, remove_pis=True)
    try:
        for offset in range(0, len(markup), FEED_CHARS):
            parser.feed(markup[offset : offset + FEED_CHARS])
            if out.cut_short:
                break
        parser.close()
    except (lxml.etree.ParserError, ValueError):
        if not out.elements:
            return "", ""
    note = ""
    if out.cut_short:
        note = (
            f"Only part of this page was read: it has more than {max_nodes:,} HTML elements, "
            "the limit; the text after them is missing."
        )
    return tidy_lines(out.text()), note


class _VisibleText:
    """Parser target: the rendered text, one line per block, tabs between cells."""

    def __init__(self, max_nodes: int) -> None:
        self.parts: list[str] = []
        self._done: list[str] = []
        self.preformatted = 0
        self._at_line_start = True
        self.max_nodes = max_nodes
        self.elements = 0
        self.cut_short = False
        self._open: list[tuple[str, bool]] = []  # tag, and whether it was hidden
        self._hidden_depth = 0  # inside this many hidden elements: nothing shows

    def start(self, tag: Any, attrib: Any) -> None:
        """An element opens: hidden ones hide all they hold; blocks start a line."""
        if self.cut_short:
            return
        self.elements += 1
        if self.elements > self.max_nodes:
            self.cut_short = True
            return
        tag = tag.lower() if isinstance(tag, str) else ""
        hidden = self._hidden_depth > 0 or tag in _INVISIBLE or _is_hidden(attrib)
        self._open.append((tag, hidden))
        if hidden:
            self._hidden_depth += 1
            return
        if tag in _BLOCKS:
            self.end_line()
        elif tag == "br":
            self.line_break()
        if tag == "pre":
            self.preformatted += 1

    def end(self, tag: Any) -> None:
        """An element closes: blocks end their line, cells add a tab."""
        if self.cut_short or not self._open:
            return
        tag, hidden = self._open.pop()
        if hidden:
            self._hidden_depth -= 1
            return
        if tag in _BLOCKS:
            self.end_line()
        elif tag in _CELLS:
            self.cell()
        if tag == "pre":
            self.preformatted -= 1

    def data(self, text: str) -> None:
        """Text: shown unless inside a hidden element."""
        if not self.cut_short and not self._hidden_depth:
            self.add(text)

    def close(self) -> None:
        """The end of the markup."""

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
        if len(self.parts) > COMPACT_PARTS:
            # Millions of small strings cost far more than their text: keep all but
            # the last (which line_break and cell may still trim) as one string.
            self._done.append("".join(self.parts[:-1]))
            del self.parts[:-1]

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
        return "".join(self._done) + "".join(self.parts)


def _is_hidden(attrib: Any) -> bool:
    if attrib.get("hidden") is not None:
        return True
    style = attrib.get("style")
    return bool(style and _HIDDEN_STYLE.search(style))


_WHITESPACE = re.compile(r"\s+")
