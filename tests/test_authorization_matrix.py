"""Who may call what: every URL pattern of the portal by every kind of caller → expected status.

Callers: the hub's owner (alice), a co-owner (dana), a member (erin), another user (bob), a
portal admin (charlie), an anonymous caller, and a token with too small a scope (the owner's
read token; for admin rows the admin's write token, or read token where the row reads). Web
pages are called with a signed-in session (the small token is sent as a header and must not
open a page); the API through the real token header (admins' tokens have the admin scope,
others' the write scope).

To cover a new URL, add a row to ROWS (or, with a reason, to NOT_HERE):
    row("name", "method", args, "<owner> <co-owner> <member> <other> <admin> <anonymous> <small>")
with each status a number, L (a redirect to sign in) or R (any other redirect). Run with
MATRIX_OBSERVE=/tmp/observed.txt to write the statuses seen instead of asserting (review them!).
test_every_url_pattern_is_covered fails, naming it, for a pattern that is in neither.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from portal.hubs import revisions
from portal.hubs.lifecycle import HubState
from portal.hubs.models import ClassSession, Member, ServerRun
from portal.hubs.services import changes
from tests.factories import AdminFactory, HubFactory, UserFactory, api_token

CALLERS = ("owner", "co_owner", "member", "other", "admin", "anonymous", "small_token")
USERS = {"owner": "alice", "co_owner": "dana", "member": "erin", "other": "bob", "admin": "charlie"}


@dataclass(frozen=True)
class Row:
    """One URL and method, with the status each caller gets."""

    name: str
    method: str
    args: Callable[[Any], dict]
    expect: dict[str, int | str]
    data: Callable[[Any], dict] | None = None
    admin_row: bool = False  # the small token is then the admin's, one scope short

    @property
    def is_api(self) -> bool:
        return self.name.split(":")[0] not in WEB_NAMESPACES and self.name not in WEB_NAMES


ADMIN = "admin row"  # marks a row whose small token is the admin's, one scope short


def row(name, method, args, expect, *extras) -> Row:
    """A table row; `extras` are the request body (a function of the world) and/or ADMIN."""
    statuses = expect.split()
    assert len(statuses) == len(CALLERS), f"{name}: give {len(CALLERS)} statuses"
    parsed = {c: (int(s) if s.isdigit() else s) for c, s in zip(CALLERS, statuses, strict=True)}
    data = next((extra for extra in extras if callable(extra)), None)
    return Row(name, method, args or (lambda w: {}), parsed, data, ADMIN in extras)


WEB_NAMESPACES = {"hubs", "usage", "tokens", "audit", "admin", "social"}
WEB_NAMES = {"login", "logout", "password_change", "password_reset"}


def hub(w):
    return {"pk": w.hub.pk}


def pending(w):
    return {"pk": w.pending.pk}


def suspended(w):
    return {"pk": w.suspended.pk}


def revision(number):
    return lambda w: {"pk": w.hub.pk, "number": number}


def api_hub(w):
    return {"hub_pk": w.hub.pk}


def api_rev(number):
    return lambda w: {"hub_pk": w.hub.pk, "number": number}


def member(w):
    return {"pk": w.hub.pk, "member_pk": w.member.pk}


def invitation(w):
    return {"pk": w.hub.pk, "invitation_pk": w.invitation.pk}


def invitation_link(w):
    return {"pk": w.hub.pk, "token": w.invitation_token}


def grant(w):
    return {"pk": w.hub.pk, "grant_pk": w.grant.pk}


def tier(w):
    return {"pk": w.hub.pk, "tier_pk": w.tier.pk}


def server_run(w):
    return {"pk": w.hub.pk, "run_pk": w.server_run.pk}


def api_member(w):
    return {"hub_pk": w.hub.pk, "pk": w.member.pk}


def api_invitation(w):
    return {"hub_pk": w.hub.pk, "pk": w.invitation.pk}


def api_grant(w):
    return {"hub_pk": w.hub.pk, "pk": w.grant.pk}


def api_tier(w):
    return {"hub_pk": w.hub.pk, "pk": w.tier.pk}


def named(name):
    return lambda w: {"name": name}


def alice(w):
    return {"username": "alice"}


def alice_token(w):
    return {"pk": w.alice_token.pk}


def audit_event(w):
    return {"pk": w.audit_event.pk}


def body(**data):
    return lambda w: data


def ACCEPT(w):
    return {"token": w.invitation_token}


# Request bodies.
REASON = body(reason="Not now.")
ADD_BOB = body(username="bob", role="member")
RENAME = body(title="Lab 2")


def CLASS(w):
    return {
        "title": "Lab",
        "first_day": w.hub.start_date.isoformat(),
        "start_time": "09:00",
        "attendees": 1,
    }


def WEB_CLASS(w):
    return {**CLASS(w), "duration_minutes": 90, "time_zone": "UTC"}


def web_class(w):
    return {"pk": w.hub.pk, "session_pk": w.class_session.pk}


def api_class(w):
    return {"hub_pk": w.hub.pk, "pk": w.class_session.pk}


AS_MEMBER = body(role="member")
INVITE = body(email="yan@example.org", role="member")
GROUP = body(group="chem", role="member")
NEW_TOKEN = body(name="x", scope="read")
EMPTY = body()
CHANGE = body(idle_timeout_minutes=30)
BAD_CHANGE = body(expected_users=-1)

# fmt: off
ROWS = [
    # URL name, method, URL arguments, statuses for: owner co-owner member other admin anonymous
    # small-token; then the request body and admin_row (the small token is the admin's)
    # --- Web: hubs ---
    row("hubs:home", "get", None, "R R R R R R R"),
    row("hubs:list", "get", None, "200 200 200 200 200 L L"),
    row("hubs:create", "get", None, "200 200 200 200 200 L L"),
    row("hubs:detail", "get", hub, "200 200 200 404 200 L L"),
    row("hubs:status", "get", hub, "200 200 200 404 200 L L"),
    row("hubs:class_session_add", "post", hub, "R R 403 404 R L L", WEB_CLASS),
    row("hubs:class_session_remove", "post", web_class, "R R 403 404 R L L"),
    row("hubs:cancel", "post", pending, "R R 403 404 R L L"),
    row("hubs:delete", "get", hub, "200 200 403 404 200 L L"),
    row("hubs:delete", "post", hub, "R R 403 404 R L L"),
    row("hubs:approve", "post", pending, "403 403 403 403 R L L"),
    row("hubs:reject", "get", pending, "403 403 403 403 200 L L"),
    row("hubs:reject", "post", pending, "403 403 403 403 R L L", REASON),
    row("hubs:resume", "post", suspended, "403 403 403 403 R L L"),
    row("hubs:delete-now", "post", suspended, "403 403 403 403 R L L"),
    row("hubs:change", "get", hub, "200 200 403 404 200 L L"),
    row("hubs:change_preview", "post", hub, "200 200 403 404 200 L L"),
    row("hubs:revision", "get", revision(2), "200 200 200 404 200 L L"),
    row("hubs:revision_rollback", "post", revision(1), "R R 403 404 R L L"),
    row("hubs:revision_approve", "post", revision(2), "403 403 403 403 R L L"),
    row("hubs:revision_reject", "get", revision(2), "403 403 403 403 200 L L"),
    row("hubs:revision_reject", "post", revision(2), "403 403 403 403 R L L", REASON),
    row("hubs:queue", "get", None, "403 403 403 403 200 L L"),
    # --- Web: members, invitations, group grants, tiers ---
    row("hubs:members", "get", hub, "200 200 403 404 200 L L"),
    row("hubs:member_add", "post", hub, "R R 403 404 R L L", ADD_BOB),
    row("hubs:member_change", "post", member, "R R 403 404 R L L", AS_MEMBER),
    row("hubs:member_remove", "post", member, "R R 403 404 R L L"),
    row("hubs:invitation_create", "post", hub, "200 200 403 404 200 L L", INVITE),
    row("hubs:invitation_revoke", "post", invitation, "R R 403 404 R L L"),
    # The link's page posts the token (an anonymous visitor signs in first, the invitation kept
    # in the session); accepting needs the address verified for the caller: zed's, nobody's here.
    row("hubs:invitation_open", "get", hub, "200 200 200 200 200 200 200"),
    row("hubs:invitation_open", "post", hub, "R R R R R L L", ACCEPT),
    row("hubs:invitation_accept", "get", hub, "400 400 400 400 400 L L"),
    row("hubs:invitation_accept", "post", hub, "400 403 403 403 403 L L", ACCEPT),
    row("hubs:invitation_legacy", "get", invitation_link, "200 200 200 200 200 200 200"),
    row("hubs:group_grant_add", "post", hub, "R R 403 404 R L L", GROUP),
    row("hubs:group_grant_change", "post", grant, "R R 403 404 R L L", AS_MEMBER),
    row("hubs:group_grant_remove", "post", grant, "R R 403 404 R L L"),
    row("hubs:tier_create", "get", hub, "200 200 403 404 200 L L"),
    row("hubs:tier_edit", "get", tier, "200 200 403 404 200 L L"),
    row("hubs:tier_delete", "post", tier, "R R 403 404 R L L"),
    # Only the server's own user (alice's server here): not co-owners, not even admins.
    row("hubs:keep_running", "get", server_run, "200 404 404 404 404 L L"),
    # --- Web: usage ---
    row("usage:hub", "get", hub, "200 200 200 404 200 L L"),
    row("usage:mine", "get", None, "200 200 200 200 200 L L"),
    row("usage:admin", "get", None, "403 403 403 403 200 L L"),
    row("usage:estimate", "get", None, "200 200 200 200 200 L L"),
    row("usage:chart_css", "get", None, "200 200 200 200 200 200 200"),
    # --- Web: tokens, audit, the Django admin, sign-in and account pages ---
    row("tokens:list", "get", None, "200 200 200 200 200 L L"),
    row("tokens:list", "post", None, "200 200 200 200 200 L L", NEW_TOKEN),
    row("tokens:revoke", "post", alice_token, "R 404 404 404 404 L L"),
    row("audit:list", "get", None, "403 403 403 403 200 L L"),
    row("admin:index", "get", None, "L L L L 200 L L"),
    row("login", "get", None, "200 200 200 200 200 200 200"),
    row("logout", "post", None, "L L L L L L L"),
    row("password_change", "get", None, "200 200 200 200 200 L L"),
    # --- API: hubs ---
    row("hub-list", "get", None, "200 200 200 200 200 401 200"),
    row("hub-list", "post", None, "400 400 400 400 400 401 403", EMPTY),
    row("hub-detail", "get", hub, "200 200 200 404 200 401 200"),
    row("hub-detail", "delete", hub, "202 202 403 404 202 401 403"),
    row("hub-approve", "post", pending, "403 403 403 404 200 401 403", ADMIN),
    row("hub-reject", "post", pending, "403 403 403 404 200 401 403", REASON, ADMIN),
    row("hub-resume", "post", suspended, "403 403 403 404 202 401 403", ADMIN),
    row("hub-delete-now", "post", suspended, "403 403 403 404 202 401 403", ADMIN),
    row("hub-revision-list", "get", api_hub, "200 200 200 404 200 401 200"),
    row("hub-revision-list", "post", api_hub, "409 409 403 404 409 401 403", BAD_CHANGE),
    row("hub-revision-preview", "post", api_hub, "200 200 403 404 200 401 403", CHANGE),
    row("hub-revision-detail", "get", api_rev(2), "200 200 200 404 200 401 200"),
    row("hub-revision-approve", "post", api_rev(2), "403 403 403 404 200 401 403", ADMIN),
    row("hub-revision-reject", "post", api_rev(2), "403 403 403 404 200 401 403", REASON, ADMIN),
    row("hub-revision-rollback", "post", api_rev(1), "409 409 403 404 409 401 403"),
    # --- API: members, invitations, group grants, tiers ---
    row("hub-member-list", "get", api_hub, "200 200 200 404 200 401 200"),
    row("hub-member-list", "post", api_hub, "201 201 403 404 201 401 403", ADD_BOB),
    row("hub-member-detail", "get", api_member, "200 200 200 404 200 401 200"),
    row("hub-member-detail", "patch", api_member, "200 200 403 404 200 401 403", AS_MEMBER),
    row("hub-member-detail", "delete", api_member, "204 204 403 404 204 401 403"),
    row("hub-invitation-list", "get", api_hub, "200 200 403 404 200 401 200"),
    row("hub-invitation-list", "post", api_hub, "201 201 403 404 201 401 403", INVITE),
    row("hub-invitation-detail", "get", api_invitation, "200 200 403 404 200 401 200"),
    row("hub-invitation-revoke", "post", api_invitation, "200 200 403 404 200 401 403"),
    row("hub-invitation-accept", "post", api_hub, "400 403 403 403 403 401 403", ACCEPT),
    row("hub-group-grant-list", "get", api_hub, "200 200 403 404 200 401 200"),
    row("hub-group-grant-list", "post", api_hub, "201 201 403 404 201 401 403", GROUP),
    row("hub-group-grant-detail", "get", api_grant, "200 200 403 404 200 401 200"),
    row("hub-group-grant-detail", "delete", api_grant, "204 204 403 404 204 401 403"),
    row("hub-tier-list", "get", api_hub, "200 200 200 404 200 401 200"),
    row("hub-tier-detail", "get", api_tier, "200 200 200 404 200 401 200"),
    # --- API: class sessions (managers only; the owner's cap is an admin's: see its tests) ---
    row("hub-class-session-list", "get", api_hub, "200 200 403 404 200 401 200"),
    row("hub-class-session-list", "post", api_hub, "201 201 403 404 201 401 403", CLASS),
    row("hub-class-session-detail", "get", api_class, "200 200 403 404 200 401 200"),
    row("hub-class-session-detail", "patch", api_class, "200 200 403 404 200 401 403", RENAME),
    row("hub-class-session-detail", "delete", api_class, "204 204 403 404 204 401 403"),
    # --- API: usage and capacity ---
    row("hub-usage", "get", hub, "200 200 200 404 200 401 200"),
    row("hub-usage-csv", "get", hub, "200 200 403 404 200 401 200"),
    row("user-usage", "get", alice, "200 404 404 404 200 401 200"),
    row("usage-totals", "get", None, "403 403 403 403 200 401 403"),
    row("usage-totals-csv", "get", None, "403 403 403 403 200 401 403"),
    row("gpu-capacity", "get", None, "200 200 200 200 200 401 200"),
    # --- API: catalogues ---
    row("hardware-option-list", "get", None, "200 200 200 200 200 401 200"),
    row("hardware-option-detail", "get", named("small"), "200 200 200 200 200 401 200"),
    row("gpu-type-list", "get", None, "200 200 200 200 200 401 200"),
    row("gpu-type-detail", "get", named("none"), "404 404 404 404 404 401 404"),
    row("image-list", "get", None, "200 200 200 200 200 401 200"),
    row("image-detail", "get", named("scipy"), "200 200 200 200 200 401 200"),
    row("storage-option-list", "get", None, "200 200 200 200 200 401 200"),
    row("storage-option-detail", "get", named("none"), "404 404 404 404 404 401 404"),
    # --- API: tokens and the audit log ---
    row("api-token-list", "get", None, "200 200 200 200 200 401 200"),
    row("api-token-list", "post", None, "201 201 201 201 201 401 403", NEW_TOKEN),
    row("api-token-detail", "get", alice_token, "200 404 404 404 404 401 200"),
    row("api-token-detail", "delete", alice_token, "204 404 404 404 404 401 403"),
    row("audit-event-list", "get", None, "403 403 403 403 200 401 403", ADMIN),
    row("audit-event-detail", "get", audit_event, "403 403 403 403 200 401 403", ADMIN),
    # --- API: root, schema, docs ---
    row("api-root", "get", None, "200 200 200 200 200 401 200"),
    row("api-schema", "get", None, "200 200 200 200 200 200 200"),
    row("api-docs", "get", None, "200 200 200 200 200 200 200"),
]
# fmt: on


# URL names covered elsewhere, with the reason; anything else must have a row above.
NOT_HERE = {
    "password_change_done": "Django's confirmation page after password_change (login required)",
    "password_reset": "Django's reset form, public by design; the same for every caller",
    "password_reset_done": "Django's public confirmation page",
    "password_reset_confirm": "Django's signed one-time link",
    "password_reset_complete": "Django's public confirmation page",
    "social:begin": "the OIDC/GitHub flow, tested against the real provider in the SSO tests",
    "social:complete": "the OIDC/GitHub flow, tested against the real provider in the SSO tests",
}


def url_names() -> set[str]:
    """Every named URL pattern of the portal, with its namespace (the Django admin's aside)."""
    names: set[str] = set()

    def walk(patterns, namespace=None):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = pattern.namespace
                full = f"{namespace}:{inner}" if namespace and inner else inner or namespace
                if full == "admin":
                    names.add("admin:index")  # the admin site is Django's; one row for it
                    continue
                walk(pattern.url_patterns, full)
            elif isinstance(pattern, URLPattern):
                if pattern.name:
                    names.add(f"{namespace}:{pattern.name}" if namespace else pattern.name)
                else:
                    names.add(f"<unnamed {pattern.pattern}>")

    walk(get_resolver().url_patterns)
    return names


def test_every_url_pattern_is_covered():
    covered = {r.name for r in ROWS} | set(NOT_HERE)
    missing = sorted(url_names() - covered)
    assert not missing, f"URL patterns without a row in the authorization matrix: {missing}"


def test_rows_name_existing_patterns():
    stale = sorted({r.name for r in ROWS} - url_names())
    assert not stale, f"rows for URL names that no longer exist: {stale}"


# --- The world every row runs against -----------------------------------------------------------


@pytest.fixture
def world(db, queued):
    alice = UserFactory(username="alice")
    dana = UserFactory(username="dana")
    erin = UserFactory(username="erin")
    UserFactory(username="bob")
    AdminFactory(username="charlie")
    today = timezone.localdate()

    def make(slug: str, state: str, **extra):
        made = HubFactory(owner=alice, slug=slug, display_name=slug.title(), state=state, **extra)
        Member.objects.create(hub=made, user=dana, role=Member.Role.CO_OWNER)
        Member.objects.create(hub=made, user=erin, role=Member.Role.MEMBER)
        return made

    running = make("running", HubState.RUNNING)
    changes.ensure_initial_revision(running)
    spec = revisions.form_data(revisions.spec_of_hub(running))
    # Beyond the self-service policy, so it waits for an admin as revision 2.
    change = changes.request_change(running, alice, {**spec, "expected_users": "5000"})
    assert change.number == 2 and change.state == "pending"
    pending_hub = make("pending", HubState.PENDING)
    suspended_hub = make(
        "suspended",
        HubState.SUSPENDED,
        start_date=today - datetime.timedelta(days=20),
        end_date=today + datetime.timedelta(days=5),
    )
    from portal.accounts import tokens
    from portal.audit.log import record
    from portal.hubs import members

    alice_token, _ = tokens.issue(alice, name="listed", scope="read")
    invited = members.invite(running, alice, {"email": "zed@example.org", "role": "member"})
    return SimpleNamespace(
        hub=running,
        member=running.members.get(user=erin),
        tier=members.default_tier(running),
        invitation=invited.invitation,
        invitation_token=invited.token,
        grant=members.grant_group(running, alice, {"group": "physics", "role": "member"}),
        pending=pending_hub,
        suspended=suspended_hub,
        alice_token=alice_token,
        audit_event=record("test.matrix", running, actor=None),
        server_run=ServerRun.objects.create(
            hub=running,
            username="alice",
            started=timezone.now(),
            last_activity=timezone.now(),
            observed=timezone.now(),
        ),
        class_session=ClassSession.objects.create(
            hub=running,
            title="Lab",
            first_day=running.start_date,
            start_time=datetime.time(9),
            attendees=1,
        ),
    )


def _client(row: Row, caller: str, api_client: APIClient, web_client: Client):
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    if caller == "anonymous":
        return api_client if row.is_api else web_client
    if caller == "small_token":
        if row.admin_row:
            who, scope = "charlie", "read" if row.method in ("get", "head") else "write"
        else:
            who, scope = "alice", "read"
        header = f"Token {api_token(users.get(username=who), scope)}"
        client = api_client if row.is_api else web_client
        if row.is_api:
            client.credentials(HTTP_AUTHORIZATION=header)
        else:
            client.defaults["HTTP_AUTHORIZATION"] = header
        return client
    user = users.get(username=USERS[caller])
    if row.is_api:
        api_client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
        return api_client
    web_client.force_login(user)
    return web_client


def outcome(response) -> int | str:
    """The status, or L (a redirect to sign in) / R (any other redirect)."""
    if response.status_code in (301, 302, 303):
        return "L" if "/login/" in response["Location"] else "R"
    return response.status_code


def _call(world, r: Row, caller: str) -> tuple[int | str, str]:
    client = _client(r, caller, APIClient(), Client())
    url = reverse(r.name, kwargs=r.args(world))
    data = r.data(world) if r.data else {}
    call = getattr(client, r.method)
    response = call(url, data, format="json") if r.is_api else call(url, data)
    return outcome(response), f"{r.method.upper()} {url}: {response.content[:200]!r}"


@pytest.mark.parametrize("r", ROWS, ids=[f"{r.method}-{r.name}" for r in ROWS])
def test_authorization(world, r: Row):
    """Each caller in turn, each in a savepoint rolled back after it, on one world."""
    from django.db import transaction

    got, details = {}, {}
    for caller in CALLERS:
        with transaction.atomic():
            got[caller], details[caller] = _call(world, r, caller)
            transaction.set_rollback(True)
    if os.environ.get("MATRIX_OBSERVE"):  # prints the observed line, to review and paste
        with open(os.environ["MATRIX_OBSERVE"], "a") as out:
            out.write(f"{r.method} {r.name}: {' '.join(str(got[c]) for c in CALLERS)}\n")
        return
    wrong = {c: (got[c], r.expect[c], details[c]) for c in CALLERS if got[c] != r.expect[c]}
    assert not wrong, "caller: (got, expected, answer) " + str(wrong)
