"""Middleware for operating the portal: the probe and metrics endpoints, and the log context
of every request."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.utils.log import log_response

from portal.monitoring import ENVIRON_PREFIX, OPERATIONS_PATHS, logcontext, views

# Answered first, whatever the rest of the stack says: Kubernetes probes and Prometheus call
# the pod's address (a Host outside ALLOWED_HOSTS) over plain HTTP (no HTTPS redirect),
# without a session, often; they are kept out of the HTTP metrics and the access log.
ENDPOINTS: dict[str, Callable[[HttpRequest], HttpResponse]] = dict(
    zip(OPERATIONS_PATHS, (views.healthz, views.readyz, views.metrics), strict=True)
)


class OperationsMiddleware:
    """Serve /healthz, /readyz and /metrics; put it first in MIDDLEWARE."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        endpoint = ENDPOINTS.get(request.path_info)
        if endpoint is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        return endpoint(request)


class RequestContextMiddleware:
    """Give every request an id (a trusted proxy's X-Request-ID, or a new one) that each of
    its log lines and its answer's X-Request-ID carry; name the user and the hub as soon as
    the view is known. Put it right after OperationsMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = logcontext.request_id_for(request)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            response = self.get_response(request)
            if response.status_code >= 400:
                # Django's "Not Found: /path" line, written here while the request's context
                # is bound (Django's handler would write it after this middleware returned).
                log_response(
                    "%s: %s",
                    response.reason_phrase,
                    request.path,
                    response=response,
                    request=request,
                )
        finally:
            bound = structlog.contextvars.get_contextvars()
            for key in ("request_id", "user", "hub_id"):
                if key in bound:
                    request.META[ENVIRON_PREFIX + key] = bound[key]
            if request.resolver_match is not None:
                request.META[ENVIRON_PREFIX + "route"] = request.resolver_match.route
            structlog.contextvars.clear_contextvars()
        response[logcontext.REQUEST_ID_HEADER] = request_id
        return response

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> None:
        # After every middleware's request phase: the session's user is known here; a token's
        # is bound when the API authenticates it (portal/accounts/tokens.py).
        logcontext.bind_user(getattr(request, "user", None))
        hub_id = logcontext.hub_id_from(request.resolver_match)
        if hub_id is not None:
            structlog.contextvars.bind_contextvars(hub_id=hub_id)
