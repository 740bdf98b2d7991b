"""Member management through the web pages and the API, for every kind of caller: alice
(owner), dora (co-owner), mia (member), bob (another user), charlie (admin), anonymous."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse

from portal.hubs import members
from portal.hubs.lifecycle import HubState
from portal.hubs.models import GroupGrant, Invitation, Member, MemberTier
from tests.factories import (
    HardwareOptionFactory,
    HubFactory,
    IdentityProfileFactory,
    ImageFactory,
    UserFactory,
    api_token,
    verified_user,
)

pytestmark = pytest.mark.django_db

CALLERS = ["alice", "dora", "mia", "bob", "charlie", "anonymous"]
LOGIN = "login"


@pytest.fixture
def running(alice):
    hub = HubFactory(
        owner=alice,
        slug="course",
        state=HubState.RUNNING,
        hardware_options=[HardwareOptionFactory(name="small"), HardwareOptionFactory(name="big")],
        images=[ImageFactory(name="scipy")],
    )
    Member.objects.create(hub=hub, user=UserFactory(username="dora"), role=Member.Role.CO_OWNER)
    Member.objects.create(hub=hub, user=UserFactory(username="mia"))
    members.default_tier(hub)
    return hub


@pytest.fixture
def dora(running):
    return running.members.get(user__username="dora").user


@pytest.fixture
def mia(running):
    return running.members.get(user__username="mia").user


@pytest.fixture
def caller(request, client, api, running, bob, charlie):
    """Log the named caller in to the web client and the API client (with a token)."""

    def login(who):
        if who != "anonymous":
            user = request.getfixturevalue(who)
            client.force_login(user)
            api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
        return client, api

    return login


# --- Web pages --------------------------------------------------------------------------------

WEB = {
    "members page": ("get", "hubs:members", {}, (200, 200, 403, 404, 200, LOGIN)),
    "add member": (
        "post",
        "hubs:member_add",
        {"username": "erin", "role": "member"},
        (302, 302, 403, 404, 302, LOGIN),
    ),
    "new tier form": ("get", "hubs:tier_create", {}, (200, 200, 403, 404, 200, LOGIN)),
    "grant group": (
        "post",
        "hubs:group_grant_add",
        {"group": "g1", "role": "member"},
        (302, 302, 403, 404, 302, LOGIN),
    ),
}


@pytest.mark.parametrize("page", sorted(WEB))
@pytest.mark.parametrize("who", CALLERS)
def test_member_pages_by_caller(caller, running, page, who):
    UserFactory(username="erin")
    method, name, data, expected = WEB[page]
    client, _ = caller(who)
    response = getattr(client, method)(reverse(name, args=[running.pk]), data)
    if who == "anonymous":
        assert response.status_code == 302 and "/login" in response["Location"]
        return
    assert response.status_code == dict(zip(CALLERS, expected, strict=True))[who]
    if method == "post" and response.status_code != 302:
        assert not running.members.filter(user__username="erin").exists()
        assert not GroupGrant.objects.exists()


def test_hub_page_shows_members_and_the_viewers_tier(caller, running):
    client, _ = caller("mia")
    page = client.get(reverse("hubs:detail", args=[running.pk])).content.decode()
    assert "You are a member of this hub, in the tier <strong>members</strong>" in page
    assert "Manage members and tiers" not in page

    client, _ = caller("dora")
    page = client.get(reverse("hubs:detail", args=[running.pk])).content.decode()
    assert "Manage members and tiers" in page and "mia" in page


def test_owner_manages_members_tiers_and_groups_on_the_web(caller, running, mia):
    client, _ = caller("alice")
    response = client.post(
        reverse("hubs:tier_create", args=[running.pk]),
        {"name": "students", "hardware_options": ["small"], "shared_access": "ro"},
    )
    assert response.status_code == 302
    students = running.tiers.get(name="students")
    assert list(students.hardware_options.values_list("name", flat=True)) == ["small"]
    assert students.gpu_access is False  # an unchecked box

    member = running.members.get(user=mia)
    client.post(
        reverse("hubs:member_change", args=[running.pk, member.pk]),
        {"role": "member", "tier": "students"},
    )
    member.refresh_from_db()
    assert member.tier == students

    page = client.get(reverse("hubs:members", args=[running.pk])).content.decode()
    assert "students" in page

    client.post(reverse("hubs:member_remove", args=[running.pk, member.pk]))
    assert not running.members.filter(user=mia).exists()


def test_bad_tier_input_is_shown_and_changes_nothing(caller, running):
    client, _ = caller("alice")
    response = client.post(
        reverse("hubs:tier_create", args=[running.pk]),
        {"name": "not a slug!", "hardware_options": ["unknown"], "shared_access": "xx"},
    )
    assert response.status_code == 400
    assert b"has-error" in response.content
    assert not running.tiers.exclude(is_default=True).exists()


def link_parts(link: str) -> tuple[str, str]:
    """The path an invitation link opens and the token in its fragment."""
    path, _, token = link[link.index("/hubs/") :].partition("#")
    return path, token


def test_invitation_link_is_shown_once_and_accepted_after_sign_in(caller, client, running):
    owner, _ = caller("alice")
    response = owner.post(
        reverse("hubs:invitation_create", args=[running.pk]),
        {"email": "erin@uni.example", "role": "member"},
    )
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    link = re.search(r'value="(http[^"]+/join/#[^"]+)"', response.content.decode()).group(1)
    path, token = link_parts(link)
    assert path == reverse("hubs:invitation_open", args=[running.pk]) and token
    assert link in mail.outbox[0].body
    # Not on the members page afterwards.
    assert token not in owner.get(reverse("hubs:members", args=[running.pk])).content.decode()

    client.logout()
    # The link's page is a form that posts the token; opening it accepts nothing.
    page = client.get(path)
    assert page.status_code == 200 and b'id="invitation-open"' in page.content
    assert page["Referrer-Policy"] == "same-origin"
    # Posting it before signing in asks for sign-in; the token stays out of the redirect.
    response = client.post(path, {"token": token})
    accept = reverse("hubs:invitation_accept", args=[running.pk])
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert token not in response["Location"] and f"next={accept}" in response["Location"]
    assert not running.members.filter(user__username="erin").exists()

    erin = verified_user("erin", "erin@uni.example")
    client.force_login(erin)  # the session keeps the opened invitation across the sign-in
    assert b"Accept the invitation" in client.get(accept).content
    response = client.post(accept)
    assert response.status_code == 302
    assert running.members.filter(user=erin, role="member").exists()

    again = client.post(accept, {"token": token})
    assert again.status_code == 400 and b"already accepted" in again.content


def test_invalid_invitation_links_get_a_clear_page(caller, running):
    client, _ = caller("bob")
    response = client.post(reverse("hubs:invitation_open", args=[running.pk]), {"token": "x"})
    assert response.status_code == 400
    assert b"This invitation link is not valid" in response.content
    nothing_open = client.get(reverse("hubs:invitation_accept", args=[running.pk]))
    assert nothing_open.status_code == 400 and b"No invitation to this hub is open" in (
        nothing_open.content
    )

    new = members.invite(running, running.owner, {"email": "bob@example.org", "role": "member"})
    members.revoke_invitation(new.invitation, running.owner)
    accept = reverse("hubs:invitation_accept", args=[running.pk])
    response = client.post(accept, {"token": new.token})
    assert response.status_code == 400 and b"revoked" in response.content
    assert not running.members.filter(user__username="bob").exists()


def test_a_leaked_link_opened_by_another_signed_in_user_is_refused(caller, running):
    """bob got erin's link: the page tells him it is not his, the accept is 403, and nothing
    changes; erin can still accept it."""
    new = members.invite(running, running.owner, {"email": "erin@uni.example", "role": "member"})
    IdentityProfileFactory(user=UserFactory(username="bob"), verified_email="bob@uni.example")
    client, _ = caller("bob")
    path, token = link_parts(new.link)

    opened = client.post(path, {"token": token}, follow=True)
    assert opened.status_code == 200 and b"This invitation is for erin@uni.example" in (
        opened.content
    )
    assert b"Accept the invitation" not in opened.content
    refused = client.post(reverse("hubs:invitation_accept", args=[running.pk]))
    assert refused.status_code == 403 and b"erin@uni.example" in refused.content
    assert not running.members.filter(user__username="bob").exists()
    new.invitation.refresh_from_db()
    assert new.invitation.status() == "pending"


def test_an_old_link_with_the_token_in_its_path_accepts_nothing_by_itself(client, running):
    """Links mailed before tokens moved into the fragment: opening one (even signed in as the
    invitee) only shows the page whose form posts the token; a POST to it is refused."""
    new = members.invite(running, running.owner, {"email": "erin@uni.example", "role": "member"})
    client.force_login(verified_user("erin", "erin@uni.example"))
    old = f"/hubs/{running.pk}/join/{new.token}/"

    page = client.get(old)
    assert page.status_code == 200 and b'id="invitation-open"' in page.content
    assert page["Referrer-Policy"] == "same-origin" and page["Cache-Control"] == "no-store"
    assert client.post(old).status_code == 405
    assert not running.members.filter(user__username="erin").exists()
    new.invitation.refresh_from_db()
    assert new.invitation.status() == "pending"
    # Its page posts the token like a new link's, and the invitee then accepts.
    client.post(reverse("hubs:invitation_open", args=[running.pk]), {"token": new.token})
    assert client.post(reverse("hubs:invitation_accept", args=[running.pk])).status_code == 302
    assert running.members.filter(user__username="erin").exists()


def test_anyone_with_the_link_is_a_choice_in_the_invite_form(caller, running):
    owner, _ = caller("alice")
    page = owner.get(reverse("hubs:members", args=[running.pk])).content.decode()
    assert (
        'name="anyone_with_link"' in page
        and "checked" not in page.split("anyone_with_link")[1][:80]
    )
    owner.post(
        reverse("hubs:invitation_create", args=[running.pk]),
        {"email": "list@uni.example", "role": "member", "anyone_with_link": "on"},
    )
    assert Invitation.objects.get(email="list@uni.example").anyone_with_link
    listed = owner.get(reverse("hubs:members", args=[running.pk])).content.decode()
    assert "anyone with the link" in listed


# --- API --------------------------------------------------------------------------------------


def url(hub, kind, *rest):
    return "/api/v1/hubs/{}/{}/{}".format(hub.pk, kind, "".join(f"{part}/" for part in rest))


API = {
    "list members": ("get", "members", {}, (200, 200, 200, 404, 200, 401)),
    "add member": ("post", "members", {"username": "erin"}, (201, 201, 403, 404, 201, 401)),
    "list invitations": ("get", "invitations", {}, (200, 200, 403, 404, 200, 401)),
    "invite": ("post", "invitations", {"email": "e@x.org"}, (201, 201, 403, 404, 201, 401)),
    "list group grants": ("get", "group-grants", {}, (200, 200, 403, 404, 200, 401)),
    "grant group": ("post", "group-grants", {"group": "g"}, (201, 201, 403, 404, 201, 401)),
    "list tiers": ("get", "tiers", {}, (200, 200, 200, 404, 200, 401)),
    "new tier": ("post", "tiers", {"name": "t"}, (201, 201, 403, 404, 201, 401)),
}


@pytest.mark.parametrize("endpoint", sorted(API))
@pytest.mark.parametrize("who", CALLERS)
def test_member_endpoints_by_caller(caller, running, endpoint, who):
    UserFactory(username="erin")
    method, kind, data, expected = API[endpoint]
    _, api = caller(who)
    response = getattr(api, method)(url(running, kind), data, format="json")
    assert response.status_code == dict(zip(CALLERS, expected, strict=True))[who], response.content
    if method == "post" and response.status_code != 201:
        assert not running.members.filter(user__username="erin").exists()
        assert not Invitation.objects.exists() and not GroupGrant.objects.exists()
        assert not running.tiers.filter(name="t").exists()


def test_invitation_token_only_in_the_create_response(caller, running):
    _, api = caller("alice")
    created = api.post(url(running, "invitations"), {"email": "e@x.org"}, format="json").json()
    token = created["token"]
    assert created["link"].endswith(f"/join/#{token}") and created["status"] == "pending"
    assert created["anyone_with_link"] is False

    listed = api.get(url(running, "invitations")).content.decode()
    one = api.get(url(running, "invitations", created["id"])).content.decode()
    assert token not in listed and token not in one and "token_hash" not in listed

    erin = verified_user("erin", "e@x.org")
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(erin)}")
    accepted = api.post(url(running, "invitations", "accept"), {"token": token}, format="json")
    assert accepted.status_code == 201
    assert accepted.json() == {
        "id": accepted.json()["id"],
        "username": "erin",
        "role": "member",
        "tier": None,
    }
    again = api.post(url(running, "invitations", "accept"), {"token": token}, format="json")
    assert again.status_code == 400 and "already accepted" in again.json()["token"][0]


def test_the_api_refuses_a_leaked_token_unless_the_invitation_is_for_anyone(caller, running):
    _, api = caller("alice")
    bound = api.post(url(running, "invitations"), {"email": "e@x.org"}, format="json").json()
    open_ = api.post(
        url(running, "invitations"),
        {"email": "list@x.org", "anyone_with_link": True},
        format="json",
    ).json()
    assert open_["anyone_with_link"] is True

    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(verified_user('bob', 'bob@x.org'))}")
    accept = url(running, "invitations", "accept")
    refused = api.post(accept, {"token": bound["token"]}, format="json")
    assert refused.status_code == 403 and "for e@x.org" in refused.json()["detail"]
    assert not running.members.filter(user__username="bob").exists()
    accepted = api.post(accept, {"token": open_["token"]}, format="json")
    assert accepted.status_code == 201 and accepted.json()["username"] == "bob"


def test_revoke_an_invitation_through_the_api(caller, running):
    _, api = caller("dora")
    created = api.post(url(running, "invitations"), {"email": "e@x.org"}, format="json").json()
    revoked = api.post(url(running, "invitations", created["id"], "revoke"))
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert api.post(url(running, "invitations", created["id"], "revoke")).status_code == 409


def test_tiers_and_member_changes_through_the_api(caller, running, mia):
    _, api = caller("alice")
    tier = api.post(
        url(running, "tiers"),
        {"name": "students", "hardware_options": ["small"], "gpu_access": False},
        format="json",
    )
    assert tier.status_code == 201, tier.content
    assert tier.json()["hardware_options"] == ["small"] and tier.json()["shared_access"] == "ro"

    member = running.members.get(user=mia)
    changed = api.patch(url(running, "members", member.pk), {"tier": "students"}, format="json")
    assert changed.status_code == 200 and changed.json()["tier"] == "students"
    assert changed.json()["role"] == "member"

    edited = api.patch(
        url(running, "tiers", tier.json()["id"]), {"jobs_access": True}, format="json"
    )
    assert edited.json()["hardware_options"] == ["small"] and edited.json()["jobs_access"]

    default = running.tiers.get(is_default=True)
    assert api.delete(url(running, "tiers", default.pk)).status_code == 409
    assert api.delete(url(running, "tiers", tier.json()["id"])).status_code == 204
    member.refresh_from_db()
    assert member.tier is None


@pytest.mark.parametrize(
    ("kind", "data", "field"),
    [
        ("members", {"username": "nobody"}, "username"),
        ("members", {"username": "erin", "tier": "nope"}, "tier"),
        ("invitations", {"email": "not-an-address"}, "email"),
        ("group-grants", {"group": ""}, "group"),
        ("tiers", {"name": "bad name"}, "name"),
        ("tiers", {"name": "ok", "images": ["unknown"]}, "images"),
    ],
)
def test_bad_input_is_400_with_field_messages(caller, running, kind, data, field):
    UserFactory(username="erin")
    _, api = caller("alice")
    response = api.post(url(running, kind), data, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not MemberTier.objects.filter(name="ok").exists()


def test_group_grant_gives_api_access_to_the_hub(caller, running):
    frank = UserFactory(username="frank")
    IdentityProfileFactory(user=frank, idp_groups=["physics-101"])
    _, api = caller("alice")
    api.post(url(running, "group-grants"), {"group": "physics-101"}, format="json")

    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(frank)}")
    assert api.get(f"/api/v1/hubs/{running.pk}/").status_code == 200
    assert api.get(url(running, "group-grants")).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/hubs/{pk}/members/abc/",
        "/api/v1/hubs/{pk}/members/99999999999999999999/",
        "/api/v1/hubs/99999999999999999999/members/",
        "/api/v1/hubs/{pk}/tiers/0/",
    ],
)
def test_odd_ids_are_404(caller, running, path):
    _, api = caller("alice")
    assert api.get(path.format(pk=running.pk)).status_code == 404


def test_accepting_with_an_odd_hub_or_token_is_400(caller, running):
    _, api = caller("bob")
    for hub_pk, body in [(99999999999999999999, {"token": "x"}), (running.pk, {"token": ""})]:
        response = api.post(f"/api/v1/hubs/{hub_pk}/invitations/accept/", body, format="json")
        assert response.status_code == 400
