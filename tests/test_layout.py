"""The import directions docs/architecture.md promises, checked in fresh interpreters.

The lifecycle reads the pipeline registry (stage names, labels, time limits) but
must not need the stage code (pypdfium2, Tesseract, eyecite): a web process that
retries a job has no business loading them. The registry in turn knows nothing
of the job engine, so the two never import each other in a loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _modules_after(code: str) -> list[str]:
    """The modules loaded by a fresh interpreter that ran ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_lifecycle_loads_the_registry_but_no_stage_code() -> None:
    loaded = _modules_after(
        "import os, django\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'jobtracker.settings')\n"
        "django.setup()\n"
        "import processing.jobs.lifecycle, processing.jobs.tasks"
    )
    assert "processing.jobs.lifecycle" in loaded
    assert "processing.pipeline.registry" in loaded
    stage_code = [
        m
        for m in loaded
        if m.startswith(("processing.pipeline.", "pypdfium2", "eyecite"))
        and m != "processing.pipeline.registry"
    ]
    assert stage_code == []


def test_the_registry_imports_nothing_of_the_job_engine() -> None:
    loaded = _modules_after("import processing.pipeline.registry")
    assert [m for m in loaded if m.startswith("processing.jobs")] == []
