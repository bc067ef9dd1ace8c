"""What kind of document an upload is, judged from its bytes.

The name and the browser's content type are never trusted: a court's PDF may
start with junk before ``%PDF-``, a ``.doc`` may be renamed ``.docx``, and a
text file may be in any legacy encoding. Only the choice between plain text and
HTML may lean on the file name, and only when the content itself cannot tell.
Which encoding a text file is in is :mod:`processing.documents.encodings`' question.
"""

from __future__ import annotations

import os
import re
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from processing.documents.encodings import SNIFF_BYTES, detect_text_encoding

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
TEXT = "text/plain"
HTML = "text/html"
IMAGE_PNG = "image/png"
IMAGE_JPEG = "image/jpeg"
IMAGE_TIFF = "image/tiff"
IMAGE_TYPES = frozenset({IMAGE_PNG, IMAGE_JPEG, IMAGE_TIFF})
#: Every type we read, in the order users are told, with the name users know it by.
SUPPORTED_FORMATS: dict[str, str] = {
    PDF: "PDF",
    DOCX: "Word (.docx)",
    TEXT: "plain text",
    HTML: "HTML",
    IMAGE_PNG: "PNG",
    IMAGE_JPEG: "JPEG",
    IMAGE_TIFF: "TIFF",
}
SUPPORTED_TYPES = frozenset(SUPPORTED_FORMATS)
#: The types whose pages can be drawn as images (for OCR); the others are text only.
PAGE_IMAGE_TYPES = frozenset({PDF, *IMAGE_TYPES})

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


def supported_description() -> str:
    """The supported formats as a user reads them: 'PDF, Word (.docx), …, JPEG or TIFF'."""
    *most, last = SUPPORTED_FORMATS.values()
    return f"{', '.join(most)} or {last}"


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
