"""The audit log page for portal admins: filter and page through recorded actions."""

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.audit.filters import AuditEventFilter
from portal.audit.models import AuditEvent

PAGE_SIZE = 50


@require_GET
def event_list(request: HttpRequest) -> HttpResponse:
    """Recorded actions, newest first, filtered by the query string; admins only."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not request.user.is_staff:
        raise PermissionDenied
    events = AuditEventFilter(request.GET, queryset=AuditEvent.objects.all())
    status = 200 if events.is_valid() else 400
    page = Paginator(events.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"filter": events, "page": page, "query": query.urlencode()}
    return render(request, "audit/event_list.html", context, status=status)
