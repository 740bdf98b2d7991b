"""Identity and rights that hold when people, names and groups change at the provider.

Against the real test OpenID Connect provider (tests/oidc_provider/): each takeover of the
review is played and refused; a rename keeps the account, its hubs and its hub username; the
scheduled refresh takes admin rights away without a sign-in; a user disabled at the provider
loses their sessions. Each test makes its own provider users (unique names), so that renames
and disabled accounts never leak into other tests.
"""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from social_django.models import UserSocialAuth

from portal.accounts import links, pipeline, rights, tokens
from portal.accounts.auth import subject_of
from portal.accounts.models import ApiToken, IdentityProfile, LinkRequest
from portal.accounts.tasks import refresh_identities
from portal.audit.models import AuditEvent
from portal.hubs import cluster, hubspec
from provisioning import hubconfig
from provisioning.render import render_hub
from tests.factories import AdminFactory, HubFactory, UserFactory
from tests.oidc_provider import harness
from tests.provisioning.examples import FIXED_SECRETS
from tests.sso_support import ADMIN_GROUP, PASSWORD
from tests.support import free_port
from tests.test_sso import callback_path, load_hub_config, sign_in, signed_in_as

pytestmark = pytest.mark.django_db


def person(sso, name: str = "", **fields) -> str:
    """A new user at the provider (unique name unless given); returns the name."""
    name = name or f"p{uuid.uuid4().hex[:8]}"
    fields.setdefault("email", f"{name.lower()}@uni.example")
    sso.update_user(name, password=PASSWORD, groups=fields.pop("groups", []), **fields)
    return name


def account_of(name: str):
    return get_user_model().objects.get(social_auth__extra_data__isnull=False, username=name)


def subject(user) -> str:
    social = UserSocialAuth.objects.get(user=user, provider="oidc")
    return social.uid.rsplit("#", 1)[1]


# --- Takeovers -------------------------------------------------------------------------------


def test_a_second_subject_with_an_existing_name_gets_its_own_account(client, sso):
    """The provider gives a name away again: the newcomer never gets the old account."""
    name = person(sso)
    sign_in(client, sso, name)
    first = get_user_model().objects.get(username=name.lower())
    hub = HubFactory(owner=first)
    client.post(reverse("logout"))
    # The first person leaves (renamed away); a new person gets the same name.
    sso.update_user(name, rename_to=f"{name}-left")
    person(sso, name)

    sign_in(client, sso, name)

    newcomer = get_user_model().objects.get(username=f"{name.lower()}-2")
    assert signed_in_as(client) == newcomer.username
    assert subject(newcomer) != subject(first)
    assert client.get(reverse("hubs:detail", args=[hub.pk])).status_code == 404


def test_identities_are_keyed_by_issuer_and_subject(client, sso):
    name = person(sso)
    sign_in(client, sso, name)
    social = UserSocialAuth.objects.get(provider="oidc")
    assert social.uid.startswith(sso.issuer + "#")
    assert subject_of(social.uid, sso.issuer).isdigit()  # the provider's stable user id


def test_an_identity_stored_by_subject_alone_keeps_its_account(client, sso):
    """Rows from before (issuer, subject) keying are upgraded at the next sign-in."""
    name = person(sso)
    sign_in(client, sso, name)
    user = get_user_model().objects.get(username=name.lower())
    social = UserSocialAuth.objects.get(user=user)
    UserSocialAuth.objects.filter(pk=social.pk).update(uid=subject(user))
    client.post(reverse("logout"))

    sign_in(client, sso, name)

    assert signed_in_as(client) == user.username
    assert UserSocialAuth.objects.get(pk=social.pk).uid.startswith(sso.issuer + "#")


def test_a_createapitoken_account_is_not_taken_over_by_its_name(client, sso):
    name = person(sso)
    call_command("createapitoken", name.lower(), "--admin", stdout=_Sink(), stderr=_Sink())
    service = get_user_model().objects.get(username=name.lower())

    response = sign_in(client, sso, name)

    assert response.status_code == 409
    assert signed_in_as(client) is None
    assert not service.social_auth.exists()
    waiting = LinkRequest.objects.get(user=service)
    assert AuditEvent.objects.filter(action="account.link_requested").exists()
    # Only an admin's action links it; a non-admin cannot.
    with pytest.raises(links.LinkError):
        links.link(waiting, UserFactory())
    admin = AdminFactory()
    links.link(waiting, admin)
    linked = AuditEvent.objects.get(action="account.linked")
    assert linked.actor == admin and linked.object_id == str(service.pk)

    sign_in(client, sso, name)
    assert signed_in_as(client) == service.username


def test_a_superuser_with_a_password_is_not_taken_over(client, sso):
    name = person(sso)
    UserFactory(username=name.lower(), password="x" * 20, is_staff=True, is_superuser=True)
    assert sign_in(client, sso, name).status_code == 409
    assert signed_in_as(client) is None
    assert not UserSocialAuth.objects.exists()


class _Sink:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def github_sign_in(rf, login: str, github_id: int):
    """GitHub's answer for a user, through the portal's whole sign-in pipeline.

    GitHub cannot be reached from the tests: this answer stands for GitHub's (its user
    endpoint's fields); everything after it is the portal's pipeline, unchanged."""
    from social_core.backends.github import GithubOAuth2
    from social_django.utils import load_strategy

    request = rf.get("/auth/complete/github/")
    request.session = {}
    strategy = load_strategy(request)
    backend = GithubOAuth2(strategy, redirect_uri="/auth/complete/github/")
    answer = {"login": login, "id": github_id, "email": f"{login}@example.com", "name": login}
    return backend.authenticate(
        response=answer, backend=backend, strategy=strategy, request=request
    )


def test_github_and_institutional_users_are_never_the_same_hub_user(
    client, sso, rf, tmp_path, monkeypatch
):
    name = person(sso)
    sign_in(client, sso, name)
    institutional = get_user_model().objects.get(username=name.lower())
    from_github = github_sign_in(rf, name, 4711)
    assert from_github.username == f"{name.lower()}{pipeline.GITHUB_SUFFIX}"
    assert from_github != institutional
    # A hub that added the GitHub user: the institutional user of that name is not let in.
    hub = HubFactory(owner=UserFactory())
    hub.members.create(user=from_github, role="member")
    authenticator = hub_authenticator(hub, tmp_path, monkeypatch)
    from tornado import web

    with pytest.raises(web.HTTPError) as refused:
        authenticator.user_info_to_username(
            {"sub": subject(institutional), "preferred_username": name}
        )
    assert refused.value.status_code == 403
    # ...and the reverse: with the institutional user as member, GitHub's user has no subject
    # at the issuer at all, so only the institutional one is that hub user.
    hub.members.create(user=institutional, role="member")
    authenticator = hub_authenticator(hub, tmp_path, monkeypatch)
    assert (
        authenticator.user_info_to_username({"sub": subject(institutional)})
        == institutional.username
    )
    assert list(hubconfig.members_values(hubspec.from_hub(hub))["identities"].values()) == [
        institutional.username
    ]


def test_people_of_a_granted_group_are_named_by_subject_in_the_hub(
    client, sso, tmp_path, monkeypatch
):
    """A course granted by IdP group: its students sign in to the portal once and the hub
    then names them by subject; people of other groups, and the group's people of another
    issuer, are not listed (and the hub still checks the group itself at its login)."""
    student, outsider = person(sso, groups=["course-x"]), person(sso, groups=["other"])
    for name in (student, outsider):
        sign_in(client, sso, name)
        client.logout()
    github = UserFactory(username=f"{student.lower()}@github")
    IdentityProfile.objects.create(user=github, idp_groups=["course-x"])
    hub = HubFactory(owner=UserFactory(username=f"own-{uuid.uuid4().hex[:6]}"))
    named = lambda: hubconfig.members_values(hubspec.from_hub(hub))["identities"]  # noqa: E731
    assert named() == {}

    hub.group_grants.create(group="course-x")
    student_account = account_of(student.lower())
    assert named() == {subject(student_account): student_account.username}
    authenticator = hub_authenticator(hub, tmp_path, monkeypatch)
    assert (
        authenticator.user_info_to_username({"sub": subject(student_account)})
        == student_account.username
    )


def hub_authenticator(hub, tmp_path, monkeypatch):
    """The hub's own authenticator, from the hub's rendered ConfigMaps, as in its pod."""
    spec = hubspec.from_hub(hubspec.hub_queryset().get(pk=hub.pk))
    files = {
        name: content
        for obj in render_hub(spec, cluster.render_settings(), FIXED_SECRETS)
        if obj["kind"] == "ConfigMap"
        for name, content in obj["data"].items()
    }
    folder = tmp_path / f"hub-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    config = load_hub_config(folder, monkeypatch, files)
    return config.JupyterHub.authenticator_class(config=config)


# --- Renames ---------------------------------------------------------------------------------


def test_a_user_renamed_at_the_provider_keeps_account_hubs_and_data(
    client, sso, tmp_path, monkeypatch
):
    name = person(sso)
    sign_in(client, sso, name)
    user = get_user_model().objects.get(username=name.lower())
    hub = HubFactory(owner=user)
    before = hub_authenticator(hub, tmp_path, monkeypatch).user_info_to_username(
        {"sub": subject(user)}
    )
    client.post(reverse("logout"))
    sso.update_user(name, rename_to=f"{name}-renamed", email=f"{name}-new@uni.example")

    sign_in(client, sso, f"{name}-renamed")

    assert signed_in_as(client) == user.username  # the same portal account
    assert get_user_model().objects.count() == 1
    assert client.get(reverse("hubs:detail", args=[hub.pk])).status_code == 200
    # The same hub user, so the same home volume (home-<hub username>).
    after = hub_authenticator(hub, tmp_path, monkeypatch).user_info_to_username(
        {"sub": subject(user), "preferred_username": f"{name}-renamed"}
    )
    assert after == before == user.username
    assert hubconfig.HOME_PVC_TEMPLATE.format(username=after) == f"home-{user.username}"


# --- Rights follow the provider ---------------------------------------------------------------


def admin_token(user) -> str:
    _, clear = tokens.issue(user, name="ops", scope="admin")
    return clear


def test_an_admin_removed_from_the_group_loses_admin_at_the_next_refresh(client, sso):
    name = person(sso, groups=[ADMIN_GROUP])
    sign_in(client, sso, name)
    user = get_user_model().objects.get(username=name.lower())
    assert user.is_staff and user.is_superuser
    clear = admin_token(user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {clear}")
    assert api.get("/api/v1/audit/").status_code == 200
    sso.update_user(name, groups=[])
    # Nobody signs in again; the schedule's refresh is due.
    IdentityProfile.objects.filter(user=user).update(
        groups_refreshed_at=timezone.now() - datetime.timedelta(hours=1)
    )

    assert refresh_identities() == {"refreshed": 1}

    user.refresh_from_db()
    assert not user.is_staff and not user.is_superuser
    assert api.get("/api/v1/audit/").status_code == 403  # every token lost admin scope
    assert client.get(reverse("hubs:queue")).status_code == 403  # the session too
    withdrawn = AuditEvent.objects.get(action="account.admin_withdrawn")
    assert withdrawn.object_id == str(user.pk) and withdrawn.actor is None
    assert AuditEvent.objects.filter(action="account.admin_granted").exists()


def test_a_refresh_reads_new_groups_and_keeps_the_session(client, sso):
    name = person(sso, groups=["physics"])
    sign_in(client, sso, name)
    user = get_user_model().objects.get(username=name.lower())
    sso.update_user(name, groups=["chemistry"])

    assert rights.refresh(UserSocialAuth.objects.get(user=user)) == "refreshed"
    # The rotated refresh token works for the next refresh too.
    assert rights.refresh(UserSocialAuth.objects.get(user=user)) == "refreshed"

    assert IdentityProfile.objects.get(user=user).idp_groups == ["chemistry"]
    assert signed_in_as(client) == user.username


def test_a_user_disabled_at_the_provider_loses_their_sessions(client, sso):
    name = person(sso, groups=[ADMIN_GROUP])
    sign_in(client, sso, name)
    user = get_user_model().objects.get(username=name.lower())
    assert signed_in_as(client) == user.username
    sso.update_user(name, active=False)

    assert rights.refresh(UserSocialAuth.objects.get(user=user)) == "refused"

    assert signed_in_as(client) is None
    user.refresh_from_db()
    assert not user.is_staff
    assert AuditEvent.objects.filter(action="account.signed_out_by_provider").exists()


def test_admin_rights_lapse_when_the_provider_cannot_confirm_them(client, sso, settings):
    name = person(sso, groups=[ADMIN_GROUP])
    sign_in(client, sso, name)
    user = get_user_model().objects.get(username=name.lower())
    settings.OIDC_TOKEN_URL = f"http://127.0.0.1:{free_port()}/o/token/"  # down
    social = UserSocialAuth.objects.get(user=user)

    assert rights.refresh(social) == "unavailable"  # within the maximum age: kept
    assert get_user_model().objects.get(pk=user.pk).is_staff
    IdentityProfile.objects.filter(user=user).update(
        groups_refreshed_at=timezone.now()
        - datetime.timedelta(seconds=settings.OIDC_RIGHTS_MAX_AGE_SECONDS + 1)
    )
    assert rights.refresh(social) == "lapsed"
    user.refresh_from_db()
    assert not user.is_staff
    assert rights.current_groups(user) == []


# --- Tokens ----------------------------------------------------------------------------------


def test_createapitoken_tokens_expire_within_the_maximum(settings):
    call_command("createapitoken", "svc", stdout=_Sink(), stderr=_Sink())
    lifetime = ApiToken.objects.get(user__username="svc").expires_at - timezone.now()
    assert datetime.timedelta(days=89) < lifetime <= datetime.timedelta(days=90)
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="API_TOKEN_MAX_DAYS"):
        call_command("createapitoken", "svc", "--expires-days", "365", stdout=_Sink())


def test_the_api_refuses_a_token_beyond_the_maximum_lifetime(alice):
    api = APIClient()
    api.force_authenticate(alice)
    too_long = api.post("/api/v1/tokens/", {"name": "x", "expires_in_days": 365}, format="json")
    assert too_long.status_code == 400 and "expires_in_days" in too_long.json()
    made = api.post("/api/v1/tokens/", {"name": "y"}, format="json")
    assert made.status_code == 201 and made.json()["expires_at"] is not None
    assert ApiToken.objects.filter(user=alice).count() == 1


def test_a_staff_token_without_admin_scope_sees_what_a_user_sees(alice, charlie):
    hub = HubFactory(owner=alice)
    from portal.hubs import members

    members.invite(hub, alice, {"email": "zed@example.org", "role": "member"})
    api = APIClient()
    _, read = tokens.issue(charlie, name="read", scope="read")
    api.credentials(HTTP_AUTHORIZATION=f"Token {read}")
    assert api.get(f"/api/v1/usage/users/{alice.username}/").status_code == 404
    assert api.get(f"/api/v1/hubs/{hub.pk}/invitations/").status_code == 403
    assert api.get("/api/v1/usage/users/me/").status_code == 200
    _, admin = tokens.issue(charlie, name="admin", scope="admin")
    api.credentials(HTTP_AUTHORIZATION=f"Token {admin}")
    assert api.get(f"/api/v1/usage/users/{alice.username}/").status_code == 200
    assert api.get(f"/api/v1/hubs/{hub.pk}/invitations/").status_code == 200


def test_a_staff_token_without_admin_scope_reads_hub_usage_as_its_user(alice, charlie):
    """charlie (a portal admin) with a read token: another's hub's usage is 404 as for any
    user; in a hub where he is a member he sees only his own usage; the admin scope sees all."""
    from portal.hubs.models import Member
    from tests.test_usage import use

    day = timezone.now().date()
    others, joined = HubFactory(owner=alice, slug="others"), HubFactory(owner=alice, slug="joined")
    Member.objects.create(hub=joined, user=charlie, role=Member.Role.MEMBER)
    for hub in (others, joined):
        use(hub, alice, day, cores=2)
    use(joined, charlie, day, cores=1)
    api = APIClient()
    _, read = tokens.issue(charlie, name="read", scope="read")
    api.credentials(HTTP_AUTHORIZATION=f"Token {read}")

    assert api.get(f"/api/v1/hubs/{others.pk}/usage/").status_code == 404
    assert api.get(f"/api/v1/hubs/{others.pk}/usage/csv/").status_code == 404
    mine = api.get(f"/api/v1/hubs/{joined.pk}/usage/").json()
    assert [line["key"] for line in mine["by_user"]] == ["charlie"]
    assert api.get(f"/api/v1/hubs/{joined.pk}/usage/csv/").status_code == 403

    _, admin = tokens.issue(charlie, name="admin", scope="admin")
    api.credentials(HTTP_AUTHORIZATION=f"Token {admin}")
    everyone = api.get(f"/api/v1/hubs/{joined.pk}/usage/").json()
    assert {line["key"] for line in everyone["by_user"]} == {"alice", "charlie"}
    assert api.get(f"/api/v1/hubs/{others.pk}/usage/").status_code == 200


# --- The portal's role in each hub -----------------------------------------------------------


def test_the_portals_role_in_a_hub_never_reads_provider_tokens(tmp_path, monkeypatch, hub):
    from jupyterhub.scopes import _expand_scope

    files = {
        name: content
        for obj in render_hub(hubspec.from_hub(hub), cluster.render_settings(), FIXED_SECRETS)
        if obj["kind"] == "ConfigMap"
        for name, content in obj["data"].items()
    }
    config = load_hub_config(tmp_path, monkeypatch, files)
    role = next(r for r in config.JupyterHub.load_roles if r["name"] == "hub-on-demand")
    granted = set().union(*(_expand_scope(scope) for scope in role["scopes"]))
    assert "admin:auth_state" not in granted and "admin:users" not in granted
    # What provisioning.hubapi calls: list users with their groups, delete users.
    assert {"list:users", "read:users:groups", "delete:users"} <= granted


# --- Rate limits -----------------------------------------------------------------------------


def test_the_django_admins_login_is_rate_limited_like_the_sign_in(client, settings, client_address):
    settings.LOGIN_RATE_LIMIT_ATTEMPTS = 3
    AdminFactory(username="root", password="right password 123")
    guesser, other = client_address(), client_address()
    wrong = {"username": "root", "password": "wrong", "next": "/admin/"}
    for _ in range(3):
        assert client.post(reverse("admin:login"), wrong, REMOTE_ADDR=guesser).status_code == 200
    right = {"username": "root", "password": "right password 123", "next": "/admin/"}
    assert client.post(reverse("admin:login"), right, REMOTE_ADDR=guesser).status_code == 429
    assert client.post(reverse("admin:login"), right, REMOTE_ADDR=other).status_code == 302


def test_password_reset_is_rate_limited(client, settings, alice, client_address):
    settings.LOGIN_RATE_LIMIT_ATTEMPTS = 2
    asked = {"email": alice.email or "alice@example.org"}
    address = client_address()
    for _ in range(2):
        assert client.post(reverse("password_reset"), asked, REMOTE_ADDR=address).status_code == 302
    assert client.post(reverse("password_reset"), asked, REMOTE_ADDR=address).status_code == 429


# --- Invitations ------------------------------------------------------------------------------


def invitation_for(email: str, **extra):
    """A running hub of a local owner and an invitation to it for `email`."""
    from portal.hubs import members

    owner = UserFactory(username=f"owner-{uuid.uuid4().hex[:6]}")
    hub = HubFactory(owner=owner, slug=f"inv-{uuid.uuid4().hex[:6]}", state="running")
    new = members.invite(hub, owner, {"email": email, "role": "member", **extra})
    path, _, token = new.link[new.link.index("/hubs/") :].partition("#")
    return hub, path, token


def sign_in_via(client, sso, name: str, login_url: str, seen: list[str]) -> str:
    """Sign in through the real provider from the sign-in page `login_url` (with its
    ``?next=``), recording every URL and redirect on the way; returns where the portal sends
    the browser at the end."""
    page = client.get(login_url)
    seen.append(login_url)
    nxt = page.context["next"]
    begun = client.post(reverse("social:begin", args=["oidc"]), {"next": nxt})
    seen.append(begun["Location"])
    browser = harness.Browser(sso, name, PASSWORD)
    back = browser.visit(begun["Location"])
    seen.append(back)
    done = client.get(callback_path(back))
    assert done.status_code == 302, done.content[:500]
    seen.append(done["Location"])
    return done["Location"]


def test_an_invitation_opened_before_sign_in_waits_in_the_session_not_in_urls(client, sso):
    """The invitee opens the link signed out, signs in at the provider and accepts: the token
    is only ever in the POST body: never in a URL the portal or the provider sees, a
    redirect, ``?next=`` or a Referer-bearing page."""
    name = person(sso)
    hub, path, token = invitation_for(f"{name.lower()}@uni.example")
    seen: list[str] = []

    page = client.get(path)
    seen.append(path)
    assert page.status_code == 200 and page["Referrer-Policy"] == "same-origin"
    opened = client.post(path, {"token": token})
    seen.append(opened["Location"])
    accept = reverse("hubs:invitation_accept", args=[hub.pk])
    assert opened["Location"].startswith(reverse("login")) and accept in opened["Location"]

    assert sign_in_via(client, sso, name, opened["Location"], seen) == accept
    confirm = client.get(accept)
    assert b"Accept the invitation" in confirm.content
    assert client.post(accept).status_code == 302

    user = account_of(name.lower())
    assert hub.members.filter(user=user, role="member").exists()
    assert seen and not [url for url in seen if token in url]


def test_an_e_mail_address_the_provider_did_not_verify_cannot_accept(client, sso):
    """The provider sends the invited address but email_verified false: refused; once the
    provider verifies it (seen at the next sign-in), the same link is accepted."""
    name = person(sso, email_verified=False)
    hub, path, token = invitation_for(f"{name.lower()}@uni.example")
    sign_in(client, sso, name)
    user = account_of(name.lower())
    assert user.email == f"{name.lower()}@uni.example"  # sent, but not vouched for

    client.post(path, {"token": token})
    accept = reverse("hubs:invitation_accept", args=[hub.pk])
    refused = client.post(accept)
    assert refused.status_code == 403 and b"has not verified" in refused.content
    assert not hub.members.filter(user=user).exists()

    sso.update_user(name, email_verified=True)
    client.logout()
    sign_in(client, sso, name)
    client.post(path, {"token": token})
    assert client.post(accept).status_code == 302
    assert hub.members.filter(user=user).exists()


def test_a_leaked_link_is_refused_to_another_provider_user_unless_for_anyone(client, sso):
    invitee, other = person(sso), person(sso)
    hub, path, token = invitation_for(f"{invitee.lower()}@uni.example")
    sign_in(client, sso, other)

    client.post(path, {"token": token})
    refused = client.post(reverse("hubs:invitation_accept", args=[hub.pk]))
    assert refused.status_code == 403
    assert not hub.members.exists()

    shared, shared_path, shared_token = invitation_for("list@uni.example", anyone_with_link=True)
    client.post(shared_path, {"token": shared_token})
    assert client.post(reverse("hubs:invitation_accept", args=[shared.pk])).status_code == 302
    assert shared.members.filter(user=account_of(other.lower())).exists()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_mailed_link_in_a_real_browser_posts_its_token_and_keeps_it_out_of_urls(
    chromium, live_server
):
    """Debian's Chromium opens the mailed link signed out: the page's script posts the token
    from the fragment, the visitor signs in (a local account whose verified address is the
    invited one) and accepts. No request URL or Referer the browser sends holds the token."""
    from portal.hubs import members

    owner = UserFactory(username="owner")
    hub = HubFactory(owner=owner, slug="browser-invite", state="running")
    new = members.invite(hub, owner, {"email": "erin@uni.example", "role": "member"})
    erin = UserFactory(username="erin", password="erin password 1234")
    IdentityProfile.objects.create(
        user=erin, verified_email="erin@uni.example", groups_refreshed_at=timezone.now()
    )
    link = live_server.url + new.link[new.link.index("/hubs/") :]
    sent: list[tuple[str, str, str]] = []
    page = chromium.new_context().new_page()
    page.on(
        "request",
        lambda r: sent.append((r.url, r.headers.get("referer", ""), r.post_data or "")),
    )
    try:
        page.goto(link)
        page.wait_for_url("**/accounts/login/**")
        assert "#" not in page.url
        page.get_by_label("Username").fill("erin")
        page.get_by_label("Password").fill("erin password 1234")
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_url(f"**/hubs/{hub.pk}/join/accept/")
        page.get_by_role("button", name="Accept the invitation").click()
        page.wait_for_url(f"**/hubs/{hub.pk}/")
    finally:
        page.context.close()

    assert hub.members.filter(user=erin, role="member").exists()
    assert [body for _, _, body in sent if new.token in body]  # it went in a POST body
    # The fragment is never sent; the link's own URL is the browser's, not a request's.
    leaked = [(url, ref) for url, ref, _ in sent if new.token in url or new.token in ref]
    assert not leaked


# --- Members changed by a revision ------------------------------------------------------------


def test_member_changes_by_a_revision_are_audited_and_signed_out_after_the_update(
    alice, applied, django_capture_on_commit_callbacks
):
    from portal.hubs import lifecycle, revisions
    from portal.hubs.lifecycle import HubState
    from portal.hubs.services import changes

    hub = HubFactory(owner=alice, state=HubState.RUNNING)
    bob, erin = UserFactory(username="bob"), UserFactory(username="erin")
    hub.members.create(user=bob, role="member")
    changes.ensure_initial_revision(hub)
    data = revisions.form_data(revisions.spec_of_hub(hub))
    changes.request_change(hub, alice, {**data, "members": "erin", "co_owners": ""})

    event = AuditEvent.objects.get(action="hub.members_changed_by_revision")
    assert event.details["removed"] == ["bob"] and event.details["added"] == ["erin"]
    assert list(hub.members.values_list("user", flat=True)) == [erin.pk]
    assert hub.pk not in applied
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.mark_running(hub.pk)  # the update is done: removed people are signed out
    assert applied == [hub.pk]
