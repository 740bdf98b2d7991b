"""Put the current request in the audit context, so ``record()`` knows who, from where, how."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from portal.audit.log import Context, client_ip, context, via_for_path


class AuditContextMiddleware:
    """Make each request the audit context while it is handled (actor read when recording)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        ctx = Context(request=request, via=via_for_path(request.path), ip=client_ip(request))
        with context(ctx):
            return self.get_response(request)
