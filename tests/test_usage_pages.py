"""The usage, cost and capacity pages: who sees what, the inline SVG charts and their numbers,
the 7/30/90-day switch, my usage, the admin totals, the request form's capacity and cost
estimate, and the approval queue's capacity timeline. No page needs JavaScript."""

import datetime
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.hubs.lifecycle import HubState, RevisionState
from portal.hubs.models import GpuType, Hub, Member
from portal.usage.models import Component, GpuInventory, UsageDay
from tests.factories import HubFactory, UserFactory
from tests.usage_support import price_list

pytestmark = pytest.mark.django_db

A100 = "NVIDIA-A100-SXM4-80GB"
HOUR = 3600
DAY = 24 * HOUR


def usage(hub, user, day, *, cores=0.0, gib=0.0, gpus=0, seconds=DAY, product=""):
    """One day's usage row of a user: `cores` CPUs, `gib` GiB, `gpus` GPUs for `seconds`."""
    return UsageDay.objects.create(
        hub=hub,
        username=user.username,
        user=user,
        component=Component.SERVER,
        gpu_product=product,
        day=day,
        cpu_millicore_seconds=int(cores * 1000 * seconds),
        memory_mib_seconds=int(gib * 1024 * seconds),
        gpu_seconds=gpus * seconds,
    )


@pytest.fixture
def a100():
    return GpuType.objects.get(name="a100")


@pytest.fixture
def prices(a100):
    """10 per core-hour, 2 per GiB-hour, 0.10 per GiB-hour of storage, 100 per A100-hour."""
    return price_list(gpu={a100: "100"})


@pytest.fixture
def yesterday():
    return timezone.now().date() - datetime.timedelta(days=1)


@pytest.fixture
def dora(db):
    return UserFactory(username="dora")


@pytest.fixture
def mia(db):
    return UserFactory(username="mia")


@pytest.fixture
def used_hub(alice, dora, mia, prices, yesterday, a100):
    """Alice's running hub with a co-owner (dora) and a member (mia), and a day of usage:
    alice 24 core-hours (240), 48 GiB-hours (96) and 2 A100-hours (200); mia 5 core-hours
    (50); 20 days ago alice 1 core-hour (10)."""
    hub = HubFactory(
        owner=alice, slug="alice-course", display_name="Alice's course", state=HubState.RUNNING
    )
    Member.objects.create(hub=hub, user=dora, role=Member.Role.CO_OWNER)
    Member.objects.create(hub=hub, user=mia, role=Member.Role.MEMBER)
    usage(hub, alice, yesterday, cores=1, gib=2)
    usage(hub, alice, yesterday, gpus=1, seconds=2 * HOUR, product=A100)
    usage(hub, mia, yesterday, cores=0.5, seconds=10 * HOUR)
    usage(hub, alice, yesterday - datetime.timedelta(days=19), cores=1, seconds=HOUR)
    return hub


def page(client, user, url):
    client.force_login(user)
    return client.get(url)


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", html, flags=re.S)


def no_script(html: str) -> None:
    """The page works without JavaScript and loads nothing from elsewhere."""
    assert "<script" not in html.split("</header>", 1)[1].replace('<script src="/static/', ""), (
        "inline or external script in the page"
    )
    for svg in svgs(html):
        assert "<script" not in svg and "<style" not in svg and "style=" not in svg


# --- A hub's usage page -------------------------------------------------------------------------


def test_owner_sees_every_users_usage_and_cost_plotted(client, alice, used_hub, yesterday):
    response = page(client, alice, reverse("usage:hub", args=[used_hub.pk]) + "?days=7")
    assert response.status_code == 200
    html = response.content.decode()
    assert "586.00 CZK" in html  # 240 + 96 + 200 + 50
    top = html.split('class="list top-users"', 1)[1].split("</table>", 1)[0]
    assert top.index("alice") < top.index("mia")  # most expensive first
    charts = svgs(html)
    assert len(charts) >= 2  # cost, then usage per resource
    cost_chart = charts[0]
    assert "hod-chart-usage" in cost_chart and 'role="img"' in cost_chart
    for series in ("CPU", "Memory", "GPU NVIDIA A100 80 GB"):
        assert f">{series}<" in cost_chart
    # The numbers behind the chart: yesterday's CPU 290, memory 96, storage 0, GPU 200.
    row = re.search(rf'<tr><th scope="row">{yesterday.isoformat()}</th>(.*?)</tr>', html)
    assert row and re.findall(r"<td>([^<]*)</td>", row.group(1)) == [
        "290.00",
        "96.00",
        "0.00",
        "200.00",
        "586.00",
    ]
    no_script(html)


def test_co_owner_and_admin_see_everyone(client, dora, charlie, used_hub):
    for viewer in (dora, charlie):
        html = page(client, viewer, reverse("usage:hub", args=[used_hub.pk]) + "?days=7")
        assert html.status_code == 200
        assert "586.00 CZK" in html.content.decode()
        assert ">mia<" in html.content.decode()


def test_member_sees_only_their_own_usage(client, mia, used_hub):
    html = page(client, mia, reverse("usage:hub", args=[used_hub.pk]) + "?days=7").content
    html = html.decode()
    assert "50.00 CZK" in html
    assert "586.00" not in html and ">alice<" not in html
    assert "Your own usage" in html
    assert "Export as CSV" not in html  # the hub's export is for its owners


def test_owner_exports_the_shown_period_as_csv(client, alice, used_hub):
    html = page(client, alice, reverse("usage:hub", args=[used_hub.pk]) + "?days=7")
    link = re.search(r'href="([^"]*)" download>Export as CSV', html.content.decode())
    assert link, "no CSV link"
    response = client.get(link.group(1).replace("&amp;", "&"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "586.00" in response.content.decode()


def test_other_users_get_404_and_anonymous_callers_sign_in(client, bob, used_hub):
    url = reverse("usage:hub", args=[used_hub.pk])
    assert client.get(url).status_code == 302
    assert client.get(url)["Location"].startswith(reverse("login"))
    assert page(client, bob, url).status_code == 404
    assert page(client, bob, reverse("usage:hub", args=[99999])).status_code == 404


def test_the_days_switch_picks_the_period(client, alice, used_hub):
    url = reverse("usage:hub", args=[used_hub.pk])
    week = page(client, alice, url + "?days=7").content.decode()
    month = page(client, alice, url + "?days=30").content.decode()
    assert "586.00 CZK" in week and "596.00 CZK" in month  # + 1 core-hour 20 days ago
    assert len(re.findall(r'<rect x="[^"]*" y="[^"]*" rx="0" ry="0" width', svgs(week)[0]))
    assert '<strong aria-current="page">7 days</strong>' in week
    assert 'href="?days=90"' in week
    # Anything else is the default 30 days, never an error.
    for bad in ("abc", "-5", "100000", ""):
        response = page(client, alice, f"{url}?days={bad}")
        assert response.status_code == 200
        assert "596.00 CZK" in response.content.decode()


def test_usage_chart_shows_one_resource_at_a_time(client, alice, used_hub):
    url = reverse("usage:hub", args=[used_hub.pk]) + "?days=7"
    html = page(client, alice, url).content.decode()
    assert "GPUs per day (GPU-hours)" in html  # GPUs first when they were used
    assert "CPU per day" not in html and "usage=cpu" in html
    html = page(client, alice, url + "&usage=cpu").content.decode()
    assert "CPU per day (core-hours)" in html and "29.00 core-hours over 7 days" in html
    assert "days=30&amp;usage=cpu" in html  # the period links keep the resource
    html = page(client, alice, url + "&usage=bogus").content.decode()
    assert "GPUs per day (GPU-hours)" in html


def test_hub_page_sums_up_the_usage_and_links_to_it(client, alice, mia, used_hub):
    html = page(client, alice, reverse("hubs:detail", args=[used_hub.pk])).content.decode()
    assert "596.00 CZK" in html and reverse("usage:hub", args=[used_hub.pk]) in html
    html = page(client, mia, reverse("hubs:detail", args=[used_hub.pk])).content.decode()
    assert "50.00 CZK" in html and "596.00" not in html


def test_a_pending_hub_has_no_usage_summary(client, alice, hub):
    html = page(client, alice, reverse("hubs:detail", args=[hub.pk])).content.decode()
    assert 'id="usage"' not in html


def test_chart_stylesheet_is_served_from_the_portal(client):
    response = client.get(reverse("usage:chart_css"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
    css = response.content.decode()
    assert ".hod-chart-usage" in css and ".hod-chart-capacity" in css
    assert "#chart-" not in css and "http" not in css


# --- My usage and the admin's totals ------------------------------------------------------------


def test_my_usage_shows_my_own_usage_across_hubs(client, alice, mia, used_hub, yesterday):
    other = HubFactory(owner=UserFactory(), slug="other-lab", state=HubState.RUNNING)
    usage(other, mia, yesterday, cores=1, seconds=HOUR)  # 10
    html = page(client, mia, reverse("usage:mine") + "?days=7").content.decode()
    assert "60.00 CZK" in html  # 50 in alice's hub + 10 in the other
    assert reverse("usage:hub", args=[used_hub.pk]) in html and "other-lab" in html
    assert svgs(html)
    no_script(html)
    html = page(client, alice, reverse("usage:mine")).content.decode()
    assert "546.00 CZK" in html  # alice's own: 240 + 96 + 200 + 10
    assert "My usage" in page(client, alice, reverse("hubs:list")).content.decode()


def test_my_usage_needs_sign_in(client):
    assert client.get(reverse("usage:mine")).status_code == 302


def test_admin_sees_totals_per_hub_owner_and_gpu_type(client, charlie, used_hub):
    GpuInventory.objects.create(product=A100, allocatable=4, in_use=1, observed=timezone.now())
    html = page(client, charlie, reverse("usage:admin") + "?days=7").content.decode()
    for section in ("totals-hub", "totals-owner", "totals-gpu_type"):
        block = html.split(f'id="{section}"', 1)[1].split("</section>", 1)[0]
        assert "586.00" in block
    assert "alice-course" in html
    gpu_block = html.split('id="totals-gpu_type"', 1)[1].split("</section>", 1)[0]
    assert ">NVIDIA A100 80 GB<" in gpu_block and "200.00" in gpu_block
    links = re.findall(r'href="([^"]*)" download>Export owner totals', html)
    response = client.get(links[0].replace("&amp;", "&"))
    assert response["Content-Type"].startswith("text/csv")
    assert "alice" in response.content.decode() and "586.00" in response.content.decode()
    assert "4 allocatable, 1 in use now" in html
    h100 = html.split('id="capacity-h100"', 1)[1].split("</section>", 1)[0]
    assert "Allocatable unknown" in h100  # never counted: not drawn as zero
    assert "hod-chart-capacity" in html
    no_script(html)


def test_only_admins_see_the_totals(client, alice):
    assert client.get(reverse("usage:admin")).status_code == 302
    assert page(client, alice, reverse("usage:admin")).status_code == 403


# --- The request form's estimate ----------------------------------------------------------------


@pytest.fixture
def busy_a100(a100, today):
    """4 A100s, 3 of them reserved by a running hub for the next 10 days."""
    GpuInventory.objects.create(product=A100, allocatable=4, in_use=3, observed=timezone.now())
    HubFactory(
        gpu_type=a100,
        gpus_per_user=1,
        expected_users=3,
        state=HubState.RUNNING,
        start_date=today,
        end_date=today + datetime.timedelta(days=10),
    )
    return a100


def a100_hub(gpu, today, slug, gpus=1, start=2, days=18, **kwargs):
    """A one-user hub with `gpus` A100s from `start` days from today, for `days` more days."""
    first = today + datetime.timedelta(days=start)
    return HubFactory(
        slug=slug,
        gpu_type=gpu,
        gpus_per_user=gpus,
        expected_users=1,
        start_date=first,
        end_date=first + datetime.timedelta(days=days),
        **kwargs,
    )


def test_form_shows_free_gpus_cost_and_a_warning_when_it_does_not_fit(
    client, alice, spec, busy_a100, prices
):
    client.force_login(alice)
    data = spec(gpu_type="a100", gpus_per_user="1", expected_users="2", check="1")
    response = client.post(reverse("hubs:create"), data)
    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(r'class="free-gpus">1</strong> of 4', html)
    assert "This request needs <strong>2</strong>" in html
    assert "Does not fit" in html
    # 2 servers x 60 days x (1 CPU x 10 + 4 GiB x 2 + 1 GPU x 100 + 10 GiB home x 0.10) x 24 h
    assert "342,720.00 CZK" in html
    assert 'value="stats-101"' in html  # the form keeps what was typed
    assert 'class="errors"' not in html  # and does not complain before it is submitted
    assert not Hub.objects.filter(slug="stats-101").exists()
    assert "hod-chart-capacity" in html
    no_script(html)


def test_form_says_when_the_gpus_fit(client, alice, spec, busy_a100, prices):
    client.force_login(alice)
    data = spec(gpu_type="a100", gpus_per_user="1", expected_users="1", check="1")
    html = client.post(reverse("hubs:create"), data).content.decode()
    assert "The GPUs fit over these dates." in html and "Does not fit" not in html


def test_form_estimate_asks_for_what_is_missing(client, alice, spec):
    client.force_login(alice)
    data = spec(start_date="not a date", expected_users="0", check="1")
    response = client.post(reverse("hubs:create"), data)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Fill in these fields to see the estimate" in html
    assert not Hub.objects.exists()


def test_submitting_the_form_still_submits(client, alice, spec, prices):
    client.force_login(alice)
    response = client.post(reverse("hubs:create"), spec())
    assert response.status_code == 302
    assert Hub.objects.filter(slug="stats-101").exists()


def test_change_form_estimate_does_not_count_the_hub_itself(
    client, alice, busy_a100, prices, today
):
    hub = a100_hub(
        busy_a100, today, "gpu-lab", start=0, days=5, owner=alice, state=HubState.RUNNING
    )
    client.force_login(alice)
    form = client.get(reverse("hubs:change", args=[hub.pk])).content.decode()
    assert "Check capacity and cost" in form
    data = {
        "display_name": hub.display_name,
        "slug": hub.slug,
        "kind": "course",
        "start_date": today.isoformat(),
        "end_date": (today + datetime.timedelta(days=5)).isoformat(),
        "expected_users": "1",
        "hardware_options": ["small"],
        "gpu_type": "a100",
        "gpus_per_user": "1",
        "images": ["scipy"],
        "check": "1",
    }
    html = client.post(reverse("hubs:change_preview", args=[hub.pk]), data).content.decode()
    # 4 - 3 (the other hub); this hub's own GPU is not counted against itself.
    assert re.search(r'class="free-gpus">1</strong> of 4', html)
    assert "The GPUs fit over these dates." in html


def test_estimate_fragment_for_the_forms_script(client, alice, bob, spec, busy_a100, prices):
    url = reverse("usage:estimate")
    query = spec(gpu_type="a100", gpus_per_user="1", expected_users="2")
    assert client.get(url, query).status_code == 302  # sign in first
    client.force_login(alice)
    response = client.get(url, query)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html and "Does not fit" in html and "342,720.00 CZK" in html
    assert re.search(r'class="free-gpus">1</strong> of 4', html)
    # A change estimate only for a hub the caller manages; others' hubs do not leak.
    others = HubFactory(owner=bob, slug="bobs-lab", state=HubState.RUNNING)
    assert client.get(url, {**query, "hub": others.pk}).status_code == 404
    assert client.get(url, {**query, "hub": "x"}).status_code == 404
    assert "Fill in these fields" in client.get(url, {"gpu_type": "nope"}).content.decode()


def test_request_form_loads_the_estimate_script_from_the_portal(client, alice):
    html = page(client, alice, reverse("hubs:create")).content.decode()
    assert '<script src="/static/usage/estimate.js" defer></script>' in html
    assert f'data-url="{reverse("usage:estimate")}"' in html
    assert "Check capacity and cost" in html


# --- The approval queue -------------------------------------------------------------------------


def test_queue_shows_the_timeline_and_whether_each_request_fits(client, charlie, busy_a100, today):
    too_big = a100_hub(busy_a100, today, "big-lab", gpus=2)
    small = a100_hub(busy_a100, today, "small-lab")
    html = page(client, charlie, reverse("hubs:queue")).content.decode()
    big = html.split(f'id="capacity-check-{too_big.pk}"', 1)[1].split("</form>", 1)[0]
    assert "does not fit" in big and "Approve over capacity" in big
    assert 'name="override" value="1"' in big and "required" in big
    fits = html.split(f'id="capacity-check-{small.pk}"', 1)[1].split("</div>", 1)[0]
    assert "fits" in fits and "Approve over capacity" not in fits
    assert "GPU capacity over the coming weeks" in html
    assert ">big-lab<" in html  # the request is a series of its own chart
    no_script(html)


def test_approving_over_capacity_with_a_reason_from_the_queue(client, charlie, busy_a100, today):
    hub = a100_hub(busy_a100, today, "big-lab", gpus=2)
    client.force_login(charlie)
    url = reverse("hubs:approve", args=[hub.pk])
    # The plain Approve button refuses, and the queue says why.
    response = client.post(url, {"next": "queue"}, follow=True)
    assert "Not enough NVIDIA A100 80 GB GPUs" in response.content.decode()
    hub.refresh_from_db()
    assert hub.state == HubState.PENDING
    client.post(url, {"override": "1", "reason": "", "next": "queue"})
    hub.refresh_from_db()
    assert hub.state == HubState.PENDING  # no reason: nothing changes
    response = client.post(url, {"override": "1", "reason": "Grant deadline", "next": "queue"})
    assert response.status_code == 302
    hub.refresh_from_db()
    assert hub.state == HubState.APPROVED
    assert "Grant deadline" in hub.events.last().reason


def test_a_change_over_capacity_is_shown_and_approved_with_a_reason(
    client, alice, charlie, busy_a100, today
):
    """The queue checks a pending change's GPUs like a new request's: an admin sees that it does
    not fit and can approve it over capacity with a reason, on the page and in the API."""
    from portal.hubs.models import SelfServicePolicy
    from portal.hubs.revisions import form_data, spec_of_hub
    from portal.hubs.services import changes

    SelfServicePolicy.objects.update_or_create(pk=1, defaults={"max_gpus_per_user": 1})
    # The 4th A100: none left.
    hub = a100_hub(
        busy_a100, today, "growing-lab", start=0, days=10, owner=alice, state=HubState.RUNNING
    )
    revision = changes.request_change(
        hub, alice, {**form_data(spec_of_hub(hub)), "expected_users": "2", "max_gpus": "2"}
    )
    assert revision.state == RevisionState.PENDING

    html = page(client, charlie, reverse("hubs:queue")).content.decode()
    check = html.split(f'id="capacity-check-{hub.pk}-{revision.number}"', 1)[1]
    check = check.split("</form>", 1)[0]
    assert "With this change the hub needs <strong>2</strong>" in check
    assert "does not fit" in check
    approve = reverse("hubs:revision_approve", args=[hub.pk, revision.number])
    assert f'action="{approve}"' in check and 'name="override" value="1"' in check
    no_script(html)

    # The API refuses without an override, and without a reason for one.
    api = f"/api/v1/hubs/{hub.pk}/revisions/{revision.number}/approve/"
    refused = client.post(api, {}, content_type="application/json")
    assert refused.status_code == 409
    assert "Not enough NVIDIA A100 80 GB GPUs" in refused.json()["detail"]
    no_reason = client.post(api, {"override": True}, content_type="application/json")
    assert no_reason.status_code == 400
    # The page's plain button refuses too; the override form with a reason applies it.
    response = client.post(approve, {"next": "queue"}, follow=True)
    assert "Not enough NVIDIA A100 80 GB GPUs" in response.content.decode()
    revision.refresh_from_db()
    assert revision.state == RevisionState.PENDING
    client.post(approve, {"override": "1", "reason": "Second node next week", "next": "queue"})
    revision.refresh_from_db()
    assert revision.state == RevisionState.APPLIED
    assert revision.reason == "Approved over capacity (2 GPUs, 1 free): Second node next week"
