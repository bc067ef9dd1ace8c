"""Full-text search over a matter's indexed chunks: the read side of ``chunk`` and ``index``.

Queries use PostgreSQL's ``websearch_to_tsquery`` (quotes for phrases, ``or``,
``-word``) in the matter's text-search configuration, ranked by
``ts_rank_cd``. Snippets come from ``ts_headline`` with sentinel characters
that cannot occur in the text around each match; the text is HTML-escaped and
only then are the sentinels turned into ``<mark>`` tags, so a snippet is safe
to put in a page as it is.
"""

from __future__ import annotations

import html
import re
from typing import Any

from django.db import connection
from django.db.models import Q
from django.db.models.functions import Length

from processing.errors import PermanentError
from processing.models import Document, DocumentChunk, DocumentPage, Matter
from processing.pipeline.chunk import locate

MAX_QUERY_CHARS = 500
MAX_LIMIT = 100

# Private-use characters: the marks around a match, and stand-ins for < > & so
# that ts_headline's parser sees no HTML tags (it would drop them). Any of them
# already in the text is removed before ts_headline, so each one in its output
# is ours.
_MARK_START, _MARK_STOP = "\ue000", "\ue001"
_STAND_INS = {"<": "\ue002", ">": "\ue003", "&": "\ue004"}
_TRANSLATE_FROM = "".join(_STAND_INS) + _MARK_START + _MARK_STOP + "".join(_STAND_INS.values())
_TRANSLATE_TO = "".join(_STAND_INS.values())
_RESTORE = str.maketrans({v: k for k, v in _STAND_INS.items()})
_HEADLINE_OPTIONS = (
    f"StartSel={_MARK_START}, StopSel={_MARK_STOP}, MinWords=12, MaxWords=35, ShortWord=3"
)

_CONFIG_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_LEXEME = re.compile(r"'((?:[^']|'')+)'")


class InvalidSearchQuery(ValueError):
    """The text to search for is empty or too long; the message says which."""


class InvalidSearchLanguage(PermanentError):
    """A matter's ``search_language`` is not a text-search configuration PostgreSQL has."""

    code = "INVALID_SEARCH_LANGUAGE"


def search_config(name: str) -> str:
    """``name`` if PostgreSQL has a text-search configuration of that name; else raise.

    Raises :class:`InvalidSearchLanguage` (a permanent stage error) with a
    message a person can act on.
    """
    if isinstance(name, str) and _CONFIG_NAME.fullmatch(name):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM pg_ts_config WHERE cfgname = %s AND pg_ts_config_is_visible(oid)",
                [name],
            )
            if cursor.fetchone():
                return name
    shown = str(name)[:40]
    raise InvalidSearchLanguage(
        f"This matter's search language “{shown}” is not one the database knows "
        "(for example english, french, german or simple). Ask staff to correct it, "
        "then retry."
    )


def _expand(query: str, config: str) -> str:
    """Let "indemnify" and "indemnification" find each other (English only).

    The English Snowball stemmer reduces "indemnify" to ``indemnifi`` but
    "indemnification" to ``indemnif`` (likewise notify/notification,
    certify/certification), so each lexeme ending in ``ifi`` or ``if`` is
    OR-ed with its twin.
    """
    if config != "english":
        return query

    def twin(match: re.Match[str]) -> str:
        lexeme = match.group(1)
        if len(lexeme) >= 6 and lexeme.endswith("ifi"):
            return f"( '{lexeme}' | '{lexeme[:-1]}' )"
        if len(lexeme) >= 5 and lexeme.endswith("if"):
            return f"( '{lexeme}' | '{lexeme}i' )"
        return match.group(0)

    return _LEXEME.sub(twin, query)


def _tsquery(config: str, q: str) -> str:
    """The tsquery (as text) that ``q`` means in ``config``; empty if only stop words."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT websearch_to_tsquery(%s::regconfig, %s)::text", [config, q])
        (query,) = cursor.fetchone()
    return _expand(query, config) if query else ""


def _candidates(
    matter: Matter, config: str, query: str, *, offset: int, count: int
) -> list[dict[str, Any]]:
    """Matching chunks ``offset`` to ``offset + count`` in rank order, with headlines."""
    chunk_table = DocumentChunk._meta.db_table
    document_table = Document._meta.db_table
    sql = f"""
        WITH query AS (SELECT %(query)s::tsquery AS q),
        best AS (
            SELECT c.id, ts_rank_cd(c.search_vector, query.q, 32) AS rank
            FROM {chunk_table} c, query
            WHERE c.matter_id = %(matter)s AND c.search_vector @@ query.q
            ORDER BY rank DESC, c.document_id, c.index
            LIMIT %(count)s OFFSET %(offset)s
        )
        SELECT c.document_id, d.original_name, c.page_start, c.page_end, c.char_start,
               CASE WHEN c.page_start <> c.page_end THEN c.text END,
               ts_headline(%(config)s::regconfig,
                           translate(c.text, %(from)s, %(to)s), query.q, %(options)s),
               best.rank
        FROM best
        JOIN {chunk_table} c ON c.id = best.id
        JOIN {document_table} d ON d.id = c.document_id
        CROSS JOIN query
        ORDER BY best.rank DESC, c.document_id, c.index
    """
    params: dict[str, Any] = {
        "query": query,
        "matter": matter.pk,
        "count": count,
        "offset": offset,
        "config": config,
        "from": _TRANSLATE_FROM,
        "to": _TRANSLATE_TO,
        "options": _HEADLINE_OPTIONS,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        columns = [
            "document_id",
            "name",
            "page_start",
            "page_end",
            "char_start",
            "text",
            "headline",
            "rank",
        ]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _page_lengths(rows: list[dict[str, Any]]) -> dict[Any, list[tuple[int, int]]]:
    """For chunks spanning pages: each document's text pages they cover, with lengths."""
    spans = [r for r in rows if r["page_start"] != r["page_end"]]
    if not spans:
        return {}
    covered = Q()
    for r in spans:
        covered |= Q(
            document_id=r["document_id"], page_number__range=(r["page_start"], r["page_end"])
        )
    pages = (
        DocumentPage.objects.filter(covered, text__regex=r"\S")
        .order_by("document_id", "page_number")
        .values_list("document_id", "page_number", Length("text"))
    )
    lengths: dict[Any, list[tuple[int, int]]] = {}
    for document_id, number, length in pages:
        lengths.setdefault(document_id, []).append((number, length))
    return lengths


def _page_of_match(row: dict[str, Any], lengths: list[tuple[int, int]]) -> int:
    """The page of the snippet's first match; ``page_start`` when it cannot be placed."""
    page_start, page_end = int(row["page_start"]), int(row["page_end"])
    if page_start == page_end or _MARK_START not in row["headline"]:
        return page_start
    headline = row["headline"]
    plain = headline.replace(_MARK_START, "").replace(_MARK_STOP, "").translate(_RESTORE)
    at = row["text"].find(plain)
    if at < 0:
        return page_start
    covered = [(n, length) for n, length in lengths if page_start <= n <= page_end]
    if not covered:
        return page_start
    return locate(covered, row["char_start"], at + headline.index(_MARK_START))


def _snippet(headline: str) -> str:
    """The headline as HTML: every character escaped, matches in ``<mark>``."""
    text = " ".join(headline.translate(_RESTORE).split())
    return html.escape(text).replace(_MARK_START, "<mark>").replace(_MARK_STOP, "</mark>")


def search_matter(matter: Matter, q: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The best ``limit`` hits for ``q`` among ``matter``'s indexed chunks, best first.

    Each hit is ``{"document_id", "document_name", "page", "snippet", "rank"}``;
    the snippet is HTML with matches in ``<mark>``. Chunks of one document that
    match on the same page count once, with the best rank. Raises
    :class:`InvalidSearchQuery` for an empty or over-long ``q``, and
    :class:`InvalidSearchLanguage` when the matter's language is not valid.
    """
    q = (q or "").strip()
    if not q:
        raise InvalidSearchQuery("Type a word or phrase to search for.")
    if len(q) > MAX_QUERY_CHARS:
        raise InvalidSearchQuery(f"Search for at most {MAX_QUERY_CHARS} characters.")
    limit = max(1, min(limit, MAX_LIMIT))
    config = search_config(matter.search_language)
    query = _tsquery(config, q)
    if not query:
        return []
    hits: list[dict[str, Any]] = []
    seen: set[tuple[Any, int]] = set()
    offset, count = 0, limit * 3
    while len(hits) < limit:
        rows = _candidates(matter, config, query, offset=offset, count=count)
        lengths = _page_lengths(rows)
        for row in rows:
            page = _page_of_match(row, lengths.get(row["document_id"], []))
            if (row["document_id"], page) in seen:
                continue
            seen.add((row["document_id"], page))
            hits.append(
                {
                    "document_id": str(row["document_id"]),
                    "document_name": row["name"],
                    "page": page,
                    "snippet": _snippet(row["headline"]),
                    "rank": float(row["rank"]),
                }
            )
            if len(hits) == limit:
                break
        if len(rows) < count:
            break
        offset += count
    return hits
