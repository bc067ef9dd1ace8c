"""HTML pages: matters, a matter with its upload form, jobs and members, a job, a document,
search."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models.functions import Left
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseClientRefresh

from processing import matters as matter_service
from processing import selectors
from processing.jobs import estimates
from processing.jobs.states import JobStatus
from processing.matters import create_matter
from processing.models import Entity, Matter, ProcessingJob, Role
from processing.payloads import job_detail_payload, job_payload
from processing.permissions import Action, job_actions, role_allows
from processing.search import InvalidSearchLanguage, InvalidSearchQuery, search_matter
from processing.uploads import Accepted, UploadRejected, accept_upload, upload_again
from processing.web.display import STATUS_WORDS, job_view, summary_view
from processing.web.job_actions import bulk_offers, job_and_role, row_view


def _matter_or_404(request: HttpRequest, matter_id: str) -> tuple[Matter, str]:
    found = selectors.matter_for(request.user, matter_id)
    if found is None:
        raise Http404("No such matter.")
    return found


@login_required
def matter_list(request: HttpRequest) -> HttpResponse:
    """The caller's matters, and a form to create one."""
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        if not name:
            messages.error(request, "A matter needs a name.")
        else:
            matter = create_matter(name[:200], owner=request.user)
            return redirect("matter-detail", matter_id=matter.pk)
    memberships = list(selectors.memberships_of(request.user))
    counts = selectors.matter_status_counts([m.matter_id for m in memberships])
    rows = [(m.matter, m.role, counts[m.matter_id]) for m in memberships]
    return render(request, "processing/matter_list.html", {"rows": rows})


JOBS_PER_PAGE = 50
STATUS_FILTERS = [("", "All"), *((status.value, status.label) for status in JobStatus)]

# A polled fragment of a finished job answers 286: htmx stops polling it.
STOP_POLLING = 286


@login_required
def matter_detail(request: HttpRequest, matter_id: str) -> HttpResponse:
    """One matter: its banner and counts, its upload form, and its jobs, live."""
    matter, role = _matter_or_404(request, matter_id)
    status = request.GET.get("status", "")
    jobs = matter.jobs.select_related("document").order_by("-created_at", "-id")
    if status in JobStatus.values:
        jobs = jobs.filter(status=status)
    else:
        status = ""
    pages = Paginator(jobs, JOBS_PER_PAGE).get_page(request.GET.get("page"))
    now = timezone.now()
    found = estimates.for_jobs(pages, now=now)
    summary = selectors.matter_summary(matter.pk)
    return render(
        request,
        "processing/matter_detail.html",
        {
            "matter": matter,
            "matter_id": matter.pk,
            "role": role,
            "can_upload": role_allows(role, Action.UPLOAD),
            "jobs": [
                job_view(
                    job_payload(job, now=now, estimate=found[job.pk]),
                    now,
                    actions=job_actions(request.user, role, job),
                )
                for job in pages
            ],
            "pages": pages,
            "status": status,
            "status_filters": STATUS_FILTERS,
            "summary": summary_view(summary),
            "bulk": bulk_offers(role, summary, status),
            "duplicate": _duplicate_notice(request, matter),
            **_members_context(matter, role),
        },
    )


@login_required
def matter_summary(request: HttpRequest, matter_id: str) -> HttpResponse:
    """The matter's banner and counts, for pages polling while their socket is down."""
    matter, _role = _matter_or_404(request, matter_id)
    return render(
        request,
        "processing/matter_detail.html#summary",
        {"matter_id": matter.pk, "summary": summary_view(selectors.matter_summary(matter.pk))},
    )


@login_required
def job_row(request: HttpRequest, job_id: str) -> HttpResponse:
    """One job's row of the matter page (polled while the socket is down; 286 once finished)."""
    job, role = job_and_role(request, job_id)
    return _polled(request, "processing/matter_detail.html#job-row", row_view(request, job, role))


@login_required
def job_history(request: HttpRequest, job_id: str) -> HttpResponse:
    """One job's timeline and audit trail (polled by its page; 286 once finished)."""
    job = _job_or_404(request, job_id)
    return _polled(request, "processing/job_detail.html#history", job_view(job_detail_payload(job)))


def _polled(request: HttpRequest, partial: str, job: dict[str, Any]) -> HttpResponse:
    """A job's partial for a page polling it; 286 once the job is finished stops the polling."""
    response = render(request, partial, {"job": job})
    if job["finished"]:
        response.status_code = STOP_POLLING
    return response


def _job_or_404(request: HttpRequest, job_id: str) -> ProcessingJob:
    job = selectors.job_for(request.user, job_id)
    if job is None:
        raise Http404("No such job.")
    return job


@login_required
def matter_search(request: HttpRequest, matter_id: str) -> HttpResponse:
    """Full-text search over one matter's documents: hits with page and highlighted snippet."""
    matter, _role = _matter_or_404(request, matter_id)
    q = request.GET.get("q", "").strip()
    hits: list[dict[str, Any]] = []
    problem = ""
    if q:
        try:
            hits = search_matter(matter, q, limit=50)
        except InvalidSearchQuery as exc:
            problem = str(exc)
        except InvalidSearchLanguage as exc:
            problem = exc.message
    return render(
        request,
        "processing/search_results.html",
        {"matter": matter, "q": q, "hits": hits, "problem": problem},
    )


# The session key under which an upload that turned out to be a duplicate waits to be
# shown on the matter page (once), with its "Upload anyway".
DUPLICATE_UPLOAD = "jobtracker.duplicate_upload"


@login_required
@require_POST
def upload(request: HttpRequest, matter_id: str) -> HttpResponse:
    """Accept a file from the matter page's form, or its "Upload anyway" of a duplicate."""
    matter, role = _matter_or_404(request, matter_id)
    if not role_allows(role, Action.UPLOAD):
        # Viewers are offered no upload form; a forced post is refused as the API does.
        raise PermissionDenied("Your role on this matter does not allow uploads.")
    try:
        accepted, name = _accept(request, matter)
    except UploadRejected as exc:
        messages.error(request, f"{exc.message} ({exc.code})")
    else:
        if accepted.duplicate:
            request.session[DUPLICATE_UPLOAD] = {
                "matter": str(matter.pk),
                "job": str(accepted.job.pk),
                "name": name,
            }
        else:
            messages.success(request, f"“{name}” was uploaded and queued.")
    return redirect("matter-detail", matter_id=matter.pk)


def _accept(request: HttpRequest, matter: Matter) -> tuple[Accepted, str]:
    """What the upload form sent, accepted, and the name it was sent under.

    "Upload anyway" sends no file: it names the document already in the matter
    (``copy_of``), whose stored bytes are the same.
    """
    copy_of = request.POST.get("copy_of")
    if copy_of is None:
        file = request.FILES.get("file")
        allow_duplicate = request.POST.get("allow_duplicate") == "1"
        accepted = accept_upload(matter, file, by=request.user, allow_duplicate=allow_duplicate)
        return accepted, file.name if file is not None and file.name else ""
    document = selectors.document_for(request.user, copy_of)
    if document is None or document.matter_id != matter.pk:
        raise UploadRejected("DOCUMENT_NOT_FOUND", "That document is no longer in this matter.")
    name = request.POST.get("name", "")[:255] or document.original_name
    return upload_again(document, name, by=request.user), name


def _duplicate_notice(request: HttpRequest, matter: Matter) -> dict[str, Any] | None:
    """The duplicate that the last upload to this matter turned out to be; shown once."""
    notice = request.session.pop(DUPLICATE_UPLOAD, None)
    if not notice or notice.get("matter") != str(matter.pk):
        return None
    job = selectors.job_for(request.user, notice.get("job"), matter=matter)
    if job is None:
        return None
    status = STATUS_WORDS[JobStatus(job.status)][1]
    return {"name": notice.get("name", ""), "document": job.document, "job": job, "status": status}


# --- the members panel ---------------------------------------------------------------------

MAY_NOT_MANAGE = "Only owners of this matter can add people, change roles or remove people."


@login_required
@require_POST
def member_set(request: HttpRequest, matter_id: str) -> HttpResponse:
    """Add a person to the matter by username, or change their role (owners)."""
    matter, role = _matter_or_404(request, matter_id)
    if not role_allows(role, Action.MANAGE_MEMBERS):
        return _members_panel(request, matter, role, problem=MAY_NOT_MANAGE, status=403)
    username = request.POST.get("username", "").strip()
    try:
        membership = matter_service.set_member(matter, username, request.POST.get("role", ""))
    except matter_service.MembershipRefused as exc:
        return _members_panel(request, matter, role, problem=exc.message, status=_refused(exc))
    if membership.user_id == request.user.pk and membership.role != role:
        return HttpResponseClientRefresh()  # what the whole page offers them has changed
    done = f"“{username}” now has the role {Role(membership.role).label.lower()}."
    return _members_panel(request, matter, role, done=done)


@login_required
@require_POST
def member_remove(request: HttpRequest, matter_id: str) -> HttpResponse:
    """Take a person off the matter (owners)."""
    matter, role = _matter_or_404(request, matter_id)
    if not role_allows(role, Action.MANAGE_MEMBERS):
        return _members_panel(request, matter, role, problem=MAY_NOT_MANAGE, status=403)
    username = request.POST.get("username", "")
    try:
        matter_service.remove_member(matter, username)
    except matter_service.MembershipRefused as exc:
        return _members_panel(request, matter, role, problem=exc.message, status=_refused(exc))
    if username == request.user.get_username():
        return HttpResponseClientRedirect(reverse("matter-list"))  # the matter is gone for them
    return _members_panel(request, matter, role, done=f"“{username}” was removed from the matter.")


def _refused(exc: matter_service.MembershipRefused) -> int:
    """The HTTP status of a refused change to the members, as the API answers it."""
    if isinstance(exc, matter_service.LastOwner):
        return 409
    if isinstance(exc, matter_service.NotAMember):
        return 404
    return 400


def _members_panel(
    request: HttpRequest,
    matter: Matter,
    role: str,
    *,
    done: str = "",
    problem: str = "",
    status: int = 200,
) -> HttpResponse:
    """The matter page's members panel, swapped in place by htmx (refusals included)."""
    return render(
        request,
        "processing/matter_detail.html#members",
        {**_members_context(matter, role), "members_done": done, "members_problem": problem},
        status=status,
    )


def _members_context(matter: Matter, role: str) -> dict[str, Any]:
    """What the members panel shows; its controls only to a role that may manage members."""
    return {
        "matter_id": matter.pk,
        "members": list(selectors.members_of(matter)),
        "can_manage_members": role_allows(role, Action.MANAGE_MEMBERS),
        "roles": Role.choices,
    }


@login_required
def job_detail(request: HttpRequest, job_id: str) -> HttpResponse:
    """One job: its row with the reader's buttons, its stage runs and audit trail."""
    job, role = job_and_role(request, job_id)
    view = job_view(job_detail_payload(job), actions=job_actions(request.user, role, job))
    return render(request, "processing/job_detail.html", {"job": view})


# The document page shows its text a screen at a time: this many pages, or fewer
# once they hold this many characters; a longer page is cut at that many.
TEXT_PAGES_PER_SCREEN = 20
TEXT_CHARS_PER_SCREEN = 200_000


@login_required
def document_detail(request: HttpRequest, document_id: str) -> HttpResponse:
    """A processed document: a screen of its pages' text, its entities a screen per kind, its job.

    The response stays of bounded size however large the document: at most
    ``TEXT_PAGES_PER_SCREEN`` pages or ``TEXT_CHARS_PER_SCREEN`` characters of
    text (``?page=``), and ``selectors.ENTITY_ROWS_PER_KIND`` entity rows per kind
    (``?entities_<kind>=``). What a stage left incomplete (a page cut short, a
    cap on entities) is listed at the top.
    """
    document = selectors.document_for(request.user, document_id)
    if document is None:
        raise Http404("No such document.")
    job = document.jobs.order_by("-created_at").first()
    outline = list(
        document.pages.order_by("page_number").values_list(
            "page_number", "char_count", "source", "text_note", "entities_note"
        )
    )
    screens = text_screens([(number, size) for number, size, *_ in outline])
    screen = _screen_number(request.GET.get("page"), len(screens))
    first, last = screens[screen - 1] if screens else (0, -1)
    pages = list(
        document.pages.filter(page_number__gte=first, page_number__lte=last)
        .order_by("page_number")
        .annotate(shown_text=Left("text", TEXT_CHARS_PER_SCREEN))
        .only(
            "page_number",
            "char_count",
            "source",
            "ocr_status",
            "ocr_confidence",
            "ocr_note",
            "text_note",
            "entities_note",
        )
    )
    for page in pages:
        page.cut = page.char_count > TEXT_CHARS_PER_SCREEN  # type: ignore[attr-defined]
    entity_screens = {
        kind: _screen_number(request.GET.get(f"entities_{kind}"), None)
        for kind in Entity.Kind.values
    }
    groups = selectors.entities_by_kind(document, entity_screens)
    for group in groups:
        group["previous_link"] = _link(request, f"entities_{group['kind']}", group["screen"] - 1)
        group["next_link"] = (
            _link(request, f"entities_{group['kind']}", group["screen"] + 1)
            if group["screen"] < group["screens"]
            else None
        )
    return render(
        request,
        "processing/document_detail.html",
        {
            "document": document,
            "pages": pages,
            "screen": screen,
            "screens": len(screens),
            "previous_link": _link(request, "page", screen - 1),
            "next_link": _link(request, "page", screen + 1) if screen < len(screens) else None,
            "shown_chars": TEXT_CHARS_PER_SCREEN,
            "ocr_pages": sum(1 for *_, source, _t, _e in outline if source == "ocr"),
            "notes": _notes(outline),
            "entity_groups": groups,
            "job": job,
        },
    )


def text_screens(sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Split pages ``(number, characters)`` into screens: (first, last) page numbers of each."""
    screens: list[tuple[int, int]] = []
    first: int | None = None
    previous, count, chars = 0, 0, 0
    for number, size in sizes:
        if first is not None and (
            count >= TEXT_PAGES_PER_SCREEN
            or chars + min(size, TEXT_CHARS_PER_SCREEN) > TEXT_CHARS_PER_SCREEN
        ):
            screens.append((first, previous))
            first, count, chars = None, 0, 0
        if first is None:
            first = number
        count += 1
        chars += min(size, TEXT_CHARS_PER_SCREEN)
        previous = number
    if first is not None:
        screens.append((first, previous))
    return screens


def _screen_number(value: str | None, screens: int | None) -> int:
    """A 1-based screen number from a query parameter: anything odd is the first (or last)."""
    try:
        number = max(int(value or 1), 1)
    except ValueError:
        number = 1
    return min(number, screens) if screens else number


def _link(request: HttpRequest, name: str, number: int) -> str | None:
    """This page's address with ``name`` set to ``number``; None before the first screen."""
    if number < 1:
        return None
    query = request.GET.copy()
    query[name] = str(number)
    return f"?{query.urlencode()}"


def _notes(outline: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Each distinct note a stage left on pages, with the pages it is on (first ones)."""
    found: dict[str, list[int]] = {}
    for number, _size, _source, text_note, entities_note in outline:
        for note in (text_note, entities_note):
            if note:
                found.setdefault(note, []).append(number)
    return [
        {"note": note, "pages": numbers[:10], "more_pages": len(numbers) - min(len(numbers), 10)}
        for note, numbers in found.items()
    ]
