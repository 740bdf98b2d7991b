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
from tests.factories import GpuTypeFactory, HubFactory, api_token, course_hub

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


# --- Class sessions: declared, capped, refused and removed, in the hub's history ---------------


@pytest.fixture
def course(alice):
    """A running course of alice's with two H100 seats."""
    return course_hub(
        alice, start_date=datetime.date(2027, 3, 1), end_date=datetime.date(2027, 6, 30)
    )


LAB = {
    "title": "Lab",
    "first_day": "2027-03-02",
    "start_time": "09:00",
    "duration_minutes": "90",
    "time_zone": "Europe/Zurich",
    "weekly": "on",
    "last_day": "2027-05-25",
    "attendees": "42",
    "gpu_attendees": "2",
}


def session_events():
    return AuditEvent.objects.filter(action__startswith="classsession.").order_by("pk")


def test_a_session_added_and_removed_on_the_hubs_page_is_recorded(client, course, alice):
    client.force_login(alice)
    response = client.post(
        reverse("hubs:class_session_add", args=[course.pk]), LAB, REMOTE_ADDR="192.0.2.9"
    )
    assert response.status_code == 302
    added = session_events().get()
    assert (added.action, added.actor, added.via, added.source_ip) == (
        "classsession.created",
        alice,
        "web",
        "192.0.2.9",
    )
    assert added.object_repr == "Lab (stats-101)"
    assert {
        key: added.details[key]
        for key in ("hub_id", "title", "first_day", "start_time", "time_zone", "weekly")
    } == {
        "hub_id": course.pk,
        "title": "Lab",
        "first_day": "2027-03-02",
        "start_time": "09:00:00",
        "time_zone": "Europe/Zurich",
        "weekly": True,
    }
    assert (added.details["attendees"], added.details["gpu_attendees"]) == (42, 2)
    assert added.details["created_by_id"] == alice.pk

    session_id = added.object_id
    response = client.post(reverse("hubs:class_session_remove", args=[course.pk, session_id]))
    assert response.status_code == 302
    removed = session_events().last()
    assert (removed.action, removed.actor, removed.object_id) == (
        "classsession.deleted",
        alice,
        session_id,
    )
    assert removed.details["title"] == "Lab"


def test_an_admins_cap_and_refusal_in_the_api_are_recorded_with_the_admin(course, alice, charlie):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(alice)}")
    url = f"/api/v1/hubs/{course.pk}/class-sessions/"
    made = api.post(url, {**LAB, "weekly": True}, format="json")
    assert made.status_code == 201, made.json()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(charlie)}")
    session = f"{url}{made.json()['id']}/"
    assert api.patch(session, {"max_placeholders": 10}, format="json").status_code == 200
    refusal = {"refused": True, "admin_reason": "Exam week"}
    assert api.patch(session, refusal, format="json").status_code == 200

    created, capped, refused = session_events()
    assert (created.action, created.actor, created.via) == ("classsession.created", alice, "api")
    assert (capped.action, capped.actor, capped.via) == ("classsession.changed", charlie, "api")
    assert (capped.details["max_placeholders"], capped.details["refused"]) == (10, False)
    assert (refused.actor, refused.details["refused"]) == (charlie, True)
    assert refused.details["admin_reason"] == "Exam week"
    # The author of the row is alice; the admin who changed it is who the log names.
    assert refused.details["created_by_id"] == alice.pk


def test_a_refusal_in_the_django_admin_is_recorded_with_the_admin(client, course, charlie):
    from portal.hubs.models import ClassSession

    lab = ClassSession.objects.create(
        hub=course,
        title="Lab",
        first_day=datetime.date(2027, 3, 2),
        start_time=datetime.time(9, 0),
        attendees=10,
        created_by=course.owner,
    )
    client.force_login(charlie)
    url = reverse("admin:hubs_classsession_change", args=[lab.pk])
    form = client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(hub=course.pk, refused="on", admin_reason="No room that week")
    data.update(first_day="2027-03-02", start_time="09:00:00")
    data.pop("weekly", None)
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    changed = session_events().last()
    assert (changed.action, changed.actor, changed.via) == (
        "classsession.changed",
        charlie,
        "admin",
    )
    assert changed.details["refused"] is True
    assert changed.details["admin_reason"] == "No room that week"


def test_a_session_made_outside_a_request_names_its_author(course, alice):
    from portal.hubs.models import ClassSession

    ClassSession.objects.create(
        hub=course,
        title="Lab",
        first_day=datetime.date(2027, 3, 2),
        start_time=datetime.time(9, 0),
        attendees=10,
        created_by=alice,
    )
    assert (session_events().get().actor, session_events().get().via) == (alice, "system")


def test_refused_attempts_record_nothing(client, course, bob):
    """A member adding or removing (403), the owner capping through the API (403): no row
    changes, so no record."""
    from portal.hubs.models import ClassSession

    lab = ClassSession.objects.create(
        hub=course, title="Lab", first_day=datetime.date(2027, 3, 2),
        start_time=datetime.time(9, 0), attendees=10,
    )  # fmt: skip
    Member.objects.create(hub=course, user=bob, role=Member.Role.MEMBER)
    owners_token = api_token(course.owner)
    before = AuditEvent.objects.count()

    client.force_login(bob)
    assert client.post(reverse("hubs:class_session_add", args=[course.pk]), LAB).status_code == 403
    remove = reverse("hubs:class_session_remove", args=[course.pk, lab.pk])
    assert client.post(remove).status_code == 403
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {owners_token}")
    url = f"/api/v1/hubs/{course.pk}/class-sessions/{lab.pk}/"
    assert api.patch(url, {"refused": True}, format="json").status_code == 403
    assert api.patch(url, {"attendees": 43}, format="json").status_code == 400  # bad input
    assert AuditEvent.objects.count() == before
    assert ClassSession.objects.get(pk=lab.pk).refused is False


def test_the_hub_filter_finds_everything_of_a_hub(client, course, alice, bob, charlie):
    from portal.hubs.models import ClassSession

    other = HubFactory(owner=bob, slug="other")
    client.force_login(alice)
    client.post(reverse("hubs:class_session_add", args=[course.pk]), LAB)
    Member.objects.create(hub=course, user=bob, role=Member.Role.MEMBER)
    ClassSession.objects.create(
        hub=other, title="Theirs", first_day=other.start_date,
        start_time=datetime.time(9, 0), attendees=1,
    )  # fmt: skip
    log.record("hub.transition", course, actor=charlie, to_state="expiring")
    log.record("hub.transition", other, actor=charlie, to_state="expiring")

    client.force_login(charlie)
    page = client.get(reverse("audit:list"), {"hub": course.pk})
    assert page.status_code == 200
    assert [(e.action, e.object_repr) for e in reversed(page.context["page"])] == [
        ("classsession.created", "Lab (stats-101)"),
        ("member.created", str(Member.objects.get(hub=course))),
        ("hub.transition", str(course)),
    ]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(charlie)}")
    body = api.get("/api/v1/audit/", {"hub": other.pk}).json()
    assert [e["action"] for e in body["results"]] == ["hub.transition", "classsession.created"]
    assert client.get(reverse("audit:list"), {"hub": "stats-101"}).status_code == 400
    assert client.get(reverse("audit:list"), {"hub": str(2**70)}).status_code == 400
    # Admins find it from the hub's page; its owner does not get the link (the log is admins').
    link = f'href="{reverse("audit:list")}?hub={course.pk}"'
    assert link in client.get(reverse("hubs:detail", args=[course.pk])).content.decode()
    client.force_login(alice)
    assert link not in client.get(reverse("hubs:detail", args=[course.pk])).content.decode()
    assert api.get("/api/v1/audit/", {"hub": "1.5"}).status_code == 400


def test_an_owner_cannot_read_their_own_hubs_audit_trail(client, course, alice):
    """The hub filter is the admins' log narrowed, not a way in for the hub's owner."""
    client.force_login(alice)
    assert client.get(reverse("audit:list"), {"hub": course.pk}).status_code == 403
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(alice)}")
    assert api.get("/api/v1/audit/", {"hub": course.pk}).status_code == 403
