"""Turn domain errors into JSON answers: lost races are 409, missing reasons 400."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from portal.hubs.lifecycle import LifecycleError
from portal.hubs.services.decisions import ReasonRequired


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, plus LifecycleError -> 409 and ReasonRequired -> 400."""
    if isinstance(exc, LifecycleError):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, ReasonRequired):
        return Response({"reason": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: JSON under /api/ (an address the router does not know), the page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    return page_not_found(request, exception)
