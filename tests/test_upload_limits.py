"""Uploads within bounds: refused past UPLOAD_MAX_BYTES while they stream (by daphne as
``jobtracker.serve`` runs it, and by Django), anonymous bodies never read, uploads and
sign-ins rate-limited in the real Redis."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from processing.models import Document, Matter, ProcessingJob
from tests.conftest import database_url
from tests.test_api import error_of

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery"


def stored_nothing() -> bool:
    return not Document.objects.exists() and not ProcessingJob.objects.exists()


# --- Django: the guard before anything reads the body -----------------------------------


@pytest.mark.django_db
def test_a_file_past_the_limit_is_refused_by_the_api_and_the_form(
    api_client: Any, alice: Any, matter: Matter, settings: Any
) -> None:
    settings.UPLOAD_MAX_BYTES = 1000
    # The body is within the declared-length check: the upload handler stops the parse.
    error = error_of(
        api_client(alice).upload(matter.pk, "big.txt", b"a" * 1500), 413, "FILE_TOO_LARGE"
    )
    assert error["message"] == "This file is larger than the 0.000953674 MB limit."
    assert error["details"] == {"max_bytes": 1000, "size": 1500}

    page = Client()
    page.force_login(alice)
    response = page.post(
        f"/matters/{matter.pk}/upload", {"file": SimpleUploadedFile("big.txt", b"a" * 1500)}
    )
    assert response.status_code == 413
    assert "This file is larger than the" in response.content.decode()
    assert "(FILE_TOO_LARGE)" in response.content.decode()
    assert stored_nothing()


@pytest.mark.django_db
def test_a_body_declared_over_the_limit_is_refused_before_it_is_read(
    alice: Any, matter: Matter, settings: Any
) -> None:
    settings.UPLOAD_MAX_BYTES = 1000
    client = Client()
    client.force_login(alice)
    # A body that is not even valid multipart: reading it would be a 400, not a 413.
    response = client.generic(
        "POST",
        f"/api/matters/{matter.pk}/documents",
        b"not multipart at all",
        content_type="multipart/form-data; boundary=xyz",
        headers={"Content-Length": str(200 * 1024 * 1024)},
    )
    error = error_of(response, 413, "FILE_TOO_LARGE")
    assert error["details"] == {"max_bytes": 1000, "content_length": 200 * 1024 * 1024}


@pytest.mark.django_db
def test_a_form_that_is_not_multipart_is_refused_in_the_envelope(
    alice: Any, matter: Matter
) -> None:
    client = Client()
    client.force_login(alice)
    for content_type in ("multipart/form-data", "multipart/form-data; boundary=\x00"):
        response = client.generic(
            "POST", f"/api/matters/{matter.pk}/documents", b"--x--", content_type=content_type
        )
        assert error_of(response, 400, "VALIDATION_ERROR")["message"].startswith("The form")
    assert stored_nothing()


@pytest.mark.django_db
def test_an_anonymous_upload_is_refused_before_its_body_is_parsed(matter: Matter) -> None:
    # Malformed multipart: had anything parsed it, the answer would be a 400.
    body = b"--xyz\r\nContent-Disposition: form-data; name=file; filename=a.txt\r\n\r\nbroken"
    api = Client()
    response = api.generic(
        "POST",
        f"/api/matters/{matter.pk}/documents",
        body,
        content_type="multipart/form-data; boundary=xyz",
    )
    error_of(response, 401, "AUTHENTICATION_REQUIRED")

    page = Client(enforce_csrf_checks=True)
    response = page.generic(
        "POST",
        f"/matters/{matter.pk}/upload",
        body,
        content_type="multipart/form-data; boundary=xyz",
    )
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next=/matters/{matter.pk}/upload"
    assert stored_nothing()


@pytest.mark.django_db
def test_uploads_past_the_count_a_minute_are_429_with_retry_after(
    api_client: Any, alice: Any, matter: Matter, settings: Any, make_user: Any
) -> None:
    settings.UPLOADS_PER_MINUTE = 2
    api = api_client(alice)
    assert api.upload(matter.pk, "one.txt", b"first").status_code == 201
    assert api.upload(matter.pk, "two.txt", b"second").status_code == 201
    response = api.upload(matter.pk, "three.txt", b"third")
    error = error_of(response, 429, "RATE_LIMITED")
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60 and error["details"]["retry_after"] == retry_after
    assert error["message"] == (
        f"You uploaded more than 2 files in a minute. Try again in {retry_after} second"
        + ("s." if retry_after != 1 else ".")
    )
    assert Document.objects.count() == 2

    # The form says the same, on a page.
    page = Client()
    page.force_login(alice)
    response = page.post(
        f"/matters/{matter.pk}/upload", {"file": SimpleUploadedFile("four.txt", b"fourth")}
    )
    assert response.status_code == 429 and response["Retry-After"]
    assert "You uploaded more than 2 files in a minute." in response.content.decode()
    # "Upload anyway" (a plain form, no file) is an upload too.
    response = page.post(
        f"/matters/{matter.pk}/upload",
        f"copy_of={Document.objects.first().pk}&name=again.txt",  # type: ignore[union-attr]
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 429
    assert Document.objects.count() == 2

    # The limit is each person's own.
    bob = make_user("bob")
    matter.memberships.create(user=bob, role="member")
    assert api_client(bob).upload(matter.pk, "bobs.txt", b"bob's").status_code == 201


@pytest.mark.django_db
def test_uploads_past_the_bytes_an_hour_are_429(
    api_client: Any, alice: Any, matter: Matter, settings: Any
) -> None:
    settings.UPLOAD_BYTES_PER_HOUR = 3000  # the multipart framing counts too
    api = api_client(alice)
    assert api.upload(matter.pk, "one.txt", b"a" * 1000).status_code == 201
    response = api.upload(matter.pk, "two.txt", b"b" * 2000)
    error = error_of(response, 429, "RATE_LIMITED")
    assert error["message"].startswith("You uploaded more than 2.79397e-06 GB in an hour.")
    assert 1 <= int(response["Retry-After"]) <= 3600
    # A refused upload is not counted: a small one still fits.
    assert api.upload(matter.pk, "three.txt", b"c" * 100).status_code == 201


# --- signing in ----------------------------------------------------------------------------


def sign_in(client: Client, username: str, password: str) -> Any:
    return client.post("/login/", {"username": username, "password": password})


@pytest.mark.django_db
def test_sign_in_is_refused_after_too_many_failures_for_a_username(
    alice: Any, settings: Any, make_user: Any
) -> None:
    settings.LOGIN_FAILURES_PER_USERNAME = 3
    make_user("bob")
    client = Client()
    for _ in range(3):
        assert sign_in(client, "alice", "wrong").status_code == 200
    response = sign_in(client, "Alice", PASSWORD)  # even the right password, any case
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= settings.LOGIN_WINDOW
    assert "Too many failed sign-in attempts for this username. Try again in" in (
        response.content.decode()
    )
    assert "_auth_user_id" not in client.session
    # Another person from the same address signs in.
    assert sign_in(client, "bob", PASSWORD).status_code == 302


@pytest.mark.django_db
def test_sign_in_is_refused_after_too_many_attempts_from_an_address(
    alice: Any, settings: Any
) -> None:
    settings.LOGIN_ATTEMPTS_PER_ADDRESS = 4
    client = Client(REMOTE_ADDR="198.51.100.7")
    for n in range(4):
        assert sign_in(client, f"guess{n}", "wrong").status_code == 200
    response = sign_in(client, "alice", PASSWORD)
    assert response.status_code == 429 and response["Retry-After"]
    assert "Too many sign-in attempts from your address." in response.content.decode()
    # Another address is not affected.
    assert sign_in(Client(REMOTE_ADDR="198.51.100.8"), "alice", PASSWORD).status_code == 302


# --- the web server: daphne as jobtracker.serve runs it ------------------------------------

LIMIT = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    """``python -m jobtracker.serve`` (daphne) with a 1 MB upload limit; its port."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "UPLOAD_MAX_BYTES": str(LIMIT),
    }
    log = (tmp_path / "web.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jobtracker.serve", "-b", "127.0.0.1", "-p", str(port)]
        + ["jobtracker.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None, (tmp_path / "web.log").read_text()
            assert time.monotonic() < deadline, "the web server did not start"
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def send_until_answered(port: int, head: bytes, body_chunks: Iterator[bytes]) -> tuple[int, bytes]:
    """Send ``head`` then the body as fast as the server takes it, until it answers.

    Returns the body bytes sent before the answer came (or the connection
    closed) and the answer's bytes.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head)
    sock.setblocking(False)
    sent, pending = 0, b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if not pending:
                pending = next(body_chunks, b"")
                if not pending:
                    break
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                break
            if writable:
                try:
                    count = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += count
                pending = pending[count:]
        sock.setblocking(True)
        sock.settimeout(10)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return sent, answer
    finally:
        sock.close()


def chunked(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """``total`` bytes of a file in HTTP chunked framing, made as they are sent (never held)."""
    piece = b"x" * size
    for _ in range(total // size):
        yield f"{size:x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def api_answer(answer: bytes) -> tuple[str, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), json.loads(body)


def test_a_200_mb_streamed_upload_is_refused_after_little_more_than_the_limit(
    server: int,
) -> None:
    total = 200 * 1024 * 1024
    head = (
        b"POST /api/matters/0/documents HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer not-checked-before-the-limit\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    sent, answer = send_until_answered(server, head, chunked(total))
    status, body = api_answer(answer)
    assert status == "HTTP/1.1 413 Payload Too Large"
    assert body["error"]["code"] == "FILE_TOO_LARGE"
    # What the client got into the connection before the answer: the limit, plus what
    # the kernel's socket buffers hold on both sides, never the 200 MB.
    assert LIMIT < sent < LIMIT + 16 * 1024 * 1024, sent


def test_a_body_declared_too_long_is_refused_before_any_of_it_is_read(server: int) -> None:
    head = (
        b"POST /matters/0/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: sessionid=x\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n"
        + f"Content-Length: {200 * 1024 * 1024}\r\n\r\n".encode()
    )
    sent, answer = send_until_answered(server, head, chunked(200 * 1024 * 1024))
    assert answer.startswith(b"HTTP/1.1 413 Payload Too Large\r\n")
    assert b"This file is larger than the 1 MB limit. (FILE_TOO_LARGE)" in answer
    assert sent < 16 * 1024 * 1024, sent


def test_an_upload_without_credentials_is_refused_before_its_body(server: int) -> None:
    head = (
        b"POST /api/matters/0/documents HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    sent, answer = send_until_answered(server, head, chunked(200 * 1024 * 1024))
    status, body = api_answer(answer)
    assert status == "HTTP/1.1 401 Unauthorized"
    assert body["error"]["code"] == "AUTHENTICATION_REQUIRED"
    assert sent < 16 * 1024 * 1024, sent
