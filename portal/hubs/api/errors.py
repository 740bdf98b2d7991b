"""Turn domain errors into JSON answers: lost races are 409, missing reasons 400."""

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from portal.hubs.lifecycle import LifecycleError
from portal.hubs.services import ReasonRequired


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, plus LifecycleError -> 409 and ReasonRequired -> 400."""
    if isinstance(exc, LifecycleError):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, ReasonRequired):
        return Response({"reason": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
