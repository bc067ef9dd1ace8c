"""Staff views: jobs with filters, stage history and audit, and actions via the lifecycle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from processing.jobs import lifecycle
from processing.jobs.states import InvalidTransition
from processing.models import (
    ApiToken,
    AuditEvent,
    Document,
    DocumentPage,
    Matter,
    Membership,
    ProcessingJob,
    StageRun,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Matter)
class MatterAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at", "created_by"]
    search_fields = ["name"]
    inlines = [MembershipInline]


class StageRunInline(admin.TabularInline):
    model = StageRun
    extra = 0
    can_delete = False
    fields = [
        "stage",
        "attempt",
        "status",
        "items_done",
        "items_total",
        "started_at",
        "finished_at",
        "worker",
        "error_code",
        "error_message",
        "error_detail",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AuditEventInline(admin.TabularInline):
    model = AuditEvent
    extra = 0
    can_delete = False
    fields = ["created_at", "action", "from_status", "to_status", "actor", "details"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _lifecycle_action(
    name: str, transition: Callable[..., ProcessingJob], description: str
) -> Callable[..., None]:
    def action(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
        done, refused = 0, []
        for job in queryset:
            try:
                transition(job, by=request.user)
                done += 1
            except InvalidTransition as exc:
                refused.append(f"{job.document}: {exc}")
        if done:
            modeladmin.message_user(request, f"{description}: {done} job(s).", messages.SUCCESS)
        for line in refused:
            modeladmin.message_user(request, line, messages.WARNING)

    action.__name__ = name
    action.short_description = description  # type: ignore[attr-defined]
    return action


@admin.register(ProcessingJob)
class ProcessingJobAdmin(admin.ModelAdmin):
    list_display = [
        "document",
        "matter",
        "job_type",
        "status",
        "current_stage",
        "progress",
        "retry_count",
        "error_code",
        "created_at",
    ]
    list_filter = ["status", "job_type", "matter", "error_code", "queue_name"]
    search_fields = ["id", "document__original_name", "matter__name", "error_code"]
    list_select_related = ["document", "matter"]
    date_hierarchy = "created_at"
    inlines = [StageRunInline, AuditEventInline]
    actions = [
        _lifecycle_action("retry_jobs", lifecycle.retry, "Retry"),
        _lifecycle_action("skip_jobs", lifecycle.skip, "Skip"),
        _lifecycle_action("cancel_jobs", lifecycle.cancel, "Cancel"),
        _lifecycle_action("prioritize_jobs", lifecycle.prioritize, "Prioritise"),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Status and counters are the lifecycle's: staff change them through the actions.
        return [f.name for f in ProcessingJob._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["original_name", "matter", "content_type", "page_count", "processing_state"]
    list_filter = ["content_type", "processing_state"]
    search_fields = ["original_name", "sha256"]


@admin.register(DocumentPage)
class DocumentPageAdmin(admin.ModelAdmin):
    list_display = ["document", "page_number", "source", "char_count"]
    raw_id_fields = ["document"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "action", "job", "actor", "from_status", "to_status"]
    list_filter = ["action"]
    raw_id_fields = ["job"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "created_at", "last_used_at"]
    readonly_fields = ["prefix", "key_hash", "created_at", "last_used_at"]
