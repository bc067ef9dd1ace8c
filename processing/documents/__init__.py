"""Reading uploaded documents: what they are, and their text page by page.

Pure Python over files on disk: no ORM, no settings; limits are passed in.
"""

from processing.documents.detect import (
    DOCX,
    HTML,
    IMAGE_JPEG,
    IMAGE_PNG,
    IMAGE_TIFF,
    IMAGE_TYPES,
    PAGE_IMAGE_TYPES,
    PDF,
    SUPPORTED_FORMATS,
    SUPPORTED_TYPES,
    TEXT,
    detect_content_type,
    detect_file,
    supported_description,
)
from processing.documents.encodings import SNIFF_BYTES, detect_text_encoding
from processing.documents.readers import DocumentReader, PackageLimits, open_document
from processing.documents.render import RenderedPage, RenderError

__all__ = [
    "DOCX",
    "HTML",
    "IMAGE_JPEG",
    "IMAGE_PNG",
    "IMAGE_TIFF",
    "IMAGE_TYPES",
    "PAGE_IMAGE_TYPES",
    "PackageLimits",
    "PDF",
    "SNIFF_BYTES",
    "SUPPORTED_FORMATS",
    "SUPPORTED_TYPES",
    "TEXT",
    "DocumentReader",
    "RenderError",
    "RenderedPage",
    "detect_content_type",
    "detect_file",
    "detect_text_encoding",
    "open_document",
    "supported_description",
]
