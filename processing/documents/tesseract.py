"""Text recognition with the Tesseract command-line program (Debian package ``tesseract-ocr``).

One ``tesseract stdin stdout … tsv`` process per page: the grayscale image
goes in on stdin as PGM (no temporary files, no encoding cost) and TSV comes
out, because TSV carries each word's confidence. The process is killed after
``timeout`` seconds. ``OMP_THREAD_LIMIT=1``: measured on a 2-core machine,
Tesseract's OpenMP threads made a 300-dpi page 2–3 times slower in wall time
(8 s against 2.5–4 s) while using 3 times the CPU; parallelism comes from
running more workers.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from PIL import Image

__all__ = ["OcrFailed", "OcrUnavailable", "Recognition", "check_engine", "parse_tsv", "recognise"]

DEBIAN_PACKAGE = "tesseract-ocr"


class OcrUnavailable(Exception):
    """Tesseract or its language data is missing or cannot start: no page can be read here."""


class OcrFailed(Exception):
    """Tesseract could not read this one page; the message is safe to show users."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        self.message, self.detail = message, detail
        super().__init__(message if not detail else f"{message} ({detail})")


@dataclass(frozen=True)
class Recognition:
    """What Tesseract read on a page."""

    text: str
    """Words joined by spaces, lines by newlines, paragraphs by blank lines."""
    words: int
    confidence: float | None
    """Mean word confidence, 0–100; None when no word was read."""


def _run(
    arguments: list[str], *, timeout: float, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run Tesseract single-threaded; :class:`OcrUnavailable` if it is not installed."""
    try:
        return subprocess.run(
            arguments,
            input=input,
            capture_output=True,
            timeout=timeout,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            check=False,
        )
    except FileNotFoundError as error:
        raise OcrUnavailable(
            f"{arguments[0]!r} was not found: install the Debian package {DEBIAN_PACKAGE}"
        ) from error


def check_engine(command: str, languages: str, *, timeout: float = 30) -> None:
    """Raise :class:`OcrUnavailable` unless ``command`` runs and has all of ``languages``.

    ``languages`` is Tesseract's ``-l`` value, such as ``eng`` or ``eng+deu``.
    """
    try:
        result = _run([command, "--list-langs"], timeout=timeout)
    except (OSError, subprocess.SubprocessError) as error:
        raise OcrUnavailable(f"{command!r} could not be run: {error}") from error
    output = result.stdout.decode("utf-8", "replace")
    if result.returncode != 0:
        raise OcrUnavailable(
            f"{command} --list-langs exited with {result.returncode}: {_tail(result.stderr)}"
        )
    # The first line is a heading ("List of available languages in …:").
    installed = {line.strip() for line in output.splitlines()[1:]}
    missing = [lang for lang in languages.split("+") if lang not in installed]
    if missing:
        raise OcrUnavailable(
            f"Tesseract has no language data for {', '.join(missing)} "
            f"(Debian packages tesseract-ocr-<lang>; installed: {', '.join(sorted(installed))})"
        )


def recognise(
    image: Image.Image,
    *,
    command: str,
    languages: str,
    timeout: float,
    dpi: float | None = None,
) -> Recognition:
    """Read the text on a grayscale (mode ``L``) image.

    ``dpi`` is the resolution the image was drawn at, when known; otherwise
    Tesseract estimates it from the size of the text.
    Raises :class:`OcrFailed` for this page, :class:`OcrUnavailable` when
    Tesseract cannot run at all.
    """
    if image.mode != "L":
        raise ValueError(f"expected a grayscale image, not {image.mode}")
    pgm = b"P5\n%d %d\n255\n" % image.size + image.tobytes()
    arguments = [command, "stdin", "stdout", "-l", languages, "--psm", "3"]
    if dpi:
        arguments += ["--dpi", str(round(dpi))]
    try:
        result = _run([*arguments, "tsv"], input=pgm, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise OcrFailed(f"Reading the page took longer than {timeout:g} seconds.") from error
    errors = result.stderr.decode("utf-8", "replace")
    if result.returncode != 0:
        if "Failed loading language" in errors or "load any languages" in errors:
            raise OcrUnavailable(f"Tesseract could not load {languages}: {_tail(result.stderr)}")
        raise OcrFailed(
            "The text recognition program failed on this page.",
            detail=f"exit {result.returncode}: {_tail(result.stderr)}",
        )
    return parse_tsv(result.stdout.decode("utf-8", "replace"))


def parse_tsv(tsv: str) -> Recognition:
    """The text and mean word confidence in Tesseract's TSV output.

    Word rows (level 5) carry block, paragraph and line numbers; a new line
    starts a new line of text and a new paragraph or block a blank line.
    """
    paragraphs: list[list[list[str]]] = []
    confidences: list[float] = []
    words = 0
    paragraph_key: tuple[str, str] | None = None
    line_key: tuple[str, str, str] | None = None
    for row in tsv.splitlines()[1:]:
        fields = row.split("\t", 11)
        if len(fields) < 12 or fields[0] != "5":
            continue
        word = fields[11].strip()
        if not word:
            continue
        block, paragraph, line = fields[2], fields[3], fields[4]
        if (block, paragraph) != paragraph_key:
            paragraph_key, line_key = (block, paragraph), None
            paragraphs.append([])
        if (block, paragraph, line) != line_key:
            line_key = (block, paragraph, line)
            paragraphs[-1].append([])
        paragraphs[-1][-1].append(word)
        words += 1
        try:
            confidence = float(fields[10])
        except ValueError:
            continue
        if confidence >= 0:
            confidences.append(confidence)
    text = "\n\n".join("\n".join(" ".join(line) for line in lines) for lines in paragraphs)
    mean = round(sum(confidences) / len(confidences), 2) if confidences else None
    return Recognition(text=text, words=words, confidence=mean)


def _tail(stderr: bytes, limit: int = 300) -> str:
    """The end of a program's error output, on one line."""
    text = " ".join(stderr.decode("utf-8", "replace").split())
    return text[-limit:]
