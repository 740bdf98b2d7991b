"""The main flow in a real browser: Playwright drives Debian's Chromium against the portal
served by a live server, with a real Celery worker provisioning into the local cluster.

Screenshots of the filled request form and of the running hub's page are saved to
test-artifacts/ for people to look at.
"""

from __future__ import annotations

import datetime
import secrets
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.factories import AdminFactory, UserFactory

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def browser(chromium):
    """Headless Chromium from Debian's package, driven by Playwright (tests/conftest.py)."""
    return chromium


def sign_in(browser, live_server, username: str):
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    return page


def test_researcher_requests_admin_approves_and_the_hub_runs(browser, live_server, celery_worker):
    UserFactory(username="rita", password=PASSWORD)
    AdminFactory(username="adam", password=PASSWORD)
    ARTIFACTS.mkdir(exist_ok=True)
    slug = f"web-{secrets.token_hex(3)}"
    today = timezone.localdate()

    researcher = sign_in(browser, live_server, "rita")
    researcher.goto(f"{live_server.url}/hubs/new/")
    researcher.get_by_label("Display name").fill("Machine learning lab")
    researcher.get_by_label("Slug").fill(slug)
    researcher.get_by_label("Start date").fill((today + datetime.timedelta(days=1)).isoformat())
    researcher.get_by_label("End date").fill((today + datetime.timedelta(days=90)).isoformat())
    researcher.get_by_label("Expected users").fill("6")
    researcher.get_by_label("Small").check()
    researcher.get_by_label("GPU type").select_option(label="NVIDIA A100 80 GB")
    researcher.get_by_label("GPUs per user").fill("1")
    researcher.get_by_label("Scientific Python").check()
    researcher.screenshot(path=ARTIFACTS / "request-form.png", full_page=True)
    researcher.get_by_role("button", name="Submit request").click()

    researcher.get_by_text("Pending approval").first.wait_for()
    assert "exceeds the self-service limit" in researcher.content()
    hub_url = researcher.url

    admin = sign_in(browser, live_server, "adam")
    admin.goto(f"{live_server.url}/approvals/")
    request = admin.locator("section.request").filter(has_text=slug)
    request.get_by_role("button", name="Approve").click()
    expect(request).to_have_count(0)  # approved requests leave the queue

    # The researcher's page is still open: it polls its status and reloads itself at each new
    # state (navigating it at the same moment would race that reload).
    expect(researcher.locator("#hub-status").get_by_text("Running", exact=True)).to_be_visible(
        timeout=60_000
    )
    assert researcher.url == hub_url
    assert f"https://{slug}.hubs.localhost" in researcher.content()
    researcher.screenshot(path=ARTIFACTS / "hub-running.png", full_page=True)
