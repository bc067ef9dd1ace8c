"""HTML pages: matters, a matter with its upload form and jobs, a job, a document, search."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from processing import selectors
from processing.jobs import estimates
from processing.matters import create_matter
from processing.models import DocumentPage, Matter
from processing.payloads import job_detail_payload, job_payload
from processing.permissions import Action, role_allows
from processing.search import InvalidSearchLanguage, InvalidSearchQuery, search_matter
from processing.uploads import UploadRejected, accept_upload


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


@login_required
def matter_detail(request: HttpRequest, matter_id: str) -> HttpResponse:
    """One matter: its upload form and its jobs with status and stage."""
    matter, role = _matter_or_404(request, matter_id)
    jobs = list(matter.jobs.select_related("document").order_by("-created_at")[:100])
    now = timezone.now()
    found = estimates.for_jobs(jobs, now=now)
    return render(
        request,
        "processing/matter_detail.html",
        {
            "matter": matter,
            "role": role,
            "can_upload": role_allows(role, Action.UPLOAD),
            "jobs": [job_payload(j, now=now, estimate=found[j.pk]) for j in jobs],
            "ready": selectors.matter_ready_counts([matter.pk])[matter.pk],
        },
    )


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


@login_required
@require_POST
def upload(request: HttpRequest, matter_id: str) -> HttpResponse:
    """Accept a file from the matter page's form."""
    matter, role = _matter_or_404(request, matter_id)
    if not role_allows(role, Action.UPLOAD):
        messages.error(request, "Your role on this matter does not allow uploads.")
        return redirect("matter-detail", matter_id=matter.pk)
    try:
        document, _job = accept_upload(matter, request.FILES.get("file"), by=request.user)
    except UploadRejected as exc:
        messages.error(request, f"{exc.message} ({exc.code})")
    else:
        messages.success(request, f"“{document.original_name}” was uploaded and queued.")
    return redirect("matter-detail", matter_id=matter.pk)


@login_required
def job_detail(request: HttpRequest, job_id: str) -> HttpResponse:
    """One job: its stages, history and audit trail."""
    job = selectors.job_for(request.user, job_id)
    if job is None:
        raise Http404("No such job.")
    return render(request, "processing/job_detail.html", {"job": job_detail_payload(job)})


@login_required
def document_detail(request: HttpRequest, document_id: str) -> HttpResponse:
    """A processed document: its pages' text (and which came from OCR), its entities, its job."""
    document = selectors.document_for(request.user, document_id)
    if document is None:
        raise Http404("No such document.")
    job = document.jobs.order_by("-created_at").first()
    pages = list(
        document.pages.order_by("page_number").only(
            "page_number", "text", "source", "ocr_status", "ocr_confidence", "ocr_note"
        )
    )
    return render(
        request,
        "processing/document_detail.html",
        {
            "document": document,
            "pages": pages,
            "ocr_pages": sum(1 for p in pages if p.source == DocumentPage.Source.OCR),
            "entity_groups": selectors.entities_by_kind(document),
            "job": job,
        },
    )
