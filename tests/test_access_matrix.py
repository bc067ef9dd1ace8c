"""Who gets what at every door: each HTML page, API endpoint, websocket and admin page,
asked by each kind of caller, answers the exact status (or close code) the contract
promises. A URL pattern without a row here fails :func:`test_every_url_has_a_row`.

The callers (the columns of every row, in this order):

- ``anon``: nobody signed in;
- ``stranger``: signed in, on no matter;
- ``viewer``, ``member``, ``owner``: their role on the matter;
- ``staff``: ``is_staff`` with no model permissions, on no matter;
- ``super``: a superuser, on no matter.

A cell is the HTTP status; ``302L`` is a redirect to the site's login page and ``302A``
to the admin's. For the websockets, ``open`` is an accepted socket and ``4403`` a close
with that code before any message. A POST is sent as a form (multipart), so an
anonymous one is sent to the site's login before its body is read, wherever it goes
(``processing.upload_limits``): admin's POST pages included.

The requests change as little as they can: an owner's action is asked of a job whose
status refuses it (409 shows the role check passed), so every cell of a row sees the
same world.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import django_rq
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.db import connections
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rq import Worker

from jobtracker.asgi import application
from processing.jobs import lifecycle
from processing.live.routing import websocket_urlpatterns
from processing.models import AuditEvent, DocumentPage, Matter, Role
from processing.tokens import create_token
from tests.conftest import failed_job, stored_document

ROLES = ("anon", "stranger", "viewer", "member", "owner", "staff", "super")

# --- the matrix ----------------------------------------------------------------------------
# (url name, method): (path, cells in ROLES order). Placeholders are filled from the world.

M = "/matters/{matter}"
J = "/jobs/{job}"

PAGES: dict[tuple[str, str], tuple[str, str]] = {
    # name                              path                          anon stranger viewer member owner staff super
    ("matter-list", "GET"):           ("/",                           "302L 200 200 200 200 200 200"),
    ("matter-list", "POST"):          ("/",                           "302L 200 200 200 200 200 200"),
    ("matter-detail", "GET"):         (f"{M}/",                       "302L 404 200 200 200 404 404"),
    ("matter-summary", "GET"):        (f"{M}/summary",                "302L 404 200 200 200 404 404"),
    ("matter-search", "GET"):         (f"{M}/search?q=lease",         "302L 404 200 200 200 404 404"),
    ("matter-upload", "POST"):        (f"{M}/upload",                 "302L 404 403 302 302 404 404"),
    ("matter-members", "POST"):       (f"{M}/members",                "302L 404 403 403 400 404 404"),
    ("matter-member-remove", "POST"): (f"{M}/members/remove",         "302L 404 403 403 404 404 404"),
    ("matter-bulk", "POST"):          (f"{M}/bulk",                   "302L 404 403 403 200 404 404"),
    ("job-detail", "GET"):            (f"{J}/",                       "302L 404 200 200 200 404 404"),
    ("job-row", "GET"):               (f"{J}/row",                    "302L 404 200 200 200 404 404"),
    ("job-history", "GET"):           (f"{J}/history",                "302L 404 200 200 200 404 404"),
    ("job-actions", "GET"):           (f"{J}/actions",                "302L 404 200 200 200 404 404"),
    ("job-act", "POST"):              (f"{J}/retry",                  "302L 404 403 403 409 404 404"),
    ("document-detail", "GET"):       ("/documents/{document}/",      "302L 404 200 200 200 404 404"),
    ("login", "GET"):                 ("/login/",                     "200 200 200 200 200 200 200"),
    ("logout", "POST"):               ("/logout/",                    "302L 302L 302L 302L 302L 302L 302L"),
}  # fmt: skip
"""The HTML pages: the login page for nobody, 404 off the caller's matters (staff and
superusers too: they act on every matter through admin), 403 for what the role may not do."""

A = "/api/matters/{matter}"
AJ = "/api/matters/{matter}/jobs/{job}"
AD = "/api/documents/{document}"

API: dict[tuple[str, str], tuple[str, str]] = {
    # name                         path                          anon stranger viewer member owner staff super
    ("list_matters", "GET"):        ("/api/matters",              "401 200 200 200 200 200 200"),
    ("create_matter", "POST"):      ("/api/matters",              "401 201 201 201 201 201 201"),
    ("list_members", "GET"):        (f"{A}/members",              "401 404 200 200 200 404 404"),
    ("add_member", "POST"):         (f"{A}/members",              "401 404 403 403 201 404 404"),
    ("remove_member", "DELETE"):    (f"{A}/members/nobody",       "401 404 403 403 404 404 404"),
    ("upload_document", "POST"):    (f"{A}/documents",            "401 404 403 400 400 404 404"),
    ("list_matter_jobs", "GET"):    (f"{A}/jobs",                 "401 404 200 200 200 404 404"),
    ("job_stats", "GET"):           (f"{A}/jobs/stats",           "401 404 200 200 200 404 404"),
    ("bulk_action", "POST"):        (f"{A}/jobs/bulk",            "401 404 403 403 200 404 404"),
    ("get_matter_job", "GET"):      (AJ,                          "401 404 200 200 200 404 404"),
    ("retry_job", "POST"):          (f"{AJ}/retry",               "401 404 403 403 409 404 404"),
    ("skip_job", "POST"):           (f"{AJ}/skip",                "401 404 403 403 409 404 404"),
    ("skip_stage_job", "POST"):     (f"{AJ}/skip-stage",          "401 404 403 403 409 404 404"),
    ("cancel_job", "POST"):         (f"{A}/jobs/{{failed}}/cancel", "401 404 403 403 409 404 404"),
    ("prioritize_job", "POST"):     (f"{A}/jobs/{{failed}}/prioritize", "401 404 403 403 409 404 404"),
    ("search_documents", "GET"):    (f"{A}/search?q=lease",       "401 404 200 200 200 404 404"),
    ("list_recent_jobs", "GET"):    ("/api/jobs",                 "401 200 200 200 200 200 200"),
    ("get_job", "GET"):             ("/api/jobs/{job}",           "401 404 200 200 200 404 404"),
    ("receive_callback", "POST"):   ("/api/jobs/{job}/callback",  "401 401 401 401 401 401 401"),
    ("get_document", "GET"):        (AD,                          "401 404 200 200 200 404 404"),
    ("list_pages", "GET"):          (f"{AD}/pages",               "401 404 200 200 200 404 404"),
    ("list_entities", "GET"):       (f"{AD}/entities",            "401 404 200 200 200 404 404"),
    ("download_file", "GET"):       (f"{AD}/file",                "401 404 200 200 200 404 404"),
    ("openapi-json", "GET"):        ("/api/openapi.json",         "200 200 200 200 200 200 200"),
    ("openapi-view", "GET"):        ("/api/docs",                 "200 200 200 200 200 200 200"),
    ("api-root", "GET"):            ("/api/",                     "404 404 404 404 404 404 404"),
}  # fmt: skip
"""The JSON API: 401 without credentials, 404 off the caller's matters (staff and
superusers have no rights of their own here), 403 for what the role may not do."""

CODES = {401: "AUTHENTICATION_REQUIRED", 403: "FORBIDDEN", 409: "INVALID_TRANSITION"}
"""The one code each of these statuses has in the API."""

ROW_CODES: dict[tuple[str, str], dict[int, str]] = {
    # No token counts: the signature is the credential, and every caller here sends none.
    ("receive_callback", "POST"): {401: "INVALID_SIGNATURE"},
}
"""Rows whose refusals carry a code of their own."""

BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("matter-list", "POST"): {"name": ""},  # refused with a message: nothing is created
    ("matter-bulk", "POST"): {"action": "retry"},
    ("create_matter", "POST"): {"name": "Another matter"},
    ("add_member", "POST"): {"username": "mallory", "role": "viewer"},
    ("bulk_action", "POST"): {"action": "cancel", "job_ids": []},
}
"""What the rows that need a body send."""

ADMIN_OPEN = "302A 302A 302A 302A 302A 200 200"
"""An admin page any staff member may see."""
ADMIN_MODEL = "302A 302A 302A 302A 302A 403 200"
"""A model's page: staff need the model's permissions (a superuser has them all)."""
ADMIN_REFUSED = "302A 302A 302A 302A 302A 403 403"
"""A page nobody may use: the model is read-only, or adding one is not how it is made."""

ADMIN_GONE = "302A 302A 302A 302A 302A 302 302"
"""An object page of the RQ dashboard, which has no objects: back to the dashboard."""

ADMIN_MODELS = {
    # model                     changelist   add            change/history  delete
    "auth/group":               (ADMIN_MODEL, ADMIN_MODEL,   ADMIN_MODEL,    ADMIN_MODEL),
    "auth/user":                (ADMIN_MODEL, ADMIN_MODEL,   ADMIN_MODEL,    ADMIN_MODEL),
    "processing/matter":        (ADMIN_MODEL, ADMIN_MODEL,   ADMIN_MODEL,    ADMIN_MODEL),
    "processing/processingjob": (ADMIN_MODEL, ADMIN_REFUSED, ADMIN_MODEL,    ADMIN_MODEL),
    "processing/document":      (ADMIN_MODEL, ADMIN_REFUSED, ADMIN_MODEL,    ADMIN_MODEL),
    "processing/documentpage":  (ADMIN_MODEL, ADMIN_REFUSED, ADMIN_MODEL,    ADMIN_REFUSED),
    "processing/auditevent":    (ADMIN_MODEL, ADMIN_REFUSED, ADMIN_MODEL,    ADMIN_REFUSED),
    "processing/apitoken":      (ADMIN_MODEL, ADMIN_MODEL,   ADMIN_MODEL,    ADMIN_MODEL),
    "django_rq/dashboard":      (ADMIN_OPEN,  ADMIN_REFUSED, ADMIN_GONE,     "302A 302A 302A 302A 302A 403 302"),
}  # fmt: skip
"""Every model in admin, with what its changelist, add page and object pages answer."""

Q = "/admin/django_rq/dashboard/queues/0"

ADMIN: dict[tuple[str, str], tuple[str, str]] = {
    ("admin:index", "GET"):                  ("/admin/",                      ADMIN_OPEN),
    ("admin:login", "GET"):                  ("/admin/login/",                "200 200 200 200 200 302 302"),
    ("admin:logout", "POST"):                ("/admin/logout/",               "302L 302 302 302 302 302L 302L"),
    ("admin:password_change", "GET"):        ("/admin/password_change/",      ADMIN_OPEN),
    ("admin:password_change_done", "GET"):   ("/admin/password_change/done/", ADMIN_OPEN),
    ("admin:autocomplete", "GET"):           ("/admin/autocomplete/?app_label=processing&model_name=membership&field_name=user", ADMIN_MODEL),
    ("admin:jsi18n", "GET"):                 ("/admin/jsi18n/",               ADMIN_OPEN),
    ("admin:view_on_site", "GET"):           ("/admin/r/{ct}/{matter}/",      "302A 302A 302A 302A 302A 404 404"),
    ("admin:app_list", "GET"):               ("/admin/processing/",           "302A 302A 302A 302A 302A 404 200"),
    ("admin:catch_all", "GET"):              ("/admin/no-such-page/",         "302A 302A 302A 302A 302A 404 404"),
    ("admin:auth_user_password_change", "GET"): ("/admin/auth/user/{alice_id}/password/", ADMIN_MODEL),
    ("admin:django_rq_home", "GET"):         ("/admin/django_rq/dashboard/",  ADMIN_OPEN),
    ("admin:django_rq_home_json", "GET"):    ("/admin/django_rq/dashboard/stats.json/", "401 401 401 401 401 200 200"),
    ("admin:django_rq_jobs", "GET"):         (f"{Q}/",                        ADMIN_OPEN),
    ("admin:django_rq_queue_details", "GET"): (f"{Q}/details/",               ADMIN_OPEN),
    ("admin:django_rq_finished_jobs", "GET"): (f"{Q}/finished/",              ADMIN_OPEN),
    ("admin:django_rq_failed_jobs", "GET"):  (f"{Q}/failed/",                 ADMIN_OPEN),
    ("admin:django_rq_delete_failed_jobs", "GET"): (f"{Q}/failed/clear/",     ADMIN_OPEN),
    ("admin:django_rq_scheduled_jobs", "GET"): (f"{Q}/scheduled/",            ADMIN_OPEN),
    ("admin:django_rq_started_jobs", "GET"): (f"{Q}/started/",                ADMIN_OPEN),
    ("admin:django_rq_deferred_jobs", "GET"): (f"{Q}/deferred/",              ADMIN_OPEN),
    ("admin:django_rq_clear", "GET"):        (f"{Q}/empty/",                  ADMIN_OPEN),
    ("admin:django_rq_requeue_all", "GET"):  (f"{Q}/requeue-all/",            ADMIN_OPEN),
    ("admin:django_rq_job_detail", "GET"):   (f"{Q}/{{rq_job}}/",            ADMIN_OPEN),
    ("admin:django_rq_result_detail", "GET"): (f"{Q}/{{rq_job}}/results/1/", "302A 302A 302A 302A 302A 404 404"),
    ("admin:django_rq_delete_job", "GET"):   (f"{Q}/{{rq_job}}/delete/",     ADMIN_OPEN),
    ("admin:django_rq_requeue_job", "GET"):  (f"{Q}/{{rq_job}}/requeue/",    ADMIN_OPEN),
    ("admin:django_rq_enqueue_job", "GET"):  (f"{Q}/{{rq_job}}/enqueue/",    ADMIN_OPEN),
    ("admin:django_rq_stop_job", "POST"):    (f"{Q}/{{rq_job}}/stop/",       "302L 302A 302A 302A 302A 302 302"),
    ("admin:django_rq_confirm_action", "POST"): ("/admin/django_rq/dashboard/queues/confirm-action/0/", "302L 302A 302A 302A 302A 302 302"),
    ("admin:django_rq_actions", "POST"):     ("/admin/django_rq/dashboard/queues/actions/0/", "302L 302A 302A 302A 302A 302 302"),
    ("admin:django_rq_workers", "GET"):      ("/admin/django_rq/dashboard/workers/0/", ADMIN_OPEN),
    ("admin:django_rq_worker_details", "GET"): ("/admin/django_rq/dashboard/workers/0/{rq_worker}/", ADMIN_OPEN),
    ("admin:django_rq_cron_scheduler_detail", "GET"): ("/admin/django_rq/dashboard/cron-schedulers/0/none/", "302A 302A 302A 302A 302A 404 404"),
    ("admin:django_rq_cron_job_detail", "GET"): ("/admin/django_rq/dashboard/cron-schedulers/0/none/jobs/none/", "302A 302A 302A 302A 302A 404 404"),
}  # fmt: skip
"""Django admin and the RQ dashboard inside it: the admin login for whoever is not staff;
staff see what their permissions allow (the RQ dashboard asks only for staff)."""

OBJECTS = {
    "auth/group": "{group}",
    "auth/user": "{alice_id}",
    "processing/matter": "{matter}",
    "processing/processingjob": "{job}",
    "processing/document": "{document}",
    "processing/documentpage": "{page}",
    "processing/auditevent": "{event}",
    "processing/apitoken": "{token}",
    "django_rq/dashboard": "1",
}
"""The object each model's object pages are asked about."""

for _model, (_list, _add, _object, _delete) in ADMIN_MODELS.items():
    _name, _base = _model.replace("/", "_"), f"/admin/{_model}/"
    ADMIN[(f"admin:{_name}_changelist", "GET")] = (_base, _list)
    ADMIN[(f"admin:{_name}_add", "GET")] = (f"{_base}add/", _add)
    _one = f"{_base}{OBJECTS[_model]}/"
    for _view, _cells in (("change", _object), ("history", _object), ("delete", _delete)):
        ADMIN[(f"admin:{_name}_{_view}", "GET")] = (f"{_one}{_view}/", _cells)
    # The bare object URL redirects to its change page, for whoever may reach admin.
    _redirect = _object.replace(" 200", " 302").replace(" 403 302", " 302 302")
    ADMIN[(f"admin/{_model}/<path:object_id>/", "GET")] = (_one, _redirect)

WEBSOCKETS: dict[str, tuple[str, str]] = {
    # route                              path                          anon stranger viewer member owner staff super
    "ws/matters/<str:matter_id>/":       ("/ws/matters/{matter}/",       "4403 4403 open open open 4403 4403"),
    "ws/matters/<str:matter_id>/events": ("/ws/matters/{matter}/events", "4403 4403 open open open 4403 4403"),
}  # fmt: skip
"""The live sockets: open for whoever may see the matter, 4403 for everyone else."""


# --- the world every row is asked about ----------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(make_user: Any, make_matter: Any) -> dict[str, Any]:
    """A matter owned by alice (bob a member, carol a viewer) with a queued job and a
    failed one; mallory on no matter; a staff member and a superuser on none either."""
    alice = make_user("alice")
    make_user("bob")
    make_user("carol")
    make_user("mallory")
    make_user("staff", is_staff=True)
    get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456789")
    matter: Matter = make_matter(alice, "Access", bob=Role.MEMBER, carol=Role.VIEWER)
    document = stored_document(matter, alice, "queued.pdf")
    document.file.save("queued.pdf", ContentFile(b"%PDF-1.4 a lease"), save=True)
    job = lifecycle.create_job(document, by=alice)
    failed = failed_job(matter, alice)
    page = DocumentPage.objects.create(document=job.document, page_number=1, text="A lease.")
    token, _raw = create_token(alice)
    return {
        "matter": matter.pk,
        "job": job.pk,
        "failed": failed.pk,
        "document": job.document_id,
        "page": page.pk,
        "event": AuditEvent.objects.filter(job=job).first().pk,  # type: ignore[union-attr]
        "token": token.pk,
        "group": Group.objects.create(name="Operators").pk,
        "alice_id": alice.pk,
        "ct": ContentType.objects.get_for_model(Matter).pk,
        **_rq_world(),
    }


def _rq_world() -> dict[str, str]:
    """An RQ job waiting in the default queue and a registered worker, for the dashboard's
    pages about one (the autouse ``_empty_queues`` clears them after the test)."""
    queue = django_rq.get_queue("default", commit_mode="auto")
    rq_job = queue.enqueue("processing.jobs.tasks.no_such_task")
    worker = Worker([queue], connection=queue.connection, name="matrix-worker")
    worker.register_birth()
    return {"rq_job": rq_job.id, "rq_worker": worker.key}


USERNAMES = {
    "stranger": "mallory",
    "viewer": "carol",
    "member": "bob",
    "owner": "alice",
    "staff": "staff",
    "super": "root",
}


def browser(role: str) -> Client:
    """A browser signed in as the role's user (nobody for ``anon``)."""
    client = Client()
    if role != "anon":
        client.force_login(get_user_model().objects.get(username=USERNAMES[role]))
    return client


def api_headers(role: str) -> dict[str, str]:
    """A bearer token of the role's user (none for ``anon``)."""
    if role == "anon":
        return {}
    user = get_user_model().objects.get(username=USERNAMES[role])
    return {"Authorization": f"Bearer {create_token(user)[1]}"}


def cells(row: str) -> dict[str, str]:
    values = row.split()
    assert len(values) == len(ROLES), row
    return dict(zip(ROLES, values, strict=True))


def outcome(response: Any) -> str:
    """A response as a matrix cell: its status, and where a redirect to a login goes."""
    status = str(response.status_code)
    if response.status_code == 302:
        target = urlparse(response["Location"]).path
        if target == "/login/":
            return "302L"
        if target == "/admin/login/":
            return "302A"
    return status


def ask(client: Client, method: str, path: str, body: dict[str, Any] | None, **extra: Any) -> Any:
    if method == "GET":
        return client.get(path, **extra)
    if method == "DELETE":
        return client.delete(path, **extra)
    return client.post(path, data=body or {}, **extra)


# --- the tests -------------------------------------------------------------------------------


def _rows(table: dict[tuple[str, str], tuple[str, str]]) -> list[Any]:
    return [pytest.param(key, *value, id=f"{key[1]} {key[0]}") for key, value in table.items()]


@pytest.mark.django_db
@pytest.mark.parametrize("key, path, row", _rows(PAGES) + _rows(ADMIN))
def test_every_page_answers_each_caller_as_promised(
    world: dict[str, Any], key: tuple[str, str], path: str, row: str
) -> None:
    method = key[1]
    url = path.format(**world)
    got = {role: outcome(ask(browser(role), method, url, BODIES.get(key))) for role in ROLES}
    assert got == cells(row), f"{url}: got {' '.join(got.values())}"


@pytest.mark.django_db
@pytest.mark.parametrize("key, path, row", _rows(API))
def test_every_api_endpoint_answers_each_caller_as_promised(
    world: dict[str, Any], key: tuple[str, str], path: str, row: str, settings: Any
) -> None:
    settings.EXTERNAL_CALLBACK_SECRET = "matrix-secret"  # callbacks on: refused for no signature
    method = key[1]
    url = path.format(**world)
    got = {}
    for role in ROLES:
        client, headers = Client(), api_headers(role)
        if method == "POST":
            body = BODIES.get(key, {})
            response = client.post(url, body, content_type="application/json", headers=headers)
        else:
            response = ask(client, method, url, None, headers=headers)
        got[role] = outcome(response)
        if response.status_code >= 400:  # the contract's envelope, with its code
            code = response.json()["error"]["code"]
            expected = {**CODES, **ROW_CODES.get(key, {})}
            assert code == expected.get(response.status_code, code), (role, url, code)
    assert got == cells(row), f"{url}: got {' '.join(got.values())}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "route, path, row", [pytest.param(k, *v, id=k) for k, v in WEBSOCKETS.items()]
)
def test_every_websocket_answers_each_caller_as_promised(
    world: dict[str, Any], route: str, path: str, row: str
) -> None:
    url = path.format(**world)
    cookies = {role: _session_cookie(role) for role in ROLES}

    async def attempts() -> dict[str, str]:
        got = {}
        for role in ROLES:
            headers = [(b"origin", b"http://localhost")]
            if cookies[role] is not None:
                headers.append(cookies[role])
            communicator = WebsocketCommunicator(application, url, headers=headers)
            connected, _ = await communicator.connect()
            assert connected
            if await communicator.receive_nothing(timeout=0.3):
                got[role] = "open"
            else:
                closing = await communicator.receive_output(timeout=1)
                got[role] = (
                    str(closing.get("code")) if closing["type"] == "websocket.close" else "?"
                )
            await communicator.disconnect()
        await sync_to_async(connections.close_all, thread_sensitive=True)()
        return got

    got = asyncio.run(attempts())
    assert got == cells(row), f"{url}: got {' '.join(got.values())}"


def _session_cookie(role: str) -> tuple[bytes, bytes] | None:
    if role == "anon":
        return None
    client = browser(role)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    return (b"cookie", f"{settings.SESSION_COOKIE_NAME}={value}".encode())


# --- every URL has a row --------------------------------------------------------------------


def _url_keys(patterns: list[Any], prefix: str = "", namespace: str = "") -> Iterator[str]:
    """Each pattern's ``namespace:name``, or its whole route when it has no name."""
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = pattern.namespace or ""
            yield from _url_keys(
                pattern.url_patterns,
                prefix + str(pattern.pattern),
                f"{namespace}:{inner}".strip(":") if inner else namespace,
            )
        elif isinstance(pattern, URLPattern):
            route = prefix + str(pattern.pattern)
            if route == "admin/(?P<url>.*)$":
                yield "admin:catch_all"
            elif pattern.name:
                yield f"{namespace}:{pattern.name}" if namespace else pattern.name
            else:
                yield route


def test_every_url_has_a_row() -> None:
    """Adding a page, an endpoint, a socket or an admin model means adding its row above."""
    covered = {name for name, _method in (*PAGES, *API, *ADMIN)}
    covered |= {f"api:{name}" for name, _method in API}
    missing = sorted(set(_url_keys(get_resolver().url_patterns)) - covered)
    assert missing == [], f"URLs without a row in the access matrix: {missing}"
    sockets = set(_url_keys(list(websocket_urlpatterns)))
    assert sockets == set(WEBSOCKETS), sockets ^ set(WEBSOCKETS)


def test_the_matrix_names_only_urls_that_exist() -> None:
    """A row left behind by a removed URL is a row that tests nothing."""
    existing = set(_url_keys(get_resolver().url_patterns))
    rows = {name for name, _ in (*PAGES, *ADMIN)} | {f"api:{name}" for name, _ in API}
    assert sorted(rows - existing) == []
