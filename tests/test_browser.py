"""A person in a real headless Chromium: log in, create a matter, upload, see it complete."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_pdf

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("JOBTRACKER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: install Debian's 'chromium' package "
            "(./dev test does this)."
        )
    # Playwright's sync API runs an event loop in this thread; the ORM calls the
    # test makes between page actions are still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def test_upload_a_pdf_and_watch_it_complete(
    page: Any, live_server: Any, make_user: Any, worker: Any, tmp_path: Path
) -> None:
    make_user("dana")
    page.goto(f"{live_server.url}/")
    # Not logged in: the login page.
    assert "/login/" in page.url
    page.fill("input[name=username]", "dana")
    page.fill("input[name=password]", "correct-horse-battery")
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Matters')")

    page.fill("input[name=name]", "Estate of Miller")
    page.click("text=Create matter")
    page.wait_for_selector("h1:has-text('Estate of Miller')")

    pdf = tmp_path / "will.pdf"
    pdf.write_bytes(make_pdf(["Last will and testament.", "Codicil one.", "Codicil two."]))
    page.set_input_files("input[type=file]", str(pdf))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("text=was uploaded and queued")
    row = page.locator("#jobs tbody tr").first
    assert row.locator(".job-status").inner_text() == "QUEUED"
    assert "will.pdf" in row.inner_text()

    worker()
    page.reload()
    row = page.locator("#jobs tbody tr").first
    assert row.locator(".job-status").inner_text() == "COMPLETED"
    assert row.locator(".job-progress").inner_text() == "100%"

    row.locator("a").first.click()
    page.click("text=Open the processed document")
    page.wait_for_selector("#page-3")
    assert "Codicil two." in page.locator("#page-3 .page-text").inner_text()


def test_a_rejected_upload_says_why(
    page: Any, live_server: Any, make_user: Any, make_matter: Any, tmp_path: Path
) -> None:
    owner = make_user("erin")
    matter = make_matter(owner, "Acme merger")
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "erin")
    page.fill("input[name=password]", "correct-horse-battery")
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/matters/{matter.pk}/")
    legacy = tmp_path / "opinion.doc"
    legacy.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 4000)
    page.set_input_files("input[type=file]", str(legacy))
    page.click("#upload-form button[type=submit]")
    message = page.locator(".message.error")
    message.wait_for()
    assert "not supported" in message.inner_text()
    assert "UNSUPPORTED_FILE_TYPE" in message.inner_text()
    assert page.locator("#jobs").inner_text().count("opinion.doc") == 0
