"""Rate limits: failed sign-ins per IP and username, and API changes per user.

Both count in Django's cache (Redis in production, so every process shares the counts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import structlog
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render, resolve_url
from django.urls import NoReverseMatch
from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import UserRateThrottle

from portal.audit.log import client_ip

log = structlog.get_logger(__name__)


def _path(name: str) -> str | None:
    try:
        return resolve_url(name)
    except NoReverseMatch:
        return None


def _limited(path: str) -> str:
    """Which limit a POST to `path` counts against: "sign-in" (the portal's and the Django
    admin's password forms: failures count), "reset" (password reset: every request counts,
    as each one sends mail) or "" (none)."""
    if path in (_path(settings.LOGIN_URL), _path("admin:login")):
        return "sign-in"
    if path == _path("password_reset"):
        return "reset"
    return ""


class LoginRateLimitMiddleware:
    """Answer 429 to sign-in POSTs once an IP and username had too many failed attempts.

    Covers every password form: whatever view serves LOGIN_URL and the Django admin's login,
    where a POST that does not end in a redirect (the form shown again with an error) counts
    as a failure; and password reset, where every POST per IP and address counts.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.LOGIN_RATE_LIMIT_ATTEMPTS
        kind = _limited(request.path) if request.method == "POST" and limit > 0 else ""
        if not kind:
            return self.get_response(request)
        field = "username" if kind == "sign-in" else "email"
        username = str(request.POST.get(field, "")).strip().lower()
        ip = client_ip(request) or "unknown"
        # Hashed, so usernames do not sit in the cache in clear.
        key = f"{kind}-fail:" + hashlib.sha256(f"{ip}\0{username}".encode()).hexdigest()
        window = settings.LOGIN_RATE_LIMIT_WINDOW
        if (cache.get(key) or 0) >= limit:
            log.warning("login_rate_limited", ip=ip)
            response = render(
                request, "429.html", {"retry_after_minutes": max(1, window // 60)}, status=429
            )
            response["Retry-After"] = str(window)
            return response
        response = self.get_response(request)
        # A sign-in that succeeds redirects onwards; every reset request counts.
        failed = kind == "reset" or not 300 <= response.status_code < 400
        if failed and not cache.add(key, 1, timeout=window):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=window)
        return response


class ApiWriteThrottle(UserRateThrottle):
    """DRF throttle for unsafe methods only, at settings.API_WRITE_RATE (read each request)."""

    scope = "api-write"

    def get_rate(self) -> str | None:
        return settings.API_WRITE_RATE or None

    def allow_request(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        # Read the rate now, so a changed setting applies without a restart of the class.
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)
