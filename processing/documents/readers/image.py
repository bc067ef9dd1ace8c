"""Scanned pages: PNG and JPEG (one page), TIFF (one page per frame).

Images have no text layer: ``page_text`` is empty and the text comes from
OCR. Only headers are read at open, so an image over ``max_pixels`` (a
decompression bomb) is refused before a pixel is decoded. A page is drawn as
it is stored, reduced to fit the pixel budget; nothing is held open between
calls.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

from processing.documents.detect import IMAGE_JPEG, IMAGE_PNG, IMAGE_TIFF
from processing.documents.readers.base import DocumentReader
from processing.documents.render import RenderedPage, RenderError, grayscale_within
from processing.errors import CorruptDocument, DocumentTooComplex

__all__ = ["ImageReader"]

_PIL_FORMATS = {IMAGE_PNG: ["PNG"], IMAGE_JPEG: ["JPEG"], IMAGE_TIFF: ["TIFF"]}


class ImageReader(DocumentReader):
    """A scanned page (PNG, JPEG) or a stack of them (TIFF: one page per frame).

    Images have no text layer: ``page_text`` is empty and the text comes from
    OCR. Only headers are read at open (sizes, frame count), so an image over
    ``max_pixels`` (a decompression bomb) is refused before a pixel is decoded.
    Pillow refuses images over 2 × ``Image.MAX_IMAGE_PIXELS`` (about 179 MP)
    itself; that too is DOCUMENT_TOO_COMPLEX.
    """

    def __init__(self, path: Path, content_type: str, *, max_pages: int, max_pixels: int) -> None:
        self.content_type = content_type
        self._path = path
        self._max_pixels = max_pixels
        with self._open() as image:
            if content_type == IMAGE_TIFF:
                self.page_count = _checked_frames(image, max_pages, max_pixels)
            else:  # an animated PNG or a camera's MPO JPEG is still one page
                _check_frame(image, 0, max_pixels)
                self.page_count = 1

    def _open(self) -> Image.Image:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                return Image.open(self._path, formats=_PIL_FORMATS[self.content_type])
            except Image.DecompressionBombError as error:
                raise DocumentTooComplex(detail=f"image: {error}") from error
            except OSError as error:
                if error.errno is not None:  # the disk, not the data
                    raise
                raise CorruptDocument(detail=f"image: {error}") from error
            except (SyntaxError, ValueError, EOFError) as error:
                raise CorruptDocument(detail=f"image: {error!r}") from error

    def page_text(self, index: int) -> str:
        self._check_index(index)
        return ""

    def render_page(self, index: int, *, dpi: float, max_pixels: int) -> RenderedPage:
        """The frame as it is stored (``dpi`` does not apply), reduced if over ``max_pixels``."""
        self._check_index(index)
        try:
            with self._open() as image:
                image.seek(index)
                _check_frame(image, index, self._max_pixels)
                gray, reduced = grayscale_within(image, max_pixels)
        except (OSError, SyntaxError, ValueError, EOFError, CorruptDocument) as error:
            if isinstance(error, OSError) and error.errno is not None:
                raise
            raise RenderError("The page image could not be decoded.") from error
        return RenderedPage(gray, dpi=None, reduced=reduced, max_pixels=max_pixels)

    def close(self) -> None:
        """Nothing is held open between calls."""


def _check_frame(image: Image.Image, index: int, max_pixels: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptDocument(detail=f"image page {index + 1} is {width}×{height} pixels")
    if width * height > max_pixels:
        raise DocumentTooComplex(
            detail=f"image page {index + 1} is {width}×{height} pixels; the limit is {max_pixels}"
        )


def _checked_frames(image: Image.Image, max_pages: int, max_pixels: int) -> int:
    """How many frames a TIFF has, each checked against ``max_pixels``; stops past ``max_pages``."""
    count = 0
    while count <= max_pages:
        _check_frame(image, count, max_pixels)
        count += 1
        try:
            image.seek(count)
        except EOFError:
            break
        except (OSError, SyntaxError, ValueError) as error:
            raise CorruptDocument(detail=f"image page {count + 1}: {error!r}") from error
    return count
