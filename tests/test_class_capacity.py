"""Class sessions in other requests' GPU capacity check: on each day (in the portal's time zone)
a reserving hub reserves, on top of its seats, the most GPUs its classes' placeholders hold at
one moment that day; approvals (the page and the API's 409), the request's own check, the
timeline and the capacity API count them.

The sessions' room itself (lead time, caps, quota) is tested in tests/test_class_sessions.py."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from portal.hubs import hubspec
from portal.hubs.lifecycle import HubState
from portal.hubs.models import ClassSession, GpuType, Hub
from portal.hubs.services import decisions
from portal.usage import capacity
from portal.usage.capacity import OverCapacity
from portal.usage.models import GpuInventory
from portal.usage.views import capacity_panels
from tests.factories import HubFactory

pytestmark = pytest.mark.django_db

MONDAY = datetime.date(2027, 3, 1)
TUESDAY, WEDNESDAY, THURSDAY = (MONDAY + datetime.timedelta(days=n) for n in (1, 2, 3))


@pytest.fixture
def a100():
    """Eight A100s counted by a collection pass."""
    gpu = GpuType.objects.get(name="a100")
    GpuInventory.objects.create(
        product=gpu.node_label_value, allocatable=8, in_use=0, observed=timezone.now()
    )
    return gpu


def gpu_hub(gpu, users=1, seats=None, state=HubState.RUNNING, **fields) -> Hub:
    """A hub of one A100 per GPU server over March 2027 (seats: one set per server)."""
    values = dict(
        gpu_type=gpu,
        gpus_per_user=1,
        expected_users=users,
        max_gpus=seats,
        start_date=MONDAY,
        end_date=datetime.date(2027, 3, 31),
        state=state,
    )
    return HubFactory(**{**values, **fields})


@pytest.fixture
def course(a100):
    """A course of 42 users with 4 A100 seats."""
    return gpu_hub(a100, users=42, seats=4, slug="course")


def session(hub, day=TUESDAY, at=(9, 0), minutes=90, gpus=2, zone="UTC", **fields):
    values = dict(
        hub=hub,
        title="Lab",
        first_day=day,
        start_time=datetime.time(*at),
        duration_minutes=minutes,
        time_zone=zone,
        attendees=40,
        gpu_attendees=gpus,
    )
    return ClassSession.objects.create(**{**values, **fields})


def classes_on(gpu, *days) -> list[int]:
    """GPUs held for classes on each day, as the timeline shows them (and free_over agrees)."""
    timeline = {t.day: t for t in capacity.timeline(gpu, weeks=1, start=days[0])}
    free = capacity.free_over(gpu, days[0], days[-1])
    assert free.max_reserved == max(timeline[day].reserved for day in days)
    assert free.for_classes == timeline[free.busiest_day].for_classes
    return [timeline[day].for_classes for day in days]


@pytest.fixture(autouse=True)
def utc_portal(settings):
    settings.TIME_ZONE = "UTC"
    settings.WARM_LEAD_MINUTES = 15


class TestARequestAroundAClass:
    """Six A100s reserved by hubs' seats, a class of 2 GPU attendees on Tuesday."""

    @pytest.fixture
    def requested(self, a100):
        gpu_hub(a100, users=2, seats=2, slug="course")  # 2 seats
        session(Hub.objects.get(slug="course"))
        gpu_hub(a100, users=4, slug="lab")  # 4 seats

        def make(start, end) -> Hub:
            return gpu_hub(a100, users=1, state=HubState.PENDING, start_date=start, end_date=end)

        return make

    def test_one_covering_the_tuesday_is_refused(self, requested, charlie, queued):
        hub = requested(MONDAY, TUESDAY)
        with pytest.raises(OverCapacity) as refused:
            decisions.approve(hub, charlie)
        assert "only 0 of 8 are free" in str(refused.value)
        assert "8 reserved by other hubs on 2027-03-02, 2 of them for class sessions" in str(
            refused.value
        )
        assert Hub.objects.get(pk=hub.pk).state == HubState.PENDING and queued == []

    def test_one_covering_only_the_wednesday_is_approved(self, requested, charlie, queued):
        hub = requested(WEDNESDAY, WEDNESDAY)
        assert decisions.approve(hub, charlie).state == HubState.APPROVED

    def test_the_api_answers_409_with_the_class_sessions_share(self, requested, api, charlie):
        hub = requested(TUESDAY, THURSDAY)
        api.force_authenticate(charlie)
        response = api.post(f"/api/v1/hubs/{hub.pk}/approve/", {}, format="json")
        assert response.status_code == 409
        assert "2 of them for class sessions" in response.json()["detail"]
        assert Hub.objects.get(pk=hub.pk).state == HubState.PENDING

    def test_the_approval_queue_shows_the_class_sessions_share(self, requested, client, charlie):
        hub = requested(MONDAY, TUESDAY)
        client.force_login(charlie)
        page = client.get(reverse("hubs:queue")).content.decode()
        check = page[page.index(f'id="capacity-check-{hub.pk}"') :]
        check = check[: check.index("</p>")]
        assert "<strong>0</strong> of 8 are free" in check
        assert "of the 8 reserved on 2027-03-02" in check
        assert '<span class="for-classes">2 for class sessions</span>' in check

    def test_the_request_forms_estimate_says_how_much_is_for_classes(
        self, requested, client, alice, spec
    ):
        client.force_login(alice)
        dates = {"start_date": MONDAY.isoformat(), "end_date": WEDNESDAY.isoformat()}
        query = spec(gpu_type="a100", gpus_per_user="1", expected_users="1", **dates)
        html = client.get(reverse("usage:estimate"), query).content.decode()
        assert '<strong class="free-gpus">0</strong> of 8' in html
        assert "on 2027-03-02, when 2 of the 8 reserved are held for class sessions" in html
        assert "Does not fit" in html

    def test_the_capacity_api_and_timeline_count_the_class(self, requested, a100, api, alice):
        api.force_authenticate(alice)

        def a100_on(day):
            body = api.get("/api/v1/capacity/gpus/", {"start": day, "end": day}).json()
            return {row["gpu_type"]: row for row in body["gpu_types"]}["a100"]

        tuesday, wednesday = a100_on(TUESDAY.isoformat()), a100_on(WEDNESDAY.isoformat())
        assert (tuesday["max_reserved"], tuesday["max_reserved_for_classes"]) == (8, 2)
        assert tuesday["free"] == 0
        assert (wednesday["max_reserved"], wednesday["max_reserved_for_classes"]) == (6, 0)
        assert wednesday["free"] == 2
        days = capacity.timeline(a100, weeks=1, start=MONDAY)
        assert [(d.reserved, d.for_classes, d.free) for d in days[:3]] == [
            (6, 0, 2),
            (8, 2, 0),
            (6, 0, 2),
        ]


def test_sessions_of_a_day_that_do_not_overlap_count_the_larger(course, a100):
    session(course, at=(9, 0), gpus=2)
    session(course, at=(14, 0), gpus=3)
    assert classes_on(a100, TUESDAY) == [3]


def test_sessions_that_overlap_count_together_within_the_seats(course, a100, settings):
    settings.WARM_LEAD_MINUTES = 15
    session(course, at=(9, 0), minutes=90, gpus=2)
    session(course, at=(10, 0), gpus=1)  # overlaps the first: 3 at once
    # Ends as the next one's room is made (held_from 12:15): never held with it.
    session(course, at=(11, 0), minutes=75, gpus=1)
    session(course, at=(12, 30), gpus=1)
    assert classes_on(a100, TUESDAY) == [3]
    # The quota holds at most the hub's 4 seats of placeholders at once, however many attend.
    session(course, at=(9, 30), gpus=3)
    assert classes_on(a100, TUESDAY) == [4]


def test_the_lead_time_makes_sessions_overlap(course, a100, settings):
    session(course, at=(9, 0), minutes=60, gpus=2)
    session(course, at=(10, 10), gpus=2)
    settings.WARM_LEAD_MINUTES = 5
    assert classes_on(a100, TUESDAY) == [2]
    settings.WARM_LEAD_MINUTES = 15  # the second's room is made at 09:55, before 10:00
    assert classes_on(a100, TUESDAY) == [4]


def test_a_refused_session_holds_nothing_and_a_capped_one_its_cap(course, a100):
    refused = session(course, gpus=2, refused=True, admin_reason="Exam week")
    assert classes_on(a100, TUESDAY) == [0]
    refused.refused, refused.max_placeholders = False, 1
    refused.save()
    assert classes_on(a100, TUESDAY) == [1]
    refused.max_placeholders = None
    refused.save()
    assert classes_on(a100, TUESDAY) == [2]


@pytest.mark.parametrize(
    ("state", "counted"),
    [
        (HubState.RUNNING, 2),
        (HubState.EXPIRING, 2),
        (HubState.UPDATING, 2),
        # Approved and provisioning hubs reserve their seats for their days, and run by then.
        (HubState.APPROVED, 2),
        (HubState.PROVISIONING, 2),
        (HubState.PENDING, 0),
        (HubState.SUSPENDED, 0),
        (HubState.FAILED, 0),
        (HubState.DELETED, 0),
        (HubState.REJECTED, 0),
    ],
)
def test_only_hubs_that_reserve_hold_their_classes(a100, state, counted):
    hub = gpu_hub(a100, users=42, seats=4, state=state)
    session(hub, gpus=2)
    assert classes_on(a100, TUESDAY) == [counted]


def test_a_session_of_another_gpu_type_or_without_gpu_attendees_counts_nothing(course, a100):
    h100 = GpuType.objects.get(name="h100")
    session(gpu_hub(h100, users=42, seats=4), gpus=2)
    session(course, gpus=0)
    assert classes_on(a100, TUESDAY) == [0]
    assert capacity.free_over(h100, TUESDAY, TUESDAY).for_classes == 2


def test_a_session_across_local_midnight_counts_on_both_days(course, a100):
    session(course, at=(23, 30), minutes=90, gpus=2)
    assert classes_on(a100, MONDAY, TUESDAY, WEDNESDAY) == [0, 2, 2]


def test_a_weekly_session_counts_on_each_of_its_days(course, a100):
    session(course, weekly=True, last_day=datetime.date(2027, 3, 16), gpus=2)
    days = {t.day: t.for_classes for t in capacity.timeline(a100, weeks=4, start=MONDAY)}
    assert [day for day, gpus in days.items() if gpus] == [
        datetime.date(2027, 3, 2),
        datetime.date(2027, 3, 9),
        datetime.date(2027, 3, 16),
    ]


class TestTimeZones:
    def test_a_new_york_evening_is_the_next_day_in_zurich(self, course, a100, settings):
        settings.TIME_ZONE = "Europe/Zurich"
        session(course, at=(23, 30), zone="America/New_York", gpus=2)  # 05:30 on Wednesday
        assert classes_on(a100, TUESDAY, WEDNESDAY) == [0, 2]

    def test_the_portals_time_zone_decides_the_day(self, course, a100, settings):
        # 18:30 in New York is 23:30 UTC on Tuesday and 00:30 on Wednesday in Zurich; its room
        # is held from 23:15 UTC (00:15 in Zurich) until 01:00 UTC.
        session(course, at=(18, 30), zone="America/New_York", gpus=2)
        settings.TIME_ZONE = "UTC"
        assert classes_on(a100, TUESDAY, WEDNESDAY) == [2, 2]
        settings.TIME_ZONE = "Europe/Zurich"
        assert classes_on(a100, TUESDAY, WEDNESDAY) == [0, 2]


class TestTheHubsOwnClasses:
    """A hub's own seats are left out of its own check, its own classes are not: they are held
    on top of its seats, so its new seats and its classes must fit together."""

    @pytest.fixture
    def course(self, a100):
        gpu_hub(a100, users=4, slug="lab")  # 4 seats of another hub
        course = gpu_hub(a100, users=42, seats=2, slug="course")
        session(course, gpus=2)
        return course

    def spec_with_seats(self, hub, seats):
        spec = hubspec.from_hub(hub, identities=False)
        return dataclasses.replace(spec, gpu=dataclasses.replace(spec.gpu, max_gpus=seats))

    def test_its_seats_and_its_classes_fit_together(self, course):
        free = capacity.check_hub_fits(self.spec_with_seats(course, 2))
        assert (free.max_reserved, free.for_classes, free.free) == (6, 2, 2)

    def test_more_seats_than_fit_beside_its_classes_are_refused(self, course):
        with pytest.raises(OverCapacity, match=r"needs 3, but only 2 of 8 .* 2 of them for class"):
            capacity.check_hub_fits(self.spec_with_seats(course, 3))

    def test_its_classes_count_as_the_change_would_hold_them(self, course):
        # With 3 GPUs per server its 3 seats hold one GPU server: one placeholder of 3 GPUs.
        spec = hubspec.from_hub(course, identities=False)
        spec = dataclasses.replace(spec, gpu=dataclasses.replace(spec.gpu, count=3, max_gpus=3))
        with pytest.raises(OverCapacity, match=r"needs 3, but only 1 of 8 .* 3 of them for class"):
            capacity.check_hub_fits(spec)

    def test_a_pending_requests_classes_count_in_its_own_approval(self, course, a100, charlie):
        course.state = HubState.PENDING
        course.save()
        gpu_hub(a100, users=1, slug="another")  # 4 + 1 seats of others, 2 its seats, 2 classes
        with pytest.raises(OverCapacity, match="7 reserved by other hubs on 2027-03-02, 2 of"):
            decisions.approve(Hub.objects.get(pk=course.pk), charlie)
        assert Hub.objects.get(pk=course.pk).state == HubState.PENDING
        # An admin refuses the class's room: the hub's seats fit alone.
        ClassSession.objects.filter(hub=course).update(refused=True)
        assert decisions.approve(Hub.objects.get(pk=course.pk), charlie).state == HubState.APPROVED


def test_the_capacity_page_reads_every_class_in_a_fixed_number_of_queries(
    a100, django_assert_max_num_queries
):
    """Eight weeks of weekly classes of many hubs: the same few queries as for one hub."""
    tomorrow = timezone.localdate() + datetime.timedelta(days=1)

    def hub_with_classes():
        hub = gpu_hub(a100, users=42, seats=4, start_date=tomorrow, end_date=tomorrow + WEEKS)
        for hour in (9, 14):
            session(hub, day=tomorrow, at=(hour, 0), weekly=True)

    def panels():
        return {p.gpu_type.name: p for p in capacity_panels()}

    hub_with_classes()
    with CaptureQueriesContext(connection) as one_hub:
        panels()
    for _ in range(5):
        hub_with_classes()
    with django_assert_max_num_queries(len(one_hub.captured_queries)):
        shown = panels()
    assert len(one_hub.captured_queries) <= 6 * GpuType.objects.enabled().count() + 2
    # Six hubs' seats, and their classes on top (each hub's two daily classes do not overlap).
    days = capacity.timeline(a100, weeks=8, start=tomorrow)
    assert {(d.reserved, d.for_classes) for d in days[::7]} == {(36, 12)}
    assert shown["a100"].chart


WEEKS = datetime.timedelta(weeks=8)


def test_the_reserved_gpus_of_a_day_count_its_classes_room(a100):
    """What hubondemand_gpus_reserved reports for a day: seats, and the room classes hold."""
    course = gpu_hub(a100, users=42, seats=4, slug="course")
    session(course, gpus=2)
    assert capacity.reserved_on(MONDAY) == {"a100": 4}
    assert capacity.reserved_on(TUESDAY) == {"a100": 6}
