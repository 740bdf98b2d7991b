"""The web UI: sign-in, request form, hub page, approval queue, reject and delete pages."""

import pytest
from django.urls import reverse

from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub
from tests.factories import HubFactory

pytestmark = pytest.mark.django_db


def test_sign_in_and_out(client, alice):
    page = client.get(reverse("login"))
    assert page.status_code == 200 and b'name="password"' in page.content
    response = client.post(
        reverse("login"), {"username": "alice", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302 and response["Location"] == reverse("hubs:list")
    assert client.get(reverse("hubs:list")).status_code == 200
    client.post(reverse("logout"))
    assert client.get(reverse("hubs:list")).status_code == 302


def test_wrong_password_is_refused(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content


def test_request_inside_policy(client, alice, spec, queued, django_capture_on_commit_callbacks):
    client.force_login(alice)
    form = client.get(reverse("hubs:create"))
    assert b'name="hardware_options" value="small"' in form.content
    # Each option with its server limits (the catalogue's defaults: GPU servers sooner).
    assert (
        b"Small (0.5-1 CPU, 1-2 GiB; stops after 120 min idle (30 with a GPU), "
        b"runs at most 24 h (8 with a GPU))" in form.content
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("hubs:create"), spec(), follow=True)

    hub = Hub.objects.get(slug="stats-101")
    assert response.redirect_chain[-1][0] == reverse("hubs:detail", args=[hub.pk])
    assert hub.state == HubState.APPROVED
    assert b"inside the policy and was approved" in response.content
    assert queued == [("provision", (hub.pk,), {"queue": "provisioning"})]


def test_request_beyond_policy_shows_why(client, alice, spec):
    client.force_login(alice)
    response = client.post(
        reverse("hubs:create"), spec(gpu_type="a100", gpus_per_user="2"), follow=True
    )
    assert b"waiting for a portal admin" in response.content
    assert b"2 GPUs per user exceeds the self-service limit of 0" in response.content


def test_hub_page_shows_url_once_running_and_timeline(client, alice, charlie):
    hub = HubFactory(owner=alice, slug="lab", state=HubState.PENDING)
    from portal.hubs import lifecycle
    from portal.hubs.services import decisions

    decisions.approve(hub, charlie, "ok")
    lifecycle.mark_provisioning(hub.pk)
    client.force_login(alice)
    page = client.get(reverse("hubs:detail", args=[hub.pk])).content.decode()
    assert "https://lab.hubs.localhost</a>" not in page

    lifecycle.mark_running(hub.pk)
    page = client.get(reverse("hubs:detail", args=[hub.pk])).content.decode()
    assert '<a class="hub-url" href="https://lab.hubs.localhost">' in page
    assert "hub-lab" in page
    assert page.index("Approved") < page.index("Provisioning") < page.rindex("Running")
    assert "by charlie: ok" in page
    assert f'href="/hubs/{hub.pk}/delete/"' in page


def test_failed_hub_shows_the_error(client, alice):
    hub = HubFactory(owner=alice, state=HubState.PROVISIONING)
    from portal.hubs import lifecycle

    lifecycle.mark_failed(hub.pk, 'admission webhook denied the request: "quota"')
    client.force_login(alice)
    page = client.get(reverse("hubs:detail", args=[hub.pk])).content.decode()
    assert "admission webhook denied the request: &quot;quota&quot;" in page
    assert "state-failed" in page


def test_status_fragment(client, hub, alice):
    client.force_login(alice)
    fragment = client.get(reverse("hubs:status", args=[hub.pk])).content.decode()
    assert 'id="hub-status"' in fragment and 'data-state="pending"' in fragment
    assert "<html" not in fragment


def test_cancel_and_delete_confirmation(client, alice, queued):
    client.force_login(alice)
    pending = HubFactory(owner=alice, slug="p1")
    assert b"Cancel request" in client.get(reverse("hubs:detail", args=[pending.pk])).content
    client.post(reverse("hubs:cancel", args=[pending.pk]))
    pending.refresh_from_db()
    assert pending.state == HubState.CANCELLED

    running = HubFactory(owner=alice, slug="r1", state=HubState.RUNNING)
    confirm = client.get(reverse("hubs:delete", args=[running.pk]))
    assert b"Yes, delete the hub" in confirm.content
    running.refresh_from_db()
    assert running.state == HubState.RUNNING  # GET only asks
    response = client.post(reverse("hubs:delete", args=[running.pk]), follow=True)
    running.refresh_from_db()
    assert running.state == HubState.DEPROVISIONING
    assert b"being deleted" in response.content

    again = client.post(reverse("hubs:delete", args=[running.pk]), follow=True)
    assert b"cannot become deprovisioning" in again.content


def test_approval_queue_oldest_first_with_exceeding_highlighted(client, charlie, alice, bob):
    old = HubFactory(owner=alice, slug="older", expected_users=80)
    new = HubFactory(owner=bob, slug="newer")
    HubFactory(owner=bob, slug="runs", state=HubState.RUNNING)
    client.force_login(charlie)
    response = client.get(reverse("hubs:queue"))
    rows = response.context["rows"]
    assert [row["hub"].slug for row in rows] == ["older", "newer"]
    assert rows[0]["fields"] == {"expected_users"}
    assert rows[1]["violations"] == []
    page = response.content.decode()
    section = page[page.index(f'id="hub-{old.pk}"') : page.index(f'id="hub-{new.pk}"')]
    assert '<tr class="exceeds"><th>Expected users</th>' in section
    assert "80 expected users exceeds the self-service limit of 50" in section


def test_reject_page_requires_reason(client, charlie, hub):
    client.force_login(charlie)
    response = client.post(reverse("hubs:reject", args=[hub.pk]), {"reason": "  "})
    assert response.status_code == 200
    assert "This field is required." in response.context["form"].errors["reason"]
    hub.refresh_from_db()
    assert hub.state == HubState.PENDING

    client.post(reverse("hubs:reject", args=[hub.pk]), {"reason": "Out of GPUs"})
    hub.refresh_from_db()
    assert (hub.state, hub.state_reason) == (HubState.REJECTED, "Out of GPUs")


def test_approving_twice_from_the_queue_says_so(client, charlie, hub, queued):
    client.force_login(charlie)
    client.post(reverse("hubs:approve", args=[hub.pk]), {"next": "queue"})
    response = client.post(reverse("hubs:approve", args=[hub.pk]), {"next": "queue"}, follow=True)
    assert b"cannot become approved" in response.content
    assert hub.events.count() == 1


def test_pages_work_without_javascript(client, alice, hub):
    client.force_login(alice)
    page = client.get(reverse("hubs:detail", args=[hub.pk])).content.decode()
    # Every action is a plain link or form; the only script is the optional status poller.
    assert page.count("<script") == 1 and "status.js" in page
    assert f'action="/hubs/{hub.pk}/cancel/"' in page


def test_static_files_are_served(client):
    response = client.get("/static/portal/portal.css")
    assert response.status_code == 200


def test_not_found_page_is_the_portals(client, bob, hub):
    client.force_login(bob)
    response = client.get(reverse("hubs:detail", args=[hub.pk]))
    assert response.status_code == 404
    assert b"not yours to see" in response.content
    assert hub.display_name.encode() not in response.content
