"""The pipeline registry: which stages each job type runs, in order.

A pipeline is data: each :class:`Stage` names the function that runs it by its
dotted path, so the registry (and the lifecycle, which reads it for stage
names, labels and time limits) never imports the stage code. Only the RQ entry
point, :func:`processing.jobs.tasks.run_stage`, loads a stage's function, when
it runs it.

A stage function is ``stage(ctx: StageContext) -> None``. It reports
``ctx.progress(done, total)``, checks ``ctx.should_stop()`` between items, writes
its results inside ``with ctx.fenced():`` (so a stage taken over stores nothing),
and raises a :class:`processing.errors.StageError` subclass when it cannot go on.
It knows nothing of RQ, Channels or HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from processing.jobs.context import StageContext

StageFunction = Callable[["StageContext"], None]

DOCUMENT_PROCESSING = "DOCUMENT_PROCESSING"
EXTERNAL_REVIEW = "EXTERNAL_REVIEW"


def _runs_outside(ctx: StageContext) -> None:
    """What an external stage's function would be: nothing here runs one."""
    raise TypeError("An external stage is done outside the app; nothing here runs it.")


@dataclass(frozen=True)
class Stage:
    """One named step of a pipeline, with the label the stepper shows.

    ``function`` is the dotted path of the stage function; an ``external`` stage has
    none: an outside service does its work and reports through the signed callback
    (``POST /api/jobs/{job_id}/callback``), and its :meth:`timeout` is how long that
    service has before the stage fails with ``TIMEOUT``. ``seconds_per_page``
    is what a slow page may take in this stage; it is added to
    ``settings.STAGE_TIMEOUT`` once per page of the document, up to
    ``settings.STAGE_TIMEOUT_MAX`` (see :meth:`timeout`), so a stage whose time
    grows with the pages (OCR) gets the time a long document needs instead of
    timing out and retrying.
    """

    name: str
    label: str
    function: str = ""
    seconds_per_page: float = 0.0
    external: bool = False

    def __post_init__(self) -> None:
        if self.external == bool(self.function):
            raise ValueError(f"Stage {self.name!r} needs a function, or external=True (not both).")

    def load(self) -> StageFunction:
        """The stage function (imported on first use); for an external stage, a function
        that refuses to run (a worker preloads every stage, and never calls this one)."""
        if self.external:
            return _runs_outside
        function: StageFunction = import_string(self.function)
        return function

    def timeout(self, page_count: int | None) -> int:
        """Seconds the stage may run on a document of ``page_count`` pages (None: unknown)."""
        base: int = settings.STAGE_TIMEOUT
        extra = math.ceil(self.seconds_per_page * (page_count or 0))
        return max(base, min(base + extra, settings.STAGE_TIMEOUT_MAX))


@dataclass(frozen=True)
class Pipeline:
    """An ordered list of stages that a job type runs."""

    job_type: str
    stages: tuple[Stage, ...]

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"{self.job_type} has no stage {name!r}")

    def index_of(self, name: str) -> int:
        """The 1-based position of stage ``name``."""
        return self.stages.index(self.stage(name)) + 1

    def next_after(self, name: str) -> Stage | None:
        """The stage that follows ``name``, or None when it is the last."""
        position = self.index_of(name)
        return self.stages[position] if position < len(self.stages) else None


_REGISTRY: dict[str, Pipeline] = {}


def register(job_type: str, stages: list[Stage]) -> Pipeline:
    """Declare (or replace) the pipeline for ``job_type``."""
    if not stages:
        raise ValueError("A pipeline needs at least one stage.")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"Stage names repeat in {job_type}: {names}")
    pipeline = Pipeline(job_type, tuple(stages))
    _REGISTRY[job_type] = pipeline
    return pipeline


def get_pipeline(job_type: str) -> Pipeline:
    """The pipeline for ``job_type``; KeyError when none is registered."""
    return _REGISTRY[job_type]


def job_types() -> list[str]:
    """Every registered job type."""
    return sorted(_REGISTRY)


register(
    DOCUMENT_PROCESSING,
    [
        Stage("extract", "Extracting", "processing.pipeline.extract.extract"),
        # Tesseract reads a dense 300-dpi page in about 2 s here (OCR_TIMEOUT caps
        # one page at 120 s); 30 s allows for slower machines and pages, so a
        # 600-page scan is not cut off at STAGE_TIMEOUT.
        Stage("ocr", "Reading scanned pages", "processing.pipeline.ocr.ocr", seconds_per_page=30),
        Stage("chunk", "Chunking", "processing.pipeline.chunk.chunk"),
        Stage("index", "Indexing", "processing.pipeline.index.index"),
        Stage("entities", "Finding entities", "processing.pipeline.entities.entities"),
    ],
)

register(
    EXTERNAL_REVIEW,
    [
        Stage("extract", "Extracting", "processing.pipeline.extract.extract"),
        # An outside service reviews the text; it reports through the signed callback
        # and has STAGE_TIMEOUT to do so.
        Stage("review", "Reviewing outside", external=True),
        Stage("chunk", "Chunking", "processing.pipeline.chunk.chunk"),
        Stage("index", "Indexing", "processing.pipeline.index.index"),
    ],
)
