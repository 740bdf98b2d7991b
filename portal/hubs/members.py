"""Who may use a hub and with what: one function per action on members, tiers, e-mail
invitations and IdP group grants, for the web pages and the API alike.

Owner, co-owners (directly or through a group grant) and portal admins manage members and
tiers. Members see the member list (usernames, roles, tiers) and the tiers read-only, but not
the invitations (e-mail addresses) or group grants. Nobody can remove the owner, who is not a
member (a co-owner cannot take the hub away from its owner).

A change of membership or tiers is not a spec revision and needs no approval: it is written
at once and, for a hub that runs, the hub's members ConfigMap is applied after commit
(`portal.hubs.tasks.apply_members`); the hub reads it at the next login or spawn, without a
restart of the hub or of running user servers.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

import structlog
from django import forms
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from portal.hubs import queue
from portal.hubs.lifecycle import FINAL_STATES, MEMBERS_STATES
from portal.hubs.member_forms import (
    AddMemberForm,
    ChangeMemberForm,
    GroupGrantForm,
    InvitationForm,
    MemberTierForm,
)
from portal.hubs.models import (
    GroupGrant,
    Hub,
    Invitation,
    Member,
    MemberTier,
    idp_groups,
)
from portal.notifications.mail import base_context, render

if TYPE_CHECKING:
    from django import forms
    from django.contrib.auth.models import AbstractBaseUser as User

log = structlog.get_logger(__name__)

DEFAULT_TIER_NAME = "members"


def invitation_days() -> int:
    """How long an invitation link stays valid (setting HUB_INVITATION_DAYS, default 14)."""
    return settings.HUB_INVITATION_DAYS


class MembershipError(ValueError):
    """A member action that cannot be done; the message says why, for the user."""


class InvalidMemberData(MembershipError):
    """Form-shaped input failed validation; `errors` holds the messages per field."""

    def __init__(self, form: forms.Form):
        self.form = form
        super().__init__(form.errors.as_text())

    @property
    def errors(self) -> dict[str, list[str]]:
        """Field name ("__all__" for the whole input) to its messages."""
        return {field: list(messages) for field, messages in self.form.errors.items()}


class NotAllowed(PermissionDenied):
    """The actor may not manage this hub's members."""


class InvitationInvalid(MembershipError):
    """An invitation link that cannot be accepted: unknown, expired, revoked or used."""


class InvitationNotForYou(NotAllowed):
    """A valid invitation the user may not accept: it is for an e-mail address their identity
    provider has not verified for them (and not for anyone with the link)."""


# A member (Member) or a group grant: both give a role and a tier on one hub.
Access = TypeVar("Access", "Member", "GroupGrant")


def _locked(model, pk: int, gone: str):
    """The row, locked until the end of the transaction; MembershipError when it is gone."""
    row = model.objects.select_for_update().filter(pk=pk).first()
    if row is None:
        raise MembershipError(gone)
    return row


# --- Who is who -------------------------------------------------------------------------------


def can_manage_members(hub: Hub, user: User) -> bool:
    """Owner, co-owners and portal admins manage members, invitations, grants and tiers."""
    return hub.can_manage(user)


def _require_manager(hub: Hub, actor: User) -> None:
    if not can_manage_members(hub, actor):
        raise NotAllowed("Only the hub's owner and co-owners manage its members.")
    if hub.state in FINAL_STATES:
        raise MembershipError(
            f"The hub is {hub.get_state_display().lower()}; its members cannot change."
        )


def _clean(form: forms.Form) -> Mapping:
    if not form.is_valid():
        raise InvalidMemberData(form)
    return form.cleaned_data


@dataclass(frozen=True)
class Membership:
    """How a user may use a hub: role ("owner", "co-owner", "member") and tier (None for the
    owner and co-owners, who get everything)."""

    role: str
    tier: MemberTier | None
    via_group: str = ""


def membership(hub: Hub, user: User) -> Membership | None:
    """The user's role and tier on the hub; None when the user is not a member.

    A direct membership wins over group grants; among several granted groups a co-owner
    grant wins, then the group that comes first by name.
    """
    if not user.is_authenticated:
        return None
    if user.pk == hub.owner_id:
        return Membership("owner", None)
    collaborator = hub.members.select_related("tier").filter(user=user).first()
    if collaborator is not None:
        if collaborator.role == Member.Role.CO_OWNER:
            return Membership(collaborator.role, None)
        return Membership(collaborator.role, collaborator.tier or default_tier(hub))
    groups = idp_groups(user)
    grants = sorted(
        hub.group_grants.select_related("tier").filter(group__in=groups),
        key=lambda g: (g.role != Member.Role.CO_OWNER, g.group),
    )
    if not grants:
        return None
    grant = grants[0]
    if grant.role == Member.Role.CO_OWNER:
        return Membership(grant.role, None, grant.group)
    return Membership(grant.role, grant.tier or default_tier(hub), grant.group)


# --- Tiers ------------------------------------------------------------------------------------


def default_tier_fields(shared_volume_mode: str) -> dict:
    """The default tier a hub starts with: every server option, GPU and image the hub offers,
    and the shared volume as the request asked members to get it (read-only unless read-write
    was asked). Never the jobs role: a member runs their own pods through the Kubernetes API
    only in a tier the owner gives it to."""
    shared = (
        MemberTier.SharedAccess.READ_WRITE
        if shared_volume_mode == Hub.SharedVolumeMode.READ_WRITE
        else MemberTier.SharedAccess.READ_ONLY
    )
    return {
        "name": DEFAULT_TIER_NAME,
        "description": "Everything the hub offers",
        "gpu_access": True,
        "shared_access": shared,
        "jobs_access": False,
        "is_default": True,
    }


def default_tier(hub: Hub) -> MemberTier:
    """The hub's default tier, created with `default_tier_fields` if it has none yet."""
    tier = hub.tiers.filter(is_default=True).first()
    if tier is not None:
        return tier
    fields = default_tier_fields(hub.shared_volume_mode)
    if hub.tiers.filter(name=fields["name"]).exists():
        fields["name"] = f"{DEFAULT_TIER_NAME}-default"
    try:
        with transaction.atomic():
            return MemberTier.objects.create(hub=hub, **fields)
    except IntegrityError:  # created at the same moment by another request
        return hub.tiers.get(is_default=True)


def hub_tiers(hub: Hub) -> list[MemberTier]:
    """The hub's tiers, the default one first (created if missing)."""
    default_tier(hub)
    return list(hub.tiers.prefetch_related("hardware_options", "images"))


def create_tier(hub: Hub, actor: User, data: Mapping) -> MemberTier:
    """Define a new tier from form-shaped data (options and images by name)."""
    _require_manager(hub, actor)
    default_tier(hub)
    form = MemberTierForm(data=data, hub=hub)
    _clean(form)
    try:
        with transaction.atomic():
            tier = form.save()
            members_changed(hub)
    except IntegrityError:
        form.add_error("name", "This hub already has a tier of that name.")
        raise InvalidMemberData(form) from None
    log.info("member_tier_created", hub_id=hub.pk, tier=tier.name, actor=actor.pk)
    return tier


def update_tier(tier: MemberTier, actor: User, data: Mapping) -> MemberTier:
    """Edit a tier; its members get the new rights at their next spawn."""
    hub = tier.hub
    _require_manager(hub, actor)
    form = MemberTierForm(data=data, instance=tier, hub=hub)
    _clean(form)
    try:
        with transaction.atomic():
            tier = form.save()
            members_changed(hub)
    except IntegrityError:
        form.add_error("name", "This hub already has a tier of that name.")
        raise InvalidMemberData(form) from None
    log.info("member_tier_updated", hub_id=hub.pk, tier=tier.name, actor=actor.pk)
    return tier


def delete_tier(tier: MemberTier, actor: User) -> None:
    """Delete a tier; its members, invitations and groups fall back to the default tier."""
    hub = tier.hub
    _require_manager(hub, actor)
    if tier.is_default:
        raise MembershipError("The default tier cannot be deleted; edit it instead.")
    with transaction.atomic():
        tier.delete()
        members_changed(hub)
    log.info("member_tier_deleted", hub_id=hub.pk, tier=tier.name, actor=actor.pk)


# --- Members ----------------------------------------------------------------------------------


def add_member(hub: Hub, actor: User, data: Mapping) -> Member:
    """Add an existing portal user (by username) with a role and a tier."""
    _require_manager(hub, actor)
    cleaned = _clean(AddMemberForm(data=data, hub=hub))
    try:
        with transaction.atomic():
            collaborator = Member.objects.create(
                hub=hub, user=cleaned["username"], role=cleaned["role"], tier=cleaned["tier"]
            )
            members_changed(hub)
    except IntegrityError:
        raise MembershipError("This user is already a member of the hub.") from None
    log.info("member_added", hub_id=hub.pk, user=collaborator.user_id, actor=actor.pk)
    return collaborator


def _change_access(access: Access, actor: User, form: forms.Form, gone: str) -> Access:
    """Set a member's or a group grant's role and tier from `form` (managers only)."""
    _require_manager(access.hub, actor)
    cleaned = _clean(form)
    with transaction.atomic():
        # Saved (not updated in bulk) so that the audit log's receivers see the change.
        access = _locked(type(access), access.pk, gone)
        access.role, access.tier = cleaned["role"], cleaned["tier"]
        access.save(update_fields=["role", "tier"])
        members_changed(access.hub)
    return access


def _remove_access(access: Access, actor: User) -> None:
    """Delete a member or a group grant (managers only); the running hub hears of it."""
    _require_manager(access.hub, actor)
    with transaction.atomic():
        type(access).objects.filter(pk=access.pk).delete()
        members_changed(access.hub)


def change_member(collaborator: Member, actor: User, data: Mapping) -> Member:
    """Change a member's role and tier."""
    form = ChangeMemberForm(data=data, hub=collaborator.hub)
    collaborator = _change_access(collaborator, actor, form, "This member was removed.")
    log.info(
        "member_changed", hub_id=collaborator.hub_id, user=collaborator.user_id, actor=actor.pk
    )
    return collaborator


def remove_member(collaborator: Member, actor: User) -> None:
    """Remove a member (their home volume stays until the hub is deleted)."""
    _remove_access(collaborator, actor)
    hub_id, user = collaborator.hub_id, collaborator.user_id
    log.info("member_removed", hub_id=hub_id, user=user, actor=actor.pk)


# --- Invitations ------------------------------------------------------------------------------


def token_hash(token: str) -> str:
    """SHA-256 of an invitation token, hex: what the database keeps."""
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_link(hub: Hub, token: str) -> str:
    """The invitation link: the token is in the fragment, which browsers never send to a
    server, so it reaches no access log, Referer or ``?next=``; the page it opens posts it
    (templates/hubs/invitation_open.html)."""
    path = reverse("hubs:invitation_open", args=[hub.pk])
    return f"{settings.PORTAL_URL.rstrip('/')}{path}#{token}"


@dataclass(frozen=True)
class NewInvitation:
    """A created invitation with its token and link: shown once, never stored in clear."""

    invitation: Invitation
    token: str
    link: str
    mailed: bool = False


def invite(hub: Hub, actor: User, data: Mapping) -> NewInvitation:
    """Invite someone by e-mail: store the invitation (token hashed) and mail the link."""
    _require_manager(hub, actor)
    cleaned = _clean(InvitationForm(data=data, hub=hub))
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        invitation = Invitation.objects.create(
            hub=hub,
            email=cleaned["email"],
            role=cleaned["role"],
            tier=cleaned["tier"],
            anyone_with_link=bool(cleaned.get("anyone_with_link")),
            invited_by=actor,
            token_hash=token_hash(token),
            expires_at=timezone.now() + timedelta(days=invitation_days()),
        )
    link = invitation_link(hub, token)
    mailed = send_invitation(invitation, link)
    log.info("invitation_created", hub_id=hub.pk, invitation=invitation.pk, mailed=mailed)
    return NewInvitation(invitation, token, link, mailed)


def send_invitation(invitation: Invitation, link: str) -> bool:
    """Mail the invitation link to the invitee; never raises (the link is also shown once)."""
    context = {
        **base_context(invitation.hub),
        "invitation": invitation,
        "link": link,
        "inviter": invitation.invited_by,
    }
    try:
        subject, text, html = render("invitation", context)
        message = EmailMultiAlternatives(
            subject, text, settings.DEFAULT_FROM_EMAIL, [invitation.email]
        )
        message.attach_alternative(html, "text/html")
        message.send()
    except Exception:
        # Never log the link: it is the invitation's secret.
        log.exception("invitation_mail_failed", invitation=invitation.pk)
        return False
    return True


def revoke_invitation(invitation: Invitation, actor: User) -> Invitation:
    """Revoke a pending invitation; its link stops working."""
    _require_manager(invitation.hub, actor)
    with transaction.atomic():
        invitation = _locked(Invitation, invitation.pk, "This invitation is gone.")
        if invitation.accepted_at or invitation.revoked_at:
            raise MembershipError(
                f"This invitation is {invitation.status()}; it cannot be revoked."
            )
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
    log.info("invitation_revoked", hub_id=invitation.hub_id, invitation=invitation.pk)
    return invitation


def find_invitation(hub_id: int, token: str) -> Invitation:
    """The invitation a link names, whatever its state; InvitationInvalid when the token is
    unknown or belongs to another hub."""
    invitation = (
        Invitation.objects.select_related("hub", "hub__owner", "tier")
        .filter(token_hash=token_hash(token or ""))
        .first()
    )
    if invitation is None or invitation.hub_id != hub_id:
        raise InvitationInvalid("This invitation link is not valid. Ask for a new one.")
    return invitation


# Why an invitation that is no longer pending cannot be accepted, by its status.
UNUSABLE_INVITATION = {
    "accepted": "This invitation was already accepted.",
    "revoked": "This invitation was revoked by the hub's owner.",
    "expired": "This invitation has expired. Ask the hub's owner for a new one.",
}


def acceptance_refusal(invitation: Invitation, user: User) -> str:
    """Why `user` may not accept this (valid) invitation, or "" when they may.

    Unless the inviter chose "anyone with the link", the invited address must be the one the
    user's identity provider verified (email_verified) and confirmed within
    OIDC_RIGHTS_MAX_AGE_SECONDS; an address a user typed into their profile never counts."""
    if invitation.anyone_with_link:
        return ""
    from portal.accounts import rights

    profile = getattr(user, "identity", None)
    verified = getattr(profile, "verified_email", "") or ""
    if not verified:
        return (
            f"This invitation is for {invitation.email}, and your identity provider has not "
            "verified an e-mail address for this account. Sign in with the institutional "
            "account of that address, or ask the hub's owner for a link anyone may use."
        )
    if verified.lower() != invitation.email.strip().lower():
        return (
            f"This invitation is for {invitation.email}, not for the address your identity "
            f"provider verified for this account ({verified}). Sign in with the account of "
            "the invited address, or ask the hub's owner to invite this one."
        )
    if not rights.is_fresh(profile):
        return (
            "Your identity provider has not confirmed your e-mail address lately. Sign out, "
            "sign in again and open the invitation once more."
        )
    return ""


def accept_invitation(hub_id: int, token: str, user: User) -> Member:
    """Accept an invitation by its token as the signed-in user (see `accept_found`)."""
    return accept_found(find_invitation(hub_id, token), user)


def accept_found(invitation: Invitation, user: User) -> Member:
    """Accept an invitation found by its token as the signed-in user: they become a
    collaborator with its role and tier. Raises InvitationInvalid for expired, revoked or used
    invitations, InvitationNotForYou when it is for an address the user's provider has not
    verified for them; a refusal changes nothing, so the invitee can still accept."""
    hub = invitation.hub
    messages = UNUSABLE_INVITATION
    status = invitation.status()
    if status in messages:
        raise InvitationInvalid(messages[status])
    if hub.state in FINAL_STATES:
        raise InvitationInvalid(f"The hub is {hub.get_state_display().lower()}.")
    if user.pk == hub.owner_id:
        raise InvitationInvalid("You own this hub already.")
    refusal = acceptance_refusal(invitation, user)
    if refusal:
        log.warning("invitation_refused", hub_id=hub.pk, invitation=invitation.pk, user=user.pk)
        raise InvitationNotForYou(refusal)
    with transaction.atomic():
        # The row lock makes a second, simultaneous acceptance wait and then find it used.
        invitation = _locked(Invitation, invitation.pk, "This invitation is gone.")
        status = invitation.status()
        if status != "pending":
            raise InvitationInvalid(messages.get(status, "This invitation is not valid."))
        invitation.accepted_by, invitation.accepted_at = user, timezone.now()
        invitation.save(update_fields=["accepted_by", "accepted_at"])
        collaborator, created = Member.objects.get_or_create(
            hub=hub, user=user, defaults={"role": invitation.role, "tier": invitation.tier}
        )
        if not created and invitation.role == Member.Role.CO_OWNER:
            # An invitation never lowers a role the user already has.
            collaborator.role = invitation.role
            collaborator.save(update_fields=["role"])
        members_changed(hub)
    log.info("invitation_accepted", hub_id=hub.pk, invitation=invitation.pk, user=user.pk)
    collaborator.refresh_from_db()
    return collaborator


# --- IdP group grants -------------------------------------------------------------------------


def grant_group(hub: Hub, actor: User, data: Mapping) -> GroupGrant:
    """Give every member of an IdP group access with a role and a tier."""
    _require_manager(hub, actor)
    form = GroupGrantForm(data=data, hub=hub)
    cleaned = _clean(form)
    try:
        with transaction.atomic():
            grant = GroupGrant.objects.create(
                hub=hub,
                group=cleaned["group"],
                role=cleaned["role"],
                tier=cleaned["tier"],
                created_by=actor,
            )
            members_changed(hub)
    except IntegrityError:
        form.add_error("group", "This group already has access to the hub.")
        raise InvalidMemberData(form) from None
    log.info("group_granted", hub_id=hub.pk, grant=grant.pk, actor=actor.pk)
    return grant


def change_group_grant(grant: GroupGrant, actor: User, data: Mapping) -> GroupGrant:
    """Change a group grant's role and tier."""
    form = GroupGrantForm(data=data, hub=grant.hub, grant=grant)
    grant = _change_access(grant, actor, form, "This group grant was removed.")
    log.info("group_grant_changed", hub_id=grant.hub_id, grant=grant.pk, actor=actor.pk)
    return grant


def revoke_group_grant(grant: GroupGrant, actor: User) -> None:
    """Take a group's access away."""
    _remove_access(grant, actor)
    log.info("group_grant_revoked", hub_id=grant.hub_id, grant=grant.pk, actor=actor.pk)


# --- Reaching the running hub -----------------------------------------------------------------


def members_changed(hub: Hub) -> None:
    """Queue the members ConfigMap of a hub that runs, after commit (only the id)."""
    state = Hub.objects.filter(pk=hub.pk).values_list("state", flat=True).first()
    if state in MEMBERS_STATES:
        # A lost hand-over is repaired by the reconcile pass, which applies the ConfigMap.
        queue.after_commit(queue.APPLY_MEMBERS, hub.pk)
