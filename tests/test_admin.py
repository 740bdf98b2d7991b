"""The Django admin: catalogues and policy are editable; hub states change only via services."""

import pytest
from django.urls import reverse

from portal.hubs.lifecycle import HubState
from portal.hubs.models import GpuType, HardwareOption, Hub, Image, SelfServicePolicy, StorageOption
from tests.factories import HubFactory

pytestmark = pytest.mark.django_db

MODELS = [HardwareOption, GpuType, Image, StorageOption, SelfServicePolicy, Hub]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("who", ["alice", "charlie", "anonymous"])
def test_changelists(client, request, hub, model, who):
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    url = reverse(f"admin:hubs_{model._meta.model_name}_changelist")
    response = client.get(url)
    if who == "charlie":
        assert response.status_code == 200
    else:  # researchers and anonymous callers are sent to the admin's sign-in
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_hub_change_page_and_no_add_or_delete(client, charlie, hub):
    client.force_login(charlie)
    assert client.get(reverse("admin:hubs_hub_change", args=[hub.pk])).status_code == 200
    assert client.get(reverse("admin:hubs_hub_add")).status_code == 403
    assert client.get(reverse("admin:hubs_hub_delete", args=[hub.pk])).status_code == 403


def test_policy_is_a_single_row(client, charlie):
    client.force_login(charlie)
    assert SelfServicePolicy.objects.count() == 1
    assert client.get(reverse("admin:hubs_selfservicepolicy_add")).status_code == 403


def test_admin_action_approves_through_the_service(client, charlie, hub, queued):
    done = HubFactory(slug="already-running", state=HubState.RUNNING)
    client.force_login(charlie)
    response = client.post(
        reverse("admin:hubs_hub_changelist"),
        {"action": "approve_selected", "_selected_action": [hub.pk, done.pk]},
        follow=True,
    )
    assert response.status_code == 200
    hub.refresh_from_db()
    assert hub.state == HubState.APPROVED
    assert hub.events.get().actor == charlie
    notes = [str(m) for m in response.context["messages"]]
    assert any(n.startswith("already-running: The hub is running now") for n in notes), notes


def test_disabling_a_catalogue_entry(client, charlie, alice, spec):
    client.force_login(charlie)
    large = HardwareOption.objects.get(name="large")
    large.enabled = False
    large.save()
    client.force_login(alice)
    response = client.post(reverse("hubs:create"), spec(hardware_options=["large"]))
    assert "hardware_options" in response.context["form"].errors


def test_a_hubs_page_shows_its_people_and_changes_nothing(client, charlie, alice, bob):
    """Spec and people change through the portal (validated, versioned, applied to the
    cluster); the admin page shows them, links there, and a posted edit changes nothing."""
    import datetime

    from django.utils import timezone

    from portal.hubs.models import GroupGrant, Invitation, Member, MemberTier

    hub = HubFactory(owner=alice, slug="shown", state=HubState.RUNNING, expected_users=10)
    tier = MemberTier.objects.create(hub=hub, name="students", description="CPU only")
    Member.objects.create(hub=hub, user=bob, role=Member.Role.MEMBER, tier=tier)
    Invitation.objects.create(
        hub=hub,
        email="guest@example.org",
        tier=tier,
        token_hash="f" * 64,
        expires_at=timezone.now() + datetime.timedelta(days=14),
    )
    GroupGrant.objects.create(hub=hub, group="physics-staff", tier=tier)
    client.force_login(charlie)
    url = reverse("admin:hubs_hub_change", args=[hub.pk])

    html = client.get(url).content.decode()

    for shown in ("students", "guest@example.org", "physics-staff", "bob", "CPU only"):
        assert shown in html
    assert "f" * 64 not in html  # the invitation's token hash is not shown
    assert f'href="{reverse("hubs:detail", args=[hub.pk])}"' in html
    assert 'name="expected_users"' not in html  # no inputs for the spec
    posted = client.post(url, {"expected_users": "999", "slug": "renamed", "_save": "Save"})
    assert posted.status_code in (200, 302)
    hub.refresh_from_db()
    assert (hub.expected_users, hub.slug) == (10, "shown")
    assert hub.members.get().tier == tier
