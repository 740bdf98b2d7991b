"""The usage and capacity plots in a real browser: Playwright drives Debian's Chromium against
the portal served by a live server.

A GPU hub's week of usage is seeded as the collector records it (UsageDay rows; the collector
itself is tested against the cluster in test_usage_collector.py). Screenshots of the hub's usage
page, the request form's estimate and the approval queue's capacity timeline are saved to
test-artifacts/ for people to look at.
"""

from __future__ import annotations

import datetime

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from playwright.sync_api import expect

from portal.hubs.lifecycle import HubState
from portal.hubs.models import GpuType, Member
from portal.usage.models import Component, GpuInventory, UsageDay
from tests.cluster.test_browser import ARTIFACTS, browser  # noqa: F401 - the fixture
from tests.factories import AdminFactory, HardwareOptionFactory, HubFactory, UserFactory
from tests.usage_support import price_list

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

HOUR = 3600
A100 = "NVIDIA-A100-SXM4-80GB"
# CSS applied to the inline SVG: the first series' colour in the usage palette.
CPU_BLUE = "rgb(78, 121, 167)"


def signed_in(browser, live_server, user, console: list[str]):  # noqa: F811 - the fixture
    """A page whose browser carries the user's session cookie; console messages (a Content
    Security Policy violation among them) are appended to `console`."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])
    page = context.new_page()
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))

    def failed(response) -> None:
        # Browsers ask for /favicon.ico; the portal has none.
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            console.append(f"failed: {response.status} {response.url}")

    page.on("response", failed)
    return page


def seed_week(hub, users, today):
    """A week of a GPU course: three users' servers (1-2 CPUs, 2-8 GiB, one on an A100),
    varied per day the way a real week varies."""
    for n in range(7):
        day = today - datetime.timedelta(days=7 - n)
        for i, user in enumerate(users):
            hours = (4 + 3 * i + 2 * n) % 14 + 2
            UsageDay.objects.create(
                hub=hub,
                username=user.username,
                user=user,
                component=Component.SERVER,
                day=day,
                cpu_millicore_seconds=(1000 + 500 * i) * hours * HOUR,
                memory_mib_seconds=(2 + 3 * i) * 1024 * hours * HOUR,
                storage_mib_seconds=10 * 1024 * 24 * HOUR,
            )
            if i == 0 or (i == 2 and n % 2):
                UsageDay.objects.create(
                    hub=hub,
                    username=user.username,
                    user=user,
                    component=Component.SERVER,
                    gpu_product=A100,
                    day=day,
                    gpu_seconds=hours * HOUR,
                )


def test_usage_and_capacity_plots_render(browser, live_server):  # noqa: F811 - the fixture
    ARTIFACTS.mkdir(exist_ok=True)
    today = timezone.now().date()
    a100 = GpuType.objects.get(name="a100")
    price_list(cpu="1.20", memory="0.25", storage="3", gpu={a100: "45"})
    GpuInventory.objects.create(product=A100, allocatable=4, in_use=2, observed=timezone.now())
    olga = UserFactory(username="olga")
    members = [UserFactory(username=name) for name in ("pavel", "rita")]
    hub = HubFactory(
        owner=olga,
        slug="deep-learning",
        display_name="Deep learning course",
        state=HubState.RUNNING,
        gpu_type=a100,
        gpus_per_user=1,
        expected_users=2,
        start_date=today - datetime.timedelta(days=10),
        end_date=today + datetime.timedelta(days=20),
    )
    for member in members:
        Member.objects.create(hub=hub, user=member, role=Member.Role.MEMBER)
    seed_week(hub, [olga, *members], today)
    HubFactory(
        slug="vision-lab",
        state=HubState.APPROVED,
        gpu_type=a100,
        gpus_per_user=1,
        expected_users=1,
        start_date=today + datetime.timedelta(days=14),
        end_date=today + datetime.timedelta(days=40),
    )
    HubFactory(
        slug="protein-folding",
        display_name="Protein folding",
        gpu_type=a100,
        gpus_per_user=2,
        expected_users=1,
        start_date=today + datetime.timedelta(days=7),
        end_date=today + datetime.timedelta(days=30),
        hardware_options=[HardwareOptionFactory(name="medium")],
    )

    console: list[str] = []
    owner = signed_in(browser, live_server, olga, console)
    owner.goto(f"{live_server.url}/hubs/{hub.pk}/usage/?days=7")
    cost_chart = owner.locator("svg.hod-chart-usage").first
    expect(cost_chart).to_be_visible()
    box = cost_chart.bounding_box()
    assert box and box["width"] > 600 and box["height"] > 200
    # The portal's chart stylesheet is applied: CPU bars are blue, not SVG's default black.
    fill = owner.locator("svg.hod-chart-usage .series.color-0 rect").first.evaluate(
        "element => getComputedStyle(element).fill"
    )
    assert fill == CPU_BLUE
    expect(owner.locator("table.top-users")).to_contain_text("rita")
    owner.screenshot(path=ARTIFACTS / "usage-hub-week.png", full_page=True)

    owner.goto(f"{live_server.url}/hubs/{hub.pk}/")
    expect(owner.locator("#usage")).to_contain_text("CZK")

    admin = signed_in(browser, live_server, AdminFactory(username="adam"), console)
    admin.goto(f"{live_server.url}/approvals/")
    timeline = admin.locator("#capacity svg.hod-chart-capacity-plain").first
    expect(timeline).to_be_visible()
    request = admin.locator("section.request").filter(has_text="protein-folding")
    expect(request.locator(".capacity-check")).to_contain_text("does not fit")
    expect(request.locator("svg.hod-chart-capacity")).to_be_visible()
    admin.screenshot(path=ARTIFACTS / "capacity-approval-queue.png", full_page=True)
    timeline.screenshot(path=ARTIFACTS / "capacity-timeline.png")

    admin.goto(f"{live_server.url}/usage/all/?days=7")
    expect(admin.locator("#totals-hub")).to_contain_text("deep-learning")
    admin.screenshot(path=ARTIFACTS / "usage-admin.png", full_page=True)
    expect(admin.locator("#capacity ~ section svg.hod-chart-capacity-plain").first).to_be_visible()

    owner.goto(f"{live_server.url}/hubs/new/")
    owner.get_by_label("Display name").fill("GPU workshop")
    owner.get_by_label("Slug").fill("gpu-workshop")
    owner.get_by_label("Start date").fill((today + datetime.timedelta(days=3)).isoformat())
    owner.get_by_label("End date").fill((today + datetime.timedelta(days=24)).isoformat())
    owner.get_by_label("Expected users").fill("3")
    owner.get_by_label("Small").check()
    owner.get_by_label("GPU type").select_option(label="NVIDIA A100 80 GB")
    owner.get_by_label("GPUs per user").fill("1")
    estimate = owner.locator("#estimate")
    # estimate.js refreshes the figures as the fields change...
    expect(estimate).to_contain_text("Does not fit")
    expect(estimate.locator("svg.hod-chart-capacity")).to_be_visible()
    owner.get_by_label("Expected users").fill("1")
    expect(estimate).to_contain_text("The GPUs fit over these dates.")
    owner.get_by_label("Expected users").fill("3")
    # ...and the button does the same without JavaScript, keeping what was typed.
    owner.get_by_role("button", name="Check capacity and cost").click()
    expect(estimate).to_contain_text("Does not fit")
    expect(estimate).to_contain_text("Estimated cost")
    expect(estimate.locator("svg.hod-chart-capacity")).to_be_visible()
    expect(owner.get_by_label("Slug")).to_have_value("gpu-workshop")
    estimate.screenshot(path=ARTIFACTS / "request-form-estimate.png")
    # Nothing was blocked by the Content Security Policy, and no script failed.
    failed = [line for line in console if line.startswith("failed")]
    blocked = [line for line in console if "Content Security Policy" in line]
    assert not failed and not blocked, console
