"""Which encoding a text file is in, and which Python codec reads it.

Detection looks at a sample (the first :data:`SNIFF_BYTES` of a file, perhaps
cut off mid-character); the readers then check the codec against the whole
file, because an English file whose one accented word sits past the sample
may be Latin-1 rather than the UTF-8 its start suggested. A UTF-8 file with a
few stray bytes stays UTF-8 (they read as �): recoding it in a legacy code
page would garble every other non-ASCII character instead.

:func:`detect_text_encoding` answers with an encoding label ('utf-8-sig',
'utf-16'); a reader that seeks to byte offsets wants a codec without BOM
handling and where the text starts after the BOM, which :func:`text_codec` gives.

HTML is the one format that can name its own encoding (``<meta charset>``);
the declaration is believed only when the bytes are not valid UTF-8 and it
decodes them, and its labels are read the way browsers read them (WHATWG), so
``iso-8859-1`` means cp1252.
"""

from __future__ import annotations

import codecs
import importlib
import logging
import re
import unicodedata
from functools import cache
from typing import Any

import charset_normalizer
from charset_normalizer.constant import FREQUENCIES

logger = logging.getLogger(__name__)

#: How many leading bytes of a file are sniffed, for its type and its text encoding.
SNIFF_BYTES = 64 * 1024

#: How much of a file is decoded or scanned at a time when the whole of it is read.
CHUNK_BYTES = 1024 * 1024


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


# --- Detection: which encoding a sample is in ----------------------------------


def detect_text_encoding(data: bytes) -> str | None:
    """The encoding ``data`` (the start of a file, maybe cut off) is text in, or None.

    Unicode is recognised by its BOM, by strict UTF-8 validity and by the NUL
    pattern of BOM-less UTF-16. Legacy encodings come from charset-normalizer;
    when it proposes a single-byte code page we re-rank the plausible ones by
    how natural the decoded words look (see :func:`_oddity`), because on short
    or ambiguous samples its first pick can be a near-miss that reads almost
    right: cp1251 for MacCyrillic, cp1250 for Latin-1.
    """
    if not data:
        return None
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding
    has_nul = b"\x00" in data
    if not has_nul and b"\x1b" not in data and _is_utf8(data):  # ESC: maybe 7-bit ISO-2022
        return "utf-8"
    if not has_nul and b"\x1b" not in data and _is_damaged_utf8(data):
        return "utf-8"
    utf16 = _bomless_utf16(data)
    if utf16:
        return utf16
    sample = _trim_sample(data)
    if has_nul:  # maybe UTF-16/32: whole code units only
        sample = sample[: len(sample) - len(sample) % 4]
    proposed = [m.encoding for m in charset_normalizer.from_bytes(sample)]
    wide = [e for e in proposed if e.startswith(("utf_16", "utf_32"))]
    if has_nul:  # only UTF-16/32 text has NULs; anything else with them is binary
        return wide[0] if wide else None
    # BOM-less UTF-16 without a single NUL (no space, no newline) is not a text
    # file anyone writes; short binary junk often "decodes" as it.
    proposed = [e for e in proposed if e not in wide]
    if not proposed:
        return None
    if not _is_single_byte(proposed[0]):
        return "utf-8" if proposed[0] == "ascii" else proposed[0]
    return _best_single_byte(sample, proposed)


def _is_utf8(data: bytes) -> bool:
    """Valid UTF-8, allowing one character cut off at the very end."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.reason == "unexpected end of data" and error.start >= len(data) - 3
    return True


def _is_damaged_utf8(data: bytes) -> bool:
    """UTF-8 with a few bad bytes (a stray Latin-1 character pasted in), decoded with �."""
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    good = len(text) - len(text.encode("ascii", "ignore")) - bad
    return _mostly_utf8(bad=bad, good=good, total=len(text))


def _mostly_utf8(*, bad: int, good: int, total: int) -> bool:
    """Whether text with ``bad`` undecodable and ``good`` non-ASCII UTF-8 characters is UTF-8."""
    return good > 0 and good >= 8 * bad and bad * 200 <= total


def _bomless_utf16(data: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when NULs sit on one side of most code units."""
    half = len(data) // 2
    if half < 2:
        return None
    even_nuls = data[0 : 2 * half : 2].count(0)
    odd_nuls = data[1 : 2 * half : 2].count(0)
    if odd_nuls >= half * 0.3 and even_nuls <= half * 0.02:
        encoding = "utf-16-le"
    elif even_nuls >= half * 0.3 and odd_nuls <= half * 0.02:
        encoding = "utf-16-be"
    else:
        return None
    try:
        data[: 2 * half].decode(encoding)
    except UnicodeDecodeError as error:
        if error.start < 2 * half - 2:  # only a surrogate pair split at the end is fine
            return None
    return encoding


def _trim_sample(data: bytes) -> bytes:
    """Cut a sample after its last newline or space, so no multi-byte character is split.

    Those bytes are never part of a multi-byte character in the encodings we
    detect. The cut is skipped when it would remove the only non-ASCII bytes:
    a complete file whose one accented word is on its last line must keep it.
    """
    low = max(0, len(data) - 4096)
    cut = max(data.rfind(b"\n", low), data.rfind(b" ", low)) + 1
    if cut <= 0:
        return data
    kept, dropped = data[:cut], data[cut:]
    if _has_non_ascii(dropped) and _has_non_ascii(kept):
        return kept
    return data


_NON_ASCII = re.compile(rb"[\x80-\xff\x1b]")  # ESC: ISO-2022 shifts


def _has_non_ascii(data: bytes) -> bool:
    return _NON_ASCII.search(data) is not None


@cache
def _is_single_byte(encoding: str) -> bool:
    """True for ASCII-compatible code pages with one byte per character."""
    try:
        name = codecs.lookup(encoding).name.replace("-", "_")
        table = getattr(importlib.import_module(f"encodings.{name}"), "decoding_table", None)
    except (ImportError, LookupError):
        return False
    return isinstance(table, str) and len(table) == 256 and table[32:127] == _PRINTABLE_ASCII


_PRINTABLE_ASCII = "".join(map(chr, range(32, 127)))


# Most common first: the tie-break when the words read equally well. cp1252
# before the other Latin code pages because it is by far the most used (and
# Latin-1 files are cp1252 files in practice); cp1251 before KOI8-R and
# MacCyrillic for the same reason.
_POPULAR_CODE_PAGES = (
    "cp1252",
    "cp1250",
    "cp1251",
    "koi8_r",
    "mac_cyrillic",
    "cp866",
    "iso8859_5",
    "koi8_u",
    "cp1253",
    "iso8859_7",
    "cp1254",
    "cp1257",
    "iso8859_2",
    "iso8859_15",
    "cp1255",
    "cp1256",
    "cp874",
    "mac_roman",
    "cp850",
    "latin_1",
)


def _best_single_byte(sample: bytes, proposed: list[str]) -> str | None:
    """Among the code pages that decode ``sample``, the one whose words read most naturally."""
    words = _non_ascii_words(sample)
    # Ties go to charset-normalizer's own order (it weighs letter frequencies),
    # then to the most common code page.
    candidates = list(dict.fromkeys([*proposed, *_POPULAR_CODE_PAGES]))
    scored: list[tuple[float, int, str]] = []
    oddities: dict[str, float] = {}  # many code pages read the same words the same way
    for rank, encoding in enumerate(candidates):
        if not _is_single_byte(encoding):
            continue
        try:
            decoded = words.decode(encoding)
        except UnicodeDecodeError:
            continue
        if decoded not in oddities:
            oddities[decoded] = round(_oddity(decoded), 3)
        scored.append((oddities[decoded], rank, encoding))
    if not scored:
        return proposed[0]
    oddity, _, encoding = min(scored)
    # Prose in its own code page scores under 0.15 (0.25 at worst: every accented
    # letter a rare one); random bytes score over 0.6 from 100 bytes on.
    return encoding if oddity <= _MAX_ODDITY else None


_MAX_ODDITY = 0.4


def _non_ascii_words(sample: bytes, limit: int = 3000) -> bytes:
    """The words of ``sample`` that contain non-ASCII bytes: the only ones that differ."""
    found = bytearray()
    for match in re.finditer(rb"[^\s]*[\x80-\xff][^\s]*", sample):
        found += match.group(0) + b" "
        if len(found) >= limit:
            break
    return bytes(found)


# Symbols that prose in a legacy code page really uses.
_TYPOGRAPHIC = frozenset("\u00a0“”‘’„‚«»–—…•€£§°©®™№¿¡·‹›")
_APOSTROPHES = frozenset("’'·-")


def _oddity(text: str) -> float:
    """How unnatural decoded words look: 0 for clean prose, higher for mojibake.

    Counts, per non-ASCII character, the signs a wrong code page leaves: a capital
    inside a lower-case word ('составлЯли'), letters of two scripts in one word,
    symbols between letters ('c¶té'), control characters, and letters that are
    not in the alphabet of the language the text most looks like ('naďve'), and,
    weighing less, letters that are rare in that language ('ŕ' for 'à').
    """
    non_ascii = 0
    odd = 0.0
    letters: dict[str, int] = {}
    for word in text.split():
        previous = ""
        previous_script = ""
        for index, ch in enumerate(word):
            if ch >= "\x80":
                non_ascii += 1
            category = unicodedata.category(ch)
            if category[0] == "L":
                script = _script(ch)
                if previous_script and script != previous_script:
                    odd += 1
                if category == "Lu" and previous and unicodedata.category(previous) == "Ll":
                    odd += 1
                if ch >= "\x80":
                    lower = ch.lower()
                    letters[lower] = letters.get(lower, 0) + 1
                previous_script = script
            elif category[0] == "C" or ch == "\ufffd":
                odd += 3
            elif ch >= "\x80" and ch not in _TYPOGRAPHIC:
                odd += 0.5
                between_letters = (
                    0 < index < len(word) - 1
                    and word[index - 1].isalpha()
                    and word[index + 1].isalpha()
                )
                if between_letters and ch not in _APOSTROPHES:
                    odd += 1
            previous = ch
    if letters:
        odd += _outside(letters, _ALPHABETS) + 0.25 * _outside(letters, _COMMON_LETTERS)
    return odd / max(non_ascii, 1)


def _outside(letters: dict[str, int], alphabets: tuple[frozenset[str], ...]) -> int:
    """How many of ``letters`` fall outside the one alphabet that holds most of them."""
    best = max(alphabets, key=lambda alphabet: sum(n for c, n in letters.items() if c in alphabet))
    return sum(n for c, n in letters.items() if c not in best)


def _script(ch: str) -> str:
    """A coarse script name for a letter (enough to spot mixed-script words)."""
    code = ord(ch)
    if code < 0x250 or 0x1E00 <= code < 0x1F00:
        return "latin"
    if 0x370 <= code < 0x400 or 0x1F00 <= code < 0x2000:
        return "greek"
    if 0x400 <= code < 0x530:
        return "cyrillic"
    if 0x590 <= code < 0x600:
        return "hebrew"
    if 0x600 <= code < 0x780 or 0xFB50 <= code < 0xFF00:
        return "arabic"
    if 0xE00 <= code < 0xE80:
        return "thai"
    return "other"


# The non-ASCII letters (lower case) of the languages the popular code pages
# serve. A decoded text is judged against the one alphabet that fits it best.
_ALPHABETS = tuple(
    frozenset(letters)
    for letters in (
        "àâæçéèêëîïôœùûüÿ",  # French
        "äöüß",  # German
        "áéíñóúü",  # Spanish
        "áâãàçéêíóôõú",  # Portuguese
        "àèéìíîòóùú",  # Italian
        "áéíóúýðþæö",  # Icelandic
        "åäöæøéü",  # Nordic
        "éëïóöüèáíú",  # Dutch, Afrikaans
        "ąćęłńóśźż",  # Polish
        "áčďéěíňóřšťúůýž",  # Czech
        "áäčďéíĺľňóôŕšťúýž",  # Slovak
        "áéíóöőúüű",  # Hungarian
        "ăâîșțşţ",  # Romanian
        "čćđšž",  # Croatian, Slovene, Bosnian
        "âçğıöşüî",  # Turkish
        "ąčęėįšųūž",  # Lithuanian
        "āčēģīķļņšūž",  # Latvian
        "äöõüšž",  # Estonian
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",  # Russian
        "абвгґдеєжзиіїйклмнопрстуфхцчшщьюя",  # Ukrainian
        "абвгдеёжзійклмнопрстуўфхцчшыьэюя",  # Belarusian
        "абвгдежзийклмнопрстуфхцчшщъьюя",  # Bulgarian
        "абвгдђежзијклљмнњопрстћуфхцчџш",  # Serbian
        "абвгдѓежзѕијклљмнњопрстќуфхцчџш",  # Macedonian
        "αβγδεζηθικλμνξοπρσςτυφχψωάέήίόύώϊϋΐΰ",  # Greek
        "אבגדהוזחטיךכלםמןנסעףפץצקרשת",  # Hebrew
        "ءآأؤإئابةتثجحخدذرزسشصضطظعغفقكلمنهوىيپچژکگی",  # Arabic, Persian
        "".join(map(chr, range(0xE01, 0xE3B))) + "".join(map(chr, range(0xE40, 0xE4F))),  # Thai
    )
)

# The most frequent non-ASCII letters of each language charset-normalizer knows.
_COMMON_LETTERS = tuple(
    letters
    for letters in (frozenset(c for c in chars if c >= "\x80") for chars in FREQUENCIES.values())
    if letters
)


# --- Codecs: which Python codec reads a whole file ------------------------------


def codec_name(encoding: str) -> str:
    """Python's canonical codec name for an encoding label ('UTF-8' -> 'utf_8')."""
    return codecs.lookup(encoding).name.replace("-", "_")


def text_codec(head: bytes) -> tuple[str, int]:
    """(codec without BOM handling, offset where the text starts) for a text file's head."""
    encoding = detect_text_encoding(head) or "utf-8"
    name = codec_name(encoding)
    if name == "utf_8_sig":
        return "utf_8", len(codecs.BOM_UTF8)
    if name == "utf_16":  # detection says so only when there is a BOM
        return ("utf_16_le" if head.startswith(codecs.BOM_UTF16_LE) else "utf_16_be"), 2
    if name == "utf_32":
        return ("utf_32_le" if head.startswith(codecs.BOM_UTF32_LE) else "utf_32_be"), 4
    if name == "ascii":
        return "utf_8", 0
    return name, 0


def validated_codec(file: Any, encoding: str, start: int) -> str:
    """The codec, re-detected if a later part of the file does not decode in it.

    Detection sees only the head; an English file with one accented word past
    it may be Latin-1 rather than the UTF-8 the head suggested. A UTF-8 file
    with a few stray bytes stays UTF-8 (they read as �).
    """
    position = _first_decode_error(file, encoding, start)
    if position is None:
        return encoding
    if encoding == "utf_8" and _mostly_utf8_file(file, start):
        return encoding
    if code_unit(encoding) == 1:
        file.seek(max(start, position - SNIFF_BYTES // 2))
        window = file.read(SNIFF_BYTES)
        retry = detect_text_encoding(_from_line_start(window))
        if retry and _first_decode_error(file, codec_name(retry), start) is None:
            return codec_name(retry)
    logger.info("text does not decode cleanly as %s; bad bytes are replaced", encoding)
    return encoding


def code_unit(encoding: str) -> int:
    """Bytes per code unit of a BOM-less codec: 4 for UTF-32, 2 for UTF-16, else 1."""
    return 4 if encoding.startswith("utf_32") else 2 if encoding.startswith("utf_16") else 1


def _first_decode_error(file: Any, encoding: str, start: int) -> int | None:
    """Byte offset of the first byte that does not decode, or None if the whole file does."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    file.seek(start)
    offset = start
    while True:
        chunk = file.read(CHUNK_BYTES)
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as error:
            return offset + max(error.start, 0)
        if not chunk:
            return None
        offset += len(chunk)


def _mostly_utf8_file(file: Any, start: int) -> bool:
    """Whether the file is UTF-8 apart from a few bad bytes (see :func:`_mostly_utf8`)."""
    decoder = codecs.getincrementaldecoder("utf_8")(errors="replace")
    file.seek(start)
    bad = good = total = 0
    while True:
        chunk = file.read(CHUNK_BYTES)
        text = decoder.decode(chunk, final=not chunk)
        damaged = text.count("\ufffd")
        bad += damaged
        good += len(text) - len(text.encode("ascii", "ignore")) - damaged
        total += len(text)
        if not chunk:
            return _mostly_utf8(bad=bad, good=good, total=total)


def _from_line_start(window: bytes) -> bytes:
    """A sample cut out of a file, starting after its first newline (no split character)."""
    first, newline, rest = window.partition(b"\n")
    return rest if newline and rest else window


# --- HTML: a declared charset, and when to believe it ---------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)


def html_encoding(data: bytes) -> str:
    """BOM, then valid UTF-8, then a ``<meta charset>`` that decodes the file, then detection.

    Valid UTF-8 beats the declaration because pages saved as UTF-8 with a stale
    ``iso-8859-1`` meta are common, and legacy text is almost never valid UTF-8.
    """
    for bom, name in (
        (codecs.BOM_UTF8, "utf_8_sig"),
        (codecs.BOM_UTF16_LE, "utf_16"),
        (codecs.BOM_UTF16_BE, "utf_16"),
    ):
        if data.startswith(bom):
            return name
    if _decodes(data, "utf_8"):
        return "utf_8"
    declared = _META_CHARSET.search(data[:4096])
    if declared:
        name = _html_charset(declared.group(1).decode("ascii").lower())
        if name and _decodes(data, name):
            return name
    name = codec_name(detect_text_encoding(data[:SNIFF_BYTES]) or "utf-8")
    try:
        data.decode(name)
    except UnicodeDecodeError as error:
        # The head was plain ASCII; look where the first non-ASCII text really is.
        window = data[max(0, error.start - SNIFF_BYTES // 2) : error.start + SNIFF_BYTES // 2]
        retry = detect_text_encoding(_from_line_start(window))
        if retry and _decodes(data, retry):
            return codec_name(retry)
    return name


# Labels browsers know that Python does not, or maps differently (WHATWG Encoding).
_HTML_CHARSETS = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "x-mac-cyrillic": "mac_cyrillic",
    "x-mac-ukrainian": "mac_cyrillic",
    "macintosh": "mac_roman",
    "x-mac-roman": "mac_roman",
    "windows-874": "cp874",
    "tis-620": "cp874",
    "shift_jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "gb2312": "gbk",
    "x-gbk": "gbk",
    "iso-8859-8-i": "iso8859_8",
}


def _html_charset(label: str) -> str:
    """The Python codec for a meta charset label, or '' if unknown or impossible."""
    label = _HTML_CHARSETS.get(label, label)
    try:
        name = codec_name(label)
    except LookupError:
        return ""
    # A meta tag cannot make ASCII-compatible bytes UTF-16 (browsers read UTF-8).
    return "utf_8" if name.startswith(("utf_16", "utf_32")) else name


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True
