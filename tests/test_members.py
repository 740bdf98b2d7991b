"""Member management services: members, tiers, e-mail invitations, IdP group grants, who may
do what, and how it all reaches the hub's members file."""

from __future__ import annotations

import datetime
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.utils import timezone

from portal.hubs import members
from portal.hubs.hubspec import from_hub, hub_queryset
from portal.hubs.lifecycle import HubState
from portal.hubs.models import GroupGrant, Hub, Invitation, Member
from provisioning.hubconfig import members_values
from tests.factories import (
    GpuTypeFactory,
    HardwareOptionFactory,
    HubFactory,
    IdentityProfileFactory,
    ImageFactory,
    UserFactory,
    verified_user,
)
from tests.support import needs_postgresql, race, won_or_lost

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(alice):
    """A running GPU course of alice's: small and large sizes, two images, a shared volume
    and jobs access."""
    small, large = HardwareOptionFactory(name="small"), HardwareOptionFactory(name="large")
    scipy, rstudio = ImageFactory(name="scipy"), ImageFactory(name="rstudio")
    hub = HubFactory(
        owner=alice,
        slug="gpu-course",
        state=HubState.RUNNING,
        hardware_options=[small, large],
        images=[scipy, rstudio],
        gpu_type=GpuTypeFactory(name="h100", node_label_value="NVIDIA-H100-80GB-HBM3"),
        gpus_per_user=1,
        shared_volume_gib=10,
        shared_volume_mode=Hub.SharedVolumeMode.READ_ONLY,
        jobs_access=True,
    )
    return hub


@pytest.fixture
def students(running, alice):
    return members.create_tier(
        running,
        alice,
        {"name": "students", "hardware_options": ["small"], "shared_access": "ro"},
    )


@pytest.fixture
def staff(running, alice):
    return members.create_tier(
        running,
        alice,
        {"name": "staff", "gpu_access": "on", "shared_access": "rw", "jobs_access": "on"},
    )


def rendered(hub: Hub) -> dict:
    """The hub's members file as provisioning renders it from the database."""
    return members_values(from_hub(hub_queryset().get(pk=hub.pk), "hubs.example.org"))


def co_owner_of(hub: Hub, username: str = "dora"):
    user = UserFactory(username=username)
    Member.objects.create(hub=hub, user=user, role=Member.Role.CO_OWNER)
    return user


# --- Tiers ------------------------------------------------------------------------------------


def test_a_submitted_hub_gets_a_default_tier_with_everything(alice, spec):
    from portal.hubs.services import decisions

    hub = decisions.submit(alice, spec(shared_volume_gib="10", shared_volume_mode="rw"))

    (tier,) = hub.tiers.all()
    assert tier.is_default and tier.name == "members"
    assert tier.gpu_access is True
    assert not tier.hardware_options.exists() and not tier.images.exists()  # = all
    assert tier.shared_access == "rw"  # as the request asked members to get it


def test_default_tier_reads_the_shared_volume_unless_read_write_was_asked(running):
    tier = members.default_tier(running)
    assert tier.shared_access == "ro"
    assert tier.jobs_access is False  # jobs only in a tier the owner gives them to
    assert members.default_tier(running) == tier


def test_tiers_offer_only_what_the_hub_has(running, alice):
    HardwareOptionFactory(name="huge")
    with pytest.raises(members.InvalidMemberData) as invalid:
        members.create_tier(running, alice, {"name": "x", "hardware_options": ["huge"]})
    assert "hardware_options" in invalid.value.errors
    assert not running.tiers.filter(name="x").exists()


def test_tier_names_are_unique_per_hub(running, alice, students):
    with pytest.raises(members.InvalidMemberData) as invalid:
        members.create_tier(running, alice, {"name": "students", "shared_access": "ro"})
    assert invalid.value.errors["name"] == ["This hub already has a tier of that name."]


def test_the_default_tier_cannot_be_deleted(running, alice):
    with pytest.raises(members.MembershipError, match="default tier cannot be deleted"):
        members.delete_tier(members.default_tier(running), alice)


def test_deleting_a_tier_moves_its_members_to_the_default(running, alice, students, applied):
    bob = UserFactory(username="bob")
    member = members.add_member(
        running, alice, {"username": "bob", "role": "member", "tier": "students"}
    )
    members.delete_tier(students, alice)

    member.refresh_from_db()
    assert member.tier is None
    assert members.membership(running, bob).tier == members.default_tier(running)


# --- Members ----------------------------------------------------------------------------------


def test_add_change_and_remove_a_member(
    running, alice, students, staff, applied, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        bob = UserFactory(username="bob")
        member = members.add_member(
            running, alice, {"username": "bob", "role": "member", "tier": "students"}
        )
    assert applied == [running.pk]
    assert rendered(running)["user_tiers"] == {"bob": "students"}
    assert "bob" in rendered(running)["allowed_users"]

    with django_capture_on_commit_callbacks(execute=True):
        members.change_member(member, alice, {"role": "member", "tier": "staff"})
    assert rendered(running)["user_tiers"] == {"bob": "staff"}

    with django_capture_on_commit_callbacks(execute=True):
        members.change_member(member, alice, {"role": "co-owner", "tier": ""})
    assert "bob" in rendered(running)["admin_users"]
    assert running.can_manage(bob)

    with django_capture_on_commit_callbacks(execute=True):
        members.remove_member(member, alice)
    assert "bob" not in rendered(running)["allowed_users"]
    assert not Hub.objects.visible_to(bob).exists()
    assert applied == [running.pk] * 4


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"username": "nobody", "role": "member"}, "username", "No portal user"),
        ({"username": "alice", "role": "member"}, "username", "owns the hub"),
        ({"username": "bob", "role": "boss"}, "role", "valid choice"),
        ({"username": "bob", "role": "member", "tier": "nope"}, "tier", "valid choice"),
    ],
)
def test_bad_member_input_changes_nothing(running, alice, data, field, message):
    UserFactory(username="bob")
    with pytest.raises(members.InvalidMemberData) as invalid:
        members.add_member(running, alice, data)
    assert message in " ".join(invalid.value.errors[field])
    assert not running.members.exists()


def test_a_member_cannot_be_added_twice(running, alice):
    UserFactory(username="bob")
    members.add_member(running, alice, {"username": "bob", "role": "member"})
    with pytest.raises(members.InvalidMemberData, match="already a member"):
        members.add_member(running, alice, {"username": "bob", "role": "co-owner"})


def test_no_queueing_for_a_hub_that_does_not_run(
    hub, alice, applied, django_capture_on_commit_callbacks
):
    UserFactory(username="bob")
    with django_capture_on_commit_callbacks(execute=True):
        members.add_member(hub, alice, {"username": "bob", "role": "member"})
    assert applied == []  # pending: provisioning renders the members with everything else


def test_members_of_a_deleted_hub_cannot_change(alice):
    hub = HubFactory(owner=alice, state=HubState.DELETED)
    UserFactory(username="bob")
    with pytest.raises(members.MembershipError, match="deleted"):
        members.add_member(hub, alice, {"username": "bob", "role": "member"})


# --- Who may manage ---------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["owner", "co-owner", "admin"])
def test_owner_co_owners_and_admins_manage_members(running, alice, charlie, who):
    actor = {"owner": alice, "admin": charlie}.get(who) or co_owner_of(running)
    UserFactory(username="erin")
    member = members.add_member(running, actor, {"username": "erin", "role": "member"})
    members.remove_member(member, actor)
    assert not running.members.filter(user__username="erin").exists()


@pytest.mark.parametrize("who", ["member", "other"])
def test_members_and_others_manage_nothing(running, alice, who):
    actor = UserFactory(username="mallory")
    if who == "member":
        Member.objects.create(hub=running, user=actor)
    UserFactory(username="erin")
    with pytest.raises(members.NotAllowed):
        members.add_member(running, actor, {"username": "erin", "role": "co-owner"})
    with pytest.raises(members.NotAllowed):
        members.create_tier(running, actor, {"name": "mine", "shared_access": "rw"})
    with pytest.raises(members.NotAllowed):
        members.invite(running, actor, {"email": "x@example.org", "role": "member"})
    with pytest.raises(members.NotAllowed):
        members.grant_group(running, actor, {"group": "all", "role": "co-owner"})
    assert not running.members.filter(user__username="erin").exists()
    assert not Invitation.objects.exists() and not GroupGrant.objects.exists()


def test_a_co_owner_cannot_remove_the_owner(running):
    dora = co_owner_of(running)
    # The owner is no collaborator: no member action can reach them.
    with pytest.raises(members.InvalidMemberData, match="owns the hub"):
        members.add_member(running, dora, {"username": "alice", "role": "member"})
    assert not running.members.filter(user=running.owner).exists()
    assert running.can_manage(running.owner)


# --- Invitations ------------------------------------------------------------------------------


def test_invite_by_e_mail_and_accept(
    running, alice, students, applied, django_capture_on_commit_callbacks
):
    new = members.invite(
        running, alice, {"email": "erin@uni.example", "role": "member", "tier": "students"}
    )

    invitation = new.invitation
    assert new.mailed
    (message,) = mail.outbox
    assert message.to == ["erin@uni.example"]
    assert new.link in message.body
    # The token is in the fragment, which no browser sends to a server.
    assert new.link.endswith(f"/hubs/{running.pk}/join/#{new.token}")
    assert new.token not in urlsplit(new.link).path
    assert "identity provider verified it, is erin@uni.example" in message.body
    # Only the hash is stored.
    assert invitation.token_hash == members.token_hash(new.token)
    assert new.token not in str(Invitation.objects.filter(pk=invitation.pk).values().get())

    erin = verified_user("erin", "erin@uni.example")
    with django_capture_on_commit_callbacks(execute=True):
        collaborator = members.accept_invitation(running.pk, new.token, erin)
    assert (collaborator.user, collaborator.role, collaborator.tier) == (erin, "member", students)
    invitation.refresh_from_db()
    assert invitation.accepted_by == erin and invitation.status() == "accepted"
    assert rendered(running)["user_tiers"]["erin"] == "students"
    assert applied == [running.pk]


def test_an_invitation_works_once(running, alice):
    new = members.invite(running, alice, {"email": "erin@uni.example", "role": "member"})
    members.accept_invitation(running.pk, new.token, verified_user("erin"))

    with pytest.raises(members.InvitationInvalid, match="already accepted"):
        members.accept_invitation(running.pk, new.token, UserFactory(username="mallory"))
    assert not running.members.filter(user__username="mallory").exists()


def test_an_expired_invitation_is_refused(running, alice):
    new = members.invite(running, alice, {"email": "erin@uni.example", "role": "member"})
    Invitation.objects.filter(pk=new.invitation.pk).update(
        expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )

    with pytest.raises(members.InvitationInvalid, match="expired"):
        members.accept_invitation(running.pk, new.token, UserFactory(username="erin"))
    assert not running.members.exists()


@pytest.mark.parametrize("days", [None, 3], ids=["default-14", "configured-3"])
def test_an_invitation_is_valid_for_the_configured_days(
    running, alice, settings, monkeypatch, days
):
    """Valid until HUB_INVITATION_DAYS (14 unless configured) after it was sent, not longer:
    the clock is moved to a minute before and a minute after."""
    if days is not None:
        settings.HUB_INVITATION_DAYS = days
    valid = datetime.timedelta(days=days or 14)
    sent = timezone.now()
    # Links anyone may use: the time is under test here, not whose address accepts.
    link = {"role": "member", "anyone_with_link": True}
    early = members.invite(running, alice, {"email": "erin@uni.example", **link})
    late = members.invite(running, alice, {"email": "frank@uni.example", **link})
    assert abs(early.invitation.expires_at - (sent + valid)) < datetime.timedelta(seconds=30)

    real_now = timezone.now
    minute = datetime.timedelta(minutes=1)
    monkeypatch.setattr(timezone, "now", lambda: real_now() + valid - minute)
    members.accept_invitation(running.pk, early.token, UserFactory(username="erin"))
    monkeypatch.setattr(timezone, "now", lambda: real_now() + valid + minute)
    with pytest.raises(members.InvitationInvalid, match="expired"):
        members.accept_invitation(running.pk, late.token, UserFactory(username="frank"))
    assert list(running.members.values_list("user__username", flat=True)) == ["erin"]


def test_a_revoked_invitation_is_refused(running, alice):
    new = members.invite(running, alice, {"email": "erin@uni.example", "role": "member"})
    members.revoke_invitation(new.invitation, alice)

    with pytest.raises(members.InvitationInvalid, match="revoked"):
        members.accept_invitation(running.pk, new.token, UserFactory(username="erin"))
    with pytest.raises(members.MembershipError, match="revoked"):
        members.revoke_invitation(new.invitation, alice)
    assert not running.members.exists()


def test_a_token_of_another_hub_or_a_made_up_one_is_refused(running, alice):
    other = HubFactory(owner=alice, state=HubState.RUNNING)
    new = members.invite(running, alice, {"email": "erin@uni.example", "role": "member"})
    erin = UserFactory(username="erin")

    for hub_id, token in [(other.pk, new.token), (running.pk, "made-up"), (running.pk, "")]:
        with pytest.raises(members.InvitationInvalid, match="not valid"):
            members.accept_invitation(hub_id, token, erin)
    assert not Member.objects.exists()


def test_the_owner_cannot_accept_an_invitation_to_their_hub(running, alice):
    new = members.invite(running, alice, {"email": "alice@example.org", "role": "member"})
    with pytest.raises(members.InvitationInvalid, match="own this hub"):
        members.accept_invitation(running.pk, new.token, alice)


def test_an_invitation_never_lowers_a_role(running, alice):
    dora = co_owner_of(running)
    IdentityProfileFactory(user=dora, verified_email="dora@example.org")
    new = members.invite(running, alice, {"email": "dora@example.org", "role": "member"})
    members.accept_invitation(running.pk, new.token, dora)
    assert running.members.get(user=dora).role == "co-owner"


def test_a_leaked_link_is_refused_to_another_signed_in_user(running, alice):
    """Mallory holds erin's link (forwarded, read over a shoulder, from a log): her identity
    provider verified another address, so she is refused and the link still works for erin."""
    new = members.invite(running, alice, {"email": "erin@uni.example", "role": "member"})
    mallory = verified_user("mallory", "mallory@uni.example")

    with pytest.raises(members.InvitationNotForYou, match=r"for erin@uni\.example"):
        members.accept_invitation(running.pk, new.token, mallory)

    assert not running.members.exists()
    new.invitation.refresh_from_db()
    assert new.invitation.status() == "pending" and new.invitation.accepted_by is None
    erin = verified_user("erin", "Erin@Uni.Example")  # addresses compare without case
    assert members.accept_invitation(running.pk, new.token, erin).user == erin


@pytest.mark.parametrize("how", ["no identity profile", "verified none", "typed into account"])
def test_an_address_the_provider_did_not_verify_is_refused(running, alice, how):
    """The account's own e-mail field (a local account's, or what the provider sent without
    email_verified) never counts: only the address the provider verified."""
    new = members.invite(running, alice, {"email": "erin@uni.example", "role": "member"})
    erin = UserFactory(username="erin", email="erin@uni.example")
    if how == "verified none":
        IdentityProfileFactory(user=erin, verified_email="")
    elif how == "typed into account":
        IdentityProfileFactory(user=erin, verified_email="erin@elsewhere.example")

    with pytest.raises(members.InvitationNotForYou, match=r"erin@uni\.example"):
        members.accept_invitation(running.pk, new.token, erin)
    assert not running.members.exists()


def test_a_verification_the_provider_has_not_confirmed_lately_is_refused(running, alice, settings):
    new = members.invite(running, alice, {"email": "erin@uni.example", "role": "member"})
    erin = verified_user("erin", "erin@uni.example")
    erin.identity.groups_refreshed_at = timezone.now() - datetime.timedelta(
        seconds=settings.OIDC_RIGHTS_MAX_AGE_SECONDS + 1
    )
    erin.identity.save()

    with pytest.raises(members.InvitationNotForYou, match="sign in again"):
        members.accept_invitation(running.pk, new.token, erin)
    assert not running.members.exists()


def test_anyone_with_the_link_is_the_inviters_explicit_choice_and_audited(running, alice):
    from portal.audit.models import AuditEvent

    default = members.invite(running, alice, {"email": "erin@uni.example", "role": "member"})
    assert default.invitation.anyone_with_link is False
    new = members.invite(
        running, alice, {"email": "list@uni.example", "role": "member", "anyone_with_link": "on"}
    )
    assert new.invitation.anyone_with_link is True
    assert "Anyone signed in to the portal who holds this link" in mail.outbox[-1].body
    created = AuditEvent.objects.filter(
        action="invitation.created", object_id=str(new.invitation.pk)
    ).get()
    assert created.actor == alice and created.details["anyone_with_link"] is True

    # Whoever holds it may accept, with or without a verified address.
    bob = UserFactory(username="bob")
    assert members.accept_invitation(running.pk, new.token, bob).user == bob


def test_a_failing_mail_server_still_gives_the_link(running, alice, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens there
    new = members.invite(running, alice, {"email": "erin@uni.example", "role": "member"})
    assert new.mailed is False and new.token
    assert Invitation.objects.filter(pk=new.invitation.pk).exists()


# --- IdP groups -------------------------------------------------------------------------------


def test_a_group_grant_makes_group_members_members(
    running, alice, students, applied, django_capture_on_commit_callbacks
):
    frank = UserFactory(username="frank")
    IdentityProfileFactory(user=frank, idp_groups=["physics-101", "staff-x"])
    assert not Hub.objects.visible_to(frank).exists()

    with django_capture_on_commit_callbacks(execute=True):
        members.grant_group(
            running, alice, {"group": "physics-101", "role": "member", "tier": "students"}
        )

    assert list(Hub.objects.visible_to(frank)) == [running]
    assert not running.can_manage(frank)
    mine = members.membership(running, frank)
    assert (mine.role, mine.tier, mine.via_group) == ("member", students, "physics-101")
    values = rendered(running)
    assert values["allowed_groups"] == ["physics-101"]
    assert values["group_tiers"] == {"physics-101": "students"}
    assert applied == [running.pk]


def test_a_co_owner_group_manages_the_hub(running, alice):
    grace = UserFactory(username="grace")
    IdentityProfileFactory(user=grace, idp_groups=["lecturers"])
    members.grant_group(running, alice, {"group": "lecturers", "role": "co-owner"})

    assert running.can_manage(grace)
    assert rendered(running)["admin_groups"] == ["lecturers"]
    UserFactory(username="erin")
    members.add_member(running, grace, {"username": "erin", "role": "member"})


def test_a_group_is_granted_once(running, alice):
    members.grant_group(running, alice, {"group": "physics-101", "role": "member"})
    with pytest.raises(members.InvalidMemberData, match="already has access"):
        members.grant_group(running, alice, {"group": "physics-101", "role": "co-owner"})


def test_revoking_a_group_grant_hides_the_hub(running, alice):
    frank = UserFactory(username="frank")
    IdentityProfileFactory(user=frank, idp_groups=["physics-101"])
    grant = members.grant_group(running, alice, {"group": "physics-101", "role": "member"})
    members.revoke_group_grant(grant, alice)
    assert not Hub.objects.visible_to(frank).exists()


def test_users_without_an_identity_profile_have_no_groups(running, alice):
    members.grant_group(running, alice, {"group": "physics-101", "role": "member"})
    assert not Hub.objects.visible_to(UserFactory(username="local")).exists()


@pytest.mark.parametrize("confirmed", ["never", "beyond the maximum age"])
def test_groups_the_provider_has_not_confirmed_lately_give_no_access(
    running, alice, confirmed, settings
):
    """Stored groups count only while the provider vouches for them: a profile without a
    confirmation time (never read from the provider) or with an old one gives no access."""
    members.grant_group(running, alice, {"group": "lecturers", "role": "co-owner"})
    age = datetime.timedelta(seconds=settings.OIDC_RIGHTS_MAX_AGE_SECONDS + 1)
    when = None if confirmed == "never" else timezone.now() - age
    frank = IdentityProfileFactory(
        user=UserFactory(username="frank"), idp_groups=["lecturers"], groups_refreshed_at=when
    ).user

    assert not Hub.objects.visible_to(frank).exists()
    assert not running.can_manage(frank)
    assert members.membership(running, frank) is None


# --- Rendering --------------------------------------------------------------------------------


def test_tiers_are_rendered_into_the_members_file(running, alice, students, staff):
    for name, tier in [("stu", "students"), ("ta", "staff"), ("sam", "")]:
        UserFactory(username=name)
        members.add_member(running, alice, {"username": name, "role": "member", "tier": tier})
    co_owner_of(running)

    values = rendered(running)
    assert values["admin_users"] == ["alice", "dora"]
    assert set(values["allowed_users"]) == {"alice", "dora", "stu", "ta", "sam"}
    assert values["user_tiers"] == {"stu": "students", "ta": "staff", "sam": "members"}
    assert values["tiers"]["students"]["profiles"] == ["small-no-gpu"]
    assert values["tiers"]["students"]["shared"] == "ro"
    assert values["tiers"]["staff"]["profiles"] == [
        "small",
        "large",
        "small-no-gpu",
        "large-no-gpu",
    ]
    assert values["tiers"]["staff"]["shared"] == "rw" and values["tiers"]["staff"]["jobs"]
    assert values["tiers"]["members"]["jobs"] is False  # jobs only where the owner gives them


def test_the_members_configmap_is_in_the_hubs_objects(running):
    from provisioning.render import render_hub

    objects = render_hub(from_hub(hub_queryset().get(pk=running.pk), "hubs.example.org"))
    assert ("ConfigMap", "hub-members") in {(o["kind"], o["metadata"]["name"]) for o in objects}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@needs_postgresql
def test_two_people_accepting_one_link_at_once_make_one_member():
    owner = UserFactory(username="owner")
    hub = HubFactory(owner=owner, state=HubState.PENDING)
    new = members.invite(
        hub, owner, {"email": "erin@uni.example", "role": "member", "anyone_with_link": True}
    )
    people = [UserFactory(username="erin"), UserFactory(username="mallory")]

    outcomes = race(
        *[
            lambda person=person: members.accept_invitation(hub.pk, new.token, person)
            for person in people
        ],
        losing=(members.InvitationInvalid,),
    )

    assert won_or_lost(outcomes) == ["lost", "won"]
    assert hub.members.count() == 1
    (lost,) = [o for o in outcomes if o != "won"]
    assert "already accepted" in str(lost)


def test_the_invitation_reaches_a_real_smtp_server(running, alice, smtp_server):
    new = members.invite(running, alice, {"email": "erin@uni.example", "role": "co-owner"})

    assert new.mailed
    ((recipients, message),) = smtp_server.messages()
    assert recipients == ["erin@uni.example"]
    assert message["Subject"] == f'You are invited to the hub "{running.display_name}"'
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    assert new.link.startswith("https://portal.example.org/hubs/")
    assert new.link in text and new.link in html
    assert "as a co-owner" in text
