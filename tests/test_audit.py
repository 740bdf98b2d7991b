"""The audit log: what gets recorded (by whom, from where, through which channel), and the
admins' page and API to browse it."""

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from portal.audit import log
from portal.audit.models import AuditEvent
from portal.hubs import revisions
from portal.hubs.lifecycle import HubState
from portal.hubs.models import GpuType, Member
from portal.hubs.services import changes
from tests.factories import GpuTypeFactory, HubFactory, api_token

pytestmark = pytest.mark.django_db


def events(action: str):
    return AuditEvent.objects.filter(action=action).order_by("pk")


def test_web_approval_records_actor_ip_and_channel(client, charlie, hub, queued):
    client.force_login(charlie)
    client.post(reverse("hubs:approve", args=[hub.pk]), REMOTE_ADDR="192.0.2.7")
    event = events("hub.transition").get(details__to_state=HubState.APPROVED)
    assert event.actor == charlie and event.actor_username == "charlie"
    assert event.source_ip == "192.0.2.7" and event.via == AuditEvent.Via.WEB
    assert (event.object_type, event.object_id) == ("hubs.hub", str(hub.pk))
    assert event.details["from_state"] == HubState.PENDING


def test_api_approval_is_recorded_as_api(charlie, hub, queued):
    client = APIClient(REMOTE_ADDR="198.51.100.4")
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(charlie)}")
    assert client.post(f"/api/v1/hubs/{hub.pk}/approve/", {}, format="json").status_code == 200
    event = events("hub.transition").get(details__to_state=HubState.APPROVED)
    assert (event.actor, event.via, event.source_ip) == (charlie, "api", "198.51.100.4")


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(client, charlie, hub, settings):
    client.force_login(charlie)
    forged = {"REMOTE_ADDR": "192.0.2.7", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    client.post(reverse("hubs:cancel", args=[hub.pk]), **forged)
    assert events("hub.transition").last().source_ip == "192.0.2.7"

    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    proxied = {"REMOTE_ADDR": "10.1.2.3", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 203.0.113.9, 10.0.0.5"}
    hub2 = HubFactory(owner=hub.owner, slug="second")
    client.post(reverse("hubs:cancel", args=[hub2.pk]), **proxied)
    # The last hop the trusted proxy saw; earlier ones could be forged by the client.
    assert events("hub.transition").last().source_ip == "203.0.113.9"


def test_system_transitions_have_no_actor(alice, hub):
    from portal.hubs.lifecycle import transition

    transition(hub.pk, HubState.PENDING, HubState.APPROVED, None, "policy")
    event = events("hub.transition").get()
    assert event.actor is None and event.actor_username == "" and event.via == "system"


def test_change_request_approval_and_rejection_are_recorded(running_hub, alice, charlie, queued):
    changes.ensure_initial_revision(running_hub)

    def change(users: int) -> dict:
        data = revisions.form_data(revisions.spec_of_hub(running_hub))
        return {**data, "expected_users": str(users)}

    first = changes.request_change(running_hub, alice, change(5000))
    assert first.state == "pending"
    changes.reject_change(first, charlie, "Too many")
    second = changes.request_change(running_hub, alice, change(4000))
    changes.approve_change(second, charlie, "fine")
    requested = events("hub.change_requested").filter(actor=alice)
    # Revision 1 (the spec the hub was approved with) is recorded when it is first written.
    assert [e.details["number"] for e in requested] == [1, first.number, second.number]
    rejected = events("hub.change_rejected").get()
    assert rejected.actor == charlie and rejected.details["reason"] == "Too many"
    approved = events("hub.change_approved").get()
    assert approved.actor == charlie and approved.object_id == str(second.pk)


def test_membership_changes_are_recorded(hub, bob):
    person = Member.objects.create(hub=hub, user=bob, role=Member.Role.MEMBER)
    person.role = Member.Role.CO_OWNER
    person.save()
    person.delete()
    recorded = AuditEvent.objects.filter(object_type="hubs.member").order_by("pk")
    assert [e.action for e in recorded] == [
        "member.created",
        "member.changed",
        "member.deleted",
    ]
    assert recorded[1].details["role"] == "co-owner" and recorded[0].details["user_id"] == bob.pk


def test_django_admin_actions_are_recorded(client, charlie):
    gpu = GpuTypeFactory(name="spare")
    client.force_login(charlie)
    url = reverse("admin:hubs_gputype_delete", args=[gpu.pk])
    response = client.post(url, {"post": "yes"}, REMOTE_ADDR="192.0.2.8")
    assert response.status_code == 302
    assert not GpuType.objects.filter(pk=gpu.pk).exists()
    event = events("admin.deletion").get()
    assert (event.actor, event.via, event.source_ip) == (charlie, "admin", "192.0.2.8")
    assert (event.object_type, event.object_id, event.object_repr) == (
        "hubs.gputype",
        str(gpu.pk),
        str(gpu),
    )


def test_tasks_record_as_task(alice, hub):
    from portal.hubs.tasks import run_expiry

    today = timezone.localdate()
    type(hub).objects.filter(pk=hub.pk).update(
        state=HubState.RUNNING,
        start_date=today - datetime.timedelta(days=9),
        end_date=today - datetime.timedelta(days=1),
    )
    run_expiry.apply()
    event = events("hub.transition").last()
    assert event is not None and event.via == "task" and event.actor is None
    assert log.current().via == "system"  # the context ends with the task


def test_secret_looking_details_are_dropped(alice):
    event = log.record(
        "test.secrets", alice, token="hod_x", client_secret="s", password="p", api_key="k", ok=1
    )
    assert event.details == {"ok": 1}


def test_a_rolled_back_action_leaves_no_record(alice):
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        log.record("test.rollback", alice)
        raise RuntimeError
    assert not events("test.rollback").exists()


# --- Browsing -----------------------------------------------------------------------------------


@pytest.fixture
def logged(alice, bob):
    log.record("hub.transition", alice, actor=alice, to_state="approved")
    log.record("token.created", bob, actor=bob)
    with log.context(log.Context(via="web", ip="192.0.2.50")):
        log.record("member.created", bob, actor=alice)
    AuditEvent.objects.filter(action="token.created").update(
        created=timezone.now() - datetime.timedelta(days=10)
    )


def test_page_is_for_admins_only(client, alice):
    url = reverse("audit:list")
    assert client.get(url).status_code == 302
    client.force_login(alice)
    assert client.get(url).status_code == 403


@pytest.mark.parametrize(
    ("query", "actions"),
    [
        ({}, {"hub.transition", "token.created", "member.created"}),
        ({"actor": "ALICE"}, {"hub.transition", "member.created"}),
        ({"action": "token."}, {"token.created"}),
        ({"object_type": "auth.user"}, {"hub.transition", "token.created", "member.created"}),
        ({"ip": "192.0.2.50"}, {"member.created"}),
        ({"ip": "not-an-ip"}, set()),
        ({"via": "web"}, {"member.created"}),
        ({"until": str(timezone.localdate() - datetime.timedelta(days=5))}, {"token.created"}),
        ({"since": str(timezone.localdate())}, {"hub.transition", "member.created"}),
    ],
)
def test_page_and_api_filter(client, charlie, logged, query, actions):
    client.force_login(charlie)
    response = client.get(reverse("audit:list"), query)
    assert response.status_code == 200
    assert {e.action for e in response.context["page"]} == actions
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(charlie)}")
    body = api.get("/api/v1/audit/", query).json()
    assert {e["action"] for e in body["results"]} - {"token.created"} == actions - {"token.created"}


def test_bad_filters_are_400_not_500(client, charlie, logged):
    client.force_login(charlie)
    assert client.get(reverse("audit:list"), {"since": "yesterday"}).status_code == 400
    assert client.get(reverse("audit:list"), {"via": "carrier-pigeon"}).status_code == 400
    api = APIClient()
    api.force_authenticate(charlie)
    assert api.get("/api/v1/audit/", {"since": "yesterday"}).status_code == 400


def test_page_paginates(client, charlie, alice):
    for number in range(60):
        log.record("test.many", alice, actor=alice, number=number)
    client.force_login(charlie)
    first = client.get(reverse("audit:list"), {"action": "test."})
    assert len(first.context["page"]) == 50 and "page=2" in first.content.decode()
    second = client.get(reverse("audit:list"), {"action": "test.", "page": 2})
    assert len(second.context["page"]) == 10
    assert client.get(reverse("audit:list"), {"page": "zzz"}).status_code == 200


@pytest.mark.parametrize(("who", "status"), [("alice", 403), ("charlie", 200), (None, 401)])
def test_api_is_for_admins_only(request, who, status, logged):
    api = APIClient()
    if who:
        api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(request.getfixturevalue(who))}")
    assert api.get("/api/v1/audit/").status_code == status


def test_invitations_are_recorded_without_their_token(hub, alice, mailoutbox):
    from portal.hubs import members

    invited = members.invite(hub, alice, {"email": "dana@example.org", "role": "member"})
    event = AuditEvent.objects.get(action="invitation.created")
    assert event.actor == alice and event.details["email"] == "dana@example.org"
    assert invited.token not in str(event.details)
    assert invited.invitation.token_hash not in str(event.details)
    assert not any("token" in key or "hash" in key for key in event.details)
