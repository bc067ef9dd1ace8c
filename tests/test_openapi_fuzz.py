"""The API against its own OpenAPI document: schemathesis generates requests for every
operation (valid ones and invalid ones) and sends them to the app as daphne serves it;
no answer may be a server error or differ from what the document says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from processing import tokens
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


def test_no_generated_request_gets_a_server_error_or_an_answer_off_the_schema(
    make_user: Any, make_matter: Any, settings: Any, tmp_path: Path
) -> None:
    owner = make_user("dana")
    make_matter(owner, "Estate of Miller")
    token = tokens.create_token(owner, name="fuzz")[1]
    report = LOGS / "schemathesis" / "report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    with running_app(Path(settings.MEDIA_ROOT), "schemathesis", relay=False, API_DOCS="1") as app:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
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
            capture_output=True,
            text=True,
            timeout=540,
        )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = json.loads(report.read_text())
    print(json.dumps(summary)[:2000])
