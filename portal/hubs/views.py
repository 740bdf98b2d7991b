"""Web pages for requesters and portal admins; thin: authorise, call a service, render."""

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.hubs import classes, expiry, hubspec, lifecycle, revisions, server_views
from portal.hubs.forms import ClassSessionForm, HubChangeForm, HubRequestForm, RejectForm
from portal.hubs.lifecycle import HubState, LifecycleError, RevisionState, sources
from portal.hubs.models import Hub, HubRevision
from portal.hubs.services import changes, decisions, policy
from portal.usage.forms import estimate_request, posted_initial


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
    server_views.tell_about_stops(request)
    return render(request, "hubs/hub_list.html", {"hubs": hubs})


@login_required
@require_http_methods(["GET", "POST"])
def hub_create(request: HttpRequest) -> HttpResponse:
    """The request form; "check" re-renders it with the GPU capacity and cost estimate."""
    if request.method == "POST" and "check" in request.POST:
        form = HubRequestForm(initial=posted_initial(request.POST), owner=request.user)
        estimate = estimate_request(request.POST)
        return render(request, "hubs/hub_form.html", {"form": form, "estimate": estimate})
    if request.method == "POST":
        try:
            hub = decisions.submit(request.user, request.POST)
        except decisions.InvalidSpec as invalid:
            form = invalid.form
        else:
            if hub.state == HubState.PENDING:
                messages.info(request, "Your request is waiting for a portal admin's approval.")
            else:
                messages.success(request, "Your request is inside the policy and was approved.")
            return redirect("hubs:detail", pk=hub.pk)
    else:
        form = HubRequestForm(owner=request.user)
    return render(request, "hubs/hub_form.html", {"form": form})


def _detail_context(request: HttpRequest, hub: Hub, **forms) -> dict:
    can_manage = hub.can_manage(request.user)
    hub_revisions = changes.hub_revisions(hub)
    open_change = next((r for r in hub_revisions if r.is_open), None)
    can_change = can_manage and hub.state in lifecycle.CHANGEABLE_STATES and open_change is None
    return {
        "hub": hub,
        "revisions": hub_revisions,
        "open_change": open_change,
        "can_change": can_change,
        "events": hub.events.select_related("actor"),
        "can_manage": can_manage,
        "can_cancel": can_manage and hub.state == HubState.PENDING,
        "can_delete": can_manage and hub.state in sources(HubState.DEPROVISIONING),
        "violations": (
            policy.policy_checks(hubspec.from_hub(hub, identities=False))
            if hub.state == HubState.PENDING
            else []
        ),
        "collaborators": hub.members.select_related("user"),
        "data_kept_until": hub.data_kept_until(),
        "server_policy": server_views.policy_context(request, hub),
        "class_sessions": _class_sessions(hub),
        "class_session_form": (
            forms.get("class_session_form") or ClassSessionForm(hub=hub)
            if can_manage and hub.state not in lifecycle.FINAL_STATES
            else None
        ),
        "warm_lead_minutes": settings.WARM_LEAD_MINUTES,
    }


def _class_sessions(hub: Hub) -> list[dict]:
    """The hub's class sessions with the room each gets (see portal/hubs/classes.py)."""
    found = []
    for session in hub.class_sessions.all():
        servers, gpu_servers = classes.room(session, hub)
        found.append({"session": session, "servers": servers, "gpu_servers": gpu_servers})
    return found


@login_required
@require_GET
def hub_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A hub's spec, state, URL once running, and timeline."""
    hub = _visible_hub(request, pk)
    server_views.tell_about_stops(request)
    return render(request, "hubs/hub_detail.html", _detail_context(request, hub))


@login_required
@require_POST
def class_session_add(request: HttpRequest, pk: int) -> HttpResponse:
    """Declare a class session (owner, co-owners, admins); bad input shows the hub's page with
    the form's messages (400) and saves nothing."""
    hub = _managed_hub(request, pk)
    form = ClassSessionForm(request.POST, hub=hub)
    if not form.is_valid():
        context = _detail_context(request, hub, class_session_form=form)
        return render(request, "hubs/hub_detail.html", context, status=400)
    form.instance.created_by = request.user
    session = form.save()
    messages.success(request, f"Class session “{session.title}” was added.")
    return redirect(f"{reverse('hubs:detail', args=[hub.pk])}#class-sessions")


@login_required
@require_POST
def class_session_remove(request: HttpRequest, pk: int, session_pk: int) -> HttpResponse:
    """Remove a class session of the hub (a session of another hub is 404)."""
    hub = _managed_hub(request, pk)
    session = get_object_or_404(hub.class_sessions, pk=session_pk)
    session.delete()
    messages.success(request, f"Class session “{session.title}” was removed.")
    return redirect(f"{reverse('hubs:detail', args=[hub.pk])}#class-sessions")


@login_required
@require_GET
def hub_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The status fragment that status.js polls."""
    hub = _visible_hub(request, pk)
    return render(request, "hubs/_status.html", {"hub": hub})


def _run(request: HttpRequest, action: Callable[[], object], done: str) -> None:
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
    _run(request, lambda: decisions.cancel(hub, request.user), "The request was cancelled.")
    return redirect("hubs:detail", pk=hub.pk)


@login_required
@require_http_methods(["GET", "POST"])
def hub_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask for confirmation, then delete the hub."""
    hub = _managed_hub(request, pk)
    if request.method == "POST":
        _run(request, lambda: decisions.delete(hub, request.user), "The hub is being deleted.")
        return redirect("hubs:detail", pk=hub.pk)
    return render(request, "hubs/hub_confirm_delete.html", {"hub": hub})


@staff_required
@require_GET
def approval_queue(request: HttpRequest) -> HttpResponse:
    """Pending requests, oldest first, with what exceeds the policy."""
    pending = (
        hubspec.hub_queryset(identities=False)
        .filter(state=HubState.PENDING)
        .order_by("created", "pk")
    )
    rows = []
    for hub in pending:
        checks = policy.policy_checks(hubspec.from_hub(hub, identities=False))
        rows.append({"hub": hub, "violations": checks, "fields": {c.field for c in checks}})
    changes = []
    for revision in (
        HubRevision.objects.filter(state=RevisionState.PENDING)
        .select_related("hub__owner", "author")
        .order_by("created", "pk")
    ):
        change = {"revision": revision, **_revision_diff_context(revision)}
        # The capacity check of the hub as the change would make it.
        change["capacity"] = bool(policy.CAPACITY_FIELDS & set(revision.changed_fields))
        changes.append(change)
    return render(request, "hubs/approval_queue.html", {"rows": rows, "changes": changes})


def _approve(
    request: HttpRequest, hub: Hub, approve: Callable[[bool, str], object], done: str
) -> HttpResponse:
    """Run an approval (of a request or a change) from its form: GPUs over capacity need
    "override" and a reason; back to the queue or the hub."""
    override = request.POST.get("override") in ("1", "on", "true")
    reason = request.POST.get("reason", "")[:2000]
    if override and not reason.strip():
        messages.error(request, "Give a reason for approving over capacity.")
    else:
        _run(request, lambda: approve(override, reason), done)
    if request.POST.get("next") == "queue":
        return redirect("hubs:queue")
    return redirect("hubs:detail", pk=hub.pk)


@staff_required
@require_POST
def hub_approve(request: HttpRequest, pk: int) -> HttpResponse:
    """Approve a pending (or failed) hub; GPUs over capacity need "override" and a reason."""
    hub = get_object_or_404(Hub, pk=pk)
    return _approve(
        request,
        hub,
        lambda override, reason: decisions.approve(hub, request.user, reason, override=override),
        f"{hub.display_name} was approved.",
    )


@staff_required
@require_http_methods(["GET", "POST"])
def hub_reject(request: HttpRequest, pk: int) -> HttpResponse:
    """Reject a pending request with a required reason."""
    hub = get_object_or_404(Hub.objects.select_related("owner"), pk=pk)
    form = RejectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        _run(
            request,
            lambda: decisions.reject(hub, request.user, form.cleaned_data["reason"]),
            f"{hub.display_name} was rejected.",
        )
        return redirect("hubs:queue")
    return render(request, "hubs/hub_reject.html", {"hub": hub, "form": form})


@staff_required
@require_POST
def hub_resume(request: HttpRequest, pk: int) -> HttpResponse:
    """Resume a suspended hub: scale it back up (admins)."""
    hub = get_object_or_404(Hub, pk=pk)
    _run(
        request,
        lambda: expiry.resume(hub, request.user, request.POST.get("reason", "")),
        f"{hub.display_name} is being resumed.",
    )
    return redirect("hubs:detail", pk=hub.pk)


@staff_required
@require_POST
def hub_delete_now(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete a suspended hub before its grace period ends (admins)."""
    hub = get_object_or_404(Hub, pk=pk)
    _run(
        request,
        lambda: expiry.delete_now(hub, request.user, request.POST.get("reason", "")),
        f"{hub.display_name} is being deleted.",
    )
    return redirect("hubs:detail", pk=hub.pk)


# --- Changes to a running hub -------------------------------------------------------------------


def _revision(hub: Hub, number: int) -> HubRevision:
    return get_object_or_404(
        HubRevision.objects.select_related("hub__owner", "author", "approver", "rollback_of"),
        hub=hub,
        number=number,
    )


def _revision_diff_context(revision: HubRevision) -> dict:
    """An open revision's diff against the hub as it is, with what exceeds the policy."""
    diff = changes.revision_diff(revision)
    exceeds = {v["field"] for v in revision.violations}
    return {"diff": diff, "exceeds": exceeds}


def _posted_fields(request: HttpRequest) -> list[tuple[str, str]]:
    """The posted spec as (name, value) pairs, to carry through the preview page."""
    return [
        (name, value)
        for name, values in request.POST.lists()
        if name in revisions.SPEC_KEYS
        for value in values
    ]


def _change_initial(hub: Hub, query: dict) -> dict:
    """The hub's spec as the form's initial values, overridden by query parameters
    (the expiry e-mails link to ?end_date=... to ask for an extension)."""
    initial = revisions.form_initial(revisions.spec_of_hub(hub))
    for key in revisions.SPEC_KEYS:
        if key not in query or key == "slug":
            continue
        if key in revisions.M2M_FIELDS:
            initial[key] = query.getlist(key)
        elif key in revisions.BOOLEAN_FIELDS:
            initial[key] = query[key].lower() in ("1", "true", "on", "yes")
        else:
            initial[key] = query[key]
    return initial


def _refuse_change(request: HttpRequest, hub: Hub, error: LifecycleError) -> HttpResponse:
    messages.error(request, str(error))
    return redirect("hubs:detail", pk=hub.pk)


def _render_change_form(request: HttpRequest, hub: Hub, form: HubChangeForm) -> HttpResponse:
    return render(request, "hubs/hub_change_form.html", {"hub": hub, "form": form})


@login_required
@require_http_methods(["GET", "POST"])
def hub_change(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the change form, prefilled with the hub's spec. POST: submit the previewed change
    (or, with "edit", return to the form with the posted values)."""
    hub = _managed_hub(request, pk)
    if hub.state not in lifecycle.CHANGEABLE_STATES:
        return _refuse_change(
            request, hub, changes.ChangeNotAllowed("Only a running hub can be changed.")
        )
    if request.method == "GET":
        form = HubChangeForm(initial=_change_initial(hub, request.GET), hub=hub)
        return _render_change_form(request, hub, form)
    if "edit" in request.POST:
        return _render_change_form(request, hub, HubChangeForm(data=request.POST, hub=hub))
    try:
        revision = changes.request_change(hub, request.user, request.POST)
    except decisions.InvalidSpec as invalid:
        return _render_change_form(request, hub, invalid.form)
    except LifecycleError as error:
        return _refuse_change(request, hub, error)
    if revision.state == RevisionState.PENDING:
        messages.info(request, f"Change #{revision.number} is waiting for a portal admin.")
    else:
        messages.success(request, f"Change #{revision.number} is inside the policy and applied.")
    return redirect("hubs:detail", pk=hub.pk)


@login_required
@require_POST
def hub_change_preview(request: HttpRequest, pk: int) -> HttpResponse:
    """Validate the change form and show its diffs, with a button that submits it ("check":
    show the form again with the GPU capacity and cost estimate)."""
    hub = _managed_hub(request, pk)
    if "check" in request.POST:
        form = HubChangeForm(initial=posted_initial(request.POST), hub=hub)
        estimate = estimate_request(request.POST, hub=hub)
        return render(
            request,
            "hubs/hub_change_form.html",
            {"hub": hub, "form": form, "estimate": estimate},
        )
    try:
        plan, diff = changes.preview_change(hub, request.POST)
    except decisions.InvalidSpec as invalid:
        return _render_change_form(request, hub, invalid.form)
    return render(
        request,
        "hubs/change_preview.html",
        {
            "hub": hub,
            "diff": diff,
            "violations": plan.violations,
            "exceeds": {v.field for v in plan.violations},
            "hidden": _posted_fields(request),
            "action": "hubs:change",
            "title": f"Review the change to {hub.display_name}",
        },
    )


@login_required
@require_GET
def revision_detail(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    """One revision: its state, who asked and decided, and (while open) its diff."""
    hub = _visible_hub(request, pk)
    changes.ensure_initial_revision(hub)
    revision = _revision(hub, number)
    context = {"hub": hub, "revision": revision, "spec_rows": _spec_rows(revision.spec)}
    if revision.state == RevisionState.PENDING:
        context.update(_revision_diff_context(revision))
    return render(request, "hubs/revision_detail.html", context)


def _spec_rows(spec: dict) -> list[tuple[str, str]]:
    return [
        (revisions._label(key), revisions._display(spec.get(key))) for key in revisions.SPEC_KEYS
    ]


@login_required
@require_http_methods(["GET", "POST"])
def revision_rollback(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    """GET: the diff of going back to an earlier applied revision. POST: request it."""
    hub = _managed_hub(request, pk)
    changes.ensure_initial_revision(hub)
    revision = _revision(hub, number)
    if request.method == "POST":
        try:
            new = changes.rollback(hub, request.user, revision.number)
        except decisions.InvalidSpec as invalid:
            messages.error(request, f"Revision #{number} cannot be restored: {invalid}")
        except LifecycleError as error:
            messages.error(request, str(error))
        else:
            messages.success(
                request,
                f"Rollback to #{number} is change #{new.number}: {new.get_state_display()}.",
            )
        return redirect("hubs:detail", pk=hub.pk)
    diff = revisions.diff(hub, revisions.spec_of_hub(hub), revision.spec)
    return render(
        request,
        "hubs/change_preview.html",
        {
            "hub": hub,
            "diff": diff,
            "violations": [],
            "exceeds": set(),
            "hidden": [],
            "action": "hubs:revision_rollback",
            "revision": revision,
            "title": f"Roll {hub.display_name} back to revision #{number}",
        },
    )


@staff_required
@require_POST
def revision_approve(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    """Approve and apply a pending change (admins); GPUs over capacity need "override" and a
    reason, as for a new hub."""
    hub = get_object_or_404(Hub, pk=pk)
    revision = _revision(hub, number)
    return _approve(
        request,
        hub,
        lambda override, reason: changes.approve_change(
            revision, request.user, reason, override=override
        ),
        f"Change #{number} to {hub.display_name} was approved and is being applied.",
    )


@staff_required
@require_http_methods(["GET", "POST"])
def revision_reject(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    """Reject a pending change with a required reason (admins)."""
    hub = get_object_or_404(Hub.objects.select_related("owner"), pk=pk)
    revision = _revision(hub, number)
    form = RejectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        _run(
            request,
            lambda: changes.reject_change(revision, request.user, form.cleaned_data["reason"]),
            f"Change #{number} to {hub.display_name} was rejected.",
        )
        return redirect("hubs:queue")
    return render(
        request, "hubs/revision_reject.html", {"hub": hub, "revision": revision, "form": form}
    )
