"""Finding dates, amounts, emails, phone numbers and case citations in a page's text.

Pure functions, no database: :func:`find_entities` takes a page's text and
returns what it found, each with character offsets such that
``text[found.start:found.end] == found.text``.

What is recognised (precision over recall: a wrong entity costs a reader more
than a missing one):

- **date** — ``January 5, 2021``, ``Jan. 5, 2021``, ``Sept 5th 2021``,
  ``5 January 2021``, ``5th day of January, 2021``, ISO ``2021-01-05`` and US
  numeric ``01/05/2021`` (month first, four-digit year only). Month names must
  be capitalised (``May``, not ``may``). Impossible dates (``02/30/2021``) and
  bare years are not dates. ``value`` is ISO 8601.
- **money** — a currency symbol or code with a number, before or after it:
  ``$1,200.50``, ``US$ 5``, ``€500``, ``£1,000``, ``USD 3 million``, ``$3m``,
  ``EUR 2.000,00``, ``1.200,00 €``, ``500 EUR``, ``25 dollars``. Codes: USD,
  EUR, GBP, CAD, AUD, CHF, JPY; symbols ``$`` ``US$`` ``C$`` ``A$`` ``€``
  ``£``. A comma is read as the decimal mark only in the European shape
  (``2.000,00``, ``500,50``, ``1.000.000``); ``1.500`` is one and a half. Scale
  words thousand/million/billion/trillion (any case) and the attached
  abbreviations ``k``, ``m``, ``mm``, ``mn``, ``bn``. ``value`` is the ISO code
  and the amount with two decimals: ``USD 3000000.00``.
- **email** — ``value`` lower-cased.
- **phone** — North American numbers ``(402) 555-0142``, ``402-555-0142``,
  ``402.555.0142``, ``+1 402 555 0142`` (area code and exchange must start 2-9,
  as NANP numbers do), and international numbers written with a leading ``+``
  (``+44 20 7946 0958``, ``+44 (0)20 7946 0958``; 8 to 15 digits). ``value``
  is E.164-like: ``+14025550142``. Docket and case numbers (``4:13-cr-03121``,
  ``No. 12-3456``), dates, ZIP+4 codes and social-security-shaped numbers do
  not have these shapes and are not matched.
- **citation** — U.S. case citations found by eyecite: full (``410 U.S. 113``)
  and short forms (``410 U.S. at 115``). ``Id.``, ``supra`` and statute or
  journal citations are not case citations and are left out. The span is the
  citation proper (volume, reporter, page), without the case name or the
  parenthetical; ``value`` is eyecite's corrected citation.

Overlaps: when two matches overlap, the longer one wins (ties: citation,
email, money, phone, date), so a number inside an email or a citation is not
also a phone number or a date. A date in a citation's parenthetical, outside
the citation proper (``(S.D.N.Y. Jan. 5, 2021)``), is a date of its own.
"""

from __future__ import annotations

import datetime
import functools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from processing.models import Entity

Kind = Entity.Kind

# Which kind wins when two overlapping matches have the same length.
_PRECEDENCE: dict[str, int] = {
    Kind.CITATION: 0,
    Kind.EMAIL: 1,
    Kind.MONEY: 2,
    Kind.PHONE: 3,
    Kind.DATE: 4,
}

MAX_LENGTH = 500  # Entity.text and Entity.value hold at most this many characters.
# A long page is searched this many characters at a time (find_entities_by_window),
# each window with this much of the text around it in view: two entities' length.
WINDOW = 64 * 1024
WINDOW_MARGIN = 2 * MAX_LENGTH


@dataclass(frozen=True, slots=True)
class Found:
    """One entity in a text: its kind, the text as written, its normalised value, its place."""

    kind: str
    text: str
    value: str
    start: int
    end: int


def find_entities(text: str) -> list[Found]:
    """Every entity in ``text``, in order of position, with no two overlapping."""
    if not text:
        return []
    candidates = [
        *_dates(text),
        *_money(text),
        *_emails(text),
        *_phones(text),
        *_citations(text),
    ]
    return _without_overlaps(candidates)


def _without_overlaps(candidates: list[Found]) -> list[Found]:
    """Keep the longest of overlapping matches (ties broken by ``_PRECEDENCE``), in order.

    Greedy in order of preference: a match is kept unless it overlaps one kept
    before it. No match is longer than ``MAX_LENGTH``, so whether a match
    overlaps a kept one is a look at its own characters in a map of the taken
    ones (a C-speed ``find`` and slice assignment): O(n log n) for the sort and
    O(total length) for the rest, where the bisect-and-insert list it replaces
    was quadratic (1.1 M matches on one page took minutes).
    """
    if len(candidates) < 2:
        return list(candidates)
    ordered = sorted(candidates, key=lambda f: (-(f.end - f.start), _PRECEDENCE[f.kind], f.start))
    base = min(f.start for f in candidates)
    taken = bytearray(max(f.end for f in candidates) - base)
    kept: list[Found] = []
    for found in ordered:
        start, end = found.start - base, found.end - base
        if taken.find(1, start, end) != -1:
            continue
        taken[start:end] = b"\x01" * (end - start)
        kept.append(found)
    kept.sort(key=lambda f: f.start)
    return kept


def find_entities_by_window(text: str, *, window: int = WINDOW) -> Iterator[list[Found]]:
    """The entities of ``text`` a window of about ``window`` characters at a time, in order.

    So that a stage can check for a cancel and report between windows of a
    very long page. Each window is searched with ``WINDOW_MARGIN`` characters
    of the text on both sides, and keeps the entities that start inside it: an
    entity across a window's edge is found whole, and overlaps near the edge
    are settled with everything that could overlap them in view. A text of one
    window is searched exactly as :func:`find_entities` does.
    """
    if len(text) <= window + 2 * WINDOW_MARGIN:
        yield find_entities(text)
        return
    for start in range(0, len(text), window):
        end = min(start + window, len(text))
        low, high = max(0, start - WINDOW_MARGIN), min(len(text), end + WINDOW_MARGIN)
        yield [
            Found(f.kind, f.text, f.value, f.start + low, f.end + low)
            for f in find_entities(text[low:high])
            if start <= f.start + low < end
        ]


def _found(kind: Kind, text: str, start: int, end: int, value: str) -> Found | None:
    if end - start > MAX_LENGTH or len(value) > MAX_LENGTH or start >= end:
        return None
    return Found(kind, text[start:end], value, start, end)


# --- dates ---------------------------------------------------------------------------

_MONTHS = {
    "january": 1,
    "jan": 1,
    "february": 2,
    "feb": 2,
    "march": 3,
    "mar": 3,
    "april": 4,
    "apr": 4,
    "may": 5,
    "june": 6,
    "jun": 6,
    "july": 7,
    "jul": 7,
    "august": 8,
    "aug": 8,
    "september": 9,
    "sept": 9,
    "sep": 9,
    "october": 10,
    "oct": 10,
    "november": 11,
    "nov": 11,
    "december": 12,
    "dec": 12,
}
# Capitalised or all capitals: "May" and "MAY" are months, "may" is a verb.
_MONTH = "|".join(
    sorted(
        {form for name in _MONTHS for form in (name.title(), name.upper())}, key=len, reverse=True
    )
)
_ORDINAL = r"(?:st|nd|rd|th)?"
_DATE_RES = [
    # January 5, 2021 / Jan. 5 2021 / Sept 5th, 2021
    re.compile(
        rf"\b(?P<month>{_MONTH})\.?\s{{1,3}}(?P<day>\d{{1,2}}){_ORDINAL},?\s{{1,3}}"
        r"(?P<year>\d{4})(?!\d)"
    ),
    # 5 January 2021 / 5th day of January, 2021 / 5 Jan. 2021
    re.compile(
        rf"(?<![\w.,/-])(?P<day>\d{{1,2}}){_ORDINAL}\s{{1,3}}(?:day\s+of\s+)?"
        rf"(?P<month>{_MONTH})\.?,?\s{{1,3}}(?P<year>\d{{4}})(?!\d)"
    ),
    # 2021-01-05
    re.compile(
        r"(?<![\w.,/:-])(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
        r"(?:(?=T\d)|(?![\w/-]|[.,:]\d))"
    ),
    # 01/05/2021 (US: month first)
    re.compile(
        r"(?<![\w.,/:-])(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4})(?![\w/-]|[.,:]\d)"
    ),
]


def _dates(text: str) -> Iterator[Found]:
    for pattern in _DATE_RES:
        for match in pattern.finditer(text):
            month = match["month"]
            number = int(month) if month.isdigit() else _MONTHS[month.lower()]
            try:
                day = datetime.date(int(match["year"]), number, int(match["day"]))
            except ValueError:
                continue  # 02/30/2021, month 13, year 0
            found = _found(Kind.DATE, text, match.start(), match.end(), day.isoformat())
            if found:
                yield found


# --- money ---------------------------------------------------------------------------

_SYMBOLS = {"$": "USD", "US$": "USD", "C$": "CAD", "A$": "AUD", "€": "EUR", "£": "GBP"}
_CODES = ("USD", "EUR", "GBP", "CAD", "AUD", "CHF", "JPY")
_WORDS = {"dollars": "USD", "euros": "EUR"}
_SCALES = {
    "thousand": 10**3,
    "million": 10**6,
    "billion": 10**9,
    "trillion": 10**12,
    "k": 10**3,
    "m": 10**6,
    "mm": 10**6,
    "mn": 10**6,
    "bn": 10**9,
}
# Alternatives in the order tried: European grouping with a decimal comma, European
# grouping of two or more groups, English grouping, a bare decimal comma, plain.
_NUMBER = (
    r"(?P<number>\d{1,3}(?:\.\d{3})+,\d{1,2}"
    r"|\d{1,3}(?:\.\d{3}){2,}"
    r"|\d{1,3}(?:,\d{3})+(?:\.\d+)?"
    r"|\d+,\d{2}(?![\d,])"
    r"|\d+(?:\.\d+)?)"
    r"(?![\d]|[.,]\d)"
)
_SCALE = (
    r"(?:\s?(?P<scale_word>(?i:thousand|million|billion|trillion))\b"
    r"|(?P<scale_abbr>k|mm|mn|m|bn)\b)?"
)
_CODE = "|".join(_CODES)
_MONEY_RES = [
    # $1,200.50 / US$ 5 / €500 / USD 3 million / $3m
    re.compile(
        rf"(?:(?<![\w$])(?P<symbol>US\$|C\$|A\$)|(?<![\w$])(?P<dollar>\$)|(?P<sign>[€£])"
        rf"|\b(?P<code>{_CODE}))\s?{_NUMBER}{_SCALE}"
    ),
    # 500 EUR / 1.200,00 € / 3 million dollars
    re.compile(
        rf"(?<![\w.,$€£]){_NUMBER}{_SCALE}\s?"
        rf"(?:(?P<after_sign>€)|\b(?P<after_code>{_CODE})\b|(?P<after_word>dollars|euros)\b)"
        # "in 2021 EUR 500": the code belongs to the number after it.
        r"(?!\s?\d)"
    ),
]


def _amount(number: str) -> Decimal | None:
    if "," in number and ("." not in number or number.rfind(",") > number.rfind(".")):
        if re.fullmatch(r"\d{1,3}(?:,\d{3})+", number):
            plain = number.replace(",", "")  # 1,200: English grouping
        else:
            plain = number.replace(".", "").replace(",", ".")  # 2.000,00 or 500,50
    elif number.count(".") > 1:
        plain = number.replace(".", "")  # 1.000.000
    else:
        plain = number.replace(",", "")
    try:
        return Decimal(plain)
    except InvalidOperation:
        return None


def _money(text: str) -> Iterator[Found]:
    for pattern in _MONEY_RES:
        for match in pattern.finditer(text):
            groups = match.groupdict()
            currency = (
                _SYMBOLS.get(
                    groups.get("symbol")
                    or groups.get("dollar")
                    or groups.get("sign")
                    or groups.get("after_sign")
                    or ""
                )
                or groups.get("code")
                or groups.get("after_code")
                or _WORDS.get(groups.get("after_word") or "")
            )
            amount = _amount(match["number"])
            if not currency or amount is None:
                continue
            scale = (match["scale_word"] or match["scale_abbr"] or "").lower()
            amount = (amount * _SCALES.get(scale, 1)).quantize(
                Decimal("0.01"), rounding=ROUND_HALF_UP
            )
            found = _found(Kind.MONEY, text, match.start(), match.end(), f"{currency} {amount}")
            if found:
                yield found


# --- email addresses -----------------------------------------------------------------

_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]*[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)


def _emails(text: str) -> Iterator[Found]:
    for match in _EMAIL_RE.finditer(text):
        found = _found(Kind.EMAIL, text, match.start(), match.end(), match.group().lower())
        if found:
            yield found


# --- phone numbers -------------------------------------------------------------------

# Not glued to a longer token: docket numbers (4:13-cr-03121), ids, decimals.
_PHONE_BEFORE = r"(?<![\w+\-./#])"
_PHONE_AFTER = r"(?![\w\-]|[./,:]\d)"
_NANP_RE = re.compile(
    _PHONE_BEFORE + r"(?:(?P<country>\+1|1)[ .\-]?)?"
    r"(?:\((?P<area_paren>[2-9]\d{2})\)\s?|(?P<area>[2-9]\d{2})(?P<sep>[ .\-]))"
    r"(?P<exchange>[2-9]\d{2})[ .\-](?P<line>\d{4})" + _PHONE_AFTER
)
_INTERNATIONAL_RE = re.compile(
    _PHONE_BEFORE
    # Atomic: a number glued to more digits must not match as a shorter one.
    + r"(?>\+[1-9]\d{0,2}(?:[ .\-]?\(0\))?(?:[ .\-]?(?:\(\d{1,4}\)|\d{1,5})){1,6})"
    + _PHONE_AFTER
)


def _phones(text: str) -> Iterator[Found]:
    for match in _NANP_RE.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if len(digits) == 11:
            digits = digits[1:]
        found = _found(Kind.PHONE, text, match.start(), match.end(), f"+1{digits}")
        if found:
            yield found
    for match in _INTERNATIONAL_RE.finditer(text):
        digits = re.sub(r"\D", "", match.group().replace("(0)", ""))
        if not 8 <= len(digits) <= 15:
            continue
        found = _found(Kind.PHONE, text, match.start(), match.end(), f"+{digits}")
        if found:
            yield found


# --- case citations (eyecite) ----------------------------------------------------------

# eyecite logs a warning for overlaps it resolves itself ("Unknown overlap case"),
# once per citation on a busy page: nothing we could act on.
logging.getLogger("eyecite").setLevel(logging.ERROR)

_WHITESPACE = re.compile(r"\s")
_DIGIT = re.compile(r"\d")


def _citations(text: str) -> Iterator[Found]:
    from eyecite import get_citations
    from eyecite.models import FullCaseCitation, ShortCaseCitation

    if not _DIGIT.search(text):
        return  # every case citation has a volume and a page
    _speed_up_eyecite()
    # eyecite reads a line break inside a citation ("410 U.S.\n113") as a token
    # boundary it cannot cross; one space per whitespace character keeps offsets.
    flat = _WHITESPACE.sub(" ", text)
    for citation in get_citations(flat):
        if not isinstance(citation, FullCaseCitation | ShortCaseCitation):
            continue
        start, end = citation.span()
        if not (0 <= start < end <= len(text)) or flat[start:end] != citation.matched_text():
            continue  # an offset that does not map back into the page is no offset
        found = _found(Kind.CITATION, text, start, end, citation.corrected_citation())
        if found:
            yield found


@functools.cache
def _speed_up_eyecite() -> None:
    """Give eyecite a court lookup that does not re-normalise every court per citation.

    eyecite 2.7's ``get_court_by_paren`` runs a regex substitution over each of
    its ~3,000 courts for every citation with a parenthetical (~25 ms each; a
    page of a brief took half a second). This is the same function over the
    same data with the court strings normalised once and results cached.
    """
    from eyecite import helpers

    original = getattr(helpers, "get_court_by_paren", None)
    if original is None or getattr(original, "_jobtracker", False):
        return
    import regex
    from courts_db import courts

    normalised = [
        (regex.sub(r"[^\w]", "", court["citation_string"]).lower(), court["id"]) for court in courts
    ]

    @functools.lru_cache(maxsize=4096)
    def get_court_by_paren(paren_string: str) -> str | None:
        court_str = regex.sub(r"[^\w]", "", paren_string).lower()
        court_code = None
        if court_str:
            for candidate, court_id in normalised:
                if candidate == court_str:
                    return str(court_id)
                if candidate.startswith(court_str):
                    court_code = court_id
        return court_code

    get_court_by_paren._jobtracker = True  # type: ignore[attr-defined]
    get_court_by_paren.original = original  # type: ignore[attr-defined]
    helpers.get_court_by_paren = get_court_by_paren
