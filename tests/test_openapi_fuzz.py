"""The API against its own OpenAPI document: schemathesis generates requests for every
operation (valid ones and invalid ones) and sends them to the app as daphne serves it;
no answer may be a server error or differ from what the document says.

The matter holds real things to find (a processed document, a failed job, a queued
one, three people), and schemathesis is given their ids and names as a dictionary it
draws from most of the time: otherwise nearly every generated id is a 404 and the
job, document and search answers would never be checked against their schemas.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from processing import tokens
from processing.models import Document, Matter, ProcessingJob
from tests.conftest import failed_job
from tests.processes import LOGS, running_app

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)

PROCESSED_TEXT = (
    b"Deposition of the witness, taken on 12 March 2024 in Springfield.\n"
    b"Counsel: jane.doe@example.com, phone +1 555 010 2030. Fee USD 1,200.00.\n"
) * 3


def operations_in_document() -> int:
    """How many operations (path and method) the OpenAPI document describes."""
    paths = Client().get("/api/openapi.json").json()["paths"]
    return sum(len(methods) for methods in paths.values())


def things_to_find(api_client: Any, worker: Any, owner: Any, matter: Matter) -> dict[str, list]:
    """A processed document, a failed job and a queued one in ``matter``: their ids."""
    api = api_client(owner)
    done = api.upload(matter.pk, "deposition.txt", PROCESSED_TEXT)
    assert done.status_code == 201, done.content
    worker()
    queued = api.upload(matter.pk, "queued.txt", b"Waiting for a worker.\n")
    assert queued.status_code == 201, queued.content
    # Several failed ones: retry, skip and skip-stage each take one out of FAILED.
    for n in range(4):
        failed_job(matter, owner, name=f"broken-{n}.pdf")
    jobs = list(ProcessingJob.objects.filter(matter=matter))
    assert sorted(job.status for job in jobs) == ["COMPLETED"] + ["FAILED"] * 4 + ["QUEUED"]
    return {
        "matter_ids": [str(matter.pk)],
        "job_ids": [str(job.pk) for job in jobs],
        "document_ids": [str(pk) for pk in Document.objects.values_list("pk", flat=True)],
        "usernames": ["dana", "erin", "fay"],
        "search_words": ["deposition", "witness", "Springfield"],
    }


def config(found: dict[str, list]) -> str:
    """A schemathesis.toml that draws path parameters from ``found`` most of the time."""
    dictionaries = "\n".join(
        f"{name} = {{ values = {json.dumps(values)} }}" for name, values in found.items()
    )
    return f"""
[dictionaries]
{dictionaries}

[parameters]
"path.matter_id" = {{ dictionary = "matter_ids", probability = 0.8 }}
"path.job_id" = {{ dictionary = "job_ids", probability = 0.8 }}
"path.document_id" = {{ dictionary = "document_ids", probability = 0.8 }}
"path.username" = {{ dictionary = "usernames", probability = 0.5 }}
"query.q" = {{ dictionary = "search_words", probability = 0.5 }}
"body.username" = {{ dictionary = "usernames", probability = 0.5 }}
"""


def test_no_generated_request_gets_a_server_error_or_an_answer_off_the_schema(
    make_user: Any,
    make_matter: Any,
    api_client: Any,
    worker: Any,
    settings: Any,
    tmp_path: Path,
) -> None:
    owner = make_user("dana")
    make_user("erin")
    make_user("fay")
    matter = make_matter(owner, "Estate of Miller", erin="member", fay="viewer")
    found = things_to_find(api_client, worker, owner, matter)
    operations = operations_in_document()
    token = tokens.create_token(owner, name="fuzz")[1]
    (tmp_path / "schemathesis.toml").write_text(config(found))
    report = LOGS / "schemathesis" / "report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    hooks = {"SCHEMATHESIS_HOOKS": str(Path(__file__).with_name("schemathesis_hooks.py"))}
    with running_app(Path(settings.MEDIA_ROOT), "schemathesis", relay=False, API_DOCS="1") as app:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(tmp_path / "schemathesis.toml"),
                "run",
                f"{app.url}/api/openapi.json",
                "--checks",
                CHECKS,
                "--header",
                f"Authorization: Bearer {token}",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--workers",
                "2",
                "--phases",
                "examples,coverage,fuzzing",
                "--generation-database",
                "none",
                "--no-color",
                "--report",
                "json",
                "--report-json-path",
                str(report),
            ],
            cwd=tmp_path,  # where schemathesis keeps its cache
            env={**os.environ, **hooks},
            capture_output=True,
            text=True,
            timeout=540,
        )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = json.loads(report.read_text())
    generated = summary["test_cases"]["generated"]
    rates = summary["valid_rates"]
    accepted = {
        operation: sum(phase["accepted"] for phase in phases.values())
        for operation, phases in rates.items()
    }
    print(
        f"schemathesis: {generated} test cases over {summary['operations']['tested']} "
        f"operations; failures dropped by the hook: {summary['filtered']}; "
        f"accepted (2xx/3xx) per operation: {json.dumps(accepted)}"
    )
    assert generated > 0
    assert summary["operations"]["tested"] == operations, summary["operations"]
    assert len(rates) == operations, sorted(rates)
    assert summary["operations"]["skipped"] == summary["operations"]["errored"] == 0
