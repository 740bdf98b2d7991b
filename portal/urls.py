"""Top-level URLs: the web UI, sign-in, the Django admin and the REST API."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("portal.hubs.urls")),
    path("", include("portal.usage.urls")),
    # Our sign-in and sign-out come first; Django's password views stay behind them.
    path("accounts/", include("portal.accounts.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("auth/", include("portal.accounts.social_urls")),
    path("accounts/tokens/", include("portal.accounts.token_views")),
    path("audit/", include("portal.audit.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("portal.hubs.api.urls")),
]

# Unknown addresses under /api/ answer JSON like the rest of the API.
handler404 = "portal.hubs.api.errors.not_found"
