"""Classes that start warm, in the portal: sessions declared on the hub's page and through the
API by who manages the hub (one validation for both), their occurrences in the session's time
zone, the room held for each (within the hub's quota, capped or refused by an admin), and what
the hub's spec renders while one is held.

The placeholders on a real control plane: tests/cluster/test_warm_classes.py."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest
from django.urls import reverse

from portal.hubs import classes
from portal.hubs.hubspec import from_hub
from portal.hubs.lifecycle import HubState
from portal.hubs.models import ClassSession, Member
from provisioning import render
from tests.factories import HubFactory, UserFactory, api_token, course_hub

pytestmark = pytest.mark.django_db

CHICAGO = zoneinfo.ZoneInfo("America/Chicago")


@pytest.fixture
def course(alice):
    """The 40 + 2 course: 42 users, one H100 per GPU server, two seats, running this autumn."""
    return course_hub(
        alice, start_date=datetime.date(2026, 9, 1), end_date=datetime.date(2026, 12, 18)
    )


def weekly_lab(hub, **fields) -> ClassSession:
    values = dict(
        hub=hub,
        title="Lab",
        first_day=datetime.date(2026, 10, 20),  # a Tuesday, before the clocks go back
        start_time=datetime.time(9, 0),
        duration_minutes=90,
        time_zone="America/Chicago",
        weekly=True,
        last_day=datetime.date(2026, 11, 10),
        attendees=42,
        gpu_attendees=2,
    )
    return ClassSession.objects.create(**{**values, **fields})


def test_weekly_sessions_stay_at_local_time_across_the_change_of_clocks(course):
    lab = weekly_lab(course)
    start = datetime.datetime(2026, 10, 1, tzinfo=datetime.UTC)
    found = list(classes.occurrences([lab], course, start, start + datetime.timedelta(days=60)))
    assert [o.starts.astimezone(CHICAGO).strftime("%m-%d %H:%M") for o in found] == [
        "10-20 09:00",
        "10-27 09:00",
        "11-03 09:00",
        "11-10 09:00",
    ]
    # CDT, then CST: the same local time is an hour later in UTC after 1 November.
    assert [o.starts.astimezone(datetime.UTC).hour for o in found] == [14, 14, 15, 15]
    assert {(o.servers, o.gpu_servers) for o in found} == {(40, 2)}


def test_room_is_held_from_the_lead_time_until_the_end(course, settings):
    settings.WARM_LEAD_MINUTES = 20
    weekly_lab(course)
    starts = datetime.datetime(2026, 10, 27, 9, 0, tzinfo=CHICAGO)

    def at(minutes: int) -> tuple[int, int]:
        return classes.placeholders_at(course, starts + datetime.timedelta(minutes=minutes))

    assert at(-21) == (0, 0)
    assert at(-19) == (40, 2)
    assert at(89) == (40, 2)
    assert at(90) == (0, 0)


def test_an_admins_cap_and_refusal_hold_less_or_nothing(course):
    lab = weekly_lab(course, max_placeholders=10)
    starts = datetime.datetime(2026, 10, 27, 9, 0, tzinfo=CHICAGO)
    assert classes.placeholders_at(course, starts) == (8, 2)  # GPU servers first
    lab.refused = True
    lab.save()
    assert classes.placeholders_at(course, starts) == (0, 0)


def test_a_suspended_hub_holds_no_room(course):
    weekly_lab(course)
    course.state = HubState.SUSPENDED
    course.save()
    starts = datetime.datetime(2026, 10, 27, 9, 0, tzinfo=CHICAGO)
    assert classes.placeholders_at(course, starts) == (0, 0)


def test_while_a_class_is_held_the_quota_grows_by_exactly_its_placeholders(course):
    weekly_lab(course)
    during = datetime.datetime(2026, 10, 27, 9, 30, tzinfo=CHICAGO)
    spec = from_hub(course, now=during)
    assert (spec.warm_servers, spec.warm_gpu_servers) == (40, 2)
    quota = render.quota_totals(spec)
    assert quota["pods"] == "84"  # 42 servers and 42 placeholders
    assert quota["requests.nvidia.com/gpu"] == "4"  # 2 seats and 2 GPU placeholders
    objects = {(m["kind"], m["metadata"]["name"]): m for m in render.render_hub(spec)}
    gpu = objects["Deployment", render.GPU_PLACEHOLDERS]["spec"]
    pod = gpu["template"]["spec"]
    assert gpu["replicas"] == 2
    assert pod["priorityClassName"] == render.PLACEHOLDER_PRIORITY_CLASS
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert objects["Deployment", render.PLACEHOLDERS]["spec"]["replicas"] == 40
    # Between classes: no placeholders, the quota as always.
    after = from_hub(course, now=during + datetime.timedelta(hours=2))
    assert render.placeholders(after) == []
    assert render.quota_totals(after)["pods"] == "42"


def _url(hub) -> str:
    return f"/api/v1/hubs/{hub.pk}/class-sessions/"


LAB = {
    "title": "Lab",
    "first_day": "2026-10-20",
    "start_time": "09:00",
    "time_zone": "America/Chicago",
    "weekly": True,
    "attendees": 42,
    "gpu_attendees": 2,
}


def test_the_owner_declares_a_session_others_cannot_see_or_add_one(api, course, alice, bob):
    api.force_authenticate(alice)
    made = api.post(_url(course), LAB, format="json")
    assert made.status_code == 201, made.json()
    assert made.json()["placeholders"] == {"servers": 40, "gpu_servers": 2}

    api.force_authenticate(bob)
    assert api.get(_url(course)).status_code == 404
    assert api.post(_url(course), LAB, format="json").status_code == 404
    api.force_authenticate(None)
    assert api.get(_url(course)).status_code in (401, 403)
    assert ClassSession.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"attendees": 43}, "attendees"),  # beyond the hub's 42 servers
        ({"gpu_attendees": 3}, "gpu_attendees"),  # beyond its two GPU seats
        ({"first_day": "2027-01-05"}, "first_day"),  # after the hub's end
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
    ],
)
def test_room_beyond_the_hub_is_refused_with_the_field(api, course, alice, fields, field):
    api.force_authenticate(alice)
    response = api.post(_url(course), {**LAB, **fields}, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not ClassSession.objects.exists()


def test_only_an_admin_caps_or_refuses_and_sees_every_reservation(
    api, client, course, alice, charlie
):
    lab = weekly_lab(course, first_day=datetime.date.today(), last_day=None)
    course.end_date = datetime.date.today() + datetime.timedelta(days=30)
    course.save()
    api.force_authenticate(alice)
    refused = api.patch(f"{_url(course)}{lab.pk}/", {"refused": True}, format="json")
    assert refused.status_code == 403
    lab.refresh_from_db()
    assert lab.refused is False

    api.force_authenticate(charlie)
    capped = api.patch(f"{_url(course)}{lab.pk}/", {"max_placeholders": 12}, format="json")
    assert capped.status_code == 200, capped.json()
    assert capped.json()["placeholders"] == {"servers": 10, "gpu_servers": 2}

    client.force_login(charlie)
    page = client.get(reverse("usage:admin")).content.decode()
    table = page[page.index('id="class-reservation-list"') :]
    assert "stats-101" in table and "capped at 12" in table
    assert "2 \N{MULTIPLICATION SIGN} 1 NVIDIA H100" in table


def test_the_hubs_page_shows_its_sessions_and_their_room(client, course, alice, bob):
    weekly_lab(course, max_placeholders=12)
    client.force_login(alice)
    page = client.get(reverse("hubs:detail", args=[course.pk])).content.decode()
    section = page[page.index('id="class-sessions"') :]
    assert "weekly on Tuesdays from 2026-10-20 to 2026-11-10, 09:00 (America/Chicago)" in section
    assert "10 placeholders and 2 with GPUs (capped by an admin)" in section
    client.force_login(bob)
    assert client.get(reverse("hubs:detail", args=[course.pk])).status_code == 404


# --- The hub's page: declaring and removing sessions ------------------------------------------

FORM = {
    "title": "Lab",
    "first_day": "2026-10-20",
    "start_time": "09:00",
    "duration_minutes": "90",
    "time_zone": "America/Chicago",
    "weekly": "on",
    "last_day": "2026-11-10",
    "attendees": "42",
    "gpu_attendees": "2",
}


def _add(hub) -> str:
    return reverse("hubs:class_session_add", args=[hub.pk])


def _remove(hub, session) -> str:
    return reverse("hubs:class_session_remove", args=[hub.pk, session.pk])


def test_the_owner_adds_and_removes_a_session_on_the_hubs_page(client, course, alice):
    client.force_login(alice)
    page = client.get(reverse("hubs:detail", args=[course.pk])).content.decode()
    assert 'id="class-session-form"' in page and "No class sessions yet." in page

    added = client.post(_add(course), FORM)
    assert added.status_code == 302
    lab = ClassSession.objects.get(hub=course)
    assert (lab.title, lab.weekly, lab.time_zone, lab.attendees, lab.gpu_attendees) == (
        "Lab",
        True,
        "America/Chicago",
        42,
        2,
    )
    assert lab.created_by == alice
    page = client.get(added["Location"]).content.decode()
    row = page[page.index(f'id="class-session-{lab.pk}"') :]
    assert "weekly on Tuesdays from 2026-10-20 to 2026-11-10, 09:00 (America/Chicago)" in row
    assert "40 placeholders and 2 with GPUs" in row and "as asked" in row

    removed = client.post(_remove(course, lab))
    assert removed.status_code == 302
    assert not ClassSession.objects.exists()


def test_a_co_owner_and_an_admin_declare_sessions_too(client, course, bob, charlie):
    Member.objects.create(hub=course, user=bob, role=Member.Role.CO_OWNER)
    for user in (bob, charlie):
        client.force_login(user)
        assert client.post(_add(course), {**FORM, "title": user.username}).status_code == 302
    assert sorted(ClassSession.objects.values_list("title", flat=True)) == ["bob", "charlie"]


def test_the_page_shows_a_cap_and_a_refusal_as_an_admin_left_them(client, course, alice):
    weekly_lab(course, title="Capped", max_placeholders=12)
    weekly_lab(course, title="Refused", refused=True, admin_reason="exam week")
    client.force_login(alice)
    page = client.get(reverse("hubs:detail", args=[course.pk])).content.decode()
    assert "capped at 12" in page
    assert "refused by an admin: exam week" in page


def test_members_outsiders_and_anonymous_callers_change_no_session(client, course, bob):
    """A member (403 from the permission check), an outsider with a leaked URL (404, as for a
    hub they cannot see), a session of another hub through this hub's URL (404), nobody
    signed in (to the sign-in page): no session is added or removed."""
    lab = weekly_lab(course)
    elsewhere = HubFactory(owner=bob, slug="bobs-hub", expected_users=5)
    theirs = ClassSession.objects.create(
        hub=elsewhere, title="Theirs", first_day=elsewhere.start_date,
        start_time=datetime.time(10, 0), attendees=5,
    )  # fmt: skip
    member = UserFactory(username="dora")
    Member.objects.create(hub=course, user=member, role=Member.Role.MEMBER)
    outsider = UserFactory(username="eve")

    client.force_login(member)
    page = client.get(reverse("hubs:detail", args=[course.pk])).content.decode()
    assert 'id="class-session-form"' not in page and "Remove" not in page
    assert client.post(_add(course), FORM).status_code == 403
    assert client.post(_remove(course, lab)).status_code == 403

    client.force_login(outsider)
    assert client.post(_add(course), FORM).status_code == 404
    assert client.post(_remove(course, lab)).status_code == 404

    client.force_login(course.owner)
    assert client.post(_remove(course, theirs)).status_code == 404

    client.logout()
    anonymous = client.post(_add(course), FORM)
    assert anonymous.status_code == 302 and "/login" in anonymous["Location"]
    assert client.post(_remove(course, lab)).status_code == 302

    assert set(ClassSession.objects.values_list("pk", flat=True)) == {lab.pk, theirs.pk}


BAD_SESSIONS = [
    ({"last_day": "2026-10-13"}, "last_day"),  # ends before it starts
    ({"time_zone": "Mars/Olympus"}, "time_zone"),
    ({"attendees": "43"}, "attendees"),  # beyond the hub's 42 servers
    ({"gpu_attendees": "3"}, "gpu_attendees"),  # beyond its two GPU seats
    ({"first_day": "2027-01-05", "last_day": ""}, "first_day"),  # after the hub's end
    ({"weekly": "", "last_day": "2026-11-10"}, "last_day"),  # a one-off has no last day
    ({"duration_minutes": "5"}, "duration_minutes"),
    ({"start_time": ""}, "start_time"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_SESSIONS)
def test_bad_input_is_a_message_on_the_page_and_changes_nothing(
    client, course, alice, fields, field
):
    client.force_login(alice)
    response = client.post(_add(course), {**FORM, **fields})
    assert response.status_code == 400
    form = response.context["class_session_form"]
    assert field in form.errors
    assert f'id="{field}-errors"' in response.content.decode()
    assert not ClassSession.objects.exists()


@pytest.mark.parametrize(("fields", "field"), BAD_SESSIONS)
def test_the_api_refuses_the_same_input_with_the_same_message(
    api, client, course, alice, fields, field
):
    client.force_login(alice)
    page = client.post(_add(course), {**FORM, **fields}).context["class_session_form"]
    body = {name: value for name, value in {**FORM, **fields}.items() if value != ""}
    body["weekly"] = body.get("weekly") == "on"
    api.force_authenticate(alice)
    response = api.post(_url(course), body, format="json")
    assert response.status_code == 400
    if field != "start_time":  # absent in JSON: "required", blank in the form: the same
        assert response.json()[field] == page.errors[field]
    assert not ClassSession.objects.exists()


def test_a_deleted_hub_takes_no_new_sessions(client, api, course, alice):
    course.state = HubState.DELETED
    course.save()
    client.force_login(alice)
    assert (
        "class-session-form"
        not in client.get(reverse("hubs:detail", args=[course.pk])).content.decode()
    )
    assert client.post(_add(course), FORM).status_code == 400
    api.force_authenticate(alice)
    response = api.post(_url(course), LAB, format="json")
    assert response.status_code == 400
    assert "deleted" in response.json()["non_field_errors"][0]
    assert not ClassSession.objects.exists()


# --- The capacity API lists the room held for classes -----------------------------------------


def _held(api, user, token_scope: str | None = None, **period) -> list[dict]:
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user, token_scope)}")
    response = api.get("/api/v1/capacity/gpus/", period)
    assert response.status_code == 200, response.json()
    return response.json()["class_reservations"]


def test_the_capacity_api_lists_the_rooms_the_capacity_page_shows(api, client, course, charlie):
    today = datetime.date.today()
    course.end_date = today + datetime.timedelta(days=60)
    course.save()
    weekly_lab(course, first_day=today + datetime.timedelta(days=1), last_day=None)
    held = _held(api, charlie)
    assert len(held) == 4  # the coming four weeks (the default period)
    first = held[0]
    assert (first["hub_slug"], first["title"], first["time_zone"]) == (
        "stats-101",
        "Lab",
        "America/Chicago",
    )
    assert (first["servers"], first["gpu_servers"], first["gpu_type"], first["gpus"]) == (
        40,
        2,
        "h100",
        2,
    )
    assert first["decision"] == "as asked" and first["max_placeholders"] is None
    starts = datetime.datetime.fromisoformat(first["starts"])
    held_from = datetime.datetime.fromisoformat(first["held_from"])
    assert starts - held_from == datetime.timedelta(minutes=15)
    assert starts.astimezone(CHICAGO).time() == datetime.time(9, 0)

    client.force_login(charlie)
    page = client.get(reverse("usage:admin")).content.decode()
    table = page[page.index('id="class-reservation-list"') :]
    assert table.count("<tr>") - 1 >= len(held)  # the page shows eight weeks, the API four
    # An explicit period: only its days.
    one = _held(api, charlie, start=first["starts"][:10], end=first["starts"][:10])
    assert [r["starts"] for r in one] == [first["starts"]]


def test_the_capacity_api_shows_others_only_the_rooms_of_hubs_they_see(
    api, course, alice, bob, charlie
):
    today = datetime.date.today()
    for hub in (course, HubFactory(owner=bob, slug="bobs-hub", state=HubState.RUNNING)):
        hub.end_date = today + datetime.timedelta(days=60)
        hub.save()
        first = today + datetime.timedelta(days=1)
        weekly_lab(hub, first_day=first, last_day=None, attendees=1, gpu_attendees=0)
    outsider = UserFactory(username="eve")
    member = UserFactory(username="dora")
    Member.objects.create(hub=course, user=member, role=Member.Role.MEMBER)

    assert {r["hub_slug"] for r in _held(api, charlie)} == {"stats-101", "bobs-hub"}
    assert {r["hub_slug"] for r in _held(api, alice)} == {"stats-101"}
    assert {r["hub_slug"] for r in _held(api, member)} == {"stats-101"}
    assert {r["hub_slug"] for r in _held(api, bob)} == {"bobs-hub"}
    assert _held(api, outsider) == []
    # A portal admin's token without the admin scope sees what its user sees as a user.
    assert _held(api, charlie, "read") == []
