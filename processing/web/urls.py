"""URLs of the HTML pages."""

from django.urls import path

from processing.web import job_actions, views

urlpatterns = [
    path("", views.matter_list, name="matter-list"),
    path("matters/<str:matter_id>/", views.matter_detail, name="matter-detail"),
    path("matters/<str:matter_id>/upload", views.upload, name="matter-upload"),
    path("matters/<str:matter_id>/members", views.member_set, name="matter-members"),
    path(
        "matters/<str:matter_id>/members/remove", views.member_remove, name="matter-member-remove"
    ),
    path("matters/<str:matter_id>/search", views.matter_search, name="matter-search"),
    path("matters/<str:matter_id>/summary", views.matter_summary, name="matter-summary"),
    path("jobs/<str:job_id>/", views.job_detail, name="job-detail"),
    path("jobs/<str:job_id>/row", views.job_row, name="job-row"),
    path("jobs/<str:job_id>/history", views.job_history, name="job-history"),
    path("jobs/<str:job_id>/actions", job_actions.job_buttons, name="job-actions"),
    path("jobs/<str:job_id>/<str:action>", job_actions.act, name="job-act"),
    path("matters/<str:matter_id>/bulk", job_actions.bulk, name="matter-bulk"),
    path("documents/<str:document_id>/", views.document_detail, name="document-detail"),
]
