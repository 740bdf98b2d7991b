"""Top-level URLs: the web UI, sign-in, the Django admin and the REST API."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("portal.hubs.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("portal.hubs.api.urls")),
]
