"""What kind of document an upload is, judged from its bytes.

The name and the browser's content type are never trusted: a court's PDF may
start with junk before ``%PDF-``, a ``.doc`` may be renamed ``.docx``, and a
text file may be in any legacy encoding. Only the choice between plain text and
HTML may lean on the file name, and only when the content itself cannot tell.
"""

from __future__ import annotations

import codecs
import importlib
import os
import re
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from functools import cache
from typing import BinaryIO

import charset_normalizer
from charset_normalizer.constant import FREQUENCIES

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
TEXT = "text/plain"
HTML = "text/html"
IMAGE_PNG = "image/png"
IMAGE_JPEG = "image/jpeg"
IMAGE_TIFF = "image/tiff"
IMAGE_TYPES = frozenset({IMAGE_PNG, IMAGE_JPEG, IMAGE_TIFF})
SUPPORTED_TYPES = frozenset({PDF, DOCX, TEXT, HTML, *IMAGE_TYPES})
#: The types whose pages can be drawn as images (for OCR); the others are text only.
PAGE_IMAGE_TYPES = frozenset({PDF, *IMAGE_TYPES})

#: How many leading bytes :func:`detect_content_type` needs to decide.
SNIFF_BYTES = 64 * 1024

# PDF readers accept the header anywhere in the first 1024 bytes.
_PDF_HEADER = re.compile(rb"%PDF-\d\.\d")
_PDF_HEADER_WINDOW = 1024

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
# Scanned pages: a damaged image behind a right signature is reported at open
# (CORRUPT_DOCUMENT), like a damaged PDF. BigTIFF is not among them.
_IMAGE_MAGICS = (
    (b"\x89PNG\r\n\x1a\n", IMAGE_PNG),
    (b"\xff\xd8\xff", IMAGE_JPEG),
    (b"II*\x00", IMAGE_TIFF),
    (b"MM\x00*", IMAGE_TIFF),
)
_WORD_MAIN_PART = "word/document.xml"
_WORD_MAIN_CONTENT_TYPE = (
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
)
_CONTENT_TYPES_PART = "[Content_Types].xml"

# Formats that are surely not one of ours. Everything not recognised here must
# still pass the text test, so this list is a shortcut, not the safety net.
_BINARY_MAGICS = (
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",  # OLE2: .doc, .xls, .msg
    b"\x89PNG",  # not PNG itself (see _IMAGE_MAGICS): a broken signature
    b"GIF87a",
    b"GIF89a",
    b"II+\x00",  # BigTIFF
    b"MM\x00+",
    b"BM",  # BMP
    b"RIFF",  # WAV, AVI, WebP
    b"OggS",
    b"fLaC",
    b"ID3",
    b"\x7fELF",
    b"MZ",  # Windows executables
    b"\xca\xfe\xba\xbe",  # Mach-O universal, Java class
    b"\xcf\xfa\xed\xfe",
    b"\xfe\xed\xfa\xcf",
    b"\x1f\x8b",  # gzip
    b"BZh",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!\x1a\x07",
    b"\x28\xb5\x2f\xfd",  # zstd
    b"SQLite format 3\x00",
    b"\x00asm",
    b"%!PS",  # PostScript: text, but a page description, not prose
    b"{\\rtf",  # RTF: text, but markup we do not render
    b"\x1a\x45\xdf\xa3",  # Matroska/WebM
)

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def detect_content_type(head: bytes, *, filename: str = "") -> str | None:
    """Return PDF, DOCX, TEXT, HTML or an image type for the first bytes of a file, or None.

    Give it at least 8 KiB, ideally :data:`SNIFF_BYTES`. A DOCX is recognised from
    the ZIP entries in ``head`` only when they are near the start; use
    :func:`detect_file` when the whole file is at hand.
    """
    if not head:
        return None
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(_ZIP_MAGICS):
        return _zip_kind(_local_zip_entries(head))
    for magic, image_type in _IMAGE_MAGICS:
        if head.startswith(magic):
            return image_type
    if head.startswith(_BINARY_MAGICS) or head[4:8] == b"ftyp":  # ftyp: MP4, MOV, HEIC
        return None
    if _PDF_HEADER.search(head, 0, _PDF_HEADER_WINDOW + 8):
        return PDF
    return _text_kind(head, filename)


def detect_file(source: str | os.PathLike[str] | BinaryIO, *, filename: str = "") -> str | None:
    """Return the content type of a whole file (a path or a seekable binary file), or None.

    Unlike :func:`detect_content_type` this reads a ZIP's central directory, so a
    DOCX is found wherever its ``word/document.xml`` sits in the archive. A file
    object is read from its start and left where it was.
    """
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as fh:
            return detect_file(fh, filename=filename or os.fspath(source))
    position = source.tell()
    try:
        source.seek(0)
        head = source.read(SNIFF_BYTES)
        if not head.startswith(_ZIP_MAGICS):
            return detect_content_type(head, filename=filename)
        source.seek(0)
        try:
            with zipfile.ZipFile(source) as archive:
                return _zip_kind(_central_zip_entries(archive))
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            # A damaged archive: judge by the entries at its start, so a broken
            # DOCX is reported as damaged rather than as an unsupported type.
            return detect_content_type(head, filename=filename)
    finally:
        source.seek(position)


# --- ZIP: is it a Word document? -------------------------------------------------------


def _zip_kind(entries: Iterator[tuple[str, bytes | None]]) -> str | None:
    """DOCX if the entries hold a Word main document declared as plain .docx.

    ``entries`` yields (name, data) where data is only given for the content-types
    part (None when it cannot be read). Macro-enabled documents and templates
    (.docm, .dotx) also have ``word/document.xml`` but are not DOCX.
    """
    has_word_part = False
    for name, data in entries:
        if name.lower() == _WORD_MAIN_PART:
            has_word_part = True
        elif name == _CONTENT_TYPES_PART and data is not None:
            declared = _declared_main_content_type(data)
            if declared is not None:
                return DOCX if declared == _WORD_MAIN_CONTENT_TYPE else None
    return DOCX if has_word_part else None


_WORD_MAIN_TYPES = re.compile(
    rb"application/vnd\.(?:openxmlformats-officedocument\.wordprocessingml\.|ms-word\.)"
    rb"[\w.]*main\+xml"
)


def _declared_main_content_type(content_types_xml: bytes) -> str | None:
    """The Word main-document content type [Content_Types].xml declares, if any.

    Found by type, not by part name: a few generators call the main part
    ``word/document2.xml``, which python-docx opens through the relationships.
    """
    declared = _WORD_MAIN_TYPES.search(content_types_xml)
    return declared.group(0).decode("ascii") if declared else None


def _central_zip_entries(archive: zipfile.ZipFile) -> Iterator[tuple[str, bytes | None]]:
    """Entries from the central directory; the content-types part is read (if small)."""
    for info in archive.infolist():
        data = None
        if info.filename == _CONTENT_TYPES_PART and info.file_size <= 1024 * 1024:
            try:
                data = archive.read(info)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
                data = None
        yield info.filename, data


def _local_zip_entries(head: bytes) -> Iterator[tuple[str, bytes | None]]:
    """Entries found by walking the local file headers present in ``head``."""
    position = 0
    while (position := head.find(b"PK\x03\x04", position)) != -1 and position + 30 <= len(head):
        (flags, method, compressed, name_len, extra_len) = struct.unpack_from(
            "<2xHH8xI4xHH", head, position + 4
        )
        name_start = position + 30
        name = head[name_start : name_start + name_len].decode("utf-8", "replace")
        data_start = name_start + name_len + extra_len
        data = None
        if name == _CONTENT_TYPES_PART:
            data = _inflate_entry(head, data_start, method, compressed)
        yield name, data
        # With a data descriptor (flag 3) the size is unknown here: scan onwards.
        position = data_start + (compressed if not flags & 0x08 else 0)
        position = max(position, name_start)


def _inflate_entry(head: bytes, start: int, method: int, compressed: int) -> bytes | None:
    """The uncompressed bytes of a stored or deflated entry, or None if cut off."""
    if method == 0:
        end = start + compressed
        return head[start:end] if compressed and end <= len(head) else None
    if method != 8:
        return None
    inflater = zlib.decompressobj(-15)
    try:
        data = inflater.decompress(head[start:], 1024 * 1024)
    except zlib.error:
        return None
    return data if inflater.eof else None


# --- Text and HTML ---------------------------------------------------------------------


def _text_kind(head: bytes, filename: str) -> str | None:
    """TEXT or HTML if ``head`` is text in some encoding, else None."""
    encoding = detect_text_encoding(head)
    if encoding is None:
        return None
    text = _decode_sample(head, encoding)
    if not _mostly_printable(text):
        return None
    return HTML if _looks_like_html(text, filename) else TEXT


_HTML_START = re.compile(r"<(?:!doctype\s+html|html|head|body)[\s>/]", re.IGNORECASE)
_PROLOG = re.compile(r"\A(?:\s+|<!--.*?-->|<\?xml[^>]*\?>)*", re.DOTALL)
_HTML_TAGS = (
    "a|abbr|address|article|aside|b|blockquote|br|center|div|dl|em|font|footer|form|"
    "h[1-6]|header|hr|i|img|li|link|main|meta|nav|ol|p|pre|script|section|span|strong|"
    "style|table|tbody|td|th|title|tr|u|ul"
)
_HTML_OPEN_TAG = re.compile(rf"<(?:{_HTML_TAGS})[\s>/]", re.IGNORECASE)
_HTML_CLOSE_TAG = re.compile(rf"</(?:{_HTML_TAGS}|html|body|head)\s*>", re.IGNORECASE)


def _looks_like_html(text: str, filename: str) -> bool:
    """True when the text starts as an HTML document or clearly is a fragment of one."""
    start = _PROLOG.match(text)
    rest = text[start.end() if start else 0 :]
    if _HTML_START.match(rest):
        return True
    named_html = filename.lower().endswith((".html", ".htm", ".xhtml"))
    named_text = filename.lower().endswith(".txt")
    if _HTML_OPEN_TAG.match(rest) and _HTML_CLOSE_TAG.search(rest):
        return not named_text
    return named_html and bool(_HTML_OPEN_TAG.search(rest) or _HTML_START.search(rest))


_PRINTABLE_CONTROLS = frozenset("\t\n\r\f\v\x1b")
# Control, unassigned, private-use and surrogate code points: binary read as text.
_BAD_CATEGORIES = frozenset({"Cc", "Cn", "Co", "Cs"})


def _mostly_printable(text: str) -> bool:
    """At most 1 % control characters or replacement marks (binary junk has many)."""
    if not text:
        return False
    bad = sum(
        1
        for ch in text
        if (ch < " " and ch not in _PRINTABLE_CONTROLS)
        or (ch >= "\x7f" and unicodedata.category(ch) in _BAD_CATEGORIES)
        or ch == "\ufffd"
    )
    return bad <= len(text) // 100


def _decode_sample(data: bytes, encoding: str) -> str:
    """Decode a possibly cut-off sample; a character split at the end is dropped."""
    return data.decode(encoding, errors="replace").rstrip("\ufffd")


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
    return mostly_utf8(bad=bad, good=good, total=len(text))


def mostly_utf8(*, bad: int, good: int, total: int) -> bool:
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
