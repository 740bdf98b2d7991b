"""/healthz, /readyz and /metrics of the web process (answered by OperationsMiddleware,
before host checks, HTTPS redirects, sessions and rate limits)."""

from __future__ import annotations

import hmac

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from portal.monitoring import exposition, health
from portal.monitoring.domain import DomainCollector

log = structlog.get_logger(__name__)


def _uncached(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    # Probes and scrapers ask every few seconds: Django's own "Unauthorized" or "Service
    # Unavailable" line for each answer would drown the log (readiness logs what failed).
    response._has_been_logged = True
    return response


def healthz(request: HttpRequest) -> HttpResponse:
    """The process answers (no database, broker or cluster involved): for liveness probes."""
    return _uncached(JsonResponse({"status": "ok"}))


def readyz(request: HttpRequest) -> HttpResponse:
    """200 when the database, the broker and the Kubernetes API answer (READINESS_CHECKS),
    else 503 naming the checks that failed: for readiness probes."""
    checks = health.readiness()
    failed = [name for name, passed in checks.items() if not passed]
    body = {
        "status": "unavailable" if failed else "ok",
        "checks": {name: "ok" if passed else "unavailable" for name, passed in checks.items()},
    }
    if failed:
        body["failed"] = failed
    return _uncached(JsonResponse(body, status=503 if failed else 200))


def _plain(status: int, text: str) -> HttpResponse:
    return _uncached(HttpResponse(text + "\n", status=status, content_type="text/plain"))


def metrics(request: HttpRequest) -> HttpResponse:
    """The web service's metrics (HTTP, database, the portal's own, and the domain's read
    from the database), for `Authorization: Bearer <METRICS_TOKEN>`; 404 without a token set."""
    expected = settings.METRICS_TOKEN
    if not expected:
        return _plain(404, "Not found.")
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        response = _plain(401, "Send Authorization: Bearer <METRICS_TOKEN>.")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return _plain(403, "Wrong metrics token.")
    try:
        body, content_type = exposition.render(
            request.META.get("HTTP_ACCEPT", ""), extra=[DomainCollector()]
        )
    except Exception as error:  # a scrape that fails is "unavailable", not a server error
        log.error("metrics.scrape_failed", error=repr(error)[:300])
        return _plain(503, "Metrics are unavailable; see the portal's log.")
    return _uncached(HttpResponse(body, content_type=content_type))
