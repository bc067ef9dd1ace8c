"""Staff views: jobs with filters, stage history and audit, and actions via the lifecycle."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django_rq.admin import QueueAdmin
from django_rq.models import Dashboard

from processing import matters, tokens
from processing.jobs import actions
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
from processing.permissions import Action


class MembershipFormSet(BaseInlineFormSet):
    """A matter's members as one form: the change must leave the matter an owner."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        roles_after = [
            form.cleaned_data.get("role", "")
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]
        try:
            matters.check_owners_remain(self.instance, roles_after)
        except matters.LastOwner as exc:
            raise ValidationError(exc.message) from exc


class MembershipInline(admin.TabularInline):
    model = Membership
    formset = MembershipFormSet
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Matter)
class MatterAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at", "created_by"]
    search_fields = ["name"]
    readonly_fields = ["created_by", "created_at"]
    inlines = [MembershipInline]


class StageRunInline(admin.TabularInline):
    model = StageRun
    extra = 0
    can_delete = False
    fields = readonly_fields = (
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
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AuditEventInline(admin.TabularInline):
    model = AuditEvent
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "created_at",
        "action",
        "status_before",
        "status_after",
        "actor",
        "reason",
        "client_address",
        "details",
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _job_action(action: Action, description: str) -> Callable[..., None]:
    """An admin action that takes ``action`` on each selected job, through the lifecycle."""

    def run(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
        jobs = list(queryset.select_related("document"))
        names = {str(job.pk): str(job.document) for job in jobs}
        outcome = actions.perform_each(
            ((str(j.pk), j) for j in jobs),
            action,
            by=request.user,
            address=actions.address_of(request),
        )
        if outcome.done:
            modeladmin.message_user(
                request, f"{description}: {outcome.done} job(s).", messages.SUCCESS
            )
        for refusal in outcome.refused:
            modeladmin.message_user(
                request, f"{names[refusal.job_id]}: {refusal.message}", messages.WARNING
            )

    run.__name__ = f"{action}_jobs"
    return admin.action(description=description)(run)


class SavesOnlyWhatStaffChanged(admin.ModelAdmin):
    """Rows the lifecycle writes too: saving the change form writes only the fields
    staff changed (nothing, when they changed nothing), never the whole row, which
    would put back values read moments before over what the lifecycle wrote since."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
        elif form.changed_data:
            obj.save(update_fields=form.changed_data)


@admin.register(ProcessingJob)
class ProcessingJobAdmin(SavesOnlyWhatStaffChanged):
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
        _job_action(Action.RETRY, "Retry"),
        _job_action(Action.SKIP, "Skip"),
        _job_action(Action.SKIP_STAGE, "Skip the failed stage and go on"),
        _job_action(Action.CANCEL, "Cancel"),
        _job_action(Action.PRIORITIZE, "Prioritise"),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Status and counters are the lifecycle's: staff change them through the actions.
        return [f.name for f in ProcessingJob._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Document)
class DocumentAdmin(SavesOnlyWhatStaffChanged):
    list_display = ["original_name", "matter", "content_type", "page_count", "processing_state"]
    list_filter = ["content_type", "processing_state"]
    search_fields = ["original_name", "sha256"]
    # What was uploaded and how far its processing got are facts, written by the
    # upload service and the lifecycle; staff may only rename a document (a field
    # added later is read-only too until someone decides otherwise).
    readonly_fields = [f.name for f in Document._meta.fields if f.name not in ("original_name",)]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that are a record of what happened: staff may look, never add, change or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DocumentPage)
class DocumentPageAdmin(ReadOnlyAdmin):
    list_display = ["document", "page_number", "source", "char_count"]
    raw_id_fields = ["document"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "action",
        "job",
        "actor",
        "status_before",
        "status_after",
        "reason",
        "client_address",
    ]
    list_filter = ["action"]
    search_fields = ["reason", "job__id", "actor__username"]
    raw_id_fields = ["job"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens: created here (the token is shown once, in a message), revoked by an action;
    only the hash is stored, so a lost token is revoked and made again."""

    list_display = [
        "prefix",
        "user",
        "name",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "user__username", "name"]
    fields = ["user", "name", "expires_at", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_tokens"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """A token's user is fixed once it exists."""
        return [*self.readonly_fields, "user"] if obj is not None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = tokens.create_token(obj.user, name=obj.name, expires_at=obj.expires_at)
        for field in ("pk", "prefix", "key_hash", "created_at"):  # what admin shows next
            setattr(obj, field, getattr(token, field))
        obj._state.adding = False
        self.message_user(
            request,
            f"API token for {obj.user}: {raw} — copy it now, it is not shown again.",
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: Any) -> None:
        count = tokens.revoke(queryset)
        self.message_user(request, f"Revoked {count} token{'s' if count != 1 else ''}.")


class RqDashboardAdmin(QueueAdmin):
    """django-rq's dashboard (queues, jobs, workers) inside admin, for staff.

    Its "model" has no table, yet django-rq's own admin lets the change, history and
    delete pages of an object look one up: a 500 for a superuser. Here no object
    exists, so those pages redirect to the dashboard like any unknown object.
    """

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> None:
        """There are no dashboard rows to find."""
        return None

    def get_urls(self) -> list[Any]:
        """django-rq's pages, less the rq-scheduler page when rq-scheduler is not installed
        (it is not a dependency: RQ's own scheduler runs in the workers), which would
        answer staff with a 500."""
        urls: list[Any] = super().get_urls()  # type: ignore[no-untyped-call]
        if importlib.util.find_spec("rq_scheduler") is None:
            urls = [url for url in urls if getattr(url, "name", "") != "django_rq_scheduler_jobs"]
        return urls


if admin.site.is_registered(Dashboard):  # RQ_SHOW_ADMIN_LINK
    admin.site.unregister(Dashboard)
    admin.site.register(Dashboard, RqDashboardAdmin)
