"""Web pages of member management and invitation links; thin: authorise, call a service of
portal.hubs.members, render or redirect with a message."""

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.hubs import members
from portal.hubs.member_forms import (
    AddMemberForm,
    ChangeMemberForm,
    GroupGrantForm,
    InvitationForm,
    MemberTierForm,
)
from portal.hubs.models import Hub, Invitation


def _managed_hub(request: HttpRequest, pk: int) -> Hub:
    """The hub if the user manages its members: 404 if they may not see it, 403 otherwise."""
    hub = get_object_or_404(Hub.objects.visible_to(request.user).select_related("owner"), pk=pk)
    if not members.can_manage_members(hub, request.user):
        raise members.NotAllowed("Only the hub's owner, co-owners and admins manage members.")
    return hub


def _page(request: HttpRequest, hub: Hub, status: int = 200, **forms) -> HttpResponse:
    context = {
        "hub": hub,
        "collaborators": hub.members.select_related("user", "tier").order_by("user__username"),
        "invitations": hub.invitations.select_related("tier", "invited_by", "accepted_by"),
        "group_grants": hub.group_grants.select_related("tier"),
        "tiers": members.hub_tiers(hub),
        "add_form": forms.get("add_form") or AddMemberForm(hub=hub),
        "invite_form": forms.get("invite_form") or InvitationForm(hub=hub),
        "group_form": forms.get("group_form") or GroupGrantForm(hub=hub),
        "change_form": ChangeMemberForm(hub=hub),
    }
    return render(request, "hubs/members_manage.html", context, status=status)


def _done(request: HttpRequest, hub: Hub, action: Callable[[], object], message: str):
    """Run a service; a refusal becomes an error message. Back to the members page."""
    try:
        action()
    except members.InvalidMemberData as invalid:
        for field_messages in invalid.errors.values():
            for text in field_messages:
                messages.error(request, text)
    except members.MembershipError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, message)
    return redirect("hubs:members", pk=hub.pk)


def _added(request: HttpRequest, hub: Hub, action: Callable[[], Any], form_name: str, success):
    """Run an "add" service; invalid data shows the members page with the bound form (400), a
    refusal becomes an error message, success(result) the success message."""
    try:
        result = action()
    except members.InvalidMemberData as invalid:
        return _page(request, hub, status=400, **{form_name: invalid.form})
    except members.MembershipError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, success(result))
    return redirect("hubs:members", pk=hub.pk)


@login_required
@require_GET
def members_page(request: HttpRequest, pk: int) -> HttpResponse:
    """Members, invitations, IdP groups and tiers of a hub, with the forms to change them."""
    return _page(request, _managed_hub(request, pk))


@login_required
@require_POST
def member_add(request: HttpRequest, pk: int) -> HttpResponse:
    """Add an existing portal user by username."""
    hub = _managed_hub(request, pk)
    return _added(
        request,
        hub,
        lambda: members.add_member(hub, request.user, request.POST),
        "add_form",
        lambda collaborator: f"{collaborator.user.username} was added.",
    )


@login_required
@require_POST
def member_change(request: HttpRequest, pk: int, member_pk: int) -> HttpResponse:
    """Change a member's role and tier."""
    hub = _managed_hub(request, pk)
    collaborator = get_object_or_404(hub.members, pk=member_pk)
    action = lambda: members.change_member(collaborator, request.user, request.POST)  # noqa: E731
    return _done(request, hub, action, f"{collaborator.user.username} was changed.")


@login_required
@require_POST
def member_remove(request: HttpRequest, pk: int, member_pk: int) -> HttpResponse:
    """Remove a member."""
    hub = _managed_hub(request, pk)
    collaborator = get_object_or_404(hub.members, pk=member_pk)
    action = lambda: members.remove_member(collaborator, request.user)  # noqa: E731
    return _done(request, hub, action, f"{collaborator.user.username} was removed.")


@login_required
@require_POST
def invitation_create(request: HttpRequest, pk: int) -> HttpResponse:
    """Invite by e-mail; the link is shown on this page once (and mailed)."""
    hub = _managed_hub(request, pk)
    try:
        new = members.invite(hub, request.user, request.POST)
    except members.InvalidMemberData as invalid:
        return _page(request, hub, status=400, invite_form=invalid.form)
    except members.MembershipError as error:
        messages.error(request, str(error))
        return redirect("hubs:members", pk=hub.pk)
    response = render(request, "hubs/invitation_created.html", {"hub": hub, "new": new})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def invitation_revoke(request: HttpRequest, pk: int, invitation_pk: int) -> HttpResponse:
    """Revoke a pending invitation."""
    hub = _managed_hub(request, pk)
    invitation = get_object_or_404(hub.invitations, pk=invitation_pk)
    action = lambda: members.revoke_invitation(invitation, request.user)  # noqa: E731
    return _done(request, hub, action, f"The invitation of {invitation.email} was revoked.")


@login_required
@require_POST
def group_grant_add(request: HttpRequest, pk: int) -> HttpResponse:
    """Give an IdP group access."""
    hub = _managed_hub(request, pk)
    return _added(
        request,
        hub,
        lambda: members.grant_group(hub, request.user, request.POST),
        "group_form",
        lambda grant: f"Members of {grant.group} may now use the hub.",
    )


@login_required
@require_POST
def group_grant_change(request: HttpRequest, pk: int, grant_pk: int) -> HttpResponse:
    """Change a group's role and tier."""
    hub = _managed_hub(request, pk)
    grant = get_object_or_404(hub.group_grants, pk=grant_pk)
    action = lambda: members.change_group_grant(grant, request.user, request.POST)  # noqa: E731
    return _done(request, hub, action, f"The group {grant.group} was changed.")


@login_required
@require_POST
def group_grant_remove(request: HttpRequest, pk: int, grant_pk: int) -> HttpResponse:
    """Take a group's access away."""
    hub = _managed_hub(request, pk)
    grant = get_object_or_404(hub.group_grants, pk=grant_pk)
    action = lambda: members.revoke_group_grant(grant, request.user)  # noqa: E731
    return _done(request, hub, action, f"The group {grant.group} no longer has access.")


@login_required
@require_http_methods(["GET", "POST"])
def tier_edit(request: HttpRequest, pk: int, tier_pk: int | None = None) -> HttpResponse:
    """Define a new tier, or edit one."""
    hub = _managed_hub(request, pk)
    tier = get_object_or_404(hub.tiers, pk=tier_pk) if tier_pk else None
    if request.method == "POST":
        try:
            if tier is None:
                saved = members.create_tier(hub, request.user, request.POST)
            else:
                saved = members.update_tier(tier, request.user, request.POST)
        except members.InvalidMemberData as invalid:
            form = invalid.form
        except members.MembershipError as error:
            messages.error(request, str(error))
            return redirect("hubs:members", pk=hub.pk)
        else:
            messages.success(request, f"The tier {saved.name} was saved.")
            return redirect("hubs:members", pk=hub.pk)
        status = 400
    else:
        form, status = MemberTierForm(instance=tier, hub=hub), 200
    context = {"hub": hub, "tier": tier, "form": form}
    return render(request, "hubs/members_tier_form.html", context, status=status)


@login_required
@require_POST
def tier_delete(request: HttpRequest, pk: int, tier_pk: int) -> HttpResponse:
    """Delete a tier; its members fall back to the default tier."""
    hub = _managed_hub(request, pk)
    tier = get_object_or_404(hub.tiers, pk=tier_pk)
    action = lambda: members.delete_tier(tier, request.user)  # noqa: E731
    return _done(request, hub, action, f"The tier {tier.name} was deleted.")


# The invitation a visitor opened with its link, kept in their session (never in a URL) while
# they sign in: {"hub": hub id, "invitation": invitation id}. Holding it proves they posted
# the token; the token itself is not stored.
OPENED_INVITATION = "opened_invitation"


def _no_store(response: HttpResponse) -> HttpResponse:
    """Invitation pages are never cached, and send a Referer only to the portal itself (an
    old link's page has the token in its path). Not "no-referrer": browsers then send
    ``Origin: null`` with the page's form, which the CSRF check rightly refuses."""
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "same-origin"
    return response


def _cannot_accept(request: HttpRequest, message: str, status: int = 400) -> HttpResponse:
    return _no_store(
        render(request, "hubs/invitation_invalid.html", {"message": message}, status=status)
    )


@require_http_methods(["GET", "POST"])
def invitation_open(request: HttpRequest, pk: int) -> HttpResponse:
    """The page an invitation link opens; the token is in the link's fragment, which the page
    posts here. A valid token is remembered in the session, so an anonymous visitor signs in
    (with a ``?next=`` that carries no token) and comes back to accept it."""
    if request.method == "GET":
        return _no_store(render(request, "hubs/invitation_open.html", {"hub_pk": pk}))
    try:
        invitation = members.find_invitation(pk, str(request.POST.get("token", "")))
    except members.InvitationInvalid as invalid:
        return _cannot_accept(request, str(invalid))
    request.session[OPENED_INVITATION] = {"hub": pk, "invitation": invitation.pk}
    accept = reverse("hubs:invitation_accept", args=[pk])
    if not request.user.is_authenticated:
        return redirect_to_login(accept)
    return redirect(accept)


@require_GET
def invitation_legacy(request: HttpRequest, pk: int, token: str) -> HttpResponse:
    """A link of the old kind, with the token in its path: it accepts nothing by itself; its
    page posts the token like a new link's page does."""
    context = {"hub_pk": pk, "token": token, "legacy": True}
    return _no_store(render(request, "hubs/invitation_open.html", context))


def _invitation(request: HttpRequest, pk: int):
    """The invitation whose token is posted, else the one opened in this session."""
    token = request.POST.get("token") if request.method == "POST" else None
    if token:
        return members.find_invitation(pk, str(token))
    opened = request.session.get(OPENED_INVITATION) or {}
    found = None
    if opened.get("hub") == pk:
        found = (
            Invitation.objects.select_related("hub", "hub__owner", "tier", "invited_by")
            .filter(pk=opened.get("invitation"), hub_id=pk)
            .first()
        )
    if found is None:
        raise members.InvitationInvalid(
            "No invitation to this hub is open. Open the link from your invitation e-mail again."
        )
    return found


@login_required
@require_http_methods(["GET", "POST"])
def invitation_accept(request: HttpRequest, pk: int) -> HttpResponse:
    """The opened invitation: shows the hub and whether the signed-in user may accept it, and
    on POST makes them a member (a refusal changes nothing)."""
    try:
        invitation = _invitation(request, pk)
        if request.method == "POST":
            members.accept_found(invitation, request.user)
            request.session.pop(OPENED_INVITATION, None)
            messages.success(request, f"You are now a {invitation.role} of this hub.")
            return redirect("hubs:detail", pk=pk)
    except members.InvitationInvalid as invalid:
        return _cannot_accept(request, str(invalid))
    except members.InvitationNotForYou as refused:
        return _cannot_accept(request, str(refused), status=403)
    status = invitation.status()
    if status != "pending":
        return _cannot_accept(request, members.UNUSABLE_INVITATION[status])
    refusal = members.acceptance_refusal(invitation, request.user)
    context = {"invitation": invitation, "refusal": refusal}
    return _no_store(render(request, "hubs/invitation_accept.html", context))
