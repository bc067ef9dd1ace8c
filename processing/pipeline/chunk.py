"""The ``chunk`` stage: a document's text cut into overlapping passages for search.

The pages' texts (blank pages left out) are read as one stream, joined with
:data:`PAGE_SEPARATOR`, and cut into chunks of :data:`CHUNK_MIN`–:data:`CHUNK_MAX`
characters. A chunk ends at the last paragraph break in that window, else at the
last sentence end, else at the last whitespace; it is cut inside a word only
when one token is longer than a whole chunk. The next chunk starts at a
sentence (else a word) about :data:`OVERLAP` of the previous chunk's length
before its end, so a passage cut at a chunk boundary is still found whole.

Every chunk is an exact slice of that stream, so ``page_start``/``char_start``
locate it in the pages and :func:`locate` maps an offset inside a chunk back to
its page. Each decision looks at no more than the chunk's window plus
:data:`LOOKAHEAD` characters, so streaming page by page gives the same chunks
as cutting the whole text at once: the same pages always give byte-identical
chunks, which is what lets a rerun skip the indexes it already wrote.
"""

from __future__ import annotations

import bisect
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import QuerySet

from processing.models import DocumentChunk, DocumentPage

if TYPE_CHECKING:
    from processing.jobs.context import StageContext

CHUNK_MIN = 1000
CHUNK_MAX = 1500
OVERLAP = 0.18
"""The overlap aimed at, as a share of the previous chunk; kept within 10–25 %."""
OVERLAP_MIN, OVERLAP_MAX = 0.10, 0.25
LOOKAHEAD = 64
"""How far past a chunk's window a decision may look (to tell a sentence end)."""
PAGE_SEPARATOR = "\n"

FLUSH_CHUNKS = 200
FLUSH_SECONDS = 0.5
READ_PAGES = 50

_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
# Sentence-ending punctuation and any closing quotes or brackets, followed by
# whitespace and then something that is not a lower-case letter.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s+[^\s])(?!\s+[a-z])")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")
_ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "no",
        "nos",
        "vs",
        "v",
        "cf",
        "al",
        "etc",
        "inc",
        "ltd",
        "co",
        "corp",
        "llc",
        "llp",
        "plc",
        "art",
        "arts",
        "sec",
        "secs",
        "ch",
        "ex",
        "exh",
        "para",
        "paras",
        "fig",
        "figs",
        "vol",
        "p",
        "pp",
        "ed",
        "eds",
        "dept",
        "est",
        "approx",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "cal",
        "supp",
        "app",
        "ct",
        "cir",
        "rev",
        "stat",
    }
)


@dataclass(frozen=True)
class ChunkSpan:
    """One chunk: its text and where it starts and ends in the pages."""

    text: str
    page_start: int
    page_end: int
    char_start: int


def text_pages(document_id: uuid.UUID | str) -> QuerySet[DocumentPage]:
    """The document's pages that hold any text, in page order: what chunks are cut from."""
    return DocumentPage.objects.filter(document_id=document_id, text__regex=r"\S").order_by(
        "page_number"
    )


def locate(page_lengths: list[tuple[int, int]], char_start: int, offset: int) -> int:
    """The page holding character ``offset`` of a chunk.

    ``page_lengths`` are ``(page_number, len(text))`` of the chunk's text pages
    from its ``page_start`` on, in order; ``char_start`` is the chunk's.
    """
    position = char_start + offset
    for number, length in page_lengths:
        if position < length + len(PAGE_SEPARATOR):
            return number
        position -= length + len(PAGE_SEPARATOR)
    return page_lengths[-1][0]


def _is_sentence_end(text: str, match: re.Match[str]) -> bool:
    """False for the full stop of an abbreviation or an initial ("Mr.", "U.S.", "J.")."""
    punctuation = match.group()
    if not punctuation.startswith(".") or punctuation.startswith(".."):
        return True
    word = _WORD_BEFORE.search(text, max(0, match.start() - 20), match.start())
    if word is None:
        return True
    token = word.group(1)
    return not ("." in token or len(token) == 1 or token.lower() in _ABBREVIATIONS)


def _sentence_ends(text: str, start: int, stop: int) -> Iterator[int]:
    """Offsets just after each sentence's last character, within ``[start, stop)``."""
    for match in _SENTENCE_END.finditer(text, start, stop):
        if _is_sentence_end(text, match):
            yield match.end()


def _trimmed(text: str, position: int) -> int:
    """``position`` moved back over any whitespace before it."""
    while position > 0 and text[position - 1].isspace():
        position -= 1
    return position


def _skip_space(text: str, position: int, stop: int) -> int:
    """``position`` moved forward over whitespace, up to ``stop``."""
    while position < stop and text[position].isspace():
        position += 1
    return position


def _find_end(text: str, start: int, floor: int, limit: int) -> tuple[int, bool]:
    """Where the chunk starting at ``start`` ends, and whether that cuts a word.

    The text ends at ``limit``. The end is past ``floor`` (the previous chunk's
    end), so every chunk adds text, and never follows whitespace. A word is cut
    only when no whitespace lies between ``floor`` and the largest end allowed.
    """
    if limit - start <= CHUNK_MAX:
        return _trimmed(text, limit), False
    low, high = max(start + CHUNK_MIN, floor + 1), start + CHUNK_MAX
    lookahead = min(limit, high + LOOKAHEAD)
    breaks = [_trimmed(text, m.start()) for m in _PARAGRAPH_BREAK.finditer(text, low, high)]
    ends = [e for e in _sentence_ends(text, low, lookahead) if e <= high]
    for candidates in (breaks, ends):
        past_floor = [c for c in candidates if c > floor]
        if past_floor:
            return past_floor[-1], False
    for position in range(high, max(start, floor), -1):
        if text[position].isspace():
            end = _trimmed(text, position)
            if end > floor:
                return end, False
            break
    return high, True


def _find_next_start(text: str, start: int, end: int) -> int:
    """Where the chunk after ``[start, end)`` starts: a sentence, else a word, in the overlap."""
    length = end - start
    target = end - round(OVERLAP * length)
    low = max(end - round(OVERLAP_MAX * length), start + 1)
    high = end - round(OVERLAP_MIN * length)
    if high < low:
        return end

    def nearest(candidates: Iterable[int]) -> int | None:
        inside = [c for c in candidates if low <= c <= high]
        return min(inside, key=lambda c: (abs(c - target), c)) if inside else None

    sentence_starts = [
        _skip_space(text, e, end) for e in _sentence_ends(text, max(start, low - 8), end)
    ]
    paragraph_starts = [m.end() for m in _PARAGRAPH_BREAK.finditer(text, low, end)]
    found = nearest(sentence_starts + paragraph_starts)
    if found is None:
        found = nearest(
            p for p in range(low, high + 1) if not text[p].isspace() and text[p - 1].isspace()
        )
    return found if found is not None else target


def split_chunks(pages: Iterable[tuple[int, str]]) -> Iterator[ChunkSpan]:
    """Cut ``(page_number, text)`` pairs, in page order, into overlapping chunks.

    Holds only the text not cut yet (about one chunk plus the current page).
    """
    buffer = ""  # the stream's text from global offset ``base`` on
    base = 0
    page_offsets: list[int] = []  # global offset of each page's first character
    page_numbers: list[int] = []
    start = 0  # global offset where the next chunk starts
    floor = 0  # global offset where the previous chunk ended

    def page_at(position: int) -> tuple[int, int]:
        slot = bisect.bisect_right(page_offsets, position) - 1
        return page_numbers[slot], page_offsets[slot]

    def cut(*, final: bool) -> Iterator[ChunkSpan]:
        nonlocal start, floor
        limit = len(buffer)
        while True:
            local_start = _skip_space(buffer, start - base, limit)
            start = local_start + base
            if local_start >= limit:
                return
            if not final and limit - local_start < CHUNK_MAX + LOOKAHEAD:
                return  # wait for more text: the decision must see a full window
            local_end, cuts_word = _find_end(buffer, local_start, floor - base, limit)
            if cuts_word and start < floor:
                # The overlap leaves no room to end between words: give it up.
                start = floor
                continue
            if local_end + base <= floor:
                return  # the rest was all in the previous chunk
            page_start, page_offset = page_at(start)
            page_end, _ = page_at(local_end + base - 1)
            yield ChunkSpan(
                buffer[local_start:local_end], page_start, page_end, start - page_offset
            )
            floor = local_end + base
            if final and _skip_space(buffer, local_end, limit) >= limit:
                start = floor
                return
            start = _find_next_start(buffer, local_start, local_end) + base

    for number, page_text in pages:
        if page_offsets:
            buffer += PAGE_SEPARATOR
        page_offsets.append(base + len(buffer))
        page_numbers.append(number)
        buffer += page_text
        yield from cut(final=False)
        drop = start - base  # no later chunk starts before ``start``
        if drop > 0:
            buffer, base = buffer[drop:], start
            first_kept = max(bisect.bisect_right(page_offsets, base) - 1, 0)
            del page_offsets[:first_kept], page_numbers[:first_kept]
    yield from cut(final=True)


def chunk(ctx: StageContext) -> None:
    """Cut the document's page texts into overlapping ``DocumentChunk`` rows.

    Progress is counted in pages with text. Chunks are written in batches
    under their unique (document, index) key; indexes that already have a row
    (from an earlier attempt) are not written again, and since the same pages
    always give the same chunks, a rerun writes nothing. Each chunk records the
    matter's search language; the ``index`` stage checks it.
    """
    document = ctx.document
    language = document.matter.search_language
    pages = text_pages(document.pk)
    total = pages.count()
    ctx.progress(0, total)
    if total == 0:
        return
    written = set(
        DocumentChunk.objects.filter(document=document).order_by().values_list("index", flat=True)
    )
    done = 0
    batch: list[DocumentChunk] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        if batch:
            with ctx.fenced():
                DocumentChunk.objects.bulk_create(batch, ignore_conflicts=True)
            batch.clear()
        last_flush = time.monotonic()

    def counted(rows: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str]]:
        nonlocal done
        for row in rows:
            ctx.stop_if_asked()
            yield row
            done += 1
            ctx.progress(done, total)

    rows = pages.values_list("page_number", "text").iterator(chunk_size=READ_PAGES)
    for index, span in enumerate(split_chunks(counted(rows))):
        if index in written:
            continue
        batch.append(
            DocumentChunk(
                document=document,
                matter_id=document.matter_id,
                index=index,
                text=span.text,
                page_start=span.page_start,
                page_end=span.page_end,
                char_start=span.char_start,
                language=language,
            )
        )
        if len(batch) >= FLUSH_CHUNKS or time.monotonic() - last_flush >= FLUSH_SECONDS:
            flush()
    flush()
    ctx.progress(done, total)
