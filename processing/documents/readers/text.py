"""Plain text: pages separated by form feeds, read from byte offsets found at open.

Only the offsets are held, never the text, so a large file costs the memory
of one page. The codec comes from :mod:`processing.documents.encodings`:
detected from the head, then checked against the whole file. Form feeds are
found in the encoded bytes, which is safe in every encoding we detect (see
:func:`_page_offsets`); a form feed at the very end starts no empty page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from processing.documents.detect import TEXT
from processing.documents.encodings import (
    CHUNK_BYTES,
    SNIFF_BYTES,
    code_unit,
    text_codec,
    validated_codec,
)
from processing.documents.readers.base import DocumentReader, TextBudget, clean_text

__all__ = ["TextReader"]


class TextReader(DocumentReader):
    """Pages are separated by form feeds; their byte offsets are found at open."""

    content_type = TEXT

    def __init__(self, path: Path, budget: TextBudget) -> None:
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
        return self._budget.charge_page(index, clean_text(text))

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
