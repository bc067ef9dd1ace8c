"""Reading uploaded documents: what they are, and their text page by page.

Pure Python over files on disk: no ORM, no settings; limits are passed in.
"""

from processing.documents.detect import (
    DOCX,
    HTML,
    PDF,
    SNIFF_BYTES,
    SUPPORTED_TYPES,
    TEXT,
    detect_content_type,
    detect_file,
    detect_text_encoding,
)
from processing.documents.readers import DocumentReader, open_document

__all__ = [
    "DOCX",
    "HTML",
    "PDF",
    "SNIFF_BYTES",
    "SUPPORTED_TYPES",
    "TEXT",
    "DocumentReader",
    "detect_content_type",
    "detect_file",
    "detect_text_encoding",
    "open_document",
]
