"""Usage and cost from recorded rows: reports per hub and user, granularity, price changes,
who sees whom, pruning, and the API (permissions, 400s, CSV, capacity, approve over capacity).

The collector itself runs against the local control plane in tests/cluster/."""

import csv
import datetime
import io
from datetime import UTC
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.hubs.lifecycle import HubState
from portal.hubs.models import GpuType, Member
from portal.usage import queries
from portal.usage.models import (
    CollectionGap,
    CollectionPass,
    GpuInventory,
    UsageDay,
    UsageHour,
)
from portal.usage.recording import prune
from tests.factories import HubFactory, UserFactory
from tests.usage_support import price_list

pytestmark = pytest.mark.django_db

A100 = "NVIDIA-A100-SXM4-80GB"
HOUR_CPU = 1000 * 3600  # one core for one hour, in millicore-seconds
HOUR_GIB = 1024 * 3600  # one GiB for one hour, in MiB-seconds


def use(hub, user, day, cores=0, gib=0, gpus=0, storage_gib=0, component="server"):
    """Record `cores`, `gib`, `gpus` and storage for one hour of `day` (12:00 UTC)."""
    username = user.username if user else ""
    amounts = {
        "cpu_millicore_seconds": cores * HOUR_CPU,
        "memory_mib_seconds": gib * HOUR_GIB,
        "gpu_seconds": gpus * 3600,
        "storage_mib_seconds": storage_gib * HOUR_GIB,
        "gpu_product": A100 if gpus else "",
    }
    common = {"hub": hub, "username": username, "user": user, "component": component}
    UsageDay.objects.create(day=day, **common, **amounts)
    hour = datetime.datetime.combine(day, datetime.time(12), tzinfo=UTC)
    UsageHour.objects.create(hour=hour, **common, **amounts)


@pytest.fixture
def today():
    return timezone.now().astimezone(UTC).date()


@pytest.fixture
def used_hub(alice, bob, today):
    """alice's hub; bob is a member; two days of usage by both and the hub itself."""
    a100 = GpuType.objects.get(name="a100")
    price_list(gpu={a100: "100"})
    hub = HubFactory(owner=alice, slug="used", state=HubState.RUNNING)
    Member.objects.create(hub=hub, user=bob, role=Member.Role.MEMBER)
    yesterday = today - datetime.timedelta(days=1)
    use(hub, alice, yesterday, cores=2, gib=4, gpus=1)  # 20 + 8 + 100 = 128
    use(hub, alice, today, cores=1)  # 10
    use(hub, bob, today, cores=1, gib=1, storage_gib=720)  # 10 + 2 + 72 (720 GiB-h = 1 GiB-month)
    use(hub, None, today, cores=1, component="hub")  # 10
    return hub


class TestReports:
    def test_the_owner_sees_every_user_and_the_total_to_the_cent(self, used_hub, alice, today):
        report = queries.hub_usage(used_hub, alice, queries.last_days(7))
        assert report.currency == "CZK"
        assert report.total.cost.rounded() == {
            "cpu": Decimal("50.00"),
            "memory": Decimal("10.00"),
            "gpu": Decimal("100.00"),
            "storage": Decimal("72.00"),
            "total": Decimal("232.00"),
        }
        assert [(line.key, line.cost.rounded()["total"]) for line in report.by_user] == [
            ("alice", Decimal("138.00")),
            ("bob", Decimal("84.00")),
            ("", Decimal("10.00")),
        ]
        assert len(report.buckets) == 7
        assert report.buckets[-1].key == today.isoformat()
        assert report.buckets[-1].cost.rounded()["total"] == Decimal("104.00")
        assert report.by_user[0].usage.gpu_hours == {"a100": Decimal(1)}

    def test_a_member_sees_only_their_own(self, used_hub, bob):
        report = queries.hub_usage(used_hub, bob, queries.last_days(7))
        assert [line.key for line in report.by_user] == ["bob"]
        assert report.total.cost.rounded()["total"] == Decimal("84.00")

    def test_a_co_owner_sees_everyone(self, used_hub, today):
        carol = UserFactory(username="carol")
        Member.objects.create(hub=used_hub, user=carol, role=Member.Role.CO_OWNER)
        report = queries.hub_usage(used_hub, carol, queries.last_days(7))
        assert report.total.cost.rounded()["total"] == Decimal("232.00")

    def test_my_usage_spans_my_hubs(self, used_hub, alice, today):
        other = HubFactory(owner=UserFactory(), slug="other", state=HubState.RUNNING)
        use(other, alice, today, gib=5)
        report = queries.user_usage(alice, queries.last_days(30))
        assert [(line.label, line.cost.rounded()["total"]) for line in report.by_hub] == [
            ("used", Decimal("138.00")),
            ("other", Decimal("10.00")),
        ]

    def test_a_price_change_applies_from_its_day(self, used_hub, alice, today):
        price_list(valid_from=today, cpu="20")  # no GPU price from today on
        report = queries.hub_usage(used_hub, alice, queries.last_days(7))
        # Yesterday at the old prices (128), today's 3 core-hours at 20, storage the same.
        assert report.total.cost.rounded()["total"] == Decimal("128") + 60 + 2 + 72

    @pytest.mark.parametrize("granularity", ["week", "month"])
    def test_weeks_and_months_add_up_their_days(self, used_hub, alice, today, granularity):
        period = queries.Period(today - datetime.timedelta(days=70), today, granularity)
        report = queries.hub_usage(used_hub, alice, period)
        starts = [datetime.date.fromisoformat(line.key) for line in report.buckets]
        assert starts == sorted(set(starts))
        if granularity == "week":
            assert all(start.weekday() == 0 for start in starts)
        else:
            assert all(start.day == 1 for start in starts)
        assert sum(line.cost.total for line in report.buckets) == report.total.cost.total

    def test_gpu_cost_is_split_by_type_at_each_days_price(self, alice):
        """A week's GPU cost per type (for the stacked chart) uses each day's price, also when
        the price changes inside the week, and adds up to the GPU cost."""
        a100, h100 = GpuType.objects.get(name="a100"), GpuType.objects.get(name="h100")
        monday = datetime.date(2027, 3, 1)
        price_list(gpu={a100: "100", h100: "300"}, valid_from=monday)
        price_list(gpu={a100: "150", h100: "300"}, valid_from=monday + datetime.timedelta(days=3))
        hub = HubFactory(owner=alice, slug="two-gpus", state=HubState.RUNNING)
        for n in range(7):  # one A100 hour every day, one H100 hour on Tuesday
            use(hub, alice, monday + datetime.timedelta(days=n), gpus=1)
        UsageDay.objects.create(
            hub=hub, day=monday + datetime.timedelta(days=1), username="alice", user=alice,
            component="server", gpu_product=h100.node_label_value, gpu_seconds=3600,
        )  # fmt: skip
        period = queries.Period(monday, monday + datetime.timedelta(days=6), "week")

        (week,) = queries.hub_usage(hub, alice, period).buckets

        assert week.cost.gpu_by_type == {"a100": Decimal(3 * 100 + 4 * 150), "h100": Decimal(300)}
        assert week.cost.gpu == Decimal(1200)
        assert week.usage.gpu_hours == {"a100": Decimal(7), "h100": Decimal(1)}

    def test_hourly_buckets_come_from_the_hourly_rows(self, used_hub, alice, today):
        period = queries.Period(today, today, "hour")
        report = queries.hub_usage(used_hub, alice, period)
        assert len(report.buckets) == 24
        noon = report.buckets[12]
        assert noon.key.startswith(f"{today.isoformat()}T12:00")
        assert noon.cost.rounded()["total"] == Decimal("104.00")

    def test_gaps_in_the_period_are_reported(self, used_hub, alice, today):
        start = timezone.now() - datetime.timedelta(hours=5)
        CollectionGap.objects.create(start=start, end=start + datetime.timedelta(hours=3))
        report = queries.hub_usage(used_hub, alice, queries.last_days(2))
        assert [g.start for g in report.gaps] == [start]

    def test_admin_totals_by_hub_owner_and_gpu_type(self, used_hub, today):
        lines, total = queries.admin_totals(queries.last_days(7), "owner")
        assert total.cost.rounded()["total"] == Decimal("232.00")
        assert [(line.key, line.cost.rounded()["total"]) for line in lines] == [
            ("alice", Decimal("232.00"))
        ]
        lines, _ = queries.admin_totals(queries.last_days(7), "gpu_type")
        assert {line.label: line.cost.rounded()["total"] for line in lines} == {
            "a100": Decimal("128.00"),
            "(no GPU)": Decimal("104.00"),
        }
        with pytest.raises(queries.UsageQueryError):
            queries.admin_totals(queries.last_days(7), "colour")


@pytest.mark.parametrize(
    ("start", "end", "granularity", "field"),
    [
        ("2027-13-01", None, None, "start"),
        (None, "yesterday", None, "end"),
        (None, None, "minute", "granularity"),
        ("2027-03-02", "2027-03-01", None, "start"),
        ("2020-01-01", "2027-01-01", None, "start"),
        ("2000-01-01", "2000-01-02", "hour", "granularity"),
    ],
)
def test_bad_periods_say_which_parameter_is_wrong(start, end, granularity, field):
    with pytest.raises(queries.UsageQueryError) as error:
        queries.parse_period(start, end, granularity)
    assert list(error.value.errors) == [field]


def test_prune_respects_the_horizons(alice, settings, today):
    settings.USAGE_RETENTION_DAYS = 90
    settings.USAGE_HOURLY_RETENTION_DAYS = 14
    hub = HubFactory(owner=alice)
    for age in (0, 13, 15, 89, 91):
        use(hub, alice, today - datetime.timedelta(days=age), cores=1)
    now = timezone.now()
    CollectionPass.objects.create(at=now - datetime.timedelta(days=91))
    CollectionPass.objects.create(at=now)

    deleted = prune(now)

    assert deleted["days"] == 1 and deleted["passes"] == 1
    ages = sorted((today - d).days for d in UsageDay.objects.values_list("day", flat=True))
    assert ages == [0, 13, 15, 89]
    hour_ages = sorted(
        (today - h.date()).days for h in UsageHour.objects.values_list("hour", flat=True)
    )
    assert hour_ages == [0, 13]


# --- API ----------------------------------------------------------------------------------------


class TestApi:
    def url(self, hub, suffix=""):
        return f"/api/v1/hubs/{hub.pk}/usage/{suffix}"

    @pytest.mark.parametrize(
        ("who", "status", "users"),
        [("alice", 200, ["alice", "bob", ""]), ("bob", 200, ["bob"]), ("charlie", 200, None)],
    )
    def test_hub_usage_by_role(self, api, used_hub, charlie, who, status, users):
        api.force_authenticate(
            {"alice": used_hub.owner, "charlie": charlie}.get(who) or UserFactory(username=who)
        )
        response = api.get(self.url(used_hub), {"granularity": "day"})
        assert response.status_code == status
        body = response.json()
        assert body["currency"] == "CZK"
        if users is not None:
            assert [line["key"] for line in body["by_user"]] == users
        else:
            assert body["total"]["cost"]["total"] == "232.00"

    def test_outsiders_get_404_and_anonymous_401(self, api, used_hub):
        assert api.get(self.url(used_hub)).status_code == 401
        api.force_authenticate(UserFactory(username="dave"))
        assert api.get(self.url(used_hub)).status_code == 404
        assert api.get(self.url(used_hub, "csv/")).status_code == 404

    @pytest.mark.parametrize(
        "query",
        [
            {"start": "march"},
            {"granularity": "fortnight"},
            {"start": "2027-03-02", "end": "2027-03-01"},
        ],
    )
    def test_bad_parameters_are_400_with_the_field(self, api, used_hub, query):
        api.force_authenticate(used_hub.owner)
        response = api.get(self.url(used_hub), query)
        assert response.status_code == 400
        assert set(response.json()) <= {"start", "end", "granularity"} and response.json()

    def test_the_owner_exports_csv_and_a_member_may_not(self, api, used_hub, bob, today):
        api.force_authenticate(used_hub.owner)
        response = api.get(self.url(used_hub, "csv/"), {"start": today.isoformat()})
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        assert f'filename="usage-used-{today}-{today}-day.csv"' in response["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(response.content.decode())))
        assert rows[-1]["key"] == "total" and rows[-1]["cost_total"] == "104.00"
        assert {row["key"] for row in rows} >= {"alice", "bob"}
        api.force_authenticate(bob)
        assert api.get(self.url(used_hub, "csv/")).status_code == 403

    def test_user_usage_own_or_admin(self, api, used_hub, alice, bob, charlie):
        api.force_authenticate(bob)
        assert api.get("/api/v1/usage/users/me/").json()["total"]["cost"]["total"] == "84.00"
        assert api.get("/api/v1/usage/users/alice/").status_code == 404
        api.force_authenticate(charlie)
        body = api.get("/api/v1/usage/users/alice/").json()
        assert body["total"]["cost"]["total"] == "138.00"
        assert [line["label"] for line in body["by_hub"]] == ["used"]
        assert api.get("/api/v1/usage/users/nobody/").status_code == 404

    def test_totals_are_for_admins(self, api, used_hub, alice, charlie):
        api.force_authenticate(alice)
        assert api.get("/api/v1/usage/totals/").status_code == 403
        assert api.get("/api/v1/usage/totals/csv/").status_code == 403
        api.force_authenticate(charlie)
        body = api.get("/api/v1/usage/totals/", {"by": "hub"}).json()
        assert [(line["key"], line["cost"]["total"]) for line in body["lines"]] == [
            ("used", "232.00")
        ]
        assert api.get("/api/v1/usage/totals/", {"by": "planet"}).status_code == 400
        response = api.get("/api/v1/usage/totals/csv/", {"by": "owner"}, HTTP_ACCEPT="text/csv")
        assert response.status_code == 200 and "usage-by-owner-" in response["Content-Disposition"]
        assert "alice" in response.content.decode()

    def test_gpu_capacity(self, api, alice, today):
        a100 = GpuType.objects.get(name="a100")
        GpuInventory.objects.create(product=A100, allocatable=4, in_use=1, observed=timezone.now())
        HubFactory(
            gpu_type=a100,
            gpus_per_user=1,
            expected_users=3,
            state=HubState.RUNNING,
            start_date=today,
            end_date=today + datetime.timedelta(days=3),
        )
        assert api.get("/api/v1/capacity/gpus/").status_code == 401
        api.force_authenticate(alice)
        body = api.get("/api/v1/capacity/gpus/").json()
        rows = {row["gpu_type"]: row for row in body["gpu_types"]}
        assert (rows["a100"]["allocatable"], rows["a100"]["in_use"]) == (4, 1)
        assert (rows["a100"]["max_reserved"], rows["a100"]["free"]) == (3, 1)
        assert rows["h100"]["allocatable"] is None and rows["h100"]["free"] is None
        later = (today + datetime.timedelta(days=10)).isoformat()
        body = api.get("/api/v1/capacity/gpus/", {"start": later}).json()
        assert {r["gpu_type"]: r["free"] for r in body["gpu_types"]}["a100"] == 4
        assert api.get("/api/v1/capacity/gpus/", {"start": "soon"}).status_code == 400
        bad = api.get("/api/v1/capacity/gpus/", {"start": later, "end": today.isoformat()})
        assert bad.status_code == 400


class TestApproveOverCapacity:
    @pytest.fixture
    def full(self, today):
        a100 = GpuType.objects.get(name="a100")
        GpuInventory.objects.create(product=A100, allocatable=4, in_use=0, observed=timezone.now())
        HubFactory(
            gpu_type=a100, gpus_per_user=1, expected_users=4, state=HubState.RUNNING,
            start_date=today, end_date=today + datetime.timedelta(days=30),
        )  # fmt: skip
        return HubFactory(
            gpu_type=a100, gpus_per_user=1, expected_users=1, state=HubState.PENDING,
            start_date=today, end_date=today + datetime.timedelta(days=3),
        )  # fmt: skip

    def test_api_answers_409_then_accepts_an_override_with_a_reason(
        self, api, charlie, full, queued
    ):
        api.force_authenticate(charlie)
        url = f"/api/v1/hubs/{full.pk}/approve/"
        response = api.post(url, {}, format="json")
        assert response.status_code == 409
        assert "Not enough" in response.json()["detail"]
        response = api.post(url, {"override": True}, format="json")
        assert response.status_code == 400 and "reason" in response.json()
        response = api.post(url, {"override": True, "reason": "Extra node"}, format="json")
        assert response.status_code == 200 and response.json()["state"] == HubState.APPROVED

    def test_web_approve_shows_the_error_and_accepts_an_override(
        self, client, charlie, full, queued
    ):
        client.force_login(charlie)
        url = reverse("hubs:approve", args=[full.pk])
        page = client.post(url, {"next": "queue"}, follow=True)
        assert "Not enough" in page.content.decode()
        page = client.post(url, {"override": "1", "reason": ""}, follow=True)
        assert "Give a reason" in page.content.decode()
        full.refresh_from_db()
        assert full.state == HubState.PENDING
        client.post(url, {"override": "1", "reason": "Extra node"})
        full.refresh_from_db()
        assert full.state == HubState.APPROVED


# --- Recording (the charging rule; the cluster side is in tests/cluster/) -----------------------


def observation(hub, *holdings):
    from provisioning.observe import GpuCount, Holding, Observation

    return Observation(
        holdings=[
            Holding(namespace=hub.namespace, hub_id=hub.pk, **{"kind": "pod", **h})
            for h in holdings
        ],
        gpus={A100: GpuCount(allocatable=4, in_use=1)},
        namespaces=1,
        pods_seen=len(holdings),
        api_calls=4,
    )


def test_a_pass_charges_from_the_later_of_the_previous_pass_and_the_start(alice, settings):
    from portal.usage.recording import record_pass

    hub = HubFactory(owner=alice, slug="rec", state=HubState.RUNNING)
    t0 = datetime.datetime(2027, 3, 1, 9, 58, tzinfo=UTC)
    started_late = t0 + datetime.timedelta(minutes=3)  # 10:01, after the first pass
    seen = observation(
        hub,
        {"name": "a", "component": "server", "username": "alice", "since": t0,
         "cpu_millicores": 1000},
        {"name": "b", "component": "server", "username": "ghost", "since": started_late,
         "gpus": 2, "gpu_product": A100},
    )  # fmt: skip
    record_pass(seen, t0)
    record = record_pass(seen, t0 + datetime.timedelta(minutes=5))  # 10:03

    assert record.charged_from == t0 and record.rows_written == 5  # 3 hour rows, 2 day rows
    hours = {(r.username, r.hour.hour): r for r in UsageHour.objects.all()}
    assert hours[("alice", 9)].cpu_millicore_seconds == 1000 * 120  # 9:58-10:00
    assert hours[("alice", 10)].cpu_millicore_seconds == 1000 * 180  # 10:00-10:03
    assert hours[("ghost", 10)].gpu_seconds == 2 * 120  # 10:01-10:03
    assert hours[("alice", 10)].user == alice and hours[("ghost", 10)].user is None
    day = UsageDay.objects.get(username="alice")
    assert day.cpu_millicore_seconds == 1000 * 300
    assert GpuInventory.objects.get(product=A100).allocatable == 4


def test_gpus_no_node_offers_count_zero_after_a_pass(alice, spec):
    """Before the first pass GPU capacity is unknown; after it, a catalogue type that no node
    offers has none, and a product whose nodes are gone drops to zero, so requests for either
    wait for an admin instead of being approved against stale or missing figures."""
    from portal.hubs.models import SelfServicePolicy
    from portal.hubs.services import decisions
    from portal.usage import capacity
    from portal.usage.recording import record_pass
    from provisioning.observe import Observation

    a100, h100 = GpuType.objects.get(name="a100"), GpuType.objects.get(name="h100")
    assert capacity.allocatable(h100) is None
    hub = HubFactory(owner=alice, slug="inv", state=HubState.RUNNING)
    t0 = datetime.datetime(2027, 3, 1, 10, 0, tzinfo=UTC)

    record_pass(observation(hub), t0)  # sees 4 A100s and no H100 node
    assert (capacity.allocatable(a100), capacity.allocatable(h100)) == (4, 0)

    record_pass(Observation(namespaces=1, api_calls=4), t0 + datetime.timedelta(minutes=5))
    gone = GpuInventory.objects.get(product=A100)
    assert (gone.allocatable, gone.in_use) == (0, 0)
    assert gone.observed == t0 + datetime.timedelta(minutes=5)

    SelfServicePolicy.objects.update_or_create(pk=1, defaults={"max_gpus_per_user": 1})
    request = decisions.submit(alice, spec(gpu_type="h100", gpus_per_user="1", expected_users="1"))
    assert request.state == HubState.PENDING
    assert "GPUs do not fit (1 wanted, 0 free" in request.state_reason


def test_holdings_of_namespaces_this_portal_does_not_own_are_ignored(alice):
    from portal.usage.recording import record_pass

    hub = HubFactory(owner=alice, slug="mine", state=HubState.RUNNING)
    other = HubFactory.build(pk=hub.pk, slug="someone-elses")  # same id in another portal
    t0 = datetime.datetime(2027, 3, 1, 10, tzinfo=UTC)
    seen = observation(other, {"name": "x", "component": "jobs", "username": "", "since": t0,
                               "cpu_millicores": 500})  # fmt: skip
    record_pass(seen, t0)
    record_pass(seen, t0 + datetime.timedelta(minutes=5))
    assert not UsageDay.objects.exists()


def test_admins_edit_price_lists_in_the_django_admin(client, charlie, alice):
    a100 = GpuType.objects.get(name="a100")
    client.force_login(charlie)
    assert client.get("/admin/usage/pricelist/add/").status_code == 200
    response = client.post(
        "/admin/usage/pricelist/add/",
        {
            "valid_from": "2027-01-01",
            "cpu_hour": "0.50",
            "memory_gib_hour": "0.10",
            "storage_gib_month": "2",
            "note": "",
            "gpu_prices-TOTAL_FORMS": "1",
            "gpu_prices-INITIAL_FORMS": "0",
            "gpu_prices-0-gpu_type": str(a100.pk),
            "gpu_prices-0-gpu_hour": "40",
        },
    )
    assert response.status_code == 302
    from portal.usage.prices import PriceBook

    prices = PriceBook.load().on(datetime.date(2027, 6, 1))
    assert prices.cpu_hour == Decimal("0.50") and prices.gpu_hour[A100] == Decimal("40")
    client.force_login(alice)
    assert client.get("/admin/usage/pricelist/").status_code == 302  # to the admin login
