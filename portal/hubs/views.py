"""Web pages for requesters and portal admins; thin: authorise, call a service, render."""

from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.hubs import services
from portal.hubs.forms import HubRequestForm, RejectForm
from portal.hubs.lifecycle import LifecycleError, State, sources
from portal.hubs.models import Hub


def staff_required(view: Callable) -> Callable:
    """Portal admins only: anonymous users are sent to sign in, others get 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


def _visible_hub(request: HttpRequest, pk: int) -> Hub:
    """The hub if the user may see it; 404 otherwise, so others' hubs do not leak."""
    return get_object_or_404(Hub.objects.visible_to(request.user).select_related("owner"), pk=pk)


def _managed_hub(request: HttpRequest, pk: int) -> Hub:
    hub = _visible_hub(request, pk)
    if not hub.can_manage(request.user):
        raise PermissionDenied
    return hub


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The start page is the list of hubs."""
    return redirect("hubs:list")


@login_required
@require_GET
def hub_list(request: HttpRequest) -> HttpResponse:
    """My hubs: owned and collaborating (admins: all), newest first."""
    hubs = Hub.objects.visible_to(request.user).select_related("owner").order_by("-created")
    return render(request, "hubs/hub_list.html", {"hubs": hubs})


@login_required
@require_http_methods(["GET", "POST"])
def hub_create(request: HttpRequest) -> HttpResponse:
    """The request form."""
    if request.method == "POST":
        try:
            hub = services.submit(request.user, request.POST)
        except services.InvalidSpec as invalid:
            form = invalid.form
        else:
            if hub.state == State.PENDING:
                messages.info(request, "Your request is waiting for a portal admin's approval.")
            else:
                messages.success(request, "Your request is inside the policy and was approved.")
            return redirect("hubs:detail", pk=hub.pk)
    else:
        form = HubRequestForm(owner=request.user)
    return render(request, "hubs/hub_form.html", {"form": form})


def _detail_context(request: HttpRequest, hub: Hub) -> dict:
    can_manage = hub.can_manage(request.user)
    return {
        "hub": hub,
        "events": hub.events.select_related("actor"),
        "can_manage": can_manage,
        "can_cancel": can_manage and hub.state == State.PENDING,
        "can_delete": can_manage and hub.state in sources(State.DEPROVISIONING),
        "violations": services.policy_checks(hub) if hub.state == State.PENDING else [],
        "collaborators": hub.collaborators.select_related("user"),
    }


@login_required
@require_GET
def hub_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A hub's spec, state, URL once running, and timeline."""
    hub = _visible_hub(request, pk)
    return render(request, "hubs/hub_detail.html", _detail_context(request, hub))


@login_required
@require_GET
def hub_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The status fragment that status.js polls."""
    hub = _visible_hub(request, pk)
    return render(request, "hubs/_status.html", {"hub": hub})


def _run(request: HttpRequest, action: Callable[[], Hub], done: str) -> None:
    try:
        action()
    except LifecycleError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, done)


@login_required
@require_POST
def hub_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Withdraw a pending request."""
    hub = _managed_hub(request, pk)
    _run(request, lambda: services.cancel(hub, request.user), "The request was cancelled.")
    return redirect("hubs:detail", pk=hub.pk)


@login_required
@require_http_methods(["GET", "POST"])
def hub_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask for confirmation, then delete the hub."""
    hub = _managed_hub(request, pk)
    if request.method == "POST":
        _run(request, lambda: services.delete(hub, request.user), "The hub is being deleted.")
        return redirect("hubs:detail", pk=hub.pk)
    return render(request, "hubs/hub_confirm_delete.html", {"hub": hub})


@staff_required
@require_GET
def approval_queue(request: HttpRequest) -> HttpResponse:
    """Pending requests, oldest first, with what exceeds the policy."""
    pending = (
        Hub.objects.filter(state=State.PENDING)
        .select_related("owner", "gpu_type")
        .prefetch_related("hardware_options", "images")
        .order_by("created", "pk")
    )
    rows = []
    for hub in pending:
        checks = services.policy_checks(hub)
        rows.append({"hub": hub, "violations": checks, "fields": {c.field for c in checks}})
    return render(request, "hubs/approval_queue.html", {"rows": rows})


@staff_required
@require_POST
def hub_approve(request: HttpRequest, pk: int) -> HttpResponse:
    """Approve a pending (or failed) hub."""
    hub = get_object_or_404(Hub, pk=pk)
    _run(
        request,
        lambda: services.approve(hub, request.user, request.POST.get("reason", "")),
        f"{hub.display_name} was approved.",
    )
    if request.POST.get("next") == "queue":
        return redirect("hubs:queue")
    return redirect("hubs:detail", pk=hub.pk)


@staff_required
@require_http_methods(["GET", "POST"])
def hub_reject(request: HttpRequest, pk: int) -> HttpResponse:
    """Reject a pending request with a required reason."""
    hub = get_object_or_404(Hub.objects.select_related("owner"), pk=pk)
    form = RejectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        _run(
            request,
            lambda: services.reject(hub, request.user, form.cleaned_data["reason"]),
            f"{hub.display_name} was rejected.",
        )
        return redirect("hubs:queue")
    return render(request, "hubs/hub_reject.html", {"hub": hub, "form": form})
