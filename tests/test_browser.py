"""People in a real headless Chromium, against the app as ./dev run starts it: daphne,
a forking RQ worker and the live relay, each its own process, on the test database."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processing.errors import CorruptDocument
from processing.jobs import lifecycle
from processing.live import notices
from processing.models import ProcessingJob, Role
from tests.conftest import make_pdf, stored_document
from tests.processes import LiveApp, running_app

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
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
PASSWORD = "correct-horse-battery"
SCREENSHOTS = ROOT / "test-artifacts"
WEBSOCKETS = re.compile(r".*/ws/.*")


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

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # this module's alone


# What Chromium refused under the pages' Content-Security-Policy, as it says on the console.
CSP_REFUSALS: list[str] = []


@pytest.fixture(autouse=True)
def _close_pages(browser: Any) -> Iterator[None]:
    """Each test's pages go with it (a page left open keeps reconnecting its socket), and
    no page may have broken its Content-Security-Policy: the pages work under it."""
    CSP_REFUSALS.clear()
    yield
    for context in browser.contexts:
        context.close()
    assert not CSP_REFUSALS, CSP_REFUSALS


@pytest.fixture
def web_only(
    transactional_db: None, settings: Any, request: pytest.FixtureRequest
) -> Iterator[LiveApp]:
    """daphne alone: no relay pushes anything, no worker runs anything."""
    with running_app(Path(settings.MEDIA_ROOT), request.node.name, relay=False) as live:
        yield live


@pytest.fixture
def app(transactional_db: None, settings: Any, request: pytest.FixtureRequest) -> Iterator[LiveApp]:
    """daphne and the live relay; the test starts the worker."""
    with running_app(Path(settings.MEDIA_ROOT), request.node.name, relay=True) as live:
        yield live


@pytest.fixture
def live_app(app: LiveApp) -> str:
    """The whole app, worker included; its URL."""
    app.start_worker()
    return app.url


def log_in(browser: Any, url: str, username: str) -> Any:
    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    page.set_default_timeout(20_000)
    page.on(
        "console",
        lambda message: (
            "Content Security Policy" in message.text
            and CSP_REFUSALS.append(f"{page.url}: {message.text}")
        ),
    )
    page.goto(f"{url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Matters')")
    return page


def open_matter(page: Any, url: str, matter: Any) -> None:
    page.goto(f"{url}/matters/{matter.pk}/")
    page.wait_for_function("() => typeof window.jtPolling === 'function'")


def upload(page: Any, path: Path) -> Any:
    page.set_input_files("input[type=file]", str(path))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("text=was uploaded and queued")
    return page.locator("ol#jobs > li").first


# Records every state a job's row passes through: each row htmx swaps in (a push may
# swap the same row several times in one go, one state after the other).
WATCH_ROW = """() => {
  window.seen = [];
  const record = (row) => {
    const current = row.querySelector('.step-current');
    window.seen.push({
      step: current ? current.textContent.trim() : '',
      progress: Number(row.querySelector('[role=progressbar]').getAttribute('aria-valuenow')),
      status: row.querySelector('.job-status').textContent.trim(),
    });
  };
  new MutationObserver((mutations) => {
    for (const m of mutations)
      for (const node of m.addedNodes)
        if (node.matches && node.matches('li.job')) record(node);
  }).observe(document.getElementById('jobs'), {childList: true});
  const first = document.querySelector('ol#jobs > li.job');
  if (first) record(first);
}"""


def test_a_sixty_page_upload_moves_through_every_stage_without_a_reload(
    browser: Any, app: LiveApp, make_user: Any, make_matter: Any, tmp_path: Path
) -> None:
    owner = make_user("dana")
    matter = make_matter(owner, "Estate of Miller")
    page = log_in(browser, app.url, "dana")
    open_matter(page, app.url, matter)

    pdf = tmp_path / "deposition.pdf"
    pdf.write_bytes(
        make_pdf([f"Page {n}. Deposed on 12 March 2024; fee $1,200.00." for n in range(1, 61)])
    )
    row = upload(page, pdf)
    assert row.locator(".step-current").inner_text().startswith("● Queued")
    page.wait_for_function("() => typeof window.jtPolling === 'function'")
    page.evaluate(WATCH_ROW)
    app.start_worker()  # only now: the page watches the job from before its first stage
    page.wait_for_function("() => window.seen.some(s => s.status.endsWith('Processing'))")
    # Mid-processing, for the README: about a third of the way.
    page.wait_for_function("() => window.seen.some(s => s.progress >= 30)")
    page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
    row.locator(".job-status:has-text('Done')").wait_for(timeout=60_000)

    seen = page.evaluate("window.seen")
    steps = [s["step"] for s in seen]
    for label in (
        "Extracting",
        "Reading scanned pages",
        "Chunking",
        "Indexing",
        "Finding entities",
    ):
        assert any(step.startswith(f"● {label}") for step in steps), (label, steps)
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress) and progress[-1] == 100
    assert row.locator(".job-status").inner_text().endswith("Done")
    assert row.locator(".step-done").count() == 7  # Queued, five stages, Done
    assert "60 pages" in row.inner_text()

    row.locator("a.job-name").click()
    page.click("text=Open the processed document")
    # The text comes 20 pages a screen: page 60 is on the third.
    page.wait_for_selector("#page-20")
    assert page.locator("#page-21").count() == 0
    page.click("#text-pages a[rel=next]")
    page.wait_for_selector("#page-40")
    page.click("#text-pages a[rel=next]")
    page.wait_for_selector("#page-60")


def test_a_job_page_shows_each_stage_run_as_it_happens(
    browser: Any, app: LiveApp, make_user: Any, make_matter: Any, tmp_path: Path
) -> None:
    owner = make_user("gus")
    matter = make_matter(owner, "Harbour lease")
    page = log_in(browser, app.url, "gus")
    open_matter(page, app.url, matter)
    pdf = tmp_path / "lease.pdf"
    pdf.write_bytes(make_pdf([f"Clause {n}. Rent due 1 June 2025." for n in range(1, 6)]))
    upload(page, pdf).locator("a.job-name").click()
    timeline = page.locator("ol.timeline")
    timeline.locator("text=Not started yet.").wait_for()
    page.wait_for_function("() => window.jtPolling() === false")  # the socket is open
    app.start_worker()
    page.locator("text=Open the processed document").wait_for(timeout=60_000)
    runs = timeline.locator("li.run").all_inner_texts()
    for label in ("Extracting", "Reading scanned pages", "Chunking", "Indexing"):
        assert any(run.startswith(label) and "completed" in run for run in runs), (label, runs)
    assert any(run.startswith("Finding entities") for run in runs), runs
    assert page.evaluate("window.jtPolling()") is False  # pushed, not polled


def test_a_second_member_watches_a_job_they_did_not_start(
    browser: Any, live_app: str, make_user: Any, make_matter: Any, tmp_path: Path
) -> None:
    owner = make_user("dana")
    make_user("omar")
    matter = make_matter(owner, "Estate of Miller", omar=Role.MEMBER)
    page = log_in(browser, live_app, "dana")
    colleague = log_in(browser, live_app, "omar")
    open_matter(page, live_app, matter)
    pdf = tmp_path / "exhibits.pdf"
    pdf.write_bytes(make_pdf([f"Exhibit {n}, dated 3 May 2021." for n in range(1, 41)]))
    # Omar opens the matter while Dana's upload is still queued, then watches it finish.
    page.set_input_files("input[type=file]", str(pdf))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("text=was uploaded and queued")
    open_matter(colleague, live_app, matter)
    colleague.evaluate(WATCH_ROW)
    row = colleague.locator("ol#jobs > li").first
    row.locator(".job-status:has-text('Done')").wait_for(timeout=60_000)
    seen = colleague.evaluate("window.seen")
    assert [s for s in seen if s["status"].endswith("Done")], seen
    assert seen[-1]["progress"] == 100
    # The banner ends right too (within the relay's summary interval).
    colleague.locator("#matter-summary:has-text('1 done')").wait_for(timeout=10_000)
    assert "Processing" not in colleague.locator("#matter-summary").inner_text()


def test_a_failed_document_turns_red_with_its_error_and_what_to_do(
    browser: Any, live_app: str, make_user: Any, make_matter: Any, tmp_path: Path
) -> None:
    owner = make_user("erin")
    matter = make_matter(owner, "Acme merger")
    page = log_in(browser, live_app, "erin")
    open_matter(page, live_app, matter)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 200)
    row = upload(page, broken)
    row.locator(".job-status:has-text('Failed')").wait_for(timeout=30_000)
    assert "status-failed" in (row.get_attribute("class") or "")
    error = row.locator(".job-error")
    assert "CORRUPT_DOCUMENT" in error.inner_text()
    assert "What to do:" in error.inner_text()
    assert error.get_attribute("role") == "alert"
    assert row.locator(".step-failed").count() == 1  # text and icon, not colour alone
    assert "(failed)" in row.locator(".step-failed").inner_text()


def test_with_the_socket_down_the_page_polls_and_stops_when_the_job_is_done(
    browser: Any, live_app: str, make_user: Any, make_matter: Any, tmp_path: Path
) -> None:
    owner = make_user("finn")
    matter = make_matter(owner, "Offline matter")
    page = log_in(browser, live_app, "finn")
    # The lid is closed: every websocket this page opens is closed at once.
    page.route_web_socket(WEBSOCKETS, lambda socket: socket.close())
    row_polls: list[tuple[float, int]] = []
    page.on(
        "response",
        lambda r: (
            row_polls.append((time.monotonic(), r.status)) if r.url.endswith("/row") else None
        ),
    )
    open_matter(page, live_app, matter)
    pdf = tmp_path / "offline.pdf"
    pdf.write_bytes(make_pdf([f"Offline page {n}." for n in range(1, 21)]))
    row = upload(page, pdf)
    row.locator(".job-status:has-text('Done')").wait_for(timeout=60_000)
    assert row.locator("[role=progressbar]").get_attribute("aria-valuenow") == "100"
    assert row_polls and row_polls[-1][1] == 286  # the last poll told htmx to stop
    polls = len(row_polls)
    time.sleep(4.5)  # two more polling periods
    assert len(row_polls) == polls
    assert page.evaluate("window.jtPolling()") is True


def test_what_changed_before_the_socket_opened_is_fetched_once_it_opens(
    browser: Any, web_only: LiveApp, make_user: Any, make_matter: Any
) -> None:
    owner = make_user("hana")
    matter = make_matter(owner, "Late socket")
    job = lifecycle.create_job(stored_document(matter, owner, "late.pdf"), by=owner)
    page = log_in(browser, web_only.url, "hana")

    def change_then_connect(route: Any) -> None:
        # The page has rendered the job QUEUED; it finishes before the socket is open,
        # and no relay runs: nothing will ever be pushed about it.
        lifecycle.cancel(job, by=owner)
        route.connect_to_server()

    page.route_web_socket(WEBSOCKETS, change_then_connect)
    page.goto(f"{web_only.url}/matters/{matter.pk}/")
    row = page.locator(f"#job-{job.pk}")
    row.locator(".job-status:has-text('Cancelled')").wait_for(timeout=10_000)
    assert page.evaluate("window.jtPolling()") is False  # caught up over HTTP once, then quiet


def test_a_late_older_push_does_not_turn_the_page_back(
    browser: Any, app: LiveApp, make_user: Any, make_matter: Any
) -> None:
    owner = make_user("ivan")
    matter = make_matter(owner, "Race matter")
    job = lifecycle.create_job(stored_document(matter, owner, "race.pdf"), by=owner)
    as_queued = ProcessingJob.objects.get(pk=job.pk)
    page = log_in(browser, app.url, "ivan")
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: frames.append(frame)))
    open_matter(page, app.url, matter)
    page.wait_for_function("() => window.jtPolling() === false")  # the socket is open
    row = page.locator(f"#job-{job.pk}")

    lifecycle.cancel(job, by=owner)
    row.locator(".job-status:has-text('Cancelled')").wait_for(timeout=10_000)
    # A push of an older state arrives after the newer one (as when a slow push is
    # overtaken by the page's own request): it is received, and dropped.
    received = len(frames)
    notices.announce(as_queued, "status")

    def older_row_arrived() -> bool:
        return any(
            f'id="job-{job.pk}" class="job status-queued"' in str(f) for f in frames[received:]
        )

    deadline = time.monotonic() + 5
    while not older_row_arrived() and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert older_row_arrived()
    page.wait_for_timeout(300)
    assert row.locator(".job-status").inner_text().endswith("Cancelled")


def test_a_rejected_upload_says_why(
    browser: Any, live_app: str, make_user: Any, make_matter: Any, tmp_path: Path
) -> None:
    owner = make_user("gail")
    matter = make_matter(owner, "Acme merger")
    page = log_in(browser, live_app, "gail")
    open_matter(page, live_app, matter)
    legacy = tmp_path / "opinion.doc"
    legacy.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 4000)
    page.set_input_files("input[type=file]", str(legacy))
    page.click("#upload-form button[type=submit]")
    message = page.locator(".message.error")
    message.wait_for()
    assert "not supported" in message.inner_text()
    assert "UNSUPPORTED_FILE_TYPE" in message.inner_text()
    assert page.locator("#jobs").inner_text().count("opinion.doc") == 0


def test_an_owner_manages_people_in_place_and_is_told_why_a_change_is_refused(
    browser: Any, web_only: LiveApp, make_user: Any, make_matter: Any
) -> None:
    owner = make_user("jane")
    make_user("kofi")
    matter = make_matter(owner, "Estate of Okafor")
    page = log_in(browser, web_only.url, "jane")
    open_matter(page, web_only.url, matter)
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    panel = page.locator("#members")

    panel.get_by_role("textbox", name="Username").fill("kofi")
    panel.locator(".add-member select[name=role]").select_option("viewer")
    panel.locator("text=Add person").click()
    panel.locator("text=“kofi” now has the role viewer.").wait_for()

    panel.get_by_role("textbox", name="Username").fill("kofi.typo")
    panel.locator("text=Add person").click()
    panel.locator("[role=alert]:has-text('No one has the username “kofi.typo”')").wait_for()

    own_row = panel.locator("tr:has-text('(you)')")
    own_row.locator("select[name=role]").select_option("member")
    own_row.locator("button:has-text('Change role')").click()
    panel.locator("[role=alert]:has-text('A matter must keep at least one owner.')").wait_for()

    kofi_row = panel.locator("tr:has-text('kofi')")
    kofi_row.locator("button:has-text('Remove')").click()
    panel.locator("text=“kofi” was removed from the matter.").wait_for()

    assert page.evaluate("window.sameDocument") is True
    assert sorted(matter.memberships.values_list("user__username", "role")) == [("jane", "owner")]


def test_an_owner_retries_a_failed_job_from_the_dashboard_and_watches_it_run_again(
    browser: Any, live_app: str, make_user: Any, make_matter: Any, tmp_path: Path
) -> None:
    owner = make_user("hana")
    matter = make_matter(owner, "Estate of Ito")
    # A search language PostgreSQL does not know: the index stage fails, for good.
    type(matter).objects.filter(pk=matter.pk).update(search_language="no_such_language")
    page = log_in(browser, live_app, "hana")
    open_matter(page, live_app, matter)
    pdf = tmp_path / "will.pdf"
    pdf.write_bytes(make_pdf([f"Article {n}. Signed 2 April 2019." for n in range(1, 4)]))
    row = upload(page, pdf)
    row.locator(".job-status:has-text('Failed')").wait_for(timeout=30_000)
    assert "INVALID_SEARCH_LANGUAGE" in row.locator(".job-error").inner_text()

    # Staff fix the language; the owner retries from the failed row, with a reason.
    type(matter).objects.filter(pk=matter.pk).update(search_language="english")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    row.locator("summary:has-text('Retry')").click()
    row.get_by_role("textbox", name="Reason (optional)").fill("language fixed by staff")
    row.get_by_role("button", name="Retry").click()
    page.locator("#action-result:has-text('was retried')").wait_for()
    row.locator(".job-status:has-text('Done')").wait_for(timeout=60_000)
    assert page.evaluate("window.sameDocument") is True
    assert row.locator("summary").count() == 0  # a finished job offers nothing
    job = ProcessingJob.objects.get(matter=matter)
    assert job.retry_count == 1
    assert job.audit.filter(action="retried", reason="language fixed by staff").exists()


def test_a_viewer_sees_no_buttons_even_as_pushes_arrive(
    browser: Any, app: LiveApp, make_user: Any, make_matter: Any
) -> None:
    owner = make_user("ines")
    make_user("joao")
    matter = make_matter(owner, "Harbour lease", joao=Role.VIEWER)
    job = lifecycle.create_job(stored_document(matter, owner, "lease.pdf"), by=owner)
    started = lifecycle.begin_stage(job.pk, job.dispatch_id)
    assert started is not None
    lifecycle.fail_stage(*started, CorruptDocument())
    viewer = log_in(browser, app.url, "joao")
    open_matter(viewer, app.url, matter)
    row = viewer.locator(f"#job-{job.pk}")
    assert "Failed" in row.locator(".job-status").inner_text()
    assert row.locator(".job-actions summary").count() == 0
    viewer.wait_for_function("() => window.jtPolling() === false")  # the socket is open

    # The owner retries it: the row is pushed to the viewer, and fetches the viewer's buttons.
    fetched = f"/jobs/{job.pk}/actions"
    with viewer.expect_response(lambda r: r.url.endswith(fetched)) as answer:
        lifecycle.retry(ProcessingJob.objects.get(pk=job.pk), by=owner)
    assert answer.value.status == 200
    row.locator(".job-status:has-text('Queued')").wait_for()
    assert row.locator(".job-actions summary").count() == 0
    assert viewer.locator("form[hx-post]").count() == 0


def test_the_pages_admin_and_api_docs_work_under_the_content_security_policy(
    browser: Any, web_only: LiveApp, make_user: Any, make_matter: Any
) -> None:
    staff = make_user("ines", is_staff=True, is_superuser=True)
    matter = make_matter(staff, "Harbour lease")
    page = log_in(browser, web_only.url, "ines")
    response = page.goto(f"{web_only.url}/matters/{matter.pk}/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe" not in policy
    page.wait_for_function("() => typeof window.jtPolling === 'function'")
    page.goto(f"{web_only.url}/admin/processing/processingjob/")
    page.wait_for_selector("#changelist")
    page.goto(f"{web_only.url}/api/docs")
    page.wait_for_selector(".swagger-ui .info")  # rendered by its own scripts, from this site
    # _close_pages asserts that none of them broke the policy.
