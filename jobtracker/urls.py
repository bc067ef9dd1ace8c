"""Top-level URLs: pages, the JSON API, admin and login."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from processing.api import api
from processing.web.sign_in import SignInView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", SignInView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/", api.urls),
    path("", include("processing.web.urls")),
]
