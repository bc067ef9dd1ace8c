"""The API against its own OpenAPI document: schemathesis generates requests for every
operation (valid ones and invalid ones) and sends them to the app as daphne serves it;
no answer may be a server error or differ from what the document says.

The matter holds real things to find (a processed document, failed and queued jobs,
three people), and schemathesis is given their ids and names as dictionaries it draws
from most of the time: otherwise nearly every generated id is a 404, and the job,
document and search answers would never be checked against their schemas. Each action
on a job gets jobs of its own in the status it acts on (a retry takes a job out of
FAILED for good), the bulk action and the member operations a matter of their own (one
retries every FAILED job of the matter at once, the other may take the owner off it),
and the flat job read a finished job's ETag to send back. The test then reads the run's
HAR record: every operation must have answered its success at least once (so its
schema met a real answer), and the ETag a 304.

A second, shorter pass sends the unsafe requests with a viewer's token: each must have
met a 403 FORBIDDEN (creating a matter excepted: anyone may).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client

from processing import tokens
from processing.jobs import lifecycle
from processing.models import Document, Matter, ProcessingJob
from tests.conftest import failed_job, stored_document
from tests.processes import LOGS, LiveApp, running_app

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
JOBS = "/api/matters/{matter_id}/jobs/{job_id}"
# Each action, the status its jobs start in, and how many it gets of its own.
ACTIONS = {
    "retry": "FAILED",
    "skip": "FAILED",
    "skip-stage": "FAILED",
    "cancel": "QUEUED",
    "prioritize": "QUEUED",
}
JOBS_PER_ACTION = 3
CALLBACK = "POST /api/jobs/{job_id}/callback"
"""Signed with a secret schemathesis does not hold: every request it makes is refused 401
(its answers that change something are checked in tests/test_external_stages.py)."""
CALLBACK_SECRET = "a-secret-schemathesis-does-not-know"


def operations_in_document() -> dict[str, re.Pattern[str]]:
    """Each operation the OpenAPI document describes ("GET /api/jobs"), with a pattern
    for the "METHOD /path" of the requests made to it."""
    paths = Client().get("/api/openapi.json").json()["paths"]
    return {
        f"{method.upper()} {path}": re.compile(
            f"^{method.upper()} " + re.sub(r"\\{[a-z_]+\\}", "[^/]+", re.escape(path)) + "$"
        )
        for path, methods in paths.items()
        for method in methods
    }


def statuses(har: Path, operations: dict[str, re.Pattern[str]]) -> dict[str, set[int]]:
    """The statuses each operation answered, from schemathesis's HAR record of the run."""
    found: dict[str, set[int]] = {name: set() for name in operations}
    for entry in json.loads(har.read_text())["log"]["entries"]:
        request = f"{entry['request']['method']} {urlsplit(entry['request']['url']).path}"
        for name, pattern in operations.items():
            if pattern.match(request):
                found[name].add(entry["response"]["status"])
                break
    return found


def jobs_in(matter: Matter, owner: Any, status: str, count: int, name: str) -> list[str]:
    """``count`` new jobs of ``matter`` in ``status`` (FAILED or QUEUED), driven by hand."""
    made = []
    for n in range(count):
        if status == "FAILED":
            job = failed_job(matter, owner, name=f"{name}-{n}.pdf")
        else:
            job = lifecycle.create_job(stored_document(matter, owner, f"{name}-{n}.pdf"), by=owner)
        assert job.status == status
        made.append(str(job.pk))
    return made


def things_to_find(
    api_client: Any, worker: Any, owner: Any, matter: Matter, **matters: Matter
) -> dict[str, list[str]]:
    """A processed document and jobs in each status an action takes, by dictionary name."""
    api = api_client(owner)
    done = api.upload(matter.pk, "deposition.txt", PROCESSED_TEXT)
    assert done.status_code == 201, done.content
    worker()
    completed = ProcessingJob.objects.get()
    assert completed.status == "COMPLETED"
    # A finished job's ETag stays as it is: sent back, it is answered 304.
    etag = api.get(f"/api/jobs/{completed.pk}")["ETag"]
    found = {
        f"{action}_jobs": jobs_in(matter, owner, status, JOBS_PER_ACTION, action)
        for action, status in ACTIONS.items()
    }
    jobs_in(matters["bulk"], owner, "FAILED", 2, "bulk-failed")
    jobs_in(matters["bulk"], owner, "QUEUED", 2, "bulk-queued")
    return {
        **found,
        **{f"{name}_matter_ids": [str(other.pk)] for name, other in matters.items()},
        "matter_ids": [str(matter.pk)],
        "job_ids": [str(pk) for pk in ProcessingJob.objects.values_list("pk", flat=True)],
        "document_ids": [str(pk) for pk in Document.objects.values_list("pk", flat=True)],
        "usernames": ["dana", "erin", "fay"],
        "etags": [etag],
        "completed_jobs": [str(completed.pk)],
        "search_words": ["deposition", "witness", "Springfield"],
    }


def config(found: dict[str, list[str]]) -> str:
    """A schemathesis.toml that draws path parameters from ``found`` most of the time."""
    dictionaries = "\n".join(
        f"{name} = {{ values = {json.dumps(values)} }}" for name, values in found.items()
    )
    actions = "\n".join(
        f"""
[[operations]]
include-path = "{JOBS}/{action}"
parameters = {{ "path.job_id" = {{ dictionary = "{action}_jobs", probability = 0.8 }} }}
"""
        for action in ACTIONS
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
"header.If-None-Match" = {{ dictionary = "etags", probability = 0.5 }}
{actions}
[[operations]]
include-path = "/api/jobs/{{job_id}}"
parameters = {{ "path.job_id" = {{ dictionary = "completed_jobs", probability = 0.5 }} }}

[[operations]]
include-path = "/api/matters/{{matter_id}}/jobs/bulk"
parameters = {{ "path.matter_id" = {{ dictionary = "bulk_matter_ids", probability = 0.8 }} }}

[[operations]]
include-path-regex = "^/api/matters/[{{]matter_id[}}]/members"
parameters = {{ "path.matter_id" = {{ dictionary = "members_matter_ids", probability = 0.8 }} }}
"""


def schemathesis(
    app: LiveApp, token: str, config_file: Path, name: str, *options: str
) -> dict[str, Any]:
    """Run schemathesis against ``app`` as ``token``'s holder; its JSON report's summary."""
    report = LOGS / "schemathesis" / f"{name}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config_file),
            "run",
            f"{app.url}/api/openapi.json",
            "--checks",
            CHECKS,
            "--header",
            f"Authorization: Bearer {token}",
            "--seed",
            "1",
            "--workers",
            "2",
            "--generation-database",
            "none",
            "--no-color",
            "--report",
            "json,har",
            "--report-json-path",
            str(report),
            "--report-har-path",
            str(report.with_suffix(".har")),
            *options,
        ],
        cwd=config_file.parent,  # where schemathesis keeps its cache
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary: dict[str, Any] = json.loads(report.read_text())
    print(
        f"schemathesis ({name}): {summary['test_cases']['generated']} test cases over "
        f"{summary['operations']['tested']} operations in {summary['running_time']:.0f} s"
    )
    assert summary["test_cases"]["generated"] > 0
    assert summary["operations"]["skipped"] == summary["operations"]["errored"] == 0
    return summary


def test_no_generated_request_gets_a_server_error_or_an_answer_off_the_schema(
    make_user: Any,
    make_matter: Any,
    api_client: Any,
    worker: Any,
    settings: Any,
    tmp_path: Path,
) -> None:
    owner = make_user("dana")
    for username in ("erin", "fay", "gus"):
        make_user(username)
    people = {"erin": "member", "fay": "viewer", "gus": "viewer"}
    matter = make_matter(owner, "Estate of Miller", **people)
    # Bulk actions and the member operations change what the others find: matters of
    # their own. gus, a viewer everywhere, is not among the usernames drawn, so the owner's
    # pass never promotes him before his own pass.
    found = things_to_find(
        api_client,
        worker,
        owner,
        matter,
        bulk=make_matter(owner, "Bulk", **people),
        members=make_matter(owner, "Members", **people),
    )
    operations = operations_in_document()
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(config(found))
    as_owner = tokens.create_token(owner, name="fuzz")[1]
    as_viewer = tokens.create_token(User.objects.get(username="gus"), name="fuzz")[1]

    with running_app(
        Path(settings.MEDIA_ROOT),
        "schemathesis",
        relay=False,
        API_DOCS="1",
        EXTERNAL_CALLBACK_SECRET=CALLBACK_SECRET,
    ) as app:
        owner_run = schemathesis(
            app,
            as_owner,
            config_file,
            "owner",
            "--max-examples",
            "25",
            "--phases",
            "examples,coverage,fuzzing",
        )
        viewer_run = schemathesis(
            app,
            as_viewer,
            config_file,
            "viewer",
            "--max-examples",
            "10",
            "--phases",
            "fuzzing",
            "--include-method-regex",
            "POST|DELETE",
        )

    assert owner_run["operations"]["tested"] == len(operations), owner_run["operations"]
    assert viewer_run["operations"]["tested"] == viewer_run["operations"]["selected"] > 0
    answered = statuses(LOGS / "schemathesis" / "owner.har", operations)
    print(f"statuses answered to the owner: {answered}")
    # Every answer with a body was met for real, so its schema was checked against it;
    # a member's removal (204, no body) depends on the order of the owner's requests.
    removal = "DELETE /api/matters/{matter_id}/members/{username}"
    assert not [
        name
        for name, seen in answered.items()
        if name not in (removal, CALLBACK) and not seen & {200, 201}
    ], answered
    # It cannot sign: refused 401 (or 400 for a body that does not parse), never done.
    assert 401 in answered[CALLBACK] and not answered[CALLBACK] & {200, 201}, answered[CALLBACK]
    assert 304 in answered["GET /api/jobs/{job_id}"], "the ETag sent back was never matched"
    refused = statuses(LOGS / "schemathesis" / "viewer.har", operations)
    print(f"statuses answered to a viewer: {refused}")
    unsafe = [name for name in operations if name.split()[0] in {"POST", "DELETE"}]
    # No role can create a matter or send a callback (its signature is its credential).
    roleless = {"POST /api/matters", CALLBACK}
    assert not [name for name in unsafe if name not in roleless and 403 not in refused[name]]
