"""Scanned pages: PNG and JPEG (one page), TIFF (one page per frame).

Images have no text layer: ``page_text`` is empty and the text comes from
OCR. Only headers are read at open, so an image over ``max_pixels`` (a
decompression bomb) is refused before a pixel is decoded, and so is a PNG or
TIFF page over ``max_decoded_pixels``: those are decoded whole, while a JPEG
is decoded at a reduced scale (``draft``) when it is bigger than OCR needs.
A page is drawn as it is stored, reduced to fit the pixel budget.

A TIFF stays open between pages, so its frames are read in one pass: Pillow
walks a TIFF's frames from the first to find frame n, and remembers where
each frame it has passed starts, so reopening it for each page would cost
n frames for page n, quadratic in the pages.
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

    def __init__(
        self,
        path: Path,
        content_type: str,
        *,
        max_pages: int,
        max_pixels: int,
        max_decoded_pixels: int = 64_000_000,
    ) -> None:
        self.content_type = content_type
        self._path = path
        # A JPEG is decoded at a reduced scale when big, so only the declared limit applies.
        self._limits = (
            (max_pixels, max_pixels)
            if content_type == IMAGE_JPEG
            else (max_pixels, min(max_pixels, max_decoded_pixels))
        )
        self._tiff: Image.Image | None = None
        image = self._open()
        try:
            if content_type == IMAGE_TIFF:
                self.page_count = _checked_frames(image, max_pages, self._limits)
            else:  # an animated PNG or a camera's MPO JPEG is still one page
                _check_frame(image, 0, self._limits)
                self.page_count = 1
        except BaseException:
            image.close()
            raise
        if content_type == IMAGE_TIFF:
            self._tiff = image  # kept open: its frames' places are known now
        else:
            image.close()

    def _open(self) -> Image.Image:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                return Image.open(self._path, formats=_PIL_FORMATS[self.content_type])
            except Image.DecompressionBombError as error:
                # Pillow's own cap (about 179 MP) is above ours: this image is over ours too.
                raise DocumentTooComplex(
                    f"This image is over {self._limits[0] / 1_000_000:g} megapixels, the "
                    "limit. Scan it at a lower resolution and upload it again.",
                    detail=f"IMAGE_MAX_PIXELS={self._limits[0]}; {error}",
                ) from error
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
            if self._tiff is not None:
                # Frames seen at open are found at once; never walked again from the first.
                self._tiff.seek(index)
                _check_frame(self._tiff, index, self._limits)
                gray, reduced, decoded = grayscale_within(self._tiff, max_pixels)
            else:
                with self._open() as image:
                    _check_frame(image, index, self._limits)
                    gray, reduced, decoded = grayscale_within(image, max_pixels)
        except Image.DecompressionBombError as error:
            raise DocumentTooComplex(detail=f"image page {index + 1}: {error}") from error
        except (OSError, SyntaxError, ValueError, EOFError, CorruptDocument) as error:
            if isinstance(error, OSError) and error.errno is not None:
                raise
            raise RenderError("The page image could not be decoded.") from error
        return RenderedPage(
            gray, dpi=None, reduced=reduced, max_pixels=max_pixels, decoded_size=decoded
        )

    def close(self) -> None:
        """Close a TIFF held open between pages; safe to call twice."""
        if self._tiff is not None:
            self._tiff.close()
            self._tiff = None


def _check_frame(image: Image.Image, index: int, limits: tuple[int, int]) -> None:
    """Refuse a frame over the declared limit, or over what may be decoded whole, unread."""
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptDocument(detail=f"image page {index + 1} is {width}×{height} pixels")
    declared, decoded = limits
    if width * height > declared:
        raise DocumentTooComplex(
            f"Page {index + 1} of this image is {width:,}×{height:,} pixels; the limit is "
            f"{declared / 1_000_000:g} megapixels. "
            "Scan it at a lower resolution and upload it again.",
            detail=f"IMAGE_MAX_PIXELS={declared}",
        )
    if width * height > decoded:
        raise DocumentTooComplex(
            f"Page {index + 1} of this image is {width:,}×{height:,} pixels; "
            f"a PNG or TIFF page may have at most {decoded / 1_000_000:g} megapixels. "
            "Save it at a lower resolution (or as JPEG) and upload it again.",
            detail=f"IMAGE_MAX_DECODED_PIXELS={decoded}",
        )


def _checked_frames(image: Image.Image, max_pages: int, limits: tuple[int, int]) -> int:
    """How many frames a TIFF has, each checked against ``limits``; stops past ``max_pages``.

    One pass from the first frame to the last: Pillow remembers where each
    frame starts, so the pages are found later without walking again.
    """
    count = 0
    while True:
        _check_frame(image, count, limits)
        count += 1
        try:
            image.seek(count)
        except EOFError:
            return count
        except (OSError, SyntaxError, ValueError) as error:
            raise CorruptDocument(detail=f"image page {count + 1}: {error!r}") from error
        if count >= max_pages:
            raise DocumentTooComplex(
                f"This TIFF has more than {max_pages:,} pages; the limit is {max_pages:,}. "
                "Split it into smaller files and upload those.",
                detail=f"DOCUMENT_MAX_PAGES={max_pages}",
            )
