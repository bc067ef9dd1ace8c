"""Page images for OCR, drawn within a pixel budget.

A page is drawn at the resolution asked for unless that would take more than
``max_pixels`` pixels; then it is drawn at the largest resolution that fits.
A 200-inch page or a 40-megapixel scan therefore costs at most the budget
(one byte per pixel: page images are grayscale), never what the file asks for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

__all__ = ["RenderError", "RenderedPage", "grayscale_within", "pdf_scale"]


class RenderError(Exception):
    """A page cannot be drawn as an image; the message is short and safe to show users."""


@dataclass(frozen=True)
class RenderedPage:
    """One page as a grayscale (mode ``L``) image, and how it was drawn."""

    image: Image.Image
    dpi: float | None
    """The resolution it was drawn at; None when the source does not say (an image file)."""
    reduced: bool
    """Drawn smaller than asked, to stay within ``max_pixels``."""
    max_pixels: int
    decoded_size: tuple[int, int] | None = None
    """The size the source image was decoded at (a big JPEG at a reduced scale); None for PDF."""

    @property
    def pixels(self) -> int:
        """How many pixels were drawn."""
        return self.image.width * self.image.height

    def describe(self) -> str:
        """A sentence for the page's note: the size read, and why it is small if it was reduced."""
        size = f"{self.image.width}×{self.image.height} px"
        at = f" at {self.dpi:.0f} dpi" if self.dpi else ""
        if not self.reduced:
            return f"Read from a {size} image{at}."
        budget = f"{self.max_pixels / 1_000_000:g} megapixels"
        return (
            f"Read from a {size} image{at}, reduced to stay within {budget}; "
            "small print may be missed."
        )


def pdf_scale(width_pt: float, height_pt: float, *, dpi: float, max_pixels: int) -> float:
    """Pixels per PDF point to draw a page at: ``dpi``/72 unless that is over ``max_pixels``.

    Sizes are rounded up to whole pixels the way pypdfium2 does, so the bitmap
    it allocates is never over the budget.
    """
    if not (width_pt > 0 and height_pt > 0):
        raise RenderError("The page has no area to draw.")
    if max_pixels < 1:
        raise ValueError("max_pixels must be positive")

    def pixels(scale: float) -> int:
        return math.ceil(width_pt * scale) * math.ceil(height_pt * scale)

    scale = dpi / 72
    if pixels(scale) > max_pixels:
        scale = math.sqrt(max_pixels / (width_pt * height_pt))
        while pixels(scale) > max_pixels:
            scale *= 0.999
    return scale


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION_TAG = 0x0112


def _fit(size: tuple[int, int], max_pixels: int) -> tuple[int, int] | None:
    """The largest size with the same proportions within ``max_pixels``; None if ``size`` fits."""
    width, height = size
    if width * height <= max_pixels:
        return None
    factor = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * factor)), max(1, math.floor(height * factor))


def grayscale_within(
    image: Image.Image, max_pixels: int
) -> tuple[Image.Image, bool, tuple[int, int]]:
    """The current frame of an opened image as grayscale, upright, within ``max_pixels``.

    Returns the new image, whether it had to be reduced, and the size the
    source was decoded at. A JPEG is decoded
    at a reduced scale when it can be (its DCT allows 1/2, 1/4, 1/8), so a big
    photo never sits in memory at full size; transparency is laid on white
    (dark text on a transparent background would otherwise turn black on
    black); 16-bit scans are scaled to 8 bits rather than clipped to white;
    the EXIF orientation of a phone photo is applied.
    """
    original = image.width * image.height
    target = _fit(image.size, max_pixels)
    if image.format == "JPEG":
        image.draft("L", target or image.size)
    decoded = image.size
    orientation = image.getexif().get(_ORIENTATION_TAG)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        gray = Image.new("L", rgba.size, 255)
        gray.paste(rgba.convert("L"), mask=rgba.getchannel("A"))
        del rgba
    elif image.mode == "I" or image.mode.startswith("I;16"):
        gray = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    else:
        gray = image.convert("L")
    target = _fit(gray.size, max_pixels)
    if target is not None:
        gray = gray.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if orientation in _TRANSPOSE:
        gray = gray.transpose(_TRANSPOSE[orientation])
    return gray, gray.width * gray.height < original, decoded
